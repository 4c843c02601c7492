"""Any input size: down to the model's resolution, completed there, back up with every known
pixel kept exactly.

The model works at one resolution (config.data.resolution, square). Inputs of any other size or
aspect are resized (anisotropically: every input pixel stays addressable) with a masked area
average, so unknown pixels never leak into known low-resolution pixels; a low-resolution pixel is
known when at least half of the input pixels it covers are. After completion the low-resolution
video is upsampled (bicubic), the input's known pixels are pasted back bit-exactly, and a seam of
`feather` input pixels inside each hole blends from the nearest known pixel into the generated
content (no hard edge where the sharp input meets the softer generated fill). Hinted input
pixels (a guess, not given: `Completer.complete_video(hint_mask=)`) keep their full-resolution
detail: `move_hints` adds the model's low-resolution change to them, upsampled.
"""
import cv2
import numpy as np
from scipy import ndimage

from maskvid.sampling import fill

KNOWN_FRACTION = 0.5


def _resize_stack(x: np.ndarray, height: int, width: int, interpolation) -> np.ndarray:
  """float32 [N, H, W(, C)] -> [N, height, width(, C)] frame by frame."""
  return np.stack([cv2.resize(f, (width, height), interpolation=interpolation) for f in x])


def to_model_resolution(frames: np.ndarray, pixel_mask: np.ndarray, size: tuple):
  """uint8 [..., H, W, 3] + bool [..., H, W] -> (uint8 [..., h, w, 3], bool [..., h, w]).

  Each low-resolution pixel is the mean of the known input pixels it covers (0 when none are);
  it is known when at least KNOWN_FRACTION of them are.
  """
  h, w = size
  lead = frames.shape[:-3]
  x = np.asarray(frames, np.float32).reshape(-1, *frames.shape[-3:])
  m = np.asarray(pixel_mask, np.float32).reshape(-1, *pixel_mask.shape[-2:])
  weight = _resize_stack(m, h, w, cv2.INTER_AREA)
  total = _resize_stack(x * m[..., None], h, w, cv2.INTER_AREA)
  mean = np.where(weight[..., None] > 1e-6, total / np.maximum(weight[..., None], 1e-6), 0.0)
  lo = np.clip(np.round(mean), 0, 255).astype(np.uint8)
  return lo.reshape(*lead, h, w, 3), (weight >= KNOWN_FRACTION).reshape(*lead, h, w)


def to_input_resolution(video: np.ndarray, frames: np.ndarray, pixel_mask: np.ndarray,
                        feather: float) -> np.ndarray:
  """Completed uint8 [..., h, w, 3] -> uint8 [..., H, W, 3] at the input's size.

  Known input pixels are copied exactly; an unknown pixel at distance d (pixels) from the
  nearest known one is `a * generated + (1 - a) * nearest known`, a = min(d / feather, 1).
  """
  height, width = frames.shape[-3:-1]
  lead = frames.shape[:-3]
  lo = np.asarray(video, np.float32).reshape(-1, *video.shape[-3:])
  up = np.clip(_resize_stack(lo, height, width, cv2.INTER_CUBIC), 0, 255)
  x = np.asarray(frames).reshape(-1, height, width, 3)
  m = np.asarray(pixel_mask, bool).reshape(-1, height, width)
  nearest = fill.nearest_fill(x.astype(np.float32), m)
  out = np.empty_like(x)
  for i in range(len(x)):
    if m[i].any() and feather > 0:
      d = ndimage.distance_transform_edt(~m[i])
      a = np.clip(d / float(feather), 0.0, 1.0)[..., None]
    else:
      a = np.ones((height, width, 1), np.float32)
    blend = a * up[i] + (1.0 - a) * nearest[i]
    out[i] = np.where(m[i][..., None], x[i], np.clip(np.round(blend), 0, 255)).astype(np.uint8)
  return out.reshape(*lead, height, width, 3)


def move_hints(video: np.ndarray, frames: np.ndarray, hint_mask: np.ndarray,
               completed_lo: np.ndarray, input_lo: np.ndarray, guessed_lo: np.ndarray):
  """Full-resolution hinted pixels: the input hint plus the model's change to it, upsampled.

  video uint8 [..., H, W, 3] (from `to_input_resolution`), frames uint8 [..., H, W, 3] holding
  the hints, hint_mask bool [..., H, W]; completed_lo / input_lo uint8 [..., h, w, 3] (the
  completion and its input at the model's resolution), guessed_lo bool [..., h, w] (where
  input_lo holds a given or hinted value). Hinted pixels whose low-resolution pixel was
  guessed become `frames + upsample(completed_lo - input_lo)`; the rest of `video` is kept.
  """
  height, width = frames.shape[-3:-1]
  lead = frames.shape[:-3]
  delta = (np.asarray(completed_lo, np.float32) - np.asarray(input_lo, np.float32))
  delta = _resize_stack(delta.reshape(-1, *delta.shape[-3:]), height, width, cv2.INTER_LINEAR)
  guessed = _resize_stack(np.asarray(guessed_lo, np.uint8).reshape(-1, *guessed_lo.shape[-2:]),
                          height, width, cv2.INTER_NEAREST).astype(bool)
  x = np.asarray(frames, np.float32).reshape(-1, height, width, 3)
  moved = np.clip(np.round(x + delta), 0, 255).astype(np.uint8)
  take = np.asarray(hint_mask, bool).reshape(-1, height, width) & guessed
  out = np.where(take[..., None], moved, np.asarray(video).reshape(-1, height, width, 3))
  return out.reshape(*lead, height, width, 3)
