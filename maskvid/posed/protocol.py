"""The posed benchmark cases: what a method is given and what it is scored on, from a PosedScene.

Two cases, each a short clip in path order (pure functions; the eval job runs methods on them):
  * 'nvs' (single-image novel-view synthesis): the scene's first context view (frame 0 without a
    split) is the input, clip position 0; the targets follow in the scene's own path order (the
    split's target_ids, else every other frame, sorted by frame index). With num_targets (the
    model's clip length - 1) the targets are subsampled evenly; without, the clip holds all of
    them and a path longer than the model's clip goes through the long-video planner.
  * 'interpolate' (two-view interpolation): the first two context views (sorted; without a split
    the first and last frames) are the endpoints, clip positions 0 and T-1; the targets are the
    target frames strictly between them in index order (all frames between without a split),
    optionally subsampled evenly to num_between.
The image rule (SEVA's `transform_img_and_K`, mode 'crop'): resize by the smallest factor whose
result covers the model resolution, ceil-rounded ((ceil(f H), ceil(f W)), area interpolation),
then crop the centre (top = rh // 2 - h // 2, left = rw // 2 - w // 2). Intrinsics follow in our
pixel convention: c' = (c + 0.5) f - 0.5 - offset (`geometry.camera.scale_intrinsics`), f' = f s.
A synthetic clip exported with context (0,) or (0, T-1) gives back exactly the synthetic eval's
nvs / interpolate clip (tests/test_posed_protocol.py).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import cv2
import numpy as np

from maskvid.geometry import camera
from maskvid.posed.scene import PosedScene, load_frames

TASKS = ('nvs', 'interpolate')


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark clip. T frames in clip order, at the model resolution (h, w)."""
  task: str                       # 'nvs' | 'interpolate'
  scene_ids: tuple                # [T] indices into the scene's frames
  rgb: np.ndarray                 # uint8 [T, h, w, 3] (ground truth on the scored frames)
  intrinsics: np.ndarray          # float64 [T, 3, 3]
  world_to_camera: np.ndarray     # float64 [T, 4, 4]
  known_frames: tuple             # clip positions given to the method
  scored_frames: tuple            # clip positions scored
  known_mask: np.ndarray          # bool [T, h, w]: True = given pixel
  depth: Optional[np.ndarray] = None   # float32 [T, h, w] (nan: unknown) when a depth was given


def crop_box(height: int, width: int, size: Sequence[int]) -> tuple:
  """SEVA's cover-then-centre-crop box: (resized (rh, rw), top, left) for target size (h, w)."""
  h, w = int(size[0]), int(size[1])
  f = max(h / height, w / width)
  rh, rw = int(math.ceil(f * height)), int(math.ceil(f * width))
  top = min(max(rh // 2 - h // 2, 0), rh - h)
  left = min(max(rw // 2 - w // 2, 0), rw - w)
  return (rh, rw), top, left


def center_crop_resize(images: np.ndarray, intrinsics: np.ndarray, size: Sequence[int], *,
                       interpolation: int = cv2.INTER_AREA) -> tuple:
  """images [N, H, W(, C)] any dtype, intrinsics [N, 3, 3] -> (images [N, h, w(, C)],
  intrinsics [N, 3, 3]) by the image rule above. Depth: pass interpolation=cv2.INTER_NEAREST."""
  images = np.asarray(images)
  n, height, width = images.shape[:3]
  (rh, rw), top, left = crop_box(height, width, size)
  h, w = int(size[0]), int(size[1])
  out = np.stack([cv2.resize(im, (rw, rh), interpolation=interpolation)[top:top + h,
                                                                      left:left + w]
                  for im in images]).reshape((n, h, w) + images.shape[3:])
  k = np.stack([camera.scale_intrinsics(ki, rh / height, rw / width).astype(np.float64)
                for ki in np.asarray(intrinsics, np.float64)])
  k[:, 0, 2] -= left
  k[:, 1, 2] -= top
  return out, k


def evenly(ids: Sequence[int], count: Optional[int]) -> tuple:
  """`count` of `ids` spread evenly, first and last kept (all of them when count is None)."""
  ids = tuple(ids)
  if count is None or count >= len(ids):
    return ids
  if count < 1:
    raise ValueError(f'count must be >= 1, got {count}')
  return tuple(ids[i] for i in np.round(np.linspace(0, len(ids) - 1, count)).astype(int))


def _make_case(scene: PosedScene, task: str, ids: tuple, known: tuple, size, depth) -> Case:
  scene = load_frames(scene)
  idx = np.asarray(ids)
  rgb, k = center_crop_resize(scene.frames[idx], scene.intrinsics[idx], size)
  d = None
  if depth is not None:
    depth = np.asarray(depth, np.float32)
    if depth.shape != (len(scene), *scene.image_size):
      raise ValueError(f'depth must be [{len(scene)}, {scene.image_size[0]}, '
                       f'{scene.image_size[1]}] (nan: unknown), got {depth.shape}')
    d, _ = center_crop_resize(depth[idx], scene.intrinsics[idx], size,
                              interpolation=cv2.INTER_NEAREST)
  mask = np.zeros(rgb.shape[:3], bool)
  mask[list(known)] = True
  scored = tuple(i for i in range(len(ids)) if i not in known)
  return Case(task, ids, rgb, k, scene.world_to_camera[idx], known, scored, mask, d)


def nvs_case(scene: PosedScene, size: Sequence[int], num_targets: Optional[int] = None,
             depth: Optional[np.ndarray] = None) -> Case:
  """The single-image NVS case (module docstring). depth: [N, H, W] at the scene's size."""
  source = scene.context_ids[0] if scene.context_ids else 0
  targets = (sorted(scene.target_ids) if scene.target_ids is not None
             else [i for i in range(len(scene)) if i != source])
  targets = evenly([t for t in targets if t != source], num_targets)
  if not targets:
    raise ValueError(f'{scene.source}: no target views for nvs')
  return _make_case(scene, 'nvs', (source,) + targets, (0,), size, depth)


def interpolate_case(scene: PosedScene, size: Sequence[int], num_between: Optional[int] = None,
                     depth: Optional[np.ndarray] = None) -> Case:
  """The two-view interpolation case (module docstring). depth: [N, H, W] at the scene's size."""
  if scene.context_ids is not None and len(scene.context_ids) >= 2:
    lo, hi = sorted(scene.context_ids[:2])
  else:
    lo, hi = 0, len(scene) - 1
  pool = scene.target_ids if scene.target_ids is not None else range(len(scene))
  between = evenly(sorted(t for t in pool if lo < t < hi), num_between)
  if not between:
    raise ValueError(f'{scene.source}: no target views between context views {lo} and {hi}')
  ids = (lo,) + between + (hi,)
  return _make_case(scene, 'interpolate', ids, (0, len(ids) - 1), size, depth)


def case_clip(case: Case) -> dict:
  """The clip dict the synthetic eval's tasks take: rgb uint8 [T, h, w, 3], world_to_camera
  [T, 4, 4], intrinsics [3, 3] (shared; raises when the frames' differ), depth [T, h, w] if any."""
  if not np.allclose(case.intrinsics, case.intrinsics[:1], rtol=0, atol=1e-6):
    raise ValueError('the frames of this case have different intrinsics; the synthetic eval '
                     'tasks take one [3, 3]: pass per-frame intrinsics to the warp instead')
  clip = dict(rgb=case.rgb, intrinsics=case.intrinsics[0].astype(np.float32),
              world_to_camera=case.world_to_camera.astype(np.float32))
  if case.depth is not None:
    clip['depth'] = case.depth
  return clip
