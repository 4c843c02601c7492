"""Depth alignment to a posed scene: a known inverse-depth affine recovered through the scene's
exported sparse points, scale recovered from matches triangulated with the known cameras, and
the stated fallbacks."""
import dataclasses

import numpy as np
import pytest

from maskvid import posed
from maskvid.geometry import camera
from maskvid.posed import align, export

H, W = 96, 128
S_TRUE, B_TRUE = 0.4, -0.12          # 1/d = S m + B  <=>  m = (1/d - B) / S = 2.5 / d + 0.3


@pytest.fixture(scope='module')
def rendered():
  """Test clip 4 (a moving camera with parallax), 16 frames, 2000 sparse points with tracks."""
  return export.synthetic_scene(4, 'test', 16, H, W, num_points=2000)


def _distorted(gt, rng, outliers=0.2, noise=0.005):
  """Monocular inverse depth: the known affine of 1/gt, 0.5% multiplicative noise, 20% of pixels
  replaced by uniform junk. -> (m [H, W], outlier mask [H, W])."""
  m = (1.0 / gt - B_TRUE) / S_TRUE
  m = m * (1 + noise * rng.standard_normal(m.shape))
  bad = rng.random(m.shape) < outliers
  m[bad] = rng.uniform(m.min(), m.max(), bad.sum())
  return m, bad


def test_fit_scale_shift_is_exact_under_gross_outliers():
  rng = np.random.default_rng(0)
  z = rng.uniform(1, 10, 400)
  m = (1 / z - B_TRUE) / S_TRUE
  m[:120] = rng.uniform(m.min(), m.max(), 120)          # 30% outliers
  s, b, inliers = align.fit_scale_shift(m, z)
  assert s == pytest.approx(S_TRUE, rel=1e-9) and b == pytest.approx(B_TRUE, abs=1e-9)
  assert inliers[120:].all() and inliers[:120].mean() < 0.1


def test_exported_colmap_points_recover_affine_distorted_depth(rendered, tmp_path):
  """The issue's number: <= 1% median relative error off the junk pixels (measured 0.59%;
  reported residual 1.2% over all 1145 targets, 65% inliers)."""
  scene, depth = rendered
  back = posed.read_scene(posed.write_colmap(scene, str(tmp_path)))
  gt = depth[0].astype(np.float64)
  m, bad = _distorted(gt, np.random.default_rng(0))
  r = align.align_depth(m, back, 0, is_inverse=True)
  assert r.method == 'points' and r.num_targets > 500
  assert r.scale == pytest.approx(S_TRUE, rel=0.01) and r.shift == pytest.approx(B_TRUE, abs=0.003)
  rel = np.abs(r.depth - gt) / gt
  assert np.median(rel[~bad]) <= 0.01
  assert r.residual < 0.02 and 0.5 < r.inlier_fraction < 0.9   # 20% junk + edge pixels


def test_points_without_tracks_are_filtered_by_occlusion(rendered):
  """A PLY / transforms.json scene has no tracks: points behind nearer ones in their cell go."""
  scene, depth = rendered
  untracked = dataclasses.replace(scene, point_visibility=None)
  uv, z = align.points_in_view(untracked, 0)
  _, z_tracked = align.points_in_view(scene, 0)
  surface = depth[0][np.round(uv[:, 1]).astype(int), np.round(uv[:, 0]).astype(int)]
  assert len(z) >= len(z_tracked)
  assert np.mean(np.abs(z - surface) <= 0.05 * surface) > 0.9
  gt = depth[0].astype(np.float64)
  m, bad = _distorted(gt, np.random.default_rng(1))
  r = align.align_depth(m, untracked, 0, is_inverse=True)
  assert np.median((np.abs(r.depth - gt) / gt)[~bad]) <= 0.01


def test_triangulated_matches_recover_scale(rendered):
  """No sparse points: guided SIFT matches between views 0 and 8, triangulated with the known
  cameras. 13 targets: too few for a shift, so scale only. Measured: scale error 0.04%, median
  depth error 0.34%."""
  scene, depth = rendered
  bare = dataclasses.replace(scene, points3d=None, point_colors=None, point_visibility=None)
  gt = depth[0].astype(np.float64)
  mono = 3.0 * gt * (1 + 0.005 * np.random.default_rng(2).standard_normal(gt.shape))
  r = align.align_depth(mono, bare, 0, second_view=8)
  assert r.method == 'triangulated/scale' and r.num_targets >= 8
  assert r.scale / 3.0 == pytest.approx(1.0, abs=0.03)       # 1/d = s / mono = s / (3 d)
  assert np.median(np.abs(r.depth - gt) / gt) < 0.03


def test_fallback_sets_median_depth_to_the_look_at_distance(rendered):
  scene, depth = rendered
  bare = dataclasses.replace(scene, points3d=None, point_colors=None, point_visibility=None,
                             frames=None)
  r = align.align_depth(3.0 * depth[0], bare, 0)
  assert r.method == 'fallback' and np.isnan(r.residual) and r.shift == 0.0
  assert np.median(r.depth) == pytest.approx(align.look_at_distance(scene, 0), rel=1e-4)


def test_look_at_distance_orbit_and_pan():
  k = camera.intrinsics_from_fov(50, H, W)
  ring = [camera.look_at((4 * np.cos(a), -1.0, 4 * np.sin(a)), (0, 0, 0)) for a in (0, 0.5, 1.0)]
  orbit = posed.make_scene(k, np.stack(ring), (H, W))
  assert align.look_at_distance(orbit, 0) == pytest.approx(np.sqrt(17), rel=1e-6)
  pan = [camera.look_at((1, -1, 2), (1 + np.cos(a), -1, 2 + np.sin(a))) for a in (0, 0.3, 0.6)]
  assert align.look_at_distance(posed.make_scene(k, np.stack(pan), (H, W)), 0) is None
  r = align.align_depth(np.full((H, W), 2.0), posed.make_scene(k, np.stack(pan), (H, W)), 0)
  assert r.method == 'none' and r.scale == 1.0
