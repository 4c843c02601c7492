"""nerfstudio `transforms.json` (+ `train_test_split_{N}.json`), as DL3DV and the SEVA benchmark
ship them.

File conventions (docs.nerf.studio "Data conventions"; SEVA issue #65):
  * `frames[i].transform_matrix` is camera-to-world with OpenGL/Blender camera axes (x right, y up,
    z back: the camera looks along -z). Ours is OpenCV (y down, z forward), so
    c2w_opencv = c2w_opengl @ diag(1, -1, -1, 1) (the flip is its own inverse) and
    world_to_camera = inv(c2w_opencv). The world frame is kept as the file gives it.
  * `applied_transform` (3x4, written by ns-process-data) maps the COLMAP world to this file's
    world; it does not touch the cameras here and is kept in `scene.meta['applied_transform']`.
  * Intrinsics `fl_x fl_y cx cy w h` at the top level or per frame (per frame wins); `fl_x` may be
    replaced by `camera_angle_x` (Blender scenes). Pixel centres at +0.5 (nerfstudio casts rays
    through pixel index + 0.5, COLMAP's convention): cx_ours = cx - 0.5. Distortion (k1 k2 k3 k4
    p1 p2) is ignored with a warning.
  * `train_test_split_{N}.json`: {"train_ids": [...], "test_ids": [...]} index the frames in the
    order transforms.json lists them; train_ids are the N context views, test_ids the targets.
  * `ply_file_path` (optional): an ASCII PLY of points in the same world (x y z red green blue).
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
from absl import logging

from maskvid import fileio
from maskvid.posed import scene as scene_lib
from maskvid.posed.scene import PosedFormatError, PosedScene

FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])   # OpenCV <-> OpenGL camera axes (its own inverse)
PIXEL_OFFSET = 0.5                          # file cx = ours + 0.5
_DISTORTION = ('k1', 'k2', 'k3', 'k4', 'p1', 'p2')


def _frame_intrinsics(meta: dict, frame: dict, where: str) -> tuple:
  """(K [3, 3] in our pixel convention, (H, W)) of one frame (per-frame keys override globals)."""
  get = lambda key, default=None: frame.get(key, meta.get(key, default))
  w, h = get('w'), get('h')
  if w is None or h is None:
    raise PosedFormatError(f'{where}: needs w and h (per frame or at the top level)')
  fx = get('fl_x')
  if fx is None and get('camera_angle_x') is not None:
    fx = 0.5 * float(w) / np.tan(0.5 * float(get('camera_angle_x')))
  if fx is None:
    raise PosedFormatError(f'{where}: needs fl_x (or camera_angle_x)')
  fy = get('fl_y', fx)
  cx, cy = get('cx', float(w) / 2.0), get('cy', float(h) / 2.0)
  k = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], np.float64)
  return scene_lib.shift_principal_point(k, -PIXEL_OFFSET), (int(h), int(w))


def _world_to_camera(matrix, where: str) -> np.ndarray:
  """transform_matrix (OpenGL camera-to-world, 4x4 or 3x4) -> world_to_camera [4, 4] (OpenCV)."""
  try:
    m = np.asarray(matrix, np.float64)
  except (TypeError, ValueError) as e:
    raise PosedFormatError(f'{where}.transform_matrix: not a numeric matrix ({e})') from e
  if m.shape not in ((4, 4), (3, 4)):
    raise PosedFormatError(f'{where}.transform_matrix: must be 4x4 or 3x4, got {m.shape}')
  if not np.isfinite(m).all():
    raise PosedFormatError(f'{where}.transform_matrix: non-finite values')
  c2w = np.eye(4)
  c2w[:3] = m[:3]
  return np.linalg.inv(c2w @ FLIP_YZ)


def _frame_path(root: str, file_path: str) -> str:
  p = os.path.join(root, file_path)
  if not os.path.splitext(p)[1] and not os.path.isfile(p) and os.path.isfile(p + '.png'):
    p += '.png'    # Blender scenes list 'train/r_0' for 'train/r_0.png'
  return os.path.normpath(p)


def read_nerfstudio(path: str, num_context: Optional[int] = None) -> PosedScene:
  """transforms.json (or its folder) -> PosedScene (frames not loaded; see scene.load_frames)."""
  tpath = os.path.join(path, 'transforms.json') if os.path.isdir(path) else path
  root = os.path.dirname(tpath)
  meta = scene_lib.load_json(tpath)
  frames = meta.get('frames')
  if not isinstance(frames, list) or not frames:
    raise PosedFormatError(f'{tpath}: needs a non-empty list "frames"')
  ks, w2cs, names, paths, size = [], [], [], [], None
  for i, frame in enumerate(frames):
    where = f'{tpath}: frames[{i}]'
    if 'file_path' not in frame or 'transform_matrix' not in frame:
      raise PosedFormatError(f'{where}: needs file_path and transform_matrix')
    k, hw = _frame_intrinsics(meta, frame, where)
    if size is not None and hw != size:
      raise PosedFormatError(f'{where}: image size {hw} (h, w) differs from frame 0\'s {size}')
    size = hw
    ks.append(k)
    w2cs.append(_world_to_camera(frame['transform_matrix'], where))
    names.append(frame['file_path'])
    paths.append(_frame_path(root, frame['file_path']))
  _warn_distortion(meta, frames, tpath)
  scene_lib.check_frames_exist(paths, tpath)
  train_ids, test_ids, available = scene_lib.read_split(root, num_context)
  points, colors = None, None
  if meta.get('ply_file_path'):
    points, colors = read_ply_ascii(os.path.join(root, meta['ply_file_path']))
  extras = dict(format='nerfstudio', available_splits=available,
                camera_model=meta.get('camera_model', 'OPENCV'))
  if 'applied_transform' in meta:
    extras['applied_transform'] = np.asarray(meta['applied_transform'], np.float64)
  return scene_lib.make_scene(np.stack(ks), np.stack(w2cs), size, names, frame_paths=paths,
                              points3d=points, point_colors=colors, context_ids=train_ids,
                              target_ids=test_ids, source=tpath, meta=extras)


def _warn_distortion(meta: dict, frames: list, tpath: str) -> None:
  if any(abs(float(d.get(key, 0.0))) > 0 for d in [meta] + frames for key in _DISTORTION):
    logging.warning('%s: lens distortion coefficients are ignored (pinhole model assumed)', tpath)


def write_nerfstudio(scene: PosedScene, out_dir: str, image_dir: str = 'images') -> str:
  """Writes frames (PNG), transforms.json, the split file and points; returns transforms.json's
  path.

  scene.frames must be loaded ([N, H, W, 3]).
  """
  if scene.frames is None:
    raise ValueError('write_nerfstudio needs scene.frames: call scene.load_frames first')
  h, w = scene.image_size
  k_file = scene_lib.shift_principal_point(scene.intrinsics, PIXEL_OFFSET)
  shared = bool(np.all(k_file == k_file[:1]))
  rel = [f'{image_dir}/frame_{i:05d}.png' for i in range(len(scene))]
  c2w_gl = np.linalg.inv(scene.world_to_camera) @ FLIP_YZ
  frames = []
  for i in range(len(scene)):
    frame = dict(file_path=rel[i], transform_matrix=c2w_gl[i].tolist())
    if not shared:
      frame.update(_intrinsics_dict(k_file[i]))
    frames.append(frame)
  meta = dict(camera_model='OPENCV', w=w, h=h, **(_intrinsics_dict(k_file[0]) if shared else {}),
              k1=0.0, k2=0.0, p1=0.0, p2=0.0, frames=frames)
  fileio.makedirs(out_dir)
  if scene.points3d is not None:
    meta['ply_file_path'] = 'sparse_pc.ply'
    write_ply_ascii(os.path.join(out_dir, 'sparse_pc.ply'), scene.points3d, scene.point_colors)
  scene_lib.write_frames(scene.frames, [os.path.join(out_dir, r) for r in rel])
  path = os.path.join(out_dir, 'transforms.json')
  fileio.write_json_atomic(path, meta)
  scene_lib.write_split(scene, out_dir)
  return path


def _intrinsics_dict(k: np.ndarray) -> dict:
  return dict(fl_x=float(k[0, 0]), fl_y=float(k[1, 1]), cx=float(k[0, 2]), cy=float(k[1, 2]))


def write_ply_ascii(path: str, points: np.ndarray, colors: Optional[np.ndarray]) -> None:
  """points [P, 3] (+ colors uint8 [P, 3]) -> ASCII PLY, the layout ns-process-data writes."""
  colors = np.zeros(points.shape, np.uint8) if colors is None else colors
  header = ['ply', 'format ascii 1.0', f'element vertex {len(points)}', 'property float x',
            'property float y', 'property float z', 'property uint8 red', 'property uint8 green',
            'property uint8 blue', 'end_header']
  rows = [f'{x!r} {y!r} {z!r} {r} {g} {b}' for (x, y, z), (r, g, b) in
          zip(points.astype(np.float64).tolist(), colors.astype(int).tolist())]
  fileio.write_text_atomic(path, '\n'.join(header + rows) + '\n')


def read_ply_ascii(path: str) -> tuple:
  """ASCII PLY, x y z [red green blue] vertices -> (points [P, 3], colors uint8 [P, 3] | None)."""
  if not os.path.isfile(path):
    raise PosedFormatError(f'{path}: file does not exist')
  with open(path, 'rb') as f:
    lines = f.read().decode('ascii', errors='replace').splitlines()
  if len(lines) < 2 or lines[1].strip() != 'format ascii 1.0':
    raise PosedFormatError(f'{path}:2: only ASCII PLY is read (convert binary PLY first)')
  end = lines.index('end_header') if 'end_header' in lines else None
  if end is None:
    raise PosedFormatError(f'{path}: no end_header line')
  props = [ln.split()[-1] for ln in lines[:end] if ln.startswith('property')]
  count = next((int(ln.split()[-1]) for ln in lines if ln.startswith('element vertex')), 0)
  try:
    table = np.array([ln.split() for ln in lines[end + 1:end + 1 + count]], np.float64)
  except ValueError as e:
    raise PosedFormatError(f'{path}: malformed vertex line ({e})') from e
  if table.shape != (count, len(props)):
    raise PosedFormatError(f'{path}: expected {count} vertices of {len(props)} values')
  col = {p: i for i, p in enumerate(props)}
  points = table[:, [col['x'], col['y'], col['z']]]
  colors = (table[:, [col['red'], col['green'], col['blue']]].astype(np.uint8)
            if 'red' in col else None)
  return points, colors
