"""The completion settings of a trained run, read from its config in one place.

A trained run's `config.sample` (its diffusion/config.json) is the one source of completion
settings: the Completer (and through it the task commands), the eval's rows and the training
preview all read it through these functions, so the table measures what a user's command runs.
An eval may change a setting only by naming it in `config.eval.sample_overrides`
(`with_overrides`); its own `config.sample` is never read in place of the run's.

  with_overrides(sample, overrides) -> ConfigDict     the run's settings, explicit overrides applied
  sampler_options(sample, **given)  -> dict           `sampler.complete` keyword arguments
  fill_options(sample) / token_rule(sample) -> dict   `fill.context_fill` / the pixel -> token rule
  describe(sample) -> dict                            what a report prints
"""
import copy
from typing import Optional

import ml_collections

from maskvid.sampling import masks

# The keys of `config.sample` that change a completion (preview_clips sizes the preview only).
COMPLETION_KEYS = ('num_steps', 'solver', 'renoise_at', 'guidance', 'min_valid', 'min_hinted',
                   'temporal_fill', 'fill_window', 'fill_max_diff', 'fill_bracket')


def with_overrides(sample, overrides=None) -> ml_collections.ConfigDict:
  """A copy of `sample` (a run's config.sample) with the overrides that are set (not None).

  overrides: config.eval.sample_overrides (every completion key, None = keep the run's).
  """
  out = copy.deepcopy(ml_collections.ConfigDict(sample))
  for key, value in dict(overrides or {}).items():
    if key not in COMPLETION_KEYS:
      raise ValueError(f'config.eval.sample_overrides.{key}: not a completion setting; the '
                       f'settings are {COMPLETION_KEYS}')
    if value is not None:
      with out.unlocked():
        out[key] = value
  return out


def set_overrides(overrides) -> dict:
  """{key: value} of the overrides that are set."""
  return {k: v for k, v in dict(overrides or {}).items() if v is not None}


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
  hinted or copied pixels); a run older than a key gets the library's rule."""
  return dict(min_valid=float(sample.get('min_valid', masks.MIN_VALID)),
              min_hinted=float(sample.get('min_hinted', masks.MIN_HINTED)))


def describe(sample) -> dict:
  """The completion settings by their config.sample names, as a report prints them."""
  fills = fill_options(sample)
  return dict(sampler_options(sample), **token_rule(sample), temporal_fill=fills['temporal'],
              fill_window=fills['window'], fill_max_diff=fills['max_diff'],
              fill_bracket=fills['bracket'])
