"""maskvid.eval.consistency: reprojection error and colour Chamfer under ground-truth geometry."""
import numpy as np
import pytest

from maskvid.data import synthetic
from maskvid.eval import consistency


@pytest.fixture(scope='module')
def clip():
  c = synthetic.render_clip(int(synthetic.split_seeds('test', 1)[0]), 'test', 4, 16, 16)
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
