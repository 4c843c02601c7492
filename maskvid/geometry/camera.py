"""Pinhole camera maths in numpy (float64 inside, float32 out where arrays are returned).

Conventions (see package docstring): OpenCV axes, pixel centres at (j, i), z-depth.
A pose is a 4x4 rigid transform; `world_to_camera` maps homogeneous world points into the camera
frame (X_cam = R X_world + t), `camera_to_world` is its inverse.
"""
from typing import Tuple

import numpy as np

PIXEL_CENTER = 0.0  # image coordinate of the centre of pixel index 0 (OpenCV)


def intrinsics_from_fov(fov_deg: float, height: int, width: int, *, axis: str = 'x') -> np.ndarray:
  """3x3 pinhole intrinsics, square pixels, principal point at the image centre ((W-1)/2, (H-1)/2).

  fov_deg is the full field of view along `axis` ('x': horizontal, 'y': vertical).
  """
  if not 0.0 < fov_deg < 180.0:
    raise ValueError(f'fov_deg must be in (0, 180), got {fov_deg}')
  if height <= 0 or width <= 0:
    raise ValueError(f'height and width must be positive, got {height}x{width}')
  if axis not in ('x', 'y'):
    raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
  extent = width if axis == 'x' else height
  f = 0.5 * extent / np.tan(0.5 * np.deg2rad(fov_deg))
  return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]],
                  np.float32)


def scale_intrinsics(intrinsics: np.ndarray, sy: float, sx: float) -> np.ndarray:
  """Intrinsics of the same camera after resizing the image by (sy, sx).

  Resizing aligns pixel corners (as cv2/jax.image do), so with centres at integers
  c' = (c + 0.5) * s - 0.5.
  """
  k = np.asarray(intrinsics, np.float64).copy()
  k[0] *= sx
  k[1] *= sy
  k[0, 2] += 0.5 * sx - 0.5
  k[1, 2] += 0.5 * sy - 0.5
  k[2] = (0.0, 0.0, 1.0)
  return k.astype(np.float32)


def pixel_grid(height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
  """Continuous (u, v) coordinates of pixel centres, each [H, W]."""
  v, u = np.meshgrid(np.arange(height, dtype=np.float64) + PIXEL_CENTER,
                     np.arange(width, dtype=np.float64) + PIXEL_CENTER, indexing='ij')
  return u, v


def unproject(depth: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
  """Camera-frame 3D points of every pixel. depth [H, W] (z-depth) -> points [H, W, 3]."""
  depth = np.asarray(depth, np.float64)
  if depth.ndim != 2:
    raise ValueError(f'depth must be [H, W], got shape {depth.shape}')
  k = np.asarray(intrinsics, np.float64)
  u, v = pixel_grid(*depth.shape)
  x = (u - k[0, 2] - k[0, 1] * (v - k[1, 2]) / k[1, 1]) / k[0, 0]
  y = (v - k[1, 2]) / k[1, 1]
  with np.errstate(invalid='ignore'):   # unknown depth (nan / inf) gives non-finite points
    return np.stack([x * depth, y * depth, depth], axis=-1)


def project(points: np.ndarray, intrinsics: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Camera-frame points [..., 3] -> (uv [..., 2] continuous pixel coords, z [...]).

  Points with z <= 0 get uv = nan (behind the camera).
  """
  p = np.asarray(points, np.float64)
  k = np.asarray(intrinsics, np.float64)
  z = p[..., 2]
  with np.errstate(divide='ignore', invalid='ignore'):
    safe = np.where(z > 0, z, np.nan)
    x, y = p[..., 0] / safe, p[..., 1] / safe
    u = k[0, 0] * x + k[0, 1] * y + k[0, 2]
    v = k[1, 1] * y + k[1, 2]
  return np.stack([u, v], axis=-1), z


def transform_points(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Applies a 4x4 rigid transform to points [..., 3].

  Points of unknown depth (nan / inf coordinates) stay non-finite, silently: callers mask them.
  """
  pose = np.asarray(pose, np.float64)
  with np.errstate(invalid='ignore', over='ignore'):
    return np.asarray(points, np.float64) @ pose[:3, :3].T + pose[:3, 3]


def invert_pose(pose: np.ndarray) -> np.ndarray:
  """Inverse of rigid transforms [..., 4, 4] (uses R^T, exact for rotations)."""
  pose = np.asarray(pose, np.float64)
  if pose.shape[-2:] != (4, 4):
    raise ValueError(f'pose must be [..., 4, 4], got shape {pose.shape}')
  rt = np.swapaxes(pose[..., :3, :3], -1, -2)
  out = np.zeros_like(pose)
  out[..., :3, :3] = rt
  out[..., :3, 3] = -np.einsum('...ij,...j->...i', rt, pose[..., :3, 3])
  out[..., 3, 3] = 1.0
  return out


def camera_to_world(world_to_camera_pose: np.ndarray) -> np.ndarray:
  """camera_to_world [..., 4, 4] from world_to_camera [..., 4, 4]."""
  return invert_pose(world_to_camera_pose)


def world_to_camera(camera_to_world_pose: np.ndarray) -> np.ndarray:
  """world_to_camera [..., 4, 4] from camera_to_world [..., 4, 4]."""
  return invert_pose(camera_to_world_pose)


def compose(*poses: np.ndarray) -> np.ndarray:
  """Matrix product of 4x4 transforms, left to right (compose(a, b) = a @ b)."""
  out = np.eye(4)
  for p in poses:
    out = out @ np.asarray(p, np.float64)
  return out


def relative_pose(src_world_to_camera: np.ndarray, dst_world_to_camera: np.ndarray) -> np.ndarray:
  """Transform taking source-camera points into the destination camera: dst_w2c @ inv(src_w2c)."""
  return np.asarray(dst_world_to_camera, np.float64) @ invert_pose(src_world_to_camera)


def look_at(eye, target, up=(0.0, -1.0, 0.0)) -> np.ndarray:
  """world_to_camera [4, 4] of a camera at `eye` looking at `target` (OpenCV axes).

  `up` is the world direction that should appear up in the image; with y-down worlds (the
  default convention here) that is -y.
  """
  eye, target, up = (np.asarray(a, np.float64) for a in (eye, target, up))
  forward = target - eye
  norm = np.linalg.norm(forward)
  if norm < 1e-12:
    raise ValueError('look_at: eye and target coincide')
  z = forward / norm
  x = np.cross(-up, z)  # camera x (right) = down x forward
  if np.linalg.norm(x) < 1e-9:
    raise ValueError('look_at: up is parallel to the viewing direction')
  x /= np.linalg.norm(x)
  y = np.cross(z, x)
  c2w = np.eye(4)
  c2w[:3, :3] = np.stack([x, y, z], axis=1)
  c2w[:3, 3] = eye
  return invert_pose(c2w)


def rotation_matrix(axis: str, angle_rad: float) -> np.ndarray:
  """3x3 right-handed rotation about a coordinate axis ('x', 'y' or 'z')."""
  c, s = np.cos(angle_rad), np.sin(angle_rad)
  if axis == 'x':
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float64)
  if axis == 'y':
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float64)
  if axis == 'z':
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)
  raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")
