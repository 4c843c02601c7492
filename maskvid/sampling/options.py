"""The completion defaults of a run, read from its config in one place.

The Completer (and through it the task commands), the eval's `ours` row and the training preview
all call these, so the table measures what a user's command runs.
"""
from typing import Optional


def sampler_options(sample, *, num_steps: Optional[int] = None, solver: Optional[str] = None,
                    renoise_at: Optional[float] = None, guidance: Optional[float] = None) -> dict:
  """`sampler.complete` keyword arguments: given values, else config.sample's (`sample`)."""
  return dict(num_steps=int(sample.num_steps if num_steps is None else num_steps),
              solver=str(sample.solver if solver is None else solver),
              renoise_at=float(sample.renoise_at if renoise_at is None else renoise_at),
              guidance=float(sample.guidance if guidance is None else guidance))


def fill_options(sample) -> dict:
  """`fill.context_fill` keyword arguments from config.sample (older runs: the defaults)."""
  return dict(temporal=bool(sample.get('temporal_fill', True)),
              window=int(sample.get('fill_window', 7)),
              max_diff=float(sample.get('fill_max_diff', 0.2)),
              bracket=bool(sample.get('fill_bracket', True)))


def token_rule(sample) -> dict:
  """`masks.pixel_to_token_masks` thresholds: min_valid (given pixels), min_hinted (given,
  hinted or copied pixels)."""
  return dict(min_valid=float(sample.get('min_valid', 0.01)),
              min_hinted=float(sample.get('min_hinted', sample.get('min_valid', 0.01))))
