"""3D consistency of generated views under ground-truth geometry (synthetic splits only).

Both metrics take generated frames of one clip and that clip's ground truth (depth, intrinsics,
world_to_camera), with the camera conventions of `maskvid.geometry` (OpenCV axes and pixel centres
as in `maskvid.geometry.camera`, z-depth). Colours are compared in [0, 1] units (frames come in [-1, 1]).

Reprojection error (`reprojection_error`): for an ordered pair of frames (i, j), every pixel p of
frame j is lifted to 3D with the GT depth of j, moved into camera i and projected; the generated
frame i is sampled there (bilinear). This is frame i warped into frame j. A pixel counts only if
it lands inside frame i and is visible there (its depth in camera i agrees with frame i's GT depth
within `depth_tol`, relative), so occluded and out-of-view pixels are excluded. The error is the
mean absolute colour difference to the generated frame j over counted pixels and channels, pooled
over all ordered pairs of the frames given. A generated video that is consistent with the scene's
true geometry scores ~0 (up to interpolation across texture edges); per-frame hallucinations that
disagree between views raise it. Lighting here is view-independent, so GT renders score ~0.

Chamfer distance (`chamfer_distance`): point clouds with colour, 6-D points
`(xyz / D, colour_weight * rgb)` where xyz are world points unprojected with GT depth and cameras
from every valid pixel of the frames, rgb in [0, 1] is the generated (or GT) colour there, and D is
the bounding-box diagonal of the GT cloud (so space is in scene units). The distance is symmetric:
`0.5 * (mean_a min_b |a - b| + mean_b min_a |a - b|)` (Euclidean, not squared). Because both
clouds use the same GT depth, the xyz parts coincide and the metric measures colour agreement with
a spatial tolerance: a wrong colour costs min(colour error, distance to a nearby point with the
right colour). It does not test the geometry a generator implies (that would need depth predicted
from the generated views); it tests that generated colours sit on the right 3D surface points.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from maskvid.geometry import camera


def _check_clip(frames, depth, world_to_camera, name='frames'):
  frames = np.asarray(frames, np.float64)
  depth = np.asarray(depth, np.float64)
  w2c = np.asarray(world_to_camera, np.float64)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f'{name} must be [T, H, W, 3] in [-1, 1], got shape {frames.shape}')
  if depth.shape != frames.shape[:3]:
    raise ValueError(f'depth must be [T, H, W] = {frames.shape[:3]}, got {depth.shape}')
  if w2c.shape != (frames.shape[0], 4, 4):
    raise ValueError(f'world_to_camera must be [T, 4, 4] with T={frames.shape[0]}, got {w2c.shape}')
  return (frames + 1.0) / 2.0, depth, w2c


def _valid_depth(depth):
  return np.isfinite(depth) & (depth > 0)


def _bilinear(img, u, v):
  """Samples img [H, W, C] at continuous image coords (u, v) [...] (clamped at the border)."""
  h, w = img.shape[:2]
  x, y = u - camera.PIXEL_CENTER, v - camera.PIXEL_CENTER
  x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  cx = lambda a: np.clip(a, 0, w - 1)
  cy = lambda a: np.clip(a, 0, h - 1)
  top = img[cy(y0), cx(x0)] * (1 - fx) + img[cy(y0), cx(x0 + 1)] * fx
  bot = img[cy(y0 + 1), cx(x0)] * (1 - fx) + img[cy(y0 + 1), cx(x0 + 1)] * fx
  return top * (1 - fy) + bot * fy


def warp_into(src_frame, src_depth, src_w2c, dst_depth, dst_w2c, intrinsics, depth_tol=0.05):
  """Frame `src` warped into camera `dst` by backward sampling with GT depth.

  src_frame [H, W, C]; depths [H, W]; poses [4, 4] world_to_camera; intrinsics [3, 3].
  Returns (warped [H, W, C], valid bool [H, W]): valid where the dst pixel's 3D point projects
  inside src and is visible there.
  """
  h, w = dst_depth.shape
  pts = camera.unproject(dst_depth, intrinsics)                       # dst camera frame
  pts = camera.transform_points(camera.relative_pose(dst_w2c, src_w2c), pts)
  uv, z = camera.project(pts, intrinsics)
  u, v = uv[..., 0], uv[..., 1]
  # Nearest pixel index of a continuous coordinate (centre of pixel 0 at camera.PIXEL_CENTER).
  col = np.floor(u - camera.PIXEL_CENTER + 0.5)
  row = np.floor(v - camera.PIXEL_CENTER + 0.5)
  with np.errstate(invalid='ignore'):
    inside = (_valid_depth(dst_depth) & np.isfinite(u) & np.isfinite(v)
              & (col >= 0) & (col < w) & (row >= 0) & (row < h))
  ui = np.clip(np.nan_to_num(col), 0, w - 1).astype(int)
  vi = np.clip(np.nan_to_num(row), 0, h - 1).astype(int)
  seen = src_depth[vi, ui]
  with np.errstate(invalid='ignore'):
    visible = _valid_depth(seen) & (np.abs(z - seen) <= depth_tol * np.abs(z))
  valid = inside & visible
  warped = _bilinear(src_frame, np.where(valid, u, 0.0), np.where(valid, v, 0.0))
  return warped, valid


def reprojection_error(frames, depth, intrinsics, world_to_camera, frame_ids=None,
                       depth_tol: float = 0.05, target_mask=None) -> float:
  """Mean absolute colour error ([0, 1] units) of frames warped into each other with GT geometry.

  frames: generated [T, H, W, 3] in [-1, 1]; depth [T, H, W] GT z-depth; intrinsics [3, 3];
  world_to_camera [T, 4, 4]. frame_ids: which frames take part (default all); every ordered pair
  (i, j), i != j, of them is used. target_mask: optional bool [T, H, W]: only these pixels of
  the target frame j are scored (e.g. the generated ones: is what the model made where nothing
  was given consistent with what the other frames show there?). Returns NaN when no pixel is
  co-visible.
  """
  rgb, depth, w2c = _check_clip(frames, depth, world_to_camera)
  k = np.asarray(intrinsics, np.float64)
  ids = list(range(rgb.shape[0])) if frame_ids is None else [int(i) for i in frame_ids]
  total, count = 0.0, 0
  for i in ids:
    for j in ids:
      if i == j:
        continue
      warped, valid = warp_into(rgb[i], depth[i], w2c[i], depth[j], w2c[j], k, depth_tol)
      if target_mask is not None:
        valid = valid & np.asarray(target_mask[j], bool)
      if valid.any():
        total += float(np.abs(warped - rgb[j])[valid].sum())
        count += int(valid.sum()) * rgb.shape[-1]
  return total / count if count else float('nan')


def colored_point_cloud(frames, depth, intrinsics, world_to_camera, frame_ids=None) -> np.ndarray:
  """[N, 6] points (world xyz, rgb in [0, 1]) from every valid-depth pixel of the chosen frames."""
  rgb, depth, w2c = _check_clip(frames, depth, world_to_camera)
  ids = range(rgb.shape[0]) if frame_ids is None else [int(i) for i in frame_ids]
  out = []
  for t in ids:
    valid = _valid_depth(depth[t])
    pts = camera.transform_points(camera.invert_pose(w2c[t]),
                                  camera.unproject(np.where(valid, depth[t], 1.0), intrinsics))
    out.append(np.concatenate([pts[valid], rgb[t][valid]], axis=-1))
  return np.concatenate(out, axis=0) if out else np.zeros((0, 6))


def chamfer(points_a: np.ndarray, points_b: np.ndarray) -> float:
  """Symmetric Chamfer distance 0.5 * (mean_a min_b |a-b| + mean_b min_a |a-b|), points [N, D]."""
  a, b = np.asarray(points_a, np.float64), np.asarray(points_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f'points must be [N, D] with equal D, got {a.shape} and {b.shape}')
  if len(a) == 0 or len(b) == 0:
    return float('nan')
  d_ab, _ = cKDTree(b).query(a, k=1)
  d_ba, _ = cKDTree(a).query(b, k=1)
  return float(0.5 * (d_ab.mean() + d_ba.mean()))


def chamfer_distance(frames, gt_frames, depth, intrinsics, world_to_camera, frame_ids=None,
                     colour_weight: float = 1.0) -> float:
  """Colour-attached 6-D Chamfer between GT and generated clouds (module docstring has the rule).

  frames, gt_frames: [T, H, W, 3] in [-1, 1]; depth [T, H, W]; intrinsics [3, 3];
  world_to_camera [T, 4, 4]; frame_ids: frames used (default all).
  """
  gen = colored_point_cloud(frames, depth, intrinsics, world_to_camera, frame_ids)
  gt = colored_point_cloud(gt_frames, depth, intrinsics, world_to_camera, frame_ids)
  if len(gt) == 0:
    return float('nan')
  diag = float(np.linalg.norm(gt[:, :3].max(0) - gt[:, :3].min(0))) or 1.0
  scale = np.array([1.0 / diag] * 3 + [colour_weight] * 3)
  return chamfer(gen * scale, gt * scale)
