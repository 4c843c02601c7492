"""Nearest-pixel fill: the trivial hole filler, and what partly known patches are encoded from."""
import numpy as np
from scipy import ndimage


def nearest_fill(frames: np.ndarray, valid: np.ndarray, empty_value=0.0) -> np.ndarray:
  """Fills invalid pixels with the nearest valid pixel of the same frame.

  frames: [..., H, W, C]; valid: bool [..., H, W] (True = trusted pixel). A frame without any
  valid pixel is filled with `empty_value`. Returns an array like `frames`; valid pixels unchanged.
  """
  frames = np.asarray(frames)
  valid = np.asarray(valid, bool)
  if valid.shape != frames.shape[:-1]:
    raise ValueError(f'valid must be bool [..., H, W] = {frames.shape[:-1]}, got {valid.shape}')
  h, w, c = frames.shape[-3:]
  flat = frames.reshape(-1, h, w, c)
  flat_valid = valid.reshape(-1, h, w)
  out = np.empty_like(flat)
  for n in range(flat.shape[0]):
    if flat_valid[n].all():
      out[n] = flat[n]
    elif not flat_valid[n].any():
      out[n] = empty_value
    else:
      _, (iy, ix) = ndimage.distance_transform_edt(~flat_valid[n], return_indices=True)
      out[n] = flat[n][iy, ix]
  return out.reshape(frames.shape)
