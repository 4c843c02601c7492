"""maskvid.eval.metrics: PSNR/SSIM (whole and masked), LPIPS loading, Fréchet distance."""
import numpy as np
import pytest

from maskvid.eval import lpips
from maskvid.eval import metrics


def _frames(seed, shape=(2, 3, 16, 16, 3)):
  return np.random.RandomState(seed).uniform(-1, 1, shape).astype(np.float32)


def test_identical_frames_give_inf_psnr_and_unit_ssim():
  a = _frames(0)
  assert np.all(np.isinf(np.asarray(metrics.psnr(a, a))))
  np.testing.assert_allclose(metrics.ssim(a, a), 1.0, atol=1e-5)
  mask = np.ones(a.shape[:-1], bool)
  np.testing.assert_allclose(metrics.masked_ssim(a, a, mask), 1.0, atol=1e-5)
  assert metrics.finite_mean(metrics.psnr(a, a)) == metrics.PSNR_CAP


def test_psnr_of_known_error():
  a = np.zeros((4, 8, 8, 3), np.float32)
  # A constant offset of 0.2 in [-1, 1] is 0.1 in [0, 1]: MSE 0.01 -> 20 dB exactly.
  np.testing.assert_allclose(metrics.psnr(a, a + 0.2), 20.0, atol=1e-4)
  # Gaussian noise of std 0.1 in [0, 1] units (0.2 in [-1, 1]) -> ~20 dB.
  noise = np.random.RandomState(1).normal(0, 0.2, (64, 32, 32, 3)).astype(np.float32)
  assert abs(metrics.finite_mean(metrics.psnr(noise * 0, noise)) - 20.0) < 0.1


def test_masked_metrics_ignore_unmasked_pixels():
  a = _frames(2)
  b = a.copy()
  mask = np.zeros(a.shape[:-1], bool)
  mask[..., :8, :] = True
  b[..., 8:, :, :] = -a[..., 8:, :, :]          # garbage outside the mask
  b[..., :8, :, :] += 0.2                        # known error inside: 0.1 in [0, 1] units
  np.testing.assert_allclose(metrics.masked_psnr(a, b, mask), 20.0, atol=1e-3)
  assert np.all(np.asarray(metrics.psnr(a, b)) < 15.0)
  # Masked SSIM only sees the map over the mask: corrupting outside moves it far less than inside.
  c = a.copy()
  c[..., 8:, :, :] = -a[..., 8:, :, :]
  inside = np.asarray(metrics.masked_ssim(a, c, mask))
  outside = np.asarray(metrics.masked_ssim(a, c, ~mask))
  assert np.all(inside > outside + 0.3)
  # Empty mask -> NaN, skipped by finite_mean.
  empty = np.asarray(metrics.masked_psnr(a, b, np.zeros_like(mask)))
  assert np.all(np.isnan(empty))
  assert np.isnan(metrics.finite_mean(empty))


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match='same shape'):
    metrics.psnr(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))
  with pytest.raises(ValueError, match='mask'):
    metrics.masked_psnr(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), np.zeros((8, 9), bool))


# ---------------------------------------------------------------------------------------------
# LPIPS on a file the test writes: torch-layout VGG-style weights, checked against numpy.

def _torch_state(seed):
  r = np.random.RandomState(seed)
  # Sequential indices: conv0, relu1, conv2, relu3, pool4, conv5, relu6 -> stages (4, 4), (6,).
  return {
      'features.0.weight': r.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
      'features.0.bias': r.normal(0, 0.1, (4,)).astype(np.float32),
      'features.2.weight': r.normal(0, 0.5, (4, 4, 3, 3)).astype(np.float32),
      'features.2.bias': r.normal(0, 0.1, (4,)).astype(np.float32),
      'features.5.weight': r.normal(0, 0.5, (6, 4, 3, 3)).astype(np.float32),
      'features.5.bias': r.normal(0, 0.1, (6,)).astype(np.float32),
      'lin0.model.1.weight': r.uniform(0, 1, (1, 4, 1, 1)).astype(np.float32),
      'lin1.model.1.weight': r.uniform(0, 1, (1, 6, 1, 1)).astype(np.float32),
  }


def _np_conv(x, w, b):
  """Torch-semantics 3x3 conv, padding 1. x [H, W, I], w [O, I, 3, 3]."""
  h, wd, _ = x.shape
  xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
  out = np.zeros((h, wd, w.shape[0]))
  for dy in range(3):
    for dx in range(3):
      out += xp[dy:dy + h, dx:dx + wd] @ w[:, :, dy, dx].T
  return out + b


def _np_lpips(state, a, b):
  def feats(x):
    x = (x - np.array([-0.030, -0.088, -0.188])) / np.array([0.458, 0.448, 0.450])
    x = np.maximum(_np_conv(x, state['features.0.weight'], state['features.0.bias']), 0)
    x = np.maximum(_np_conv(x, state['features.2.weight'], state['features.2.bias']), 0)
    f0 = x
    h, w, c = x.shape
    x = x.reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))
    x = np.maximum(_np_conv(x, state['features.5.weight'], state['features.5.bias']), 0)
    return [f0, x]
  total = 0.0
  for s, (fa, fb) in enumerate(zip(feats(a), feats(b))):
    na = fa / (np.sqrt((fa ** 2).sum(-1, keepdims=True)) + 1e-10)
    nb = fb / (np.sqrt((fb ** 2).sum(-1, keepdims=True)) + 1e-10)
    total += (((na - nb) ** 2) * state[f'lin{s}.model.1.weight'].reshape(-1)).sum(-1).mean()
  return total


@pytest.mark.parametrize('fmt', ['npz', 'safetensors'])
def test_lpips_loader_matches_reference(tmp_path, fmt):
  state = _torch_state(3)
  path = str(tmp_path / f'lpips.{fmt}')
  if fmt == 'npz':
    np.savez(path, **state)
  else:
    from safetensors.numpy import save_file
    save_file(state, path)
  lp = lpips.load_lpips(path)
  assert lp.stages == ((4, 4), (6,))
  a, b = _frames(4, (2, 8, 8, 3)), _frames(5, (2, 8, 8, 3))
  got = np.asarray(lp(a, b))
  want = np.array([_np_lpips(state, a[i].astype(np.float64), b[i].astype(np.float64))
                   for i in range(2)])
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose(lp(a, a), 0.0, atol=1e-6)


def test_lpips_past_one_chunk_matches_the_reference_per_frame(tmp_path):
  """More frames than one network chunk (CHUNK = 32) with a padded last chunk: every frame's
  value is its own, in order (a chunk dropped, repeated or shifted would show)."""
  state = _torch_state(4)
  path = str(tmp_path / 'lpips.npz')
  np.savez(path, **state)
  lp = lpips.load_lpips(path)
  n = lp.CHUNK + 9
  a, b = _frames(6, (n, 8, 8, 3)), _frames(7, (n, 8, 8, 3))
  got = np.asarray(lp(a, b))
  want = np.array([_np_lpips(state, a[i].astype(np.float64), b[i].astype(np.float64))
                   for i in range(n)])
  assert got.shape == (n,) and np.std(want) > 0
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_lpips_missing_or_empty(tmp_path):
  assert lpips.maybe_load_lpips('') is None
  with pytest.raises(FileNotFoundError, match='lpips_weights'):
    lpips.load_lpips(str(tmp_path / 'nope.npz'))
  state = _torch_state(0)
  del state['lin1.model.1.weight']
  np.savez(str(tmp_path / 'bad.npz'), **state)
  with pytest.raises(ValueError, match='lin1'):
    lpips.load_lpips(str(tmp_path / 'bad.npz'))


def test_frechet_distance():
  r = np.random.RandomState(0)
  x = r.normal(size=(500, 3))
  assert metrics.frechet_distance(x, x) < 1e-6
  # Two Gaussians with identity covariance and means 2 apart along one axis: distance ~ 4.
  y = r.normal(size=(4000, 3))
  z = r.normal(size=(4000, 3)) + np.array([2.0, 0, 0])
  assert abs(metrics.frechet_distance(y, z) - 4.0) < 0.3


@pytest.mark.parametrize('hw', [(1, 1), (2, 2), (3, 5), (4, 4), (8, 8)])
def test_conv3x3_is_flax_conv_on_both_paths(hw):
  """Maps of <= 16 pixels take the patch-matmul path, larger ones the convolution: same result
  and the same parameter tree as nn.Conv(F, (3, 3), padding=1)."""
  import flax.linen as nn
  import jax
  x = _frames(7, (2, *hw, 5))
  ref = nn.Conv(6, (3, 3), padding=1)
  params = ref.init(jax.random.key(0), x)
  ours = lpips.Conv3x3(6)
  assert jax.tree.map(np.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(np.shape, params)
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)
