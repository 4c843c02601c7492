"""Pixels for people: uint8 <-> float frames, labelled PNG grids (every picture grid of the
package), MP4 files.

Frames in the models are float32 in [-1, 1]; on disk and on screen they are uint8 [0, 255].
Every conversion in the package goes through `to_float` / `to_uint8`.
"""
import os
from typing import Mapping

import imageio.v3 as iio
import numpy as np
from PIL import Image
from PIL import ImageDraw

from maskvid import fileio


def to_float(frames) -> np.ndarray:
  """uint8 [..., 3] -> float32 in [-1, 1]; float frames pass through (checked to lie in [-1, 1])."""
  a = np.asarray(frames)
  if a.dtype == np.uint8:
    return a.astype(np.float32) / 127.5 - 1.0
  if not np.issubdtype(a.dtype, np.floating):
    raise TypeError(f'frames must be uint8 or float in [-1, 1], got dtype {a.dtype}')
  if a.size and (np.nanmin(a) < -1.001 or np.nanmax(a) > 1.001):
    raise ValueError(f'float frames must lie in [-1, 1], got range [{np.nanmin(a):.3g}, '
                     f'{np.nanmax(a):.3g}] (pass uint8 for 0..255 pixels)')
  return a.astype(np.float32)


def to_uint8(frames) -> np.ndarray:
  """float frames in [-1, 1] -> uint8 (rounded, clipped); uint8 frames pass through."""
  a = np.asarray(frames)
  if a.dtype == np.uint8:
    return a
  return np.clip(np.round((a.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def upscale(frames: np.ndarray, min_size: int = 64) -> np.ndarray:
  """Nearest-neighbour upscale of [..., H, W, C] by an integer so that W >= min_size."""
  k = max(1, -(-min_size // frames.shape[-2]))
  return frames.repeat(k, axis=-3).repeat(k, axis=-2)


def labelled_grid(rows: Mapping[str, np.ndarray], scale: int = 2, pad: int = 2) -> np.ndarray:
  """uint8 image: one row per entry (label -> frames [T, H, W, 3]), columns = frames.

  Frames may be uint8 or float in [-1, 1]; they are upscaled by `scale` (nearest) and the labels
  are written into a left margin.
  """
  if not rows:
    raise ValueError('rows must name at least one frame sequence')
  seqs = {k: to_uint8(v) for k, v in rows.items()}
  t_len, height, width, _ = next(iter(seqs.values())).shape
  for k, v in seqs.items():
    if v.shape != (t_len, height, width, 3):
      raise ValueError(f'row {k!r} has shape {v.shape}, expected {(t_len, height, width, 3)}')
  h, w = height * scale, width * scale
  margin = 8 + 7 * max(len(k) for k in seqs)
  canvas = np.full((pad + len(seqs) * (h + pad), margin + t_len * (w + pad) + pad, 3), 255,
                   np.uint8)
  for r, seq in enumerate(seqs.values()):
    y = pad + r * (h + pad)
    for t in range(t_len):
      x = margin + pad + t * (w + pad)
      canvas[y:y + h, x:x + w] = np.repeat(np.repeat(seq[t], scale, 0), scale, 1)
  img = Image.fromarray(canvas)
  draw = ImageDraw.Draw(img)
  for r, label in enumerate(seqs):
    draw.text((4, pad + r * (h + pad) + h // 2 - 5), label, fill=(0, 0, 0))
  return np.asarray(img)


def save_grid(path: str, rows: Mapping[str, np.ndarray], scale: int = 2, pad: int = 2) -> str:
  """Writes `labelled_grid(rows)` as a PNG at `path` (local or gs://), atomically."""
  fileio.makedirs(os.path.dirname(path) or '.')
  fileio.write_image(path, labelled_grid(rows, scale, pad))
  return path


def write_mp4(path: str, video, fps: int = 8) -> None:
  """uint8 (or [-1, 1] float) [T, H, W, 3] -> H.264 MP4 at a local `path`.

  libx264 wants even sizes (odd ones are edge-padded); macro_block_size=1 keeps imageio from
  resizing tiny frames.
  """
  v = to_uint8(video)
  if v.ndim != 4 or v.shape[-1] != 3:
    raise ValueError(f'video must be [T, H, W, 3], got shape {v.shape}')
  h, w = v.shape[1:3]
  v = np.pad(v, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode='edge')
  iio.imwrite(path, v, extension='.mp4', fps=fps, codec='libx264', macro_block_size=1,
              quality=9)
