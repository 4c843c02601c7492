"""One posed-scene type for every camera format the field ships (see docs/posed.md).

Conventions of `PosedScene` (maskvid's, the same as `maskvid.geometry` and the renderer):
  * camera axes OpenCV: x right, y down, z forward; `world_to_camera @ [X, 1]` is the camera-frame
    point;
  * pixel centres at integers: the centre of pixel (row i, column j) is (u, v) = (j, i), so a
    centred principal point is ((W - 1) / 2, (H - 1) / 2). The file formats put the first pixel's
    centre at (0.5, 0.5) instead; each reader and writer converts (c_ours = c_file - 0.5);
  * intrinsics in pixels of the frames as stored on disk.
Frames load lazily: readers check that every frame file exists and record its path;
`load_frames(scene)` reads them (and checks their size) when a caller needs pixels.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from maskvid import fileio

SPLIT_PATTERN = 'train_test_split_*.json'   # nerfstudio / SEVA: N = number of context views
ROTATION_TOL = 1e-3   # |R R^T - I| and |det R - 1| above this: not a rigid pose


class PosedFormatError(ValueError):
  """A posed-scene file that cannot be read; the message names the file (and line or field)."""


@dataclasses.dataclass(frozen=True)
class PosedScene:
  """N posed frames of one scene.

  intrinsics: float64 [N, 3, 3]; world_to_camera: float64 [N, 4, 4] (OpenCV axes).
  image_size: (H, W) of every frame. names: [N] frame names as the file lists them.
  frame_paths: [N] image files ('' for a frame only in memory). frames: uint8 [N, H, W, 3] or None
  (not loaded). points3d: float64 [P, 3] world points or None; point_colors: uint8 [P, 3] or None;
  point_visibility: bool [P, N] (point p observed in frame n: COLMAP tracks) or None (unknown).
  context_ids / target_ids: indices into the N frames (the benchmark split) or None.
  source: the file the cameras came from (error messages name it). meta: format extras.
  """
  intrinsics: np.ndarray
  world_to_camera: np.ndarray
  image_size: tuple
  names: tuple
  frame_paths: tuple = ()
  frames: Optional[np.ndarray] = None
  points3d: Optional[np.ndarray] = None
  point_colors: Optional[np.ndarray] = None
  point_visibility: Optional[np.ndarray] = None
  context_ids: Optional[tuple] = None
  target_ids: Optional[tuple] = None
  source: str = '<memory>'
  meta: dict = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return len(self.names)

  def camera_to_world(self) -> np.ndarray:
    """float64 [N, 4, 4]."""
    return np.linalg.inv(self.world_to_camera)


def make_scene(intrinsics, world_to_camera, image_size: Sequence[int], names=None, **kwargs
               ) -> PosedScene:
  """Builds and validates a PosedScene; intrinsics [3, 3] (shared) or [N, 3, 3]."""
  w2c = np.asarray(world_to_camera, np.float64)
  k = np.asarray(intrinsics, np.float64)
  if k.ndim == 2 and w2c.ndim == 3:
    k = np.broadcast_to(k, (len(w2c), 3, 3)).copy()
  n = len(w2c)
  names = tuple(names) if names is not None else tuple(f'{i:05d}' for i in range(n))
  for key in ('context_ids', 'target_ids'):
    if kwargs.get(key) is not None:
      kwargs[key] = tuple(int(i) for i in kwargs[key])
  for key in ('frame_paths',):
    if key in kwargs:
      kwargs[key] = tuple(kwargs[key])
  scene = PosedScene(intrinsics=k, world_to_camera=w2c,
                     image_size=tuple(int(s) for s in image_size), names=names, **kwargs)
  validate(scene)
  return scene


def validate(scene: PosedScene) -> None:
  """Raises PosedFormatError naming scene.source and the field (and frame) that is wrong."""
  src, n = scene.source, len(scene.names)
  def fail(msg):
    raise PosedFormatError(f'{src}: {msg}')
  if scene.world_to_camera.shape != (n, 4, 4):
    fail(f'world_to_camera must be [{n}, 4, 4] (one per frame), got {scene.world_to_camera.shape}')
  if scene.intrinsics.shape != (n, 3, 3):
    fail(f'intrinsics must be [{n}, 3, 3] (one per frame), got {scene.intrinsics.shape}')
  if len(scene.image_size) != 2 or min(scene.image_size) < 1:
    fail(f'image_size must be (H, W) positive, got {scene.image_size}')
  for i in range(n):
    _check_camera(scene.intrinsics[i], scene.world_to_camera[i], lambda m, i=i: fail(
        f'frame {i} ({scene.names[i]}): {m}'))
  if scene.frame_paths and len(scene.frame_paths) != n:
    fail(f'{len(scene.frame_paths)} frame paths for {n} cameras')
  if scene.frames is not None and scene.frames.shape != (n, *scene.image_size, 3):
    fail(f'frames must be [{n}, {scene.image_size[0]}, {scene.image_size[1]}, 3], '
         f'got {scene.frames.shape}')
  if scene.points3d is not None:
    p = scene.points3d
    if p.ndim != 2 or p.shape[1] != 3 or not np.isfinite(p).all():
      fail(f'points3d must be finite [P, 3], got shape {p.shape}')
    if scene.point_colors is not None and scene.point_colors.shape != p.shape:
      fail(f'point_colors must be [P, 3] like points3d {p.shape}, got {scene.point_colors.shape}')
    vis = scene.point_visibility
    if vis is not None and vis.shape != (len(p), n):
      fail(f'point_visibility must be [{len(p)}, {n}] (points x frames), got {vis.shape}')
  for key in ('context_ids', 'target_ids'):
    ids = getattr(scene, key)
    if ids is not None and any(not 0 <= i < n for i in ids):
      fail(f'{key} {list(ids)} index outside the {n} frames')


def _check_camera(k: np.ndarray, w2c: np.ndarray, fail) -> None:
  if not (np.isfinite(k).all() and np.isfinite(w2c).all()):
    fail('non-finite intrinsics or pose')
  if k[0, 0] <= 0 or k[1, 1] <= 0:
    fail(f'focal lengths must be positive, got fx={k[0, 0]}, fy={k[1, 1]}')
  r = w2c[:3, :3]
  if (np.abs(r @ r.T - np.eye(3)).max() > ROTATION_TOL or abs(np.linalg.det(r) - 1) > ROTATION_TOL
      or np.abs(w2c[3] - (0, 0, 0, 1)).max() > 0):
    fail('world_to_camera is not a rigid transform (rotation not orthonormal with det 1, or last '
         'row not 0 0 0 1)')


def image_size_of(path: str) -> tuple:
  """(H, W) of an image file, from its header only."""
  try:
    with Image.open(path) as im:
      return im.height, im.width
  except (OSError, ValueError) as e:
    raise PosedFormatError(f'{path}: cannot read image ({e})') from e


def check_frames_exist(paths: Sequence[str], listed_in: str) -> None:
  """Raises naming the first missing frame and the file that lists it."""
  for i, p in enumerate(paths):
    if not os.path.isfile(p):
      raise PosedFormatError(f'{listed_in}: frame {i} image {p} does not exist')


def load_frames(scene: PosedScene) -> PosedScene:
  """The scene with `frames` uint8 [N, H, W, 3] read from frame_paths (RGB; alpha dropped)."""
  if scene.frames is not None:
    return scene
  if len(scene.frame_paths) != len(scene):
    raise PosedFormatError(f'{scene.source}: no frame files to load')
  frames = np.empty((len(scene), *scene.image_size, 3), np.uint8)
  for i, p in enumerate(scene.frame_paths):
    try:
      with Image.open(p) as im:
        a = np.asarray(im.convert('RGB'))
    except (OSError, ValueError) as e:
      raise PosedFormatError(f'{p}: cannot read image ({e})') from e
    if a.shape[:2] != tuple(scene.image_size):
      raise PosedFormatError(f'{p}: image is {a.shape[0]}x{a.shape[1]} (HxW) but {scene.source} '
                             f'gives {scene.image_size[0]}x{scene.image_size[1]}')
    frames[i] = a
  return dataclasses.replace(scene, frames=frames)


def write_frames(frames: np.ndarray, paths: Sequence[str]) -> None:
  """uint8 [N, H, W, 3] -> one image per path (lossless PNG: round trips are exact), atomically."""
  for frame, p in zip(frames, paths):
    fileio.makedirs(os.path.dirname(p) or '.')
    fileio.write_image(p, np.asarray(frame, np.uint8))


def shift_principal_point(k: np.ndarray, delta: float) -> np.ndarray:
  """Intrinsics [..., 3, 3] with cx, cy moved by `delta` pixels (the pixel-centre convention)."""
  k = np.array(k, np.float64)
  k[..., 0, 2] += delta
  k[..., 1, 2] += delta
  return k


def load_json(path: str):
  """A JSON file; errors name the file and line."""
  if not os.path.isfile(path):
    raise PosedFormatError(f'{path}: file does not exist')
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise PosedFormatError(f'{path}:{e.lineno}: malformed JSON ({e.msg})') from e


def read_split(root: str, num_context: Optional[int] = None) -> tuple:
  """(train_ids, test_ids, available N) from root/train_test_split_{N}.json.

  With num_context None the split is used only when exactly one file exists.
  """
  found = {}
  for p in glob.glob(os.path.join(root, SPLIT_PATTERN)):
    m = re.fullmatch(r'train_test_split_(\d+)\.json', os.path.basename(p))
    if m:
      found[int(m.group(1))] = p
  if num_context is None and len(found) != 1:
    return None, None, sorted(found)
  if num_context is None:
    num_context = next(iter(found))
  if num_context not in found:
    raise PosedFormatError(f'{os.path.join(root, f"train_test_split_{num_context}.json")}: file '
                           f'does not exist (found N = {sorted(found)})')
  split = load_json(found[num_context])
  for key in ('train_ids', 'test_ids'):
    if not isinstance(split.get(key), list):
      raise PosedFormatError(f'{found[num_context]}: needs a list "{key}"')
  return split['train_ids'], split['test_ids'], sorted(found)


def write_split(scene: PosedScene, out_dir: str) -> None:
  """out_dir/train_test_split_{N}.json from the scene's context / target ids (when it has them)."""
  if scene.context_ids is not None and scene.target_ids is not None:
    fileio.write_json_atomic(
        os.path.join(out_dir, f'train_test_split_{len(scene.context_ids)}.json'),
        dict(train_ids=list(scene.context_ids), test_ids=list(scene.target_ids)))
