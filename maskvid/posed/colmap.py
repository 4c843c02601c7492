"""COLMAP text models: `cameras.txt`, `images.txt`, `points3D.txt` (colmap.github.io/format.html).

File conventions:
  * images.txt: two lines per image, `IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME` then the
    POINTS2D line (may be empty). (Q, T) is world-to-camera: X_cam = R(Q) X_world + T, with R(Q)
    the Hamilton unit quaternion, scalar first, and camera axes OpenCV (ours: no axis flip).
  * cameras.txt: `CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]`; the first pinhole parameters (f or fx fy,
    then cx cy) are read; distortion parameters are ignored with a warning. Pixel centres at +0.5
    (COLMAP: "the center of the upper left pixel is (0.5, 0.5)"): cx_ours = cx - 0.5.
  * points3D.txt: `POINT3D_ID X Y Z R G B ERROR TRACK[]` (world points; tracks not kept).
Images are ordered by NAME. Layout: `<scene>/sparse/0/*.txt` with frames under `<scene>/images/`
and an optional `<scene>/train_test_split_{N}.json` (as nerfstudio's).
"""
from __future__ import annotations

import os
from typing import Iterator, Optional

import numpy as np
from absl import logging

from maskvid import fileio
from maskvid.posed import scene as scene_lib
from maskvid.posed.scene import PosedFormatError, PosedScene

PIXEL_OFFSET = 0.5
# model -> (number of params, index of fx, fy, cx, cy; fy == fx for the single-focal models)
CAMERA_MODELS = {
    'SIMPLE_PINHOLE': (3, (0, 0, 1, 2)), 'PINHOLE': (4, (0, 1, 2, 3)),
    'SIMPLE_RADIAL': (4, (0, 0, 1, 2)), 'RADIAL': (5, (0, 0, 1, 2)),
    'OPENCV': (8, (0, 1, 2, 3)), 'FULL_OPENCV': (12, (0, 1, 2, 3)),
    'OPENCV_FISHEYE': (8, (0, 1, 2, 3)), 'SIMPLE_RADIAL_FISHEYE': (4, (0, 0, 1, 2)),
    'RADIAL_FISHEYE': (5, (0, 0, 1, 2)), 'FOV': (5, (0, 1, 2, 3)),
    'THIN_PRISM_FISHEYE': (12, (0, 1, 2, 3)),
}
_PINHOLE = ('SIMPLE_PINHOLE', 'PINHOLE')


def quaternion_to_rotation(q) -> np.ndarray:
  """Unit quaternion (w, x, y, z), Hamilton -> rotation [3, 3] (normalised first)."""
  w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
  return np.array([
      [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
      [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
      [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def rotation_to_quaternion(r: np.ndarray) -> np.ndarray:
  """Rotation [3, 3] -> unit quaternion (w, x, y, z) with w >= 0 (the largest-diagonal branch
  keeps it accurate near 180 degrees)."""
  r = np.asarray(r, np.float64)
  t = np.trace(r)
  if t > 0:
    s = 2.0 * np.sqrt(1.0 + t)
    q = np.array([0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s,
                  (r[1, 0] - r[0, 1]) / s])
  else:
    i = int(np.argmax(np.diag(r)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
    q = np.empty(4)
    q[0] = (r[k, j] - r[j, k]) / s
    q[1 + i] = 0.25 * s
    q[1 + j] = (r[j, i] + r[i, j]) / s
    q[1 + k] = (r[k, i] + r[i, k]) / s
  q /= np.linalg.norm(q)
  return q if q[0] >= 0 else -q


def _lines(path: str) -> Iterator[tuple]:
  """(1-based line number, stripped line) of a text file, comments dropped, blanks kept."""
  if not os.path.isfile(path):
    raise PosedFormatError(f'{path}: file does not exist')
  with open(path) as f:
    for no, line in enumerate(f, 1):
      if not line.lstrip().startswith('#'):
        yield no, line.strip()


def _numbers(tokens, path, no, what):
  try:
    values = [float(t) for t in tokens]
  except ValueError as e:
    raise PosedFormatError(f'{path}:{no}: {what}: not a number ({e})') from e
  if not np.isfinite(values).all():
    raise PosedFormatError(f'{path}:{no}: {what}: non-finite value')
  return values


def read_cameras(path: str) -> dict:
  """cameras.txt -> {camera_id: (K [3, 3] ours, (H, W))}."""
  out, warned = {}, False
  for no, line in _lines(path):
    if not line:
      continue
    tok = line.split()
    if len(tok) < 4 or tok[1] not in CAMERA_MODELS:
      raise PosedFormatError(f'{path}:{no}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS with '
                             f'MODEL in {sorted(CAMERA_MODELS)}, got {line!r}')
    count, (ifx, ify, icx, icy) = CAMERA_MODELS[tok[1]]
    params = _numbers(tok[4:], path, no, 'PARAMS')
    if len(params) != count:
      raise PosedFormatError(f'{path}:{no}: {tok[1]} has {count} params, got {len(params)}')
    if tok[1] not in _PINHOLE and any(params[4 if ifx != ify else 3:]) and not warned:
      logging.warning('%s: %s distortion ignored (pinhole model assumed)', path, tok[1])
      warned = True
    k = np.array([[params[ifx], 0, params[icx]], [0, params[ify], params[icy]], [0, 0, 1.0]])
    w, h = _numbers(tok[2:4], path, no, 'WIDTH HEIGHT')
    out[int(tok[0])] = (scene_lib.shift_principal_point(k, -PIXEL_OFFSET), (int(h), int(w)))
  if not out:
    raise PosedFormatError(f'{path}: no cameras')
  return out


def read_images(path: str) -> list:
  """images.txt -> [(name, camera_id, world_to_camera [4, 4], line number, image_id)] in file
  order."""
  out, lines = [], _lines(path)
  for no, line in lines:
    if not line:
      continue
    tok = line.split()
    if len(tok) < 10:
      raise PosedFormatError(f'{path}:{no}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID '
                             f'NAME, got {len(tok)} fields: {line!r}')
    q = _numbers(tok[1:5], path, no, 'QW QX QY QZ')
    t = _numbers(tok[5:8], path, no, 'TX TY TZ')
    if abs(np.linalg.norm(q) - 1.0) > 1e-3:
      raise PosedFormatError(f'{path}:{no}: quaternion norm {np.linalg.norm(q):.6f} is not 1')
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = quaternion_to_rotation(q), t
    out.append((' '.join(tok[9:]), int(tok[8]), w2c, no, int(tok[0])))
    next(lines, None)        # the POINTS2D line (not kept)
  return out


def read_points3d(path: str) -> tuple:
  """points3D.txt -> (points float64 [P, 3], colors uint8 [P, 3], [P] sets of track IMAGE_IDs)."""
  pts, cols, tracks = [], [], []
  for no, line in _lines(path):
    if not line:
      continue
    tok = line.split()
    if len(tok) < 8:
      raise PosedFormatError(f'{path}:{no}: expected POINT3D_ID X Y Z R G B ERROR TRACK[], '
                             f'got {line!r}')
    v = _numbers(tok[1:7], path, no, 'X Y Z R G B')
    pts.append(v[:3])
    cols.append(v[3:6])
    if len(tok[8:]) % 2:
      raise PosedFormatError(f'{path}:{no}: TRACK must be (IMAGE_ID, POINT2D_IDX) pairs')
    tracks.append({int(i) for i in tok[8::2]})
  return (np.asarray(pts, np.float64).reshape(-1, 3),
          np.clip(np.asarray(cols).reshape(-1, 3), 0, 255).astype(np.uint8), tracks)


def find_model_dir(path: str) -> str:
  """The folder holding cameras.txt: path itself, path/sparse/0 or path/sparse."""
  for d in (path, os.path.join(path, 'sparse', '0'), os.path.join(path, 'sparse')):
    if os.path.isfile(os.path.join(d, 'cameras.txt')):
      return d
  raise PosedFormatError(f'{path}: no cameras.txt in it, in sparse/0 or in sparse')


def _images_dir(model_dir: str) -> str:
  for d in (os.path.join(model_dir, '..', '..', 'images'), os.path.join(model_dir, '..', 'images'),
            os.path.join(model_dir, 'images')):
    if os.path.isdir(d):
      return os.path.normpath(d)
  return os.path.normpath(os.path.join(model_dir, '..', '..', 'images'))


def read_colmap(path: str, images_dir: Optional[str] = None,
                num_context: Optional[int] = None) -> PosedScene:
  """A COLMAP text model (scene folder or model folder) -> PosedScene, images ordered by NAME.

  A `train_test_split_{N}.json` beside images/ (ids into the NAME order) gives the split.
  """
  model = find_model_dir(path)
  cam_path, img_path = os.path.join(model, 'cameras.txt'), os.path.join(model, 'images.txt')
  cameras = read_cameras(cam_path)
  images = sorted(read_images(img_path), key=lambda x: x[0])
  if not images:
    raise PosedFormatError(f'{img_path}: no images')
  sizes = set()
  for name, cam_id, _, no, _ in images:
    if cam_id not in cameras:
      raise PosedFormatError(f'{img_path}:{no}: CAMERA_ID {cam_id} is not in {cam_path}')
    sizes.add(cameras[cam_id][1])
  if len(sizes) > 1:
    raise PosedFormatError(f'{cam_path}: cameras of different image sizes {sorted(sizes)}: one '
                           'size per scene is supported')
  images_dir = images_dir or _images_dir(model)
  paths = [os.path.join(images_dir, name) for name, *_ in images]
  scene_lib.check_frames_exist(paths, img_path)
  points, colors, visibility = None, None, None
  if os.path.isfile(os.path.join(model, 'points3D.txt')):
    points, colors, tracks = read_points3d(os.path.join(model, 'points3D.txt'))
    index = {image_id: i for i, (*_, image_id) in enumerate(images)}
    visibility = np.zeros((len(points), len(images)), bool)
    for p, track in enumerate(tracks):
      visibility[p, [index[i] for i in track if i in index]] = True
  train_ids, test_ids, available = scene_lib.read_split(os.path.dirname(images_dir), num_context)
  return scene_lib.make_scene(
      np.stack([cameras[im[1]][0] for im in images]), np.stack([im[2] for im in images]),
      sizes.pop(), [n for n, *_ in images], frame_paths=paths, points3d=points,
      point_colors=colors, point_visibility=visibility, context_ids=train_ids,
      target_ids=test_ids, source=img_path,
      meta=dict(format='colmap', available_splits=available))


def _observations(scene: PosedScene, k_file: np.ndarray, points: np.ndarray) -> tuple:
  """Per image [(x, y, point index)] (file pixel convention) and per point [(IMAGE_ID,
  POINT2D_IDX)], from scene.point_visibility (no observations when it is None)."""
  obs = [[] for _ in range(len(scene))]
  tracks = [[] for _ in range(len(points))]
  if scene.point_visibility is None:
    return obs, tracks
  for i in range(len(scene)):
    seen = np.flatnonzero(scene.point_visibility[:, i])
    cam = points[seen] @ scene.world_to_camera[i, :3, :3].T + scene.world_to_camera[i, :3, 3]
    uv = cam[:, :2] / cam[:, 2:] * np.diag(k_file[i])[:2] + k_file[i, :2, 2]
    for (x, y), p in zip(uv.tolist(), seen.tolist()):
      tracks[p].append((i + 1, len(obs[i])))
      obs[i].append((x, y, p))
  return obs, tracks


def write_colmap(scene: PosedScene, out_dir: str) -> str:
  """Writes out_dir/images/*.png and out_dir/sparse/0/{cameras,images,points3D}.txt (PINHOLE,
  one camera per distinct intrinsics); returns the model folder. scene.frames must be loaded."""
  if scene.frames is None:
    raise ValueError('write_colmap needs scene.frames: call scene.load_frames first')
  model = os.path.join(out_dir, 'sparse', '0')
  fileio.makedirs(model)
  h, w = scene.image_size
  k_file = scene_lib.shift_principal_point(scene.intrinsics, PIXEL_OFFSET)
  cams, cam_ids = [], []
  for k in k_file:
    match = [i for i, c in enumerate(cams) if np.array_equal(c, k)]
    if not match:
      cams.append(k)
    cam_ids.append((match[0] if match else len(cams) - 1) + 1)
  cam_lines = [f'{i + 1} PINHOLE {w} {h} ' + ' '.join(repr(float(v)) for v in
                                                       (k[0, 0], k[1, 1], k[0, 2], k[1, 2]))
               for i, k in enumerate(cams)]
  names = [f'frame_{i:05d}.png' for i in range(len(scene))]
  pts = scene.points3d if scene.points3d is not None else np.zeros((0, 3))
  cols = scene.point_colors if scene.point_colors is not None else np.zeros(pts.shape, np.uint8)
  obs, tracks = _observations(scene, k_file, pts)
  img_lines = []
  for i, (pose, name) in enumerate(zip(scene.world_to_camera, names)):
    q, t = rotation_to_quaternion(pose[:3, :3]), pose[:3, 3]
    img_lines += [' '.join([str(i + 1)] + [repr(float(v)) for v in (*q, *t)]
                           + [str(cam_ids[i]), name]),
                  ' '.join(f'{x!r} {y!r} {p + 1}' for x, y, p in obs[i])]
  pt_lines = [f'{i + 1} {x!r} {y!r} {z!r} {r} {g} {b} 0.0' + ''.join(f' {a} {c}' for a, c in tr)
              for i, ((x, y, z), (r, g, b), tr)
              in enumerate(zip(pts.tolist(), cols.astype(int).tolist(), tracks))]
  for fname, header, lines in (
      ('cameras.txt', '# CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]', cam_lines),
      ('images.txt', '# IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n# POINTS2D[] as '
       '(X, Y, POINT3D_ID)', img_lines),
      ('points3D.txt', '# POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[]', pt_lines)):
    fileio.write_text_atomic(os.path.join(model, fname), '\n'.join([header] + lines) + '\n')
  scene_lib.write_frames(scene.frames, [os.path.join(out_dir, 'images', n) for n in names])
  scene_lib.write_split(scene, out_dir)
  return model
