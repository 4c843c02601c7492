"""Camera paths for novel-view synthesis, as world_to_camera poses [T, 4, 4].

Every builder expresses its path in the frame of the source camera: pose 0 is the identity, so
the world frame is the source camera frame and a depth map of the source image unprojects
directly into world points. Distances scale with `scene_depth` (e.g. the median depth of the
source image) so one set of defaults suits scenes of any size.

Named paths (`make_trajectory`): orbit_left / orbit_right (orbit = orbit_right): the camera
circles a vertical axis through the point `scene_depth` ahead, keeping it centred;
dolly_in / dolly_out: the camera moves along its optical axis; pan_left / pan_right (pan =
pan_right): the camera turns in place; truck_left / truck_right: sideways translation.
A path ending in `.json` is read by `load_poses_json`.
"""
import json
import os

import numpy as np

from maskvid.geometry.camera import invert_pose, rotation_matrix


def _ramp(num_frames: int) -> np.ndarray:
  if num_frames < 1:
    raise ValueError(f'num_frames must be >= 1, got {num_frames}')
  return np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)


def _c2w_list_to_w2c(rotations, centres) -> np.ndarray:
  c2w = np.tile(np.eye(4), (len(rotations), 1, 1))
  c2w[:, :3, :3] = rotations
  c2w[:, :3, 3] = centres
  return invert_pose(c2w).astype(np.float32)


def orbit(num_frames: int, scene_depth: float, angle_deg: float = 20.0) -> np.ndarray:
  """Orbit about the vertical (y) axis through (0, 0, scene_depth); pose 0 = identity.

  Positive angle_deg moves the camera to its right (+x) while turning to keep the pivot
  centred. Returns world_to_camera [T, 4, 4].
  """
  pivot = np.array([0.0, 0.0, float(scene_depth)])
  rots, centres = [], []
  for a in _ramp(num_frames) * np.deg2rad(angle_deg):
    # Rotating the whole rig (camera + offset to pivot) by -a about y puts the camera at
    # x = d sin(a) > 0 with its forward axis (-sin a, 0, cos a) still aimed at the pivot.
    r = rotation_matrix('y', -a)
    rots.append(r)
    centres.append(pivot + r @ (-pivot))
  return _c2w_list_to_w2c(rots, centres)


def dolly(num_frames: int, distance: float) -> np.ndarray:
  """Translation along the optical axis; distance > 0 moves forward (dolly in)."""
  t = _ramp(num_frames) * distance
  rots = [np.eye(3)] * len(t)
  centres = [np.array([0.0, 0.0, d]) for d in t]
  return _c2w_list_to_w2c(rots, centres)


def pan(num_frames: int, angle_deg: float = 15.0) -> np.ndarray:
  """Rotation in place about the camera's y axis; angle_deg > 0 turns right (toward +x)."""
  rots = [rotation_matrix('y', a) for a in _ramp(num_frames) * np.deg2rad(angle_deg)]
  return _c2w_list_to_w2c(rots, [np.zeros(3)] * len(rots))


def truck(num_frames: int, distance: float) -> np.ndarray:
  """Sideways translation along the camera's x axis; distance > 0 moves right."""
  t = _ramp(num_frames) * distance
  return _c2w_list_to_w2c([np.eye(3)] * len(t), [np.array([d, 0.0, 0.0]) for d in t])


TRAJECTORIES = ('orbit', 'orbit_left', 'orbit_right', 'dolly_in', 'dolly_out', 'pan', 'pan_left',
                'pan_right', 'truck_left', 'truck_right')


def make_trajectory(name: str, num_frames: int, scene_depth: float, *,
                    strength: float = 1.0) -> np.ndarray:
  """A named path (see module docstring) or a `.json` pose file -> world_to_camera [T, 4, 4].

  strength scales every motion (1.0: orbit 20 deg, dolly 25% of scene_depth, pan 15 deg,
  truck 15% of scene_depth). A JSON file must hold exactly `num_frames` poses.
  """
  if not np.isfinite(scene_depth) or scene_depth <= 0:
    raise ValueError(f'scene_depth must be a positive finite number, got {scene_depth}')
  if name.endswith('.json'):
    poses = load_poses_json(name)
    if poses.shape[0] != num_frames:
      raise ValueError(f'trajectory file {name} holds {poses.shape[0]} poses but num_frames is '
                       f'{num_frames}')
    return poses
  s = float(strength)
  builders = {
      'orbit': lambda: orbit(num_frames, scene_depth, 20.0 * s),
      'orbit_right': lambda: orbit(num_frames, scene_depth, 20.0 * s),
      'orbit_left': lambda: orbit(num_frames, scene_depth, -20.0 * s),
      'dolly_in': lambda: dolly(num_frames, 0.25 * s * scene_depth),
      'dolly_out': lambda: dolly(num_frames, -0.25 * s * scene_depth),
      'pan': lambda: pan(num_frames, 15.0 * s),
      'pan_right': lambda: pan(num_frames, 15.0 * s),
      'pan_left': lambda: pan(num_frames, -15.0 * s),
      'truck_right': lambda: truck(num_frames, 0.15 * s * scene_depth),
      'truck_left': lambda: truck(num_frames, -0.15 * s * scene_depth),
  }
  if name not in builders:
    raise ValueError(f'trajectory must be one of {TRAJECTORIES} or a path to a .json file, '
                     f'got {name!r}')
  return builders[name]()


def load_poses_json(path: str) -> np.ndarray:
  """Reads a JSON camera path -> world_to_camera float32 [T, 4, 4].

  Accepted layouts: a list of 4x4 (or 3x4) row-major world_to_camera matrices; or a list of
  objects each with "world_to_camera" or "camera_to_world"; or an object {"poses": <either list>}.
  Poses use OpenCV axes. They are used as given (not re-based to the first pose).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'trajectory file not found: {path}')
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f'trajectory file {path} is not readable JSON: {e}') from e
  if isinstance(data, dict):
    data = data.get('poses')
  if not isinstance(data, list) or not data:
    raise ValueError(f'trajectory file {path}: expected a non-empty list of poses')
  poses = []
  for i, item in enumerate(data):
    invert = False
    if isinstance(item, dict):
      if 'world_to_camera' in item:
        item = item['world_to_camera']
      elif 'camera_to_world' in item:
        item, invert = item['camera_to_world'], True
      else:
        raise ValueError(f'trajectory file {path}: pose {i} has neither "world_to_camera" nor '
                         '"camera_to_world"')
    m = np.asarray(item, np.float64)
    if m.shape == (3, 4):
      m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
      raise ValueError(f'trajectory file {path}: pose {i} must be a finite 4x4 or 3x4 matrix, got '
                       f'shape {m.shape}')
    r = m[:3, :3]
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-4):
      raise ValueError(f'trajectory file {path}: pose {i} rotation is not orthonormal')
    poses.append(invert_pose(m) if invert else m)
  return np.stack(poses).astype(np.float32)


def save_poses_json(path: str, world_to_camera: np.ndarray) -> None:
  """Writes poses [T, 4, 4] as a JSON list of world_to_camera matrices."""
  with open(path, 'w') as f:
    json.dump({'poses': np.asarray(world_to_camera, np.float64).tolist()}, f)
