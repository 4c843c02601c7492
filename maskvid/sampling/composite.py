"""Decoded completions put back over their input: given pixels exact, hinted pixels keep detail.

  composite(decoded, frames, pixel_mask, hint_mask=None, decoded_input=None) -> float like frames

Per pixel:
  given (pixel_mask)              the input value, exactly;
  hinted (hint_mask, not given)   the hint moved by what the model changed about it:
                                  frames + (decoded - decoded_input), where decoded_input is the
                                  VAE round trip of the input latents. A hinted token the model
                                  kept (no stochastic conditioning) gives back the hint itself; a
                                  re-generated one moves it by the model's correction, so detail
                                  the VAE cannot represent is not thrown away with the hint's
                                  errors;
  otherwise                       the decode.
All float in [-1, 1]; frames / decoded / decoded_input [..., H, W, 3], masks bool [..., H, W].
"""
from typing import Optional

import numpy as np


def composite(decoded, frames, pixel_mask, hint_mask: Optional[np.ndarray] = None,
              decoded_input: Optional[np.ndarray] = None) -> np.ndarray:
  decoded, frames = np.asarray(decoded, np.float32), np.asarray(frames, np.float32)
  pixel_mask = np.asarray(pixel_mask, bool)
  if decoded.shape != frames.shape or pixel_mask.shape != frames.shape[:-1]:
    raise ValueError(f'decoded {decoded.shape}, frames {frames.shape} and pixel_mask '
                     f'{pixel_mask.shape} must be [..., H, W, 3], [..., H, W, 3] and [..., H, W]')
  out = decoded
  if hint_mask is not None and np.any(hint_mask):
    if decoded_input is None or np.shape(decoded_input) != frames.shape:
      raise ValueError('hint_mask needs decoded_input (the decoded input latents) of frames\' '
                       f'shape {frames.shape}')
    corrected = np.clip(frames + (decoded - np.asarray(decoded_input, np.float32)), -1.0, 1.0)
    out = np.where(np.asarray(hint_mask, bool)[..., None], corrected, out)
  return np.where(pixel_mask[..., None], frames, out)
