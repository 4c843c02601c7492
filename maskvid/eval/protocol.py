"""The evaluation tasks: what each method is given and which pixels are scored.

Every task turns one ground-truth clip (rgb [T, H, W, 3] in [-1, 1], depth [T, H, W], intrinsics
[3, 3], world_to_camera [T, 4, 4]) into a `Task`:

  known_pixels  bool [T, H, W]  pixels every generative method may use (True = known).
  known_frames  float [T, H, W, 3]  their values; unknown pixels are nearest-filled (so the VAE
                encoder sees no hard edges).
  trivial       float [T, H, W, 3]  the task's trivial answer, the bar a learned method must
                clear: nearest-pixel fill of the known pixels ('holes', and the disocclusions of
                'nvs'), a cross-fade of the two endpoints ('interpolate').
  oracle        float [T, H, W, 3] or None  'interpolate' only: the endpoints forward-warped with
                GT depth and cameras (a geometry oracle, not a baseline: no method gets GT).
  hole          bool [T, H, W]  pixels scored by the hole metrics (= unknown pixels of the
                scored frames).
  frames        tuple of frame indices scored by the whole-frame and consistency metrics.

Tasks (all deterministic given the clip and a seed):
* 'nvs' (single-view novel-view synthesis): frame 0 is given. Frames 1..T-1 get frame 0
  forward-warped with its GT depth along the GT camera path (`maskvid.geometry.forward_warp`,
  z-buffered, with its validity mask); known = valid warped pixels. Scored: frames 1..T-1, holes =
  pixels the warp left invalid.
* 'interpolate' (two-view interpolation): frames 0 and T-1 are given, the frames between are fully
  unknown to the generative methods. Trivial answer: the cross-fade (1 - a) x_0 + a x_{T-1},
  a = t / (T - 1). Oracle: both endpoints forward-warped into each middle frame with GT depth and
  cameras (nearer splat wins where both land), the rest nearest-filled. Scored: frames 1..T-2,
  every pixel is a hole.
* 'holes' (large irregular holes): every frame loses a random union of blobs (ellipses) and thick
  strokes covering 40-70% of it (`random_hole_mask`). Scored: all frames, holes = removed pixels.

For 'nvs' every method gets the same GT-depth warp of frame 0; its trivial answer is that warp
with the disocclusions nearest-filled.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import cv2
import numpy as np

from maskvid import pictures
from maskvid.geometry import warp as warp_lib
from maskvid.sampling import fill

TASKS = ('nvs', 'interpolate', 'holes')
GEOMETRY_TASKS = ('nvs', 'interpolate')


@dataclasses.dataclass
class Task:
  name: str
  known_pixels: np.ndarray   # bool [T, H, W]
  known_frames: np.ndarray   # float32 [T, H, W, 3] in [-1, 1]
  trivial: np.ndarray        # float32 [T, H, W, 3] in [-1, 1]
  hole: np.ndarray           # bool [T, H, W]
  frames: tuple              # scored frame indices
  oracle: Optional[np.ndarray] = None   # float32 [T, H, W, 3] ('interpolate': GT-geometry warp)


def _check_clip(clip):
  rgb = np.asarray(clip['rgb'])
  if rgb.ndim != 4 or rgb.shape[-1] != 3:
    raise ValueError(f"clip['rgb'] must be [T, H, W, 3], got shape {rgb.shape}")
  if rgb.shape[0] < 3:
    raise ValueError(f'clips need at least 3 frames for the tasks, got {rgb.shape[0]}')
  return rgb


def _warp(frame, depth, k, src, dst):
  res = warp_lib.forward_warp(frame, depth, k, src, dst, fill=0.0)
  return res.image, res.mask, res.depth


def nvs_task(clip) -> Task:
  """Single-view NVS from frame 0 (see module docstring). clip: dict with rgb/depth/cameras."""
  rgb = pictures.to_float(_check_clip(clip))
  T = rgb.shape[0]
  depth, k, w2c = clip['depth'], clip['intrinsics'], clip['world_to_camera']
  known = np.zeros(rgb.shape[:3], bool)
  frames = np.zeros_like(rgb)
  known[0], frames[0] = True, rgb[0]
  for t in range(1, T):
    frames[t], known[t], _ = _warp(rgb[0], depth[0], k, w2c[0], w2c[t])
  filled = fill.nearest_fill(frames, known)
  hole = ~known
  hole[0] = False
  return Task('nvs', known, filled, filled, hole, tuple(range(1, T)))


def interpolate_task(clip) -> Task:
  """Two-view interpolation between frames 0 and T-1 (see module docstring)."""
  rgb = pictures.to_float(_check_clip(clip))
  T = rgb.shape[0]
  depth, k, w2c = clip['depth'], clip['intrinsics'], clip['world_to_camera']
  known = np.zeros(rgb.shape[:3], bool)
  known[0] = known[-1] = True
  known_frames = np.where(known[..., None], rgb, 0.0).astype(np.float32)
  known_frames = fill.nearest_fill(known_frames, known)   # middle frames: no valid pixel -> 0
  alpha = (np.arange(T, dtype=np.float32) / (T - 1))[:, None, None, None]
  cross_fade = ((1 - alpha) * rgb[0] + alpha * rgb[-1]).astype(np.float32)
  warp_only = known_frames.copy()
  for t in range(1, T - 1):
    best = np.full(rgb.shape[1:3], np.inf)
    img = np.zeros(rgb.shape[1:], np.float32)
    valid = np.zeros(rgb.shape[1:3], bool)
    for src in (0, T - 1):
      w_img, w_valid, w_depth = _warp(rgb[src], depth[src], k, w2c[src], w2c[t])
      take = w_valid & (w_depth < best)
      img[take], best[take] = w_img[take], w_depth[take]
      valid |= w_valid
    warp_only[t] = fill.nearest_fill(img, valid)
  hole = np.zeros_like(known)
  hole[1:-1] = True
  return Task('interpolate', known, known_frames, cross_fade, hole, tuple(range(1, T - 1)),
              oracle=warp_only)


def random_hole_mask(rng: np.random.Generator, height: int, width: int,
                     coverage=(0.4, 0.7)) -> np.ndarray:
  """bool [H, W], True = hole: random ellipses and thick strokes until a drawn target coverage.

  The target is uniform in `coverage`; shapes are added until it is reached, so the result covers
  at least the target (and rarely much more: each shape is at most ~1/6 of the frame).
  """
  lo, hi = coverage
  if not 0.0 < lo <= hi < 1.0:
    raise ValueError(f'coverage must be (lo, hi) with 0 < lo <= hi < 1, got {coverage}')
  target = rng.uniform(lo, hi)
  mask = np.zeros((height, width), np.uint8)
  size = min(height, width)
  for _ in range(1000):
    if mask.mean() >= target:
      break
    cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
    if rng.random() < 0.5:
      axes = (int(rng.integers(max(1, size // 10), max(2, size // 4))),
              int(rng.integers(max(1, size // 10), max(2, size // 4))))
      cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
      ex = int(np.clip(cx + rng.normal(0, size / 3), 0, width - 1))
      ey = int(np.clip(cy + rng.normal(0, size / 3), 0, height - 1))
      cv2.line(mask, (cx, cy), (ex, ey), 1, int(rng.integers(max(1, size // 12), max(2, size // 6))))
  return mask.astype(bool)


def holes_task(clip, seed: int = 0, coverage=(0.4, 0.7)) -> Task:
  """Large irregular holes in every frame (see module docstring); `seed` picks the masks."""
  rgb = pictures.to_float(_check_clip(clip))
  rng = np.random.default_rng(seed)
  hole = np.stack([random_hole_mask(rng, rgb.shape[1], rgb.shape[2], coverage)
                   for _ in range(rgb.shape[0])])
  known = ~hole
  filled = fill.nearest_fill(np.where(known[..., None], rgb, 0.0).astype(np.float32), known)
  return Task('holes', known, filled, filled, hole, tuple(range(rgb.shape[0])))


def make_task(name: str, clip, seed: int = 0, coverage=(0.4, 0.7)) -> Task:
  """Builds task `name` (one of TASKS) for one clip; seed/coverage only matter for 'holes'."""
  if name == 'nvs':
    return nvs_task(clip)
  if name == 'interpolate':
    return interpolate_task(clip)
  if name == 'holes':
    return holes_task(clip, seed, coverage)
  raise ValueError(f'task must be one of {TASKS}, got {name!r}')


def check_tasks(tasks: Sequence[str]) -> tuple:
  bad = [t for t in tasks if t not in TASKS]
  if bad:
    raise ValueError(f'config.eval.tasks has unknown tasks {bad}; known: {TASKS}')
  return tuple(tasks)
