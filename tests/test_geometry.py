"""Cameras, camera paths and z-buffered forward warping."""
import json

import numpy as np
import pytest

from maskvid import geometry as g
from maskvid.geometry import trajectory


def _texture(h, w, seed=0):
  return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def _translation(x=0.0, y=0.0, z=0.0):
  """world_to_camera of a camera centred at (x, y, z) with identity rotation."""
  p = np.eye(4)
  p[:3, 3] = (-x, -y, -z)
  return p


def test_intrinsics_project_unproject_roundtrip():
  k = g.intrinsics_from_fov(90.0, 32, 48)
  assert k[0, 0] == pytest.approx(24.0) and k[1, 1] == pytest.approx(24.0)
  assert (k[0, 2], k[1, 2]) == (23.5, 15.5)
  depth = np.random.RandomState(1).uniform(1.0, 5.0, (32, 48))
  pts = g.unproject(depth, k)
  uv, z = g.project(pts, k)
  u, v = g.pixel_grid(32, 48)
  np.testing.assert_allclose(uv[..., 0], u, atol=1e-9)
  np.testing.assert_allclose(uv[..., 1], v, atol=1e-9)
  np.testing.assert_allclose(z, depth)
  with pytest.raises(ValueError, match='fov_deg'):
    g.intrinsics_from_fov(180.0, 32, 32)


def test_pose_helpers():
  w2c = g.look_at(eye=(1.0, -0.5, -3.0), target=(0.0, 0.0, 0.0))
  c2w = g.camera_to_world(w2c)
  np.testing.assert_allclose(c2w @ w2c, np.eye(4), atol=1e-12)
  np.testing.assert_allclose(g.world_to_camera(c2w), w2c, atol=1e-12)
  # The target lies on the optical axis, in front of the camera.
  p = g.transform_points(w2c, np.zeros(3))
  assert abs(p[0]) < 1e-9 and abs(p[1]) < 1e-9 and p[2] > 0
  # World "up" (-y) appears up in the image (negative camera y).
  up = g.transform_points(w2c, np.array([0.0, -1.0, 0.0])) - p
  assert up[1] < 0


@pytest.mark.parametrize('name', trajectory.TRAJECTORIES)
def test_named_trajectories_start_at_identity_and_are_rigid(name):
  poses = g.make_trajectory(name, 5, scene_depth=3.0)
  assert poses.shape == (5, 4, 4) and poses.dtype == np.float32
  np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-6)
  r = poses[:, :3, :3]
  np.testing.assert_allclose(r @ np.swapaxes(r, 1, 2), np.broadcast_to(np.eye(3), r.shape),
                             atol=1e-5)
  assert not np.allclose(poses[-1], np.eye(4), atol=1e-3)


def test_orbit_keeps_pivot_centred_and_dolly_moves_forward():
  poses = g.make_trajectory('orbit', 4, scene_depth=2.5)
  for p in poses:
    q = g.transform_points(p, np.array([0.0, 0.0, 2.5]))
    np.testing.assert_allclose(q, [0.0, 0.0, 2.5], atol=1e-5)
  centre = g.camera_to_world(poses[-1])[:3, 3]
  assert centre[0] > 0.1  # orbit (= orbit_right) moves the camera to +x
  dolly = g.make_trajectory('dolly_in', 3, scene_depth=4.0)
  np.testing.assert_allclose(g.camera_to_world(dolly[-1])[:3, 3], [0.0, 0.0, 1.0], atol=1e-6)


def test_json_trajectory_roundtrip_and_errors(tmp_path):
  poses = g.make_trajectory('orbit_left', 3, scene_depth=2.0)
  path = tmp_path / 'path.json'
  trajectory.save_poses_json(str(path), poses)
  np.testing.assert_allclose(g.make_trajectory(str(path), 3, 2.0), poses, atol=1e-6)
  c2w = [{'camera_to_world': g.camera_to_world(p).tolist()} for p in poses]
  path.write_text(json.dumps(c2w))
  np.testing.assert_allclose(g.load_poses_json(str(path)), poses, atol=1e-6)
  with pytest.raises(ValueError, match='holds 3 poses'):
    g.make_trajectory(str(path), 4, 2.0)
  path.write_text(json.dumps([[[1, 0, 0, 0], [0, 1, 0, 0]]]))
  with pytest.raises(ValueError, match='pose 0'):
    g.load_poses_json(str(path))
  with pytest.raises(ValueError, match='trajectory must be one of'):
    g.make_trajectory('spiral', 3, 2.0)


def test_identity_warp_returns_image_with_full_mask():
  img = _texture(32, 32)
  depth = np.full((32, 32), 4.0)
  depth[8:16, 8:16] = 1.5  # discontinuities do not matter when nothing moves
  k = g.intrinsics_from_fov(60.0, 32, 32)
  r = g.forward_warp(img, depth, k, np.eye(4), np.eye(4))
  assert r.mask.all()
  np.testing.assert_array_equal(r.image, img)
  np.testing.assert_allclose(r.depth, depth, rtol=1e-6)
  # A pure rotation has no parallax either: no pixel is flagged for its depth.
  pan = g.make_trajectory('pan_right', 2, 4.0, strength=0.2)[1]
  r = g.forward_warp(img, depth, k, np.eye(4), pan)
  r_off = g.forward_warp(img, depth, k, np.eye(4), pan, max_rel_depth_gradient=None)
  np.testing.assert_array_equal(r.mask, r_off.mask)
  assert r.mask.mean() > 0.85


def test_translation_shifts_plane_by_f_b_over_z():
  img = _texture(32, 32, seed=2)
  k = g.intrinsics_from_fov(60.0, 32, 32)
  f, z = float(k[0, 0]), 5.0
  for shift in (1, 3):
    b = shift * z / f  # camera moves right by b: the plane moves left by f * b / z pixels
    r = g.forward_warp(img, np.full((32, 32), z), k, np.eye(4), _translation(x=b))
    np.testing.assert_array_equal(r.image[:, :32 - shift], img[:, shift:])
    assert r.mask[:, :32 - shift].all() and not r.mask[:, 32 - shift:].any()
  # Vertical: camera moves down (+y) -> content moves up.
  r = g.forward_warp(img, np.full((32, 32), z), k, np.eye(4), _translation(y=2 * z / f))
  np.testing.assert_array_equal(r.image[:30], img[2:])
  assert not r.mask[30:].any()


def test_disocclusion_hole_is_exactly_where_geometry_says():
  """A near square (z=2) in front of a far plane (z=4); the camera moves right by b.

  The far plane shifts left by 2 px, the square by 4 px; the band of far plane that the square
  hid in the source and that the square no longer covers (2 columns) has nothing to show.
  """
  img = _texture(32, 32, seed=3)
  k = g.intrinsics_from_fov(60.0, 32, 32)
  f = float(k[0, 0])
  depth = np.full((32, 32), 4.0)
  depth[8:16, 8:16] = 2.0
  b = 2 * 4.0 / f
  expected_hole = np.zeros((32, 32), bool)
  expected_hole[8:16, 12:14] = True   # square's old right part, minus the far plane's cover
  expected_hole[:, 30:] = True        # out of the source view
  r = g.forward_warp(img, depth, k, np.eye(4), _translation(x=b), max_rel_depth_gradient=None)
  np.testing.assert_array_equal(~r.mask, expected_hole)
  np.testing.assert_array_equal(r.image[8:16, 4:12], img[8:16, 8:16])  # square moved 4 px
  np.testing.assert_array_equal(r.image[20:, :30], img[20:, 2:32])     # far plane moved 2 px
  np.testing.assert_array_equal(r.depth[8:16, 4:12], 2.0)
  # With the discontinuity test on, the invalid set grows by the square's outline only.
  r2 = g.forward_warp(img, depth, k, np.eye(4), _translation(x=b))
  assert (~r2.mask >= expected_hole).all()
  near = np.zeros((32, 32), bool)
  near[5:19, 2:18] = True  # the source square's 1-px outline, warped by 2-4 px
  assert not ((~r2.mask) & ~expected_hole & ~near).any()
  assert (~r2.mask & ~expected_hole).sum() > 20


def test_cracks_do_not_let_background_through():
  """Dolly toward a near plate: its magnified splats leave cracks the far wall must not fill."""
  img = _texture(32, 32, seed=4)
  depth = np.full((32, 32), 10.0)
  depth[4:28, 4:28] = 2.0
  k = g.intrinsics_from_fov(60.0, 32, 32)
  inside = np.zeros((32, 32), bool)
  inside[4:28, 4:28] = True  # the plate covers at least this after moving closer
  raw = g.forward_warp(img, depth, k, np.eye(4), _translation(z=0.6), crack_rel_tol=None)
  assert not (inside & raw.mask & (raw.depth > 5)).any()  # see-through pixels are invalid
  assert raw.mask[inside].mean() < 0.8                      # ... and there are many cracks
  r = g.forward_warp(img, depth, k, np.eye(4), _translation(z=0.6))
  assert r.mask[inside].all()                               # crack filling closes them
  np.testing.assert_allclose(r.depth[inside], 1.4, rtol=1e-5)


def test_crack_filling_uses_the_flanking_pixels_of_one_surface():
  img = _texture(32, 32, seed=5)
  k = g.intrinsics_from_fov(60.0, 32, 32)
  plane = np.full((32, 32), 3.0)
  raw = g.forward_warp(img, plane, k, np.eye(4), _translation(z=1.0), crack_rel_tol=None)
  r = g.forward_warp(img, plane, k, np.eye(4), _translation(z=1.0))
  assert raw.mask.mean() < 0.6 and r.mask.mean() > 0.95
  np.testing.assert_array_equal(r.image[raw.mask], raw.image[raw.mask])  # splats untouched
  filled = r.mask & ~raw.mask
  v = raw.image.astype(np.float64)
  pad = np.pad(v, ((1, 1), (1, 1), (0, 0)))
  nb = lambda dy, dx: pad[1 + dy:33 + dy, 1 + dx:33 + dx]
  candidates = [np.round((nb(0, 1) + nb(0, -1)) / 2), np.round((nb(1, 0) + nb(-1, 0)) / 2),
                np.round((nb(1, 1) + nb(-1, -1) + nb(1, -1) + nb(-1, 1)) / 4)]
  ok = np.any([np.all(c == r.image, -1) for c in candidates], 0)
  assert ok[filled].all()
  # Different surfaces on the two sides (a disocclusion) are not bridged.
  step = np.full((32, 32), 3.0)
  step[:, :16] = 1.5  # the near half moves 2 px left, the far half 1 px: a 1-px gap opens
  b = 2 * 1.5 / float(k[0, 0])
  r = g.forward_warp(img, step, k, np.eye(4), _translation(x=b), max_rel_depth_gradient=None)
  assert (~r.mask[:, :31]).sum(1).tolist() == [1] * 32


def test_warp_to_cameras_and_bad_input():
  img = _texture(16, 16)
  depth = np.full((16, 16), 3.0)
  k = g.intrinsics_from_fov(60.0, 16, 16)
  poses = g.make_trajectory('truck_right', 3, 3.0)
  r = g.warp_to_cameras(img, depth, k, np.eye(4), poses)
  assert r.image.shape == (3, 16, 16, 3) and r.mask.shape == (3, 16, 16)
  assert r.mask[0].all() and r.mask[1].mean() > r.mask[2].mean()
  with pytest.raises(ValueError, match='depth'):
    g.forward_warp(img, depth[:8], k, np.eye(4), np.eye(4))


def test_warping_synthetic_frame_matches_rendered_frame_where_valid():
  """Frame 0 of a rendered clip, warped with its GT depth and poses, predicts frame k."""
  from maskvid.data import synthetic
  clip = synthetic.render_clip(3, 'test', 4, 32, 32)
  rgb, depth = clip['rgb'].astype(np.float64), clip['depth']
  for k in (1, 3):
    r = g.forward_warp(clip['rgb'][0], depth[0], clip['intrinsics'],
                       clip['world_to_camera'][0], clip['world_to_camera'][k])
    assert r.mask.mean() > 0.3
    # Valid pixels land on the same surface (their warped depth is the rendered depth), except
    # where something the source never saw now covers them.
    same_surface = r.mask & (np.abs(r.depth - depth[k]) < 0.05 * depth[k])
    assert same_surface.sum() > 0.85 * r.mask.sum()
    err = np.abs(r.image.astype(np.float64) - rgb[k]).max(-1)
    unwarped = np.abs(rgb[0] - rgb[k]).max(-1)
    # Nearest-pixel resampling of 32x32 textures leaves some error; not moving at all is far worse.
    assert np.median(err[same_surface]) < 8
    assert err[same_surface].mean() < 0.35 * unwarped[same_surface].mean()


def test_warp_into_a_smaller_target_camera():
  """Same pose, half-resolution target intrinsics: every target pixel takes a source pixel of
  its own 2x2 block."""
  img = _texture(32, 32, seed=6)
  k = g.intrinsics_from_fov(60.0, 32, 32)
  k_half = g.scale_intrinsics(k, 0.5, 0.5)
  np.testing.assert_allclose(k_half, g.intrinsics_from_fov(60.0, 16, 16), rtol=1e-6)
  r = g.forward_warp(img, np.full((32, 32), 2.0), k, np.eye(4), np.eye(4), dst_intrinsics=k_half,
                     out_shape=(16, 16))
  assert r.image.shape == (16, 16, 3) and r.mask.all()
  blocks = img.reshape(16, 2, 16, 2, 3).transpose(0, 2, 1, 3, 4).reshape(16, 16, 4, 3)
  assert all((blocks[i, j] == r.image[i, j]).all(-1).any() for i in range(16) for j in range(16))


def test_unknown_depth_warps_without_numpy_warnings():
  """Pixels of unknown depth (nan / inf) are holes in the warp, not RuntimeWarnings."""
  import warnings  # pylint: disable=g-import-not-at-top
  from maskvid.geometry import warp as warp_lib  # pylint: disable=g-import-not-at-top
  rgb = np.full((8, 8, 3), 100, np.uint8)
  depth = np.full((8, 8), 2.0, np.float32)
  depth[2:4, 2:4] = np.nan
  depth[5, 5] = np.inf
  k = g.intrinsics_from_fov(60.0, 8, 8)
  poses = np.stack([np.eye(4), g.look_at((0.2, 0.0, 0.0), (0.2, 0.0, 1.0))])
  with warnings.catch_warnings():
    warnings.simplefilter('error', RuntimeWarning)
    pts = g.transform_points(poses[1], g.unproject(depth, k))
    g.project(pts, k)
    out = warp_lib.warp_to_cameras(rgb, depth, k, np.eye(4), poses)
  assert not np.isfinite(pts[2:4, 2:4]).all()
  assert out.image.shape[0] == 2
