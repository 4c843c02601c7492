"""Preview pictures of a dataset: a few clips per split, frames across time, colourised depth
below (synthetic clips), labelled with their scene's trajectory and shapes."""
from __future__ import annotations

import os

from absl import logging
import numpy as np

from maskvid.data import synthetic


def colorize_depth(depth: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
  """depth float [..., H, W] -> uint8 [..., H, W, 3] (turbo colormap; near = red, far = blue)."""
  import cv2
  lo = float(np.min(depth)) if lo is None else lo
  hi = float(np.max(depth)) if hi is None else hi
  inv = 1.0 - (depth - lo) / max(hi - lo, 1e-6)
  gray = np.clip(inv * 255, 0, 255).astype(np.uint8)
  flat = gray.reshape(-1, gray.shape[-1])
  rgb = cv2.applyColorMap(flat, cv2.COLORMAP_TURBO)[..., ::-1]
  return rgb.reshape(depth.shape + (3,))


def preview_grid(clips: list[dict], max_frames: int = 8, scale: int = 2,
                 labels: list[str] | None = None) -> np.ndarray:
  """uint8 [rows, cols, 3]: per clip an optional label line, a row of frames (time runs left to
  right) and below it the colourised depth (turbo colormap scaled per clip: red near, blue far).
  """
  import cv2
  blocks = []
  for i, clip in enumerate(clips):
    t = clip['rgb'].shape[0]
    idx = np.unique(np.linspace(0, t - 1, min(max_frames, t)).round().astype(int))
    rows = [np.concatenate(list(clip['rgb'][idx]), axis=1)]
    if 'depth' in clip:   # video folders have none
      rows.append(np.concatenate(list(colorize_depth(clip['depth'][idx])), axis=1))
    block = np.concatenate(rows, axis=0)
    block = np.repeat(np.repeat(block, scale, 0), scale, 1)
    if labels is not None:
      band = np.full((14, block.shape[1], 3), 255, np.uint8)
      cv2.putText(band, labels[i], (2, 11), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1,
                  cv2.LINE_AA)
      block = np.concatenate([band, block], axis=0)
    blocks += [block, np.full((4,) + block.shape[1:], 255, np.uint8)]
  width = max(b.shape[1] for b in blocks)
  blocks = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255)
            for b in blocks]
  return np.concatenate(blocks, axis=0)


def write_preview(sources, path: str, clips_per_split: int = 2) -> None:
  """Writes a labelled preview PNG of the first clips of each rendered split's source (a
  `storage.ClipSource`; see preview_grid)."""
  clips, labels = [], []
  for source in sources:
    split = source.split
    for i in range(min(clips_per_split, len(source))):
      clip = source[i]
      scene = synthetic.sample_scene(int(clip['seed']), split, clip['rgb'].shape[0])
      speed = f" x{float(clip['speed']):g}" if 'speed' in clip else ''
      clips.append(clip)
      labels.append(f"{split} seed {int(clip['seed'])}: {scene['trajectory']}{speed}, "
                    f"{'/'.join(scene['shape_families'])}")
  write_png(clips, path, labels)


def write_png(clips: list[dict], path: str, labels: list[str] | None = None) -> None:
  import imageio.v3 as iio
  if not clips:
    return
  tmp = path + '.tmp.png'
  iio.imwrite(tmp, preview_grid(clips, labels=labels))
  os.replace(tmp, path)
  logging.info('wrote %s', path)
