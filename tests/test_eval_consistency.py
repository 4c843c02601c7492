"""maskvid.eval.consistency: reprojection error and colour Chamfer under ground-truth geometry."""
import numpy as np
import pytest

from maskvid.data import synthetic

from maskvid.data import scenes
from maskvid.eval import consistency


@pytest.fixture(scope='module')
def clip():
  c = synthetic.render_clip(int(scenes.split_seeds('test', 1)[0]), 'test', 4, 16, 16)
  c['frames'] = c['rgb'].astype(np.float32) / 127.5 - 1.0
  return c


def _geo(c):
  return c['depth'], c['intrinsics'], c['world_to_camera']


def test_reprojection_small_for_ground_truth_and_grows_when_corrupted(clip):
  gt = consistency.reprojection_error(clip['frames'], *_geo(clip))
  assert 0.0 <= gt < 0.08          # bilinear sampling across texture edges only (16x16)
  bad = clip['frames'].copy()
  bad[2] = np.random.RandomState(0).uniform(-1, 1, bad[2].shape)
  err = consistency.reprojection_error(bad, *_geo(clip))
  assert err > gt + 0.05
  shifted = clip['frames'].copy()
  shifted[2] = np.roll(shifted[2], 3, axis=1)       # inconsistent with the true geometry
  assert consistency.reprojection_error(shifted, *_geo(clip)) > gt + 0.01


def test_target_mask_scores_only_those_pixels(clip):
  """Corrupting pixels outside target_mask leaves the masked score at the clean one's level;
  corrupting pixels inside it raises it."""
  mask = np.zeros(clip['frames'].shape[:3], bool)
  mask[:, :, :8] = True                                  # the left half of every frame
  clean = consistency.reprojection_error(clip['frames'], *_geo(clip), target_mask=mask)
  noise = np.random.RandomState(1).uniform(-1, 1, clip['frames'].shape).astype(np.float32)
  right = np.where(mask[..., None], clip['frames'], noise)
  left = np.where(mask[..., None], noise, clip['frames'])
  # Right-half noise still reaches left-half targets as warp sources, so allow a little.
  assert consistency.reprojection_error(right, *_geo(clip), target_mask=mask) < clean + 0.1
  assert consistency.reprojection_error(left, *_geo(clip), target_mask=mask) > clean + 0.2
  none = consistency.reprojection_error(clip['frames'], *_geo(clip),
                                        target_mask=np.zeros_like(mask))
  assert np.isnan(none)


def test_warp_into_identity_is_exact(clip):
  rgb = (clip['frames'][1] + 1) / 2
  d, k, w2c = _geo(clip)
  warped, valid = consistency.warp_into(rgb, d[1], w2c[1], d[1], w2c[1], k)
  assert valid.all()
  np.testing.assert_allclose(warped, rgb, atol=1e-6)


def test_chamfer_hand_example():
  a = np.array([[0.0, 0.0], [1.0, 0.0]])
  b = np.array([[0.0, 0.5]])
  # a->b: 0.5 and sqrt(1.25); b->a: 0.5.  0.5 * (mean(0.5, 1.118) + 0.5)
  want = 0.5 * ((0.5 + np.sqrt(1.25)) / 2 + 0.5)
  assert consistency.chamfer(a, b) == pytest.approx(want)
  assert consistency.chamfer(a, a) == 0.0


def test_chamfer_distance_zero_for_identical_and_grows(clip):
  d, k, w2c = _geo(clip)
  assert consistency.chamfer_distance(clip['frames'], clip['frames'], d, k, w2c) == 0.0
  bad = clip['frames'].copy()
  bad[1:] = np.clip(bad[1:] + 0.5, -1, 1)
  assert consistency.chamfer_distance(bad, clip['frames'], d, k, w2c) > 0.01
  cloud = consistency.colored_point_cloud(clip['frames'], d, k, w2c, frame_ids=[0])
  assert cloud.shape == (16 * 16, 6)


def test_bad_inputs_raise(clip):
  d, k, w2c = _geo(clip)
  with pytest.raises(ValueError, match='depth'):
    consistency.reprojection_error(clip['frames'], d[:2], k, w2c)


def _two_view_scene():
  """Hand-built two views (16x16, f = 8, centre 7.5): a textured wall at depth 4 and a red
  4x4 square at depth 2 in front; camera 1 is camera 0 moved 1 unit right. The wall shifts by
  f b / Z = 2 pixels, the square by 4, and wall pixels of frame 1 at columns 6-7 (rows 6-9)
  were behind the square in frame 0."""
  k = np.array([[8.0, 0, 7.5], [0, 8.0, 7.5], [0, 0, 1]])
  w2c = np.stack([np.eye(4), np.eye(4)])
  w2c[1, 0, 3] = -1.0
  wall = lambda col: np.stack([(col % 7) / 6, (col % 3) / 2, (col % 5) / 4], -1)   # [0, 1]
  cols = np.arange(16)
  rgb = np.zeros((2, 16, 16, 3))
  rgb[0] = wall(cols)[None]               # frame 0 column u sees wall column u
  rgb[1] = wall(cols + 2)[None]           # frame 1 column u sees wall column u + 2
  depth = np.full((2, 16, 16), 4.0)
  rgb[0, 6:10, 6:10], depth[0, 6:10, 6:10] = (1.0, 0.0, 0.0), 2.0
  rgb[1, 6:10, 2:6], depth[1, 6:10, 2:6] = (1.0, 0.0, 0.0), 2.0
  return rgb * 2 - 1, depth, k, w2c


def test_reprojection_on_a_hand_computed_moving_view_with_an_occluder():
  frames, depth, k, w2c = _two_view_scene()
  warped, valid = consistency.warp_into((frames[0] + 1) / 2, depth[0], w2c[0], depth[1], w2c[1], k)
  want = np.zeros((16, 16), bool)
  want[:, :14] = True                     # columns 14-15 of view 1 lie outside view 0
  want[6:10, 6:8] = False                 # wall that the square hid from view 0
  np.testing.assert_array_equal(valid, want)
  np.testing.assert_allclose(warped[valid], ((frames[1] + 1) / 2)[valid], atol=1e-9)
  assert consistency.reprojection_error(frames, depth, k, w2c) < 1e-9
  # The two faults a reprojection metric must not have: no occlusion test, no camera motion.
  assert consistency.reprojection_error(frames, depth, k, w2c, depth_tol=1e9) > 0.02
  assert consistency.reprojection_error(frames, depth, k, np.stack([np.eye(4)] * 2)) > 0.1
