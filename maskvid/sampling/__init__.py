"""Masked completion: the sampler (pure, jitted), mask helpers, and a checkpoint-backed Completer."""
