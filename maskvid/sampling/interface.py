"""What the task commands need from a completer: `VideoCompleter`.

`maskvid.sampling.completer.Completer` implements it; so does any test stand-in. The tasks call
only this, so a fake that implements it exercises the same calls the real model gets.
"""
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class VideoCompleter(Protocol):
  """Completes the unknown pixels of a batch of clips.

  Attributes:
    resolution: H == W of the frames the model works at (other sizes are resized by the
      completer; tasks render their own inputs at this size).
    clip_length: frames per clip the model was trained on (tasks that read a video take at
      most this many frames).
  """
  resolution: int
  clip_length: int

  def complete_video(self, frames: np.ndarray, pixel_mask: np.ndarray, *,
                     num_steps: Optional[int] = None, solver: Optional[str] = None,
                     renoise_at: Optional[float] = None, guidance: Optional[float] = None,
                     seed: int = 0, rng: Any = None, paste_known: bool = True,
                     return_latents: bool = False, progress: bool = False,
                     hint_mask: Optional[np.ndarray] = None,
                     guide_frames: Optional[np.ndarray] = None) -> Any:
    """frames uint8 [B, T, H, W, 3], pixel_mask bool [B, T, H, W] (True = known), hint_mask
    bool [B, T, H, W] or None (pixels of `frames` that are a guess), guide_frames bool [T] or
    None (the frames guidance drops; None: all known). Returns uint8
    [B, T, H, W, 3], or with return_latents dict(video, latents [B, T, h, w, c],
    known_mask [B, T, h, w])."""
