"""What every task shares: the call into a Completer and frame conversions.

A task builds `(frames uint8 [T, H, W, 3], pixel_mask bool [T, H, W])` — True where the pixel is
known — and hands them to a Completer (`maskvid.sampling.completer.Completer` or anything with
the same `complete_video`), which encodes, maps the pixel mask to tokens
(`sampling.masks.pixel_to_token_masks`), samples the unknown tokens, decodes and composites the
given pixels back. Tasks never touch the model.
"""
import inspect
from typing import Any, Optional

import numpy as np

from maskvid import pictures


def model_resolution(completer) -> Optional[tuple]:
  """(H, W) the completer's model was trained at, if it says."""
  for attr in ('resolution', 'frame_size', 'image_size'):
    r = getattr(completer, attr, None)
    if r is not None:
      return (int(r), int(r)) if np.ndim(r) == 0 else tuple(int(x) for x in r)
  config = getattr(completer, 'config', None)
  if config is not None:
    try:
      r = int(config.data.resolution)
      return (r, r)
    except (AttributeError, KeyError, TypeError):
      pass
  return None


def num_frames_of(completer) -> Optional[int]:
  config = getattr(completer, 'config', None)
  try:
    return int(config.data.clip_length)
  except (AttributeError, KeyError, TypeError):
    return None


def run_completion(completer, frames: np.ndarray, pixel_mask: np.ndarray, *, seed: int = 0,
                   hint_mask: Optional[np.ndarray] = None, **sample_kwargs) -> dict:
  """One clip through `completer.complete_video`.

  Args:
    completer: `maskvid.sampling.completer.Completer` or any object with
      `complete_video(frames uint8 [B,T,H,W,3], pixel_mask bool [B,T,H,W], ...)`; sampler
      options (num_steps, solver, renoise_at, guidance, paste_known), the seed and
      return_latents=True are passed when its signature accepts them (None values are left to
      its defaults).
    frames: uint8 [T, H, W, 3]; pixel_mask: bool [T, H, W] (True = known).
    hint_mask: optional bool [T, H, W]: pixels of `frames` that are a guess, not given (see
      `Completer.complete_video`); a completer without a hint_mask argument gets them as unknown.
  Returns:
    dict(video uint8 [T, H, W, 3], and latents / known_mask when the completer returns them).
  """
  frames, pixel_mask = np.asarray(frames), np.asarray(pixel_mask, bool)
  if frames.dtype != np.uint8 or frames.ndim != 4 or pixel_mask.shape != frames.shape[:3]:
    raise ValueError(f'frames must be uint8 [T, H, W, 3] and pixel_mask bool [T, H, W]; got '
                     f'{frames.dtype} {frames.shape} and {pixel_mask.shape}')
  params = inspect.signature(completer.complete_video).parameters
  accepts_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
  kwargs = {k: v for k, v in sample_kwargs.items()
            if v is not None and (accepts_any or k in params)}
  if 'seed' in params or accepts_any:
    kwargs['seed'] = seed
  elif 'rng' in params:
    import jax  # pylint: disable=g-import-not-at-top
    kwargs['rng'] = jax.random.key(seed)
  if 'return_latents' in params:
    kwargs['return_latents'] = True
  if 'progress' in params:
    kwargs['progress'] = True   # a log line per sampler step: commands can take minutes
  if hint_mask is not None and ('hint_mask' in params or accepts_any):
    hint_mask = np.asarray(hint_mask, bool)
    if hint_mask.shape != pixel_mask.shape:
      raise ValueError(f'hint_mask must be bool [T, H, W] {pixel_mask.shape}, got '
                       f'{hint_mask.shape}')
    kwargs['hint_mask'] = hint_mask[None]
  out = completer.complete_video(frames[None], pixel_mask[None], **kwargs)
  return _normalise(out)


def _normalise(out: Any) -> dict:
  if isinstance(out, dict):
    video = next(out[k] for k in ('video', 'frames', 'rgb') if k in out)
    res = {k: np.asarray(v) for k, v in out.items() if k in ('latents', 'known_mask', 'known')}
  elif hasattr(out, 'frames') or hasattr(out, 'video'):
    video = getattr(out, 'video', None)
    video = getattr(out, 'frames') if video is None else video
    res = {k: np.asarray(getattr(out, k)) for k in ('latents', 'known_mask', 'known')
           if getattr(out, k, None) is not None}
  else:
    video, res = out, {}
  video = pictures.to_uint8(np.asarray(video))
  if video.ndim == 5:
    video = video[0]
    res = {k: (v[0] if v.ndim >= 4 else v) for k, v in res.items()}
  res['video'] = video
  return res
