"""Masked flow-matching objective: schedule (noising), masks (training masks), loss."""
