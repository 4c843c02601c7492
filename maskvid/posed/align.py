"""Monocular depth aligned to a posed scene: scale and shift in inverse depth, fitted robustly.

The rule (docs/posed.md): 1 / d_aligned = s * m + b, with m the monocular inverse depth
(1 / depth of a DepthEstimator, or a disparity map as a network outputs it). (s, b) are fitted to
sparse metric targets (u, v, z) of the input view, taken from, in order:
  1. 'points': the scene's sparse points seen from that view (COLMAP points3D; with tracks, the
     points whose track holds the view; without, every point projecting inside it except those
     more than 10% behind the nearest point of their 4x4-pixel cell);
  2. 'triangulated': SIFT matches between the input view and a second context view, guided by
     the known cameras (candidates <= 1 px from the epipolar line, Lowe ratio 0.8, mutual nearest),
     triangulated with the known cameras (cv2.triangulatePoints), kept when in front of both
     cameras, reprojected <= 1 px and seen under >= 2 degrees of parallax (a pan has none);
  3. 'fallback': no targets: scale only (b = 0), the median aligned depth set to the distance from
     the input camera to the point nearest every camera's optical axis (the look-at centre of
     the scene's path); residual nan. With parallel axes (forward motion) nothing is fitted
     (s = 1, b = 0, method 'none').
Fit: RANSAC over 2-point samples (relative inverse-depth error |(s m + b) z - 1| < 5% is an
inlier; 200 samples, seeded), then iteratively reweighted least squares with Huber weights
(delta = 1.345 robust sigmas, sigma = 1.4826 MAD) on the inliers. With fewer than 20 inliers, or
inliers whose inverse depths spread less than 50% ((p90 - p10) / median), the shift is not
identifiable (a shift fitted on one wall extrapolates wildly to the others): only the scale is
fitted (b = 0, RANSAC over 1-point samples; method + '/scale'). The residual reported is the
median |d_aligned - z| / z over all targets (outliers included).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import cv2
import numpy as np
from scipy import ndimage

from maskvid.geometry import camera
from maskvid.posed.scene import PosedScene

INLIER_TOL = 0.05
MIN_SPREAD = 0.5          # inverse-depth spread of the inliers below which only s is fitted
MIN_SHIFT_INLIERS = 20    # fewer inliers: only s is fitted
RANSAC_ITERS = 200
MIN_TARGETS = 8
RATIO = 0.8
SIFT_CONTRAST = 0.02   # OpenCV's default 0.04 finds ~20-60 keypoints on a 96x128 render
MAX_PIXEL_ERROR = 1.0
MIN_PARALLAX_DEG = 2.0   # below it a 1 px error moves the depth by > ~5% at 96x128
_CELL = 4
_OCCLUDED = 1.1


class Alignment(NamedTuple):
  depth: np.ndarray        # float32 [H, W] aligned z-depth
  scale: float             # s in 1/d = s * m + b
  shift: float             # b
  method: str              # 'points' | 'triangulated' (+ '/scale': b = 0) | 'fallback' | 'none'
  residual: float          # median |d_aligned - z| / z over the targets (nan without targets)
  inlier_fraction: float
  num_targets: int


def _solve(m, z, w, with_shift=True):
  """Weighted least squares of (s m + b) z = 1 -> (s, b) (b = 0 without shift). m, z, w [P]."""
  a = (np.stack([m * z, z], -1) if with_shift else (m * z)[:, None]) * w[:, None]
  sol, *_ = np.linalg.lstsq(a, w, rcond=None)
  return (sol[0], sol[1]) if with_shift else (sol[0], 0.0)


def _rel_error(s, b, m, z):
  return np.abs((s * m + b) * z - 1.0)


def _ransac(m, z, rng, iters, inlier_tol, with_shift):
  """Best (s, b) of minimal samples (2 points, or 1 with b = 0) by inlier count."""
  best, best_count = (1.0 / float(np.median(m * z)), 0.0), -1
  for _ in range(iters):
    if with_shift:
      i, j = rng.choice(len(m), 2, replace=False)
      if abs(m[i] - m[j]) < 1e-12:
        continue
      s = (1 / z[i] - 1 / z[j]) / (m[i] - m[j])
      sb = (s, 1 / z[i] - s * m[i])
    else:
      i = rng.integers(len(m))
      sb = (1 / (z[i] * m[i]), 0.0)
    count = int((_rel_error(*sb, m, z) < inlier_tol).sum())
    if count > best_count:
      best, best_count = sb, count
  return best


def fit_scale_shift(m: np.ndarray, z: np.ndarray, *, seed: int = 0, iters: int = RANSAC_ITERS,
                    inlier_tol: float = INLIER_TOL, huber_steps: int = 10,
                    with_shift: bool = True) -> tuple:
  """Robust (s, b) with 1/z ~ s m + b: RANSAC then Huber IRLS on the inliers (b = 0 without
  with_shift). m: [P] monocular inverse depth at the targets; z: [P] target depths (> 0).
  Returns (s, b, inliers bool [P]).
  """
  m, z = np.asarray(m, np.float64), np.asarray(z, np.float64)
  if len(m) < 2:
    raise ValueError(f'need at least 2 targets to fit scale and shift, got {len(m)}')
  s, b = _ransac(m, z, np.random.default_rng(seed), iters, inlier_tol, with_shift)
  inliers = _rel_error(s, b, m, z) < inlier_tol
  if inliers.sum() < 2:
    inliers = np.ones_like(inliers)
  w = np.ones(int(inliers.sum()))
  for _ in range(huber_steps):
    s, b = _solve(m[inliers], z[inliers], w, with_shift)
    r = (s * m[inliers] + b) * z[inliers] - 1.0
    delta = 1.345 * max(1.4826 * np.median(np.abs(r - np.median(r))), 1e-9)
    w = np.sqrt(np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-12)))
  return float(s), float(b), _rel_error(s, b, m, z) < inlier_tol


def depth_spread(z: np.ndarray) -> float:
  """(p90 - p10) / median of inverse depth [P]: how well targets pin a shift as well as a scale."""
  inv = 1.0 / np.asarray(z, np.float64)
  return float((np.percentile(inv, 90) - np.percentile(inv, 10)) / np.median(inv))


def points_in_view(scene: PosedScene, view: int) -> tuple:
  """The scene's sparse points as targets of `view`: (uv [P, 2] pixels, z [P]); see rule 1."""
  if scene.points3d is None or not len(scene.points3d):
    return np.zeros((0, 2)), np.zeros(0)
  uv, z = camera.project(camera.transform_points(scene.world_to_camera[view], scene.points3d),
                         scene.intrinsics[view])
  h, w = scene.image_size
  with np.errstate(invalid='ignore'):
    keep = (z > 0) & (uv[:, 0] >= -0.5) & (uv[:, 0] < w - 0.5) & (uv[:, 1] >= -0.5) & (
        uv[:, 1] < h - 0.5)
  if scene.point_visibility is not None:
    keep &= scene.point_visibility[:, view]
  else:
    keep &= _front_of_cell(uv, z, keep, w)
  return uv[keep], z[keep]


def _front_of_cell(uv, z, keep, width):
  """bool [P]: not more than 10% behind the nearest kept point of its 4x4-pixel cell."""
  cell = np.zeros(len(z), np.int64)
  cell[keep] = ((uv[keep, 1] + 0.5) // _CELL) * (width // _CELL + 1) + (uv[keep, 0] + 0.5) // _CELL
  nearest = np.full(cell.max() + 1 if len(cell) else 0, np.inf)
  np.minimum.at(nearest, cell[keep], z[keep])
  return z <= _OCCLUDED * nearest[cell]


def _fundamental(k_a, k_b, w2c_a, w2c_b):
  rel = camera.relative_pose(w2c_a, w2c_b)
  t = rel[:3, 3]
  tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
  return np.linalg.inv(k_b).T @ tx @ rel[:3, :3] @ np.linalg.inv(k_a)


def _sift(image: np.ndarray) -> tuple:
  """uint8 [H, W, 3] -> (keypoints [K, 2] pixels, descriptors float [K, 128])."""
  kps, desc = cv2.SIFT_create(contrastThreshold=SIFT_CONTRAST).detectAndCompute(
      cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), None)
  if desc is None:
    return np.zeros((0, 2)), np.zeros((0, 128))
  return np.array([k.pt for k in kps]).reshape(-1, 2), desc.astype(np.float64)


def match_features(image_a: np.ndarray, image_b: np.ndarray, fundamental: np.ndarray) -> tuple:
  """Guided SIFT matching: (pa [M, 2], pb [M, 2]) pixel coordinates (OpenCV's = ours).

  Candidates in b lie <= 1 px from a's epipolar line (the known cameras give it); the nearest
  descriptor must beat the second nearest candidate by Lowe's ratio and be mutual. Unguided
  matching finds almost nothing on repetitive textures (4 ratio-test matches on a 96x128 render).
  """
  pa, da = _sift(image_a)
  pb, db = _sift(image_b)
  if len(pa) < 1 or len(pb) < 1:
    return np.zeros((0, 2)), np.zeros((0, 2))
  lines = np.c_[pa, np.ones(len(pa))] @ fundamental.T                      # in b, [Na, 3]
  dist = np.abs(lines @ np.c_[pb, np.ones(len(pb))].T) / np.hypot(lines[:, :1], lines[:, 1:2])
  d2 = ((da ** 2).sum(1)[:, None] - 2 * da @ db.T + (db ** 2).sum(1)[None]).clip(0)
  d2 = np.where(dist <= MAX_PIXEL_ERROR, d2, np.inf)
  rows = np.arange(len(pa))
  order = np.argsort(d2, 1)
  best = order[:, 0]
  second = d2[rows, order[:, 1]] if len(pb) > 1 else np.full(len(pa), np.inf)
  ok = np.isfinite(d2[rows, best]) & (d2[rows, best] < RATIO ** 2 * second)
  ok &= np.argmin(d2, 0)[best] == rows                                    # mutual
  return pa[ok], pb[best[ok]]


def triangulate(image_a, image_b, k_a, k_b, w2c_a, w2c_b) -> tuple:
  """Targets in view a from matches with view b and the known cameras (rule 2).

  image_*: uint8 [H, W, 3]; k_*: [3, 3]; w2c_*: [4, 4]. Returns (uv [P, 2] in a, z [P] in a).
  """
  pa, pb = match_features(image_a, image_b, _fundamental(k_a, k_b, w2c_a, w2c_b))
  if not len(pa):
    return np.zeros((0, 2)), np.zeros(0)
  proj_a = np.asarray(k_a, np.float64) @ np.asarray(w2c_a, np.float64)[:3]
  proj_b = np.asarray(k_b, np.float64) @ np.asarray(w2c_b, np.float64)[:3]
  x = cv2.triangulatePoints(proj_a, proj_b, pa.T.astype(np.float64), pb.T.astype(np.float64))
  world = (x[:3] / x[3]).T
  uv_a, z_a = camera.project(camera.transform_points(w2c_a, world), k_a)
  uv_b, z_b = camera.project(camera.transform_points(w2c_b, world), k_b)
  with np.errstate(invalid='ignore'):
    ok = ((z_a > 0) & (z_b > 0) & (np.linalg.norm(uv_a - pa, axis=-1) <= MAX_PIXEL_ERROR)
          & (np.linalg.norm(uv_b - pb, axis=-1) <= MAX_PIXEL_ERROR)
          & (_parallax_deg(world, w2c_a, w2c_b) >= MIN_PARALLAX_DEG))
  return pa[ok], z_a[ok]


def _parallax_deg(world, w2c_a, w2c_b):
  """Angle (degrees) at each world point [P, 3] between the rays to the two camera centres."""
  ca = camera.invert_pose(w2c_a)[:3, 3]
  cb = camera.invert_pose(w2c_b)[:3, 3]
  ra, rb = ca - world, cb - world
  cos = (ra * rb).sum(-1) / np.maximum(np.linalg.norm(ra, axis=-1) * np.linalg.norm(rb, axis=-1),
                                       1e-12)
  return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def look_at_distance(scene: PosedScene, view: int) -> Optional[float]:
  """Distance from camera `view` to the point nearest all optical axes, or None when the axes
  are near parallel (the least-squares system is ill-conditioned) or the point is behind it."""
  c2w = scene.camera_to_world()
  a, rhs = np.zeros((3, 3)), np.zeros(3)
  for pose in c2w:
    d = pose[:3, 2] / np.linalg.norm(pose[:3, 2])
    proj = np.eye(3) - np.outer(d, d)        # distance to the axis through pose[:3, 3] along d
    a += proj
    rhs += proj @ pose[:3, 3]
  extent = np.ptp(c2w[:, :3, 3], axis=0).max()
  if np.linalg.eigvalsh(a / len(c2w))[0] < 0.01 or extent < 1e-6:   # parallel axes; a pure pan
    return None
  centre = np.linalg.solve(a, rhs)
  z = camera.transform_points(scene.world_to_camera[view], centre)[2]
  return float(z) if z > 0.05 * extent else None


def _sample(m: np.ndarray, uv: np.ndarray) -> np.ndarray:
  """Bilinear m [H, W] at continuous pixel coordinates uv [P, 2]."""
  return ndimage.map_coordinates(m, [uv[:, 1], uv[:, 0]], order=1, mode='nearest')


def _apply(m, s, b):
  inv = s * m + b
  floor = 1e-3 * np.median(inv[inv > 0]) if (inv > 0).any() else 1e-6
  return (1.0 / np.maximum(inv, floor)).astype(np.float32)


def align_depth(mono: np.ndarray, scene: PosedScene, view: int = 0, *,
                second_view: Optional[int] = None, is_inverse: bool = False,
                seed: int = 0) -> Alignment:
  """Aligns a monocular depth of frame `view` to the scene (rules 1-3 of the module docstring).

  mono: [H, W] z-depth (or inverse depth / disparity with is_inverse) at scene.image_size.
  second_view: the context view to triangulate with (default: the scene's other context view,
  else the frame farthest from `view`); needs scene.frames loaded.
  """
  mono = np.asarray(mono, np.float64)
  if mono.shape != tuple(scene.image_size):
    raise ValueError(f'mono must be [H, W] = {tuple(scene.image_size)}, got {mono.shape}')
  m = mono if is_inverse else 1.0 / np.maximum(mono, 1e-12)
  uv, z = points_in_view(scene, view)
  method = 'points'
  if len(z) < MIN_TARGETS and scene.frames is not None and len(scene) > 1:
    other = _second_view(scene, view) if second_view is None else second_view
    uv, z = triangulate(scene.frames[view], scene.frames[other], scene.intrinsics[view],
                        scene.intrinsics[other], scene.world_to_camera[view],
                        scene.world_to_camera[other])
    method = 'triangulated'
  if len(z) < MIN_TARGETS:
    return _fallback(m, scene, view)
  mt = _sample(m, uv)
  s, b, inliers = fit_scale_shift(mt, z, seed=seed)
  if inliers.sum() < MIN_SHIFT_INLIERS or depth_spread(z[inliers]) < MIN_SPREAD:
    s, b, inliers = fit_scale_shift(mt, z, seed=seed, with_shift=False)
    method += '/scale'
  depth = _apply(m, s, b)
  pred = 1.0 / np.maximum(s * mt + b, 1e-12)
  return Alignment(depth, s, b, method, float(np.median(np.abs(pred - z) / z)),
                   float(inliers.mean()), len(z))


def _second_view(scene: PosedScene, view: int) -> int:
  ctx = [i for i in (scene.context_ids or ()) if i != view]
  if ctx:
    return ctx[0]
  centres = scene.camera_to_world()[:, :3, 3]
  return int(np.argmax(np.linalg.norm(centres - centres[view], axis=-1)))


def _fallback(m, scene, view) -> Alignment:
  dist = look_at_distance(scene, view) if len(scene) > 1 else None
  if dist is None:
    return Alignment(_apply(m, 1.0, 0.0), 1.0, 0.0, 'none', float('nan'), 0.0, 0)
  s = 1.0 / (dist * float(np.median(m)))     # median(1 / (s m)) = dist
  return Alignment(_apply(m, s, 0.0), s, 0.0, 'fallback', float('nan'), 0.0, 0)
