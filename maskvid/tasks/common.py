"""What every task shares: the call into a completer and frame conversions.

A task builds `(frames uint8 [T, H, W, 3], pixel_mask bool [T, H, W])` — True where the pixel is
known — and hands them to a `sampling.interface.VideoCompleter` (the checkpoint-backed
`sampling.completer.Completer`, or a test stand-in), which encodes, maps the pixel mask to tokens
(`sampling.masks.pixel_to_token_masks`), samples the unknown tokens, decodes and composites the
given pixels back. Tasks never touch the model.
"""
from typing import Optional

import numpy as np

from maskvid import pictures
from maskvid.sampling import long_video
from maskvid.sampling.interface import VideoCompleter


def check_completer(completer) -> VideoCompleter:
  if not isinstance(completer, VideoCompleter):
    raise TypeError(f'completer must implement maskvid.sampling.interface.VideoCompleter '
                    f'(resolution, clip_length, complete_video); got {type(completer).__name__}')
  return completer


def model_resolution(completer: VideoCompleter) -> tuple[int, int]:
  """(H, W) the completer's model works at."""
  r = int(check_completer(completer).resolution)
  if r <= 0:
    raise ValueError(f'the completer has no model resolution (got {r}): its run config lacks '
                     'data.resolution')
  return (r, r)


def run_completion(completer: VideoCompleter, frames: np.ndarray, pixel_mask: np.ndarray, *,
                   seed: int = 0, hint_mask: Optional[np.ndarray] = None,
                   long_strategy: Optional[str] = None, context_frames: int = 2,
                   guide_context: bool = False, **sample_kwargs) -> dict:
  """One clip through `completer.complete_video`; a clip longer than the model's
  (`completer.clip_length`) window by window (`sampling.long_video`).

  Args:
    completer: a `VideoCompleter`; sampler options (num_steps, solver, renoise_at, guidance)
      that are None are left to its defaults (the run config's `sample` section).
    frames: uint8 [T, H, W, 3]; pixel_mask: bool [T, H, W] (True = known).
    hint_mask: optional bool [T, H, W]: pixels of `frames` that are a guess, not given (see
      `Completer.complete_video`).
    long_strategy, context_frames, guide_context: `long_video.complete_long`'s strategy (None:
      anchors), context and guidance over the context (long clips only).
  Returns:
    dict(video uint8 [T, H, W, 3], latents [T, h, w, c], known_mask [T, h, w]); for a long
    clip dict(video, windows [long_video.Window]).
  """
  check_completer(completer)
  options = {k: v for k, v in sample_kwargs.items() if v is not None}
  if len(frames) > completer.clip_length:
    return long_video.complete_long(completer, frames, pixel_mask,
                                    strategy=long_strategy or 'anchors',
                                    context=context_frames, seed=seed, hint_mask=hint_mask,
                                    guide_context=guide_context, progress=True, **options)
  frames, pixel_mask = np.asarray(frames), np.asarray(pixel_mask, bool)
  if frames.dtype != np.uint8 or frames.ndim != 4 or pixel_mask.shape != frames.shape[:3]:
    raise ValueError(f'frames must be uint8 [T, H, W, 3] and pixel_mask bool [T, H, W]; got '
                     f'{frames.dtype} {frames.shape} and {pixel_mask.shape}')
  if hint_mask is not None:
    hint_mask = np.asarray(hint_mask, bool)
    if hint_mask.shape != pixel_mask.shape:
      raise ValueError(f'hint_mask must be bool [T, H, W] {pixel_mask.shape}, got '
                       f'{hint_mask.shape}')
    hint_mask = hint_mask[None]
  # progress: a log line per sampler step (commands can take minutes).
  out = completer.complete_video(frames[None], pixel_mask[None], seed=seed, hint_mask=hint_mask,
                                 return_latents=True, progress=True, **options)
  return {'video': pictures.to_uint8(np.asarray(out['video']))[0],
          'latents': np.asarray(out['latents'])[0],
          'known_mask': np.asarray(out['known_mask'])[0]}
