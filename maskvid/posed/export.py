"""Synthetic clips exported as posed scenes in the field's formats (fixtures, round-trip tests).

  python -m maskvid.posed.export --format=nerfstudio --out=DIR --split=test --seed=0 --num_frames=8

Besides the format's own files, DIR/gt_depth.npy holds the renderer's z-depth, float32 [N, H, W]
(a "depth file" for the alignment and the warp checks; no format has a slot for it).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from absl import app, flags

from maskvid.data import synthetic

from maskvid.data import scenes
from maskvid.geometry import camera
from maskvid.posed import WRITERS
from maskvid.posed import scene as scene_lib

GT_DEPTH = 'gt_depth.npy'


def sample_points(depth: np.ndarray, rgb: np.ndarray, intrinsics: np.ndarray,
                  world_to_camera: np.ndarray, num_points: int, seed: int = 0) -> tuple:
  """Sparse world points as an SfM model would hold: random pixels of every frame unprojected with
  their depth. depth [N, H, W], rgb uint8 [N, H, W, 3], intrinsics [3, 3], world_to_camera
  [N, 4, 4] -> (points float64 [P, 3], colors uint8 [P, 3]), P = num_points."""
  n, h, w = depth.shape
  rng = np.random.default_rng(seed)
  frame = rng.integers(0, n, num_points)
  idx = rng.integers(0, h * w, num_points)
  points = np.empty((num_points, 3))
  for t in range(n):
    sel = frame == t
    cam = camera.unproject(depth[t], intrinsics).reshape(-1, 3)[idx[sel]]
    points[sel] = camera.transform_points(camera.invert_pose(world_to_camera[t]), cam)
  return points, rgb.reshape(n, -1, 3)[frame, idx]


def visibility(points: np.ndarray, depth: np.ndarray, intrinsics: np.ndarray,
               world_to_camera: np.ndarray, rel_tol: float = 0.01) -> np.ndarray:
  """bool [P, N]: point p projects inside frame n onto a pixel whose depth is its own (within
  rel_tol): the tracks an SfM model would hold. points [P, 3], depth [N, H, W]."""
  n, h, w = depth.shape
  out = np.zeros((len(points), n), bool)
  for t in range(n):
    uv, z = camera.project(camera.transform_points(world_to_camera[t], points), intrinsics)
    with np.errstate(invalid='ignore'):
      col, row = np.floor(uv[:, 0] + 0.5), np.floor(uv[:, 1] + 0.5)
      inside = (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    surface = depth[t][row[inside].astype(int), col[inside].astype(int)]
    out[np.flatnonzero(inside), t] = np.abs(surface - z[inside]) <= rel_tol * z[inside]
  return out


def context_ids(num_frames: int, num_context: int) -> tuple:
  """Context views spread over the clip: 1 -> (0,), 2 -> (0, N-1), ...; targets are the rest."""
  ids = np.unique(np.round(np.linspace(0, num_frames - 1, num_context)).astype(int))
  return tuple(int(i) for i in ids) if num_context > 1 else (0,)


def synthetic_scene(seed: int, split: str, num_frames: int, height: int, width: int, *,
                    num_points: int = 2000, num_context: int = 1, speed: float = 1.0) -> tuple:
  """(PosedScene with frames and points, GT depth float32 [N, H, W]) of one rendered clip."""
  clip = synthetic.render_clip(seed, split, num_frames, height, width, speed)
  points, colors = sample_points(clip['depth'], clip['rgb'], clip['intrinsics'],
                                 clip['world_to_camera'], num_points, seed)
  vis = visibility(points, clip['depth'], clip['intrinsics'], clip['world_to_camera'])
  ctx = context_ids(num_frames, num_context)
  scene = scene_lib.make_scene(
      clip['intrinsics'], clip['world_to_camera'], (height, width), frames=clip['rgb'],
      points3d=points, point_colors=colors, point_visibility=vis, context_ids=ctx,
      target_ids=[i for i in range(num_frames) if i not in ctx], source=f'synthetic:{split}/{seed}')
  return scene, clip['depth']


def export_synthetic(out_dir: str, fmt: str, seed: int = 0, split: str = 'test',
                     num_frames: int = 8, height: int = 64, width: int = 64,
                     **kwargs) -> str:
  """Renders clip `seed` of `split` and writes it to out_dir in format `fmt`; returns the path
  `read_scene` takes (transforms.json, the RE10K camera file, or the COLMAP model folder)."""
  if fmt not in WRITERS:
    raise ValueError(f'format must be one of {sorted(WRITERS)}, got {fmt!r}')
  scene, depth = synthetic_scene(seed, split, num_frames, height, width, **kwargs)
  path = WRITERS[fmt](scene, out_dir)
  np.save(os.path.join(out_dir, GT_DEPTH), depth)
  return path


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  path = export_synthetic(f.out, f.format, f.seed, f.split, f.num_frames, f.height, f.width,
                          num_points=f.num_points, num_context=f.num_context)
  print(path)


def _define_flags() -> None:
  flags.DEFINE_enum('format', 'nerfstudio', sorted(WRITERS), 'Format to write.')
  flags.DEFINE_string('out', None, 'Output folder.', required=True)
  flags.DEFINE_enum('split', 'test', list(scenes.SPLITS), 'Synthetic split.')
  flags.DEFINE_integer('seed', 0, 'Clip index within the split.')
  flags.DEFINE_integer('num_frames', 8, 'Frames of the clip.')
  flags.DEFINE_integer('height', 64, 'Frame height.')
  flags.DEFINE_integer('width', 64, 'Frame width.')
  flags.DEFINE_integer('num_points', 2000, 'Sparse points sampled from the GT depth.')
  flags.DEFINE_integer('num_context', 1, 'Context views of the split file (1: NVS, 2: endpoints).')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
