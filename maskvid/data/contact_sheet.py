"""Preview pictures of a dataset: a few clips per split, frames across time, colourised depth
below (synthetic clips), labelled with their split, seed, trajectory and speed."""
from __future__ import annotations

from absl import logging
import numpy as np

from maskvid import pictures
from maskvid.data import scenes


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


def preview_rows(clips: list[dict], max_frames: int = 8,
                 labels: list[str] | None = None) -> dict:
  """`pictures.labelled_grid` rows: per clip its frames (time left to right) and, for synthetic
  clips, the colourised depth below (turbo colormap scaled per clip: red near, blue far)."""
  rows = {}
  for i, clip in enumerate(clips):
    t = clip['rgb'].shape[0]
    idx = np.unique(np.linspace(0, t - 1, min(max_frames, t)).round().astype(int))
    label = labels[i] if labels is not None else f'clip {i}'
    rows[label] = clip['rgb'][idx]
    if 'depth' in clip:   # video folders have none
      rows[f'{label} depth'] = colorize_depth(clip['depth'][idx])
  return rows


def write_preview(sources, path: str, clips_per_split: int = 2) -> None:
  """Writes a labelled preview PNG of the first clips of each rendered split's source (a
  `records.ClipSource`; see preview_rows)."""
  clips, labels = [], []
  for source in sources:
    split = source.split
    for i in range(min(clips_per_split, len(source))):
      clip = source[i]
      scene = scenes.sample_scene(int(clip['seed']), split, clip['rgb'].shape[0])
      speed = f" x{float(clip['speed']):g}" if 'speed' in clip else ''
      clips.append(clip)
      labels.append(f"{split} {int(clip['seed'])} {scene['trajectory']}{speed}")
  write_png(clips, path, labels)


def write_png(clips: list[dict], path: str, labels: list[str] | None = None) -> None:
  if not clips:
    return
  pictures.save_grid(path, preview_rows(clips, labels=labels))
  logging.info('wrote %s', path)
