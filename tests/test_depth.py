"""Depth estimators: ground truth, the trained U-Net, and the external-weights adapter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import depth_tiny
from maskvid import depth as md
from maskvid.depth import net as depth_net
from maskvid.depth import train as depth_train


def _toy_frames(n, size=16, seed=0):
  """Frames whose brightness encodes depth (far = dark) plus texture: learnable in a few steps."""
  rng = np.random.default_rng(seed)
  depth = np.empty((n, size, size), np.float32)
  for i in range(n):
    depth[i] = rng.uniform(2.0, 8.0)
    y, x = rng.integers(0, size // 2, 2)
    depth[i, y:y + size // 2, x:x + size // 2] = rng.uniform(1.0, 1.8)
  gray = 230.0 * (1.0 - np.log(depth) / np.log(9.0))
  rgb = gray[..., None] + rng.normal(0, 6, (n, size, size, 3))
  return dict(rgb=np.clip(rgb, 0, 255).astype(np.uint8), depth=depth)


def _tiny_config(steps=40):
  c = depth_tiny.get_config()
  c.depth.base_channels = 8
  c.depth.channel_multipliers = (1, 2)
  c.depth.norm_groups = 4
  c.depth.resolution = 16
  c.depth.steps = steps
  c.depth.batch_size = 8
  c.depth.learning_rate = 5e-3
  c.depth.log_every = 20
  c.depth.checkpoint_every = 20
  return c


def test_si_log_loss_is_scale_invariant_at_lambda_one():
  gt = jnp.asarray(np.random.default_rng(0).uniform(1, 5, (2, 4, 4)), jnp.float32)
  assert float(depth_net.si_log_loss(jnp.log(gt), gt)) == pytest.approx(0.0, abs=1e-6)
  scaled = jnp.log(gt * 3.0)
  assert float(depth_net.si_log_loss(scaled, gt, si_lambda=1.0)) == pytest.approx(0.0, abs=1e-6)
  assert float(depth_net.si_log_loss(scaled, gt, si_lambda=0.5)) == pytest.approx(
      0.5 * np.log(3.0) ** 2, rel=1e-5)


def test_ground_truth_estimator_returns_stored_depth():
  data = _toy_frames(3)
  est = md.GroundTruthDepth(data['rgb'], data['depth'])
  np.testing.assert_array_equal(est.estimate(data['rgb'][1]), data['depth'][1])
  np.testing.assert_array_equal(est.estimate(data['rgb'][::-1]), data['depth'][::-1])
  with pytest.raises(KeyError, match='no depth for frame'):
    est.estimate(255 - data['rgb'][0])
  with pytest.raises(ValueError, match='rgb must be uint8'):
    est.estimate(data['rgb'].astype(np.float32))


@pytest.mark.slow   # a trainer run with checkpoints
def test_depth_net_trains_saves_and_loads(tmp_path):
  config = _tiny_config(steps=30)
  train, held = _toy_frames(64, seed=1), _toy_frames(8, seed=2)
  metrics = depth_train.train_depth(config, str(tmp_path), train_data=train, eval_data=held)
  assert metrics['train/loss_last10'] < 0.5 * metrics['train/first_loss']
  assert (tmp_path / 'depth' / 'metrics.json').exists()
  est = md.load_depth_estimator(str(tmp_path))
  pred = est.estimate(held['rgb'])
  assert pred.shape == held['depth'].shape and pred.dtype == np.float32
  m = depth_train.depth_metrics(pred, held['depth'], 0.5)
  assert m['si_log'] == pytest.approx(metrics['eval/si_log'], rel=1e-4)
  # Learned: the near square is predicted nearer than the far plane.
  near = held['depth'] < 2.0
  assert np.mean([pred[i][near[i]].mean() < pred[i][~near[i]].mean() for i in range(8)]) >= 0.75
  # A second call resumes at the last step and does no training.
  again = depth_train.train_depth(config, str(tmp_path), train_data=train, eval_data=held)
  assert 'train/first_loss' not in again
  # Odd sizes are padded internally.
  assert est.estimate(held['rgb'][0, :13, :11]).shape == (13, 11)
  with pytest.raises(FileNotFoundError, match='no trained depth network'):
    md.load_depth_estimator(str(tmp_path / 'nothing'))


@pytest.mark.parametrize('suffix,layout', [('safetensors', 'torch'), ('safetensors', 'flax'),
                                           ('npz', 'torch')])
def test_external_adapter_loads_written_file_and_matches(tmp_path, suffix, layout):
  module = depth_net.DepthUNet(base_channels=8, channel_multipliers=(1, 2, 2), norm_groups=4)
  # Random values for every parameter (numpy: cheap), so a transposition or naming slip cannot
  # hide behind symmetric inits (zero biases, unit norm scales).
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  rng = np.random.default_rng(3)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape), jnp.float32), shapes)
  path = str(tmp_path / f'weights.{suffix}')
  md.save_external_depth(path, module, params, layout=layout, output='inverse_depth', scale=2.0,
                         shift=5.0)
  est = md.make_depth_estimator(f'external:{path}')
  assert est.module.channel_multipliers == (1, 2, 2) and est.output == 'inverse_depth'
  rgb = np.random.default_rng(5).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
  # Reference: the Linen module on the original params, without the adapter.
  raw = np.asarray(jax.jit(module.apply)(params, jnp.asarray(rgb, jnp.float32) / 127.5 - 1.0))
  np.testing.assert_allclose(est.raw(rgb), raw, rtol=1e-5, atol=1e-5)
  expected = np.clip(1.0 / np.maximum(2.0 * raw + 5.0, 1e-12), 1e-3, 1e4)
  np.testing.assert_allclose(est.estimate(rgb), expected, rtol=1e-4)


def test_external_adapter_rejects_bad_files(tmp_path):
  from safetensors.numpy import save_file
  module = depth_net.DepthUNet(base_channels=8, channel_multipliers=(1, 2), norm_groups=4)
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  params = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
  path = str(tmp_path / 'w.safetensors')
  md.save_external_depth(path, module, params)
  from safetensors.numpy import load_file
  tensors = load_file(path)
  del tensors['head.bias']
  tensors['extra.weight'] = np.zeros(3, np.float32)
  save_file(tensors, path)
  with pytest.raises(ValueError, match='missing head.bias.*unexpected'):
    md.load_external_depth(path)
  (tmp_path / 'bad.safetensors').write_bytes(b'not a file')
  with pytest.raises(ValueError, match='cannot read'):
    md.load_external_depth(str(tmp_path / 'bad.safetensors'))
  with pytest.raises(FileNotFoundError):
    md.load_external_depth(str(tmp_path / 'missing.npz'))
  with pytest.raises(ValueError, match="net:DIR"):
    md.make_depth_estimator('midas')
