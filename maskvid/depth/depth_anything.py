"""Depth Anything V2 (DINOv2 ViT + DPT head) in Flax: released weights in, z-depth out.

`load_depth_anything(path)` reads, with no torch and nothing downloaded, either
  * the original `.pth` state dict (zip-format torch file, e.g. `depth_anything_v2_vits.pth` of
    huggingface.co/depth-anything/Depth-Anything-V2-Small), keys `pretrained.*`, `depth_head.*`;
  * the transformers layout (`model.safetensors` of depth-anything/Depth-Anything-V2-Small-hf, or
    a zip torch file with the same keys), keys `backbone.*`, `neck.*`, `head.*`.
The variant (vits / vitb / vitl) is inferred from the embedding width. Every tensor is checked
against the architecture; the first missing, unexpected or mis-shaped one stops the load with one
line naming the file and the tensor. Licences: Small is Apache-2.0; Base and Large weights are
CC-BY-NC-4.0 (non-commercial).

Flax names: the original keys with `.N.` written `_N/`, kernels in Flax layout (`_flax_axes`).
Transformers names map to the original ones by `_hf_table` (transformers' conversion script),
the fused `attn.qkv` split into query / key / value (transformers >= 5 names: q/k/v/o_proj).
`DepthAnythingEstimator` is the `DepthEstimator` (preprocessing, depth rule: docs/depth.md).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import urllib.parse

from absl import logging
import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors import safe_open

from maskvid import sharding as sharding_lib
from maskvid.depth.base import DepthEstimator
from maskvid.depth.dinov2 import DinoV2, bilinear_align_corners_matrix, resize_separable
from maskvid.depth.dpt import DPTHead
from maskvid.depth.torch_zip import read_torch_zip


@dataclasses.dataclass(frozen=True)
class Config:
  """Architecture of one Depth Anything V2 variant (hashable: a jit static argument)."""
  name: str
  embed_dim: int
  depth: int
  num_heads: int
  features: int
  out_channels: tuple
  layers: tuple          # the blocks whose (normalised) outputs feed the DPT head
  pos_grid: int = 37     # position-embedding grid of the weights (518 / 14)


CONFIGS = {
    'vits': Config('vits', 384, 12, 6, 64, (48, 96, 192, 384), (2, 5, 8, 11)),
    'vitb': Config('vitb', 768, 12, 12, 128, (96, 192, 384, 768), (2, 5, 8, 11)),
    'vitl': Config('vitl', 1024, 24, 16, 256, (256, 512, 1024, 1024), (4, 11, 17, 23)),
}
PATCH = 14
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


class DepthAnythingV2(nn.Module):
  """images [N, H, W, 3] (ImageNet-normalised, H, W multiples of 14) -> disparity [N, H, W].

  The output is relative inverse depth, >= 0 (the reference's final ReLU after the head's ReLU
  changes nothing, so it is not repeated).
  """
  config: Config

  @nn.compact
  def __call__(self, images):
    c = self.config
    tokens = DinoV2(c.embed_dim, c.depth, c.num_heads, PATCH, c.pos_grid,
                    name='pretrained')(images, c.layers)
    grid = (images.shape[1] // PATCH, images.shape[2] // PATCH)
    return DPTHead(c.features, c.out_channels, PATCH, name='depth_head')(tokens, grid)


# ----------------------------------------------------------------------------------------------
# Key mapping

def _original_key(flax_path: tuple) -> str:
  *mods, leaf = flax_path
  mods = [re.sub(r'_(\d+)$', r'.\1', m) for m in mods]   # blocks_3 -> blocks.3
  return '.'.join(mods + [{'kernel': 'weight', 'scale': 'weight'}.get(leaf, leaf)])


def _flax_axes(key: str, ndim: int):
  """The transpose taking an original-layout weight to Flax's (None: the same layout)."""
  if not key.endswith('.weight') or ndim < 2:
    return None
  if ndim == 2:
    return (1, 0)
  # ConvTranspose2d stores [in, out, kh, kw]; Conv2d [out, in, kh, kw].
  return (2, 3, 0, 1) if re.search(r'resize_layers\.[01]\.weight$', key) else (2, 3, 1, 0)


def _to_flax(key: str, t: np.ndarray) -> np.ndarray:
  axes = _flax_axes(key, t.ndim)
  return t if axes is None else t.transpose(axes)


def _from_flax(key: str, t: np.ndarray) -> np.ndarray:
  axes = _flax_axes(key, t.ndim)
  return t if axes is None else t.transpose(np.argsort(axes))


@functools.lru_cache(maxsize=8)
def abstract_params(config: Config) -> dict:
  """{Flax path: ShapeDtypeStruct} of every parameter of `config`."""
  images = jax.ShapeDtypeStruct((1, PATCH * 2, PATCH * 2, 3), jnp.float32)
  shapes = jax.eval_shape(DepthAnythingV2(config).init, jax.random.key(0), images)
  return traverse_util.flatten_dict(shapes['params'])


def expected_shapes(config: Config) -> dict:
  """{original key: original-layout shape} of every tensor `config` needs, in Flax's order."""
  keys = {_original_key(p): spec for p, spec in abstract_params(config).items()}
  return {k: _from_flax(k, np.empty(spec.shape, np.bool_)).shape for k, spec in keys.items()}


def to_original(params) -> dict:
  """Flax params ({'params': ...} or the inner tree) -> {original key: float32 array}."""
  params = params.get('params', params)
  return {_original_key(p): np.ascontiguousarray(_from_flax(_original_key(p),
                                                            np.asarray(v, np.float32)))
          for p, v in traverse_util.flatten_dict(params).items()}


def _hf_table(depth: int) -> list:
  """(original key, transformers key) pairs; the qkv split is handled separately."""
  pairs = [('pretrained.cls_token', 'backbone.embeddings.cls_token'),
           ('pretrained.mask_token', 'backbone.embeddings.mask_token'),
           ('pretrained.pos_embed', 'backbone.embeddings.position_embeddings')]
  wb = ('weight', 'bias')
  pairs += [(f'pretrained.patch_embed.proj.{p}',
             f'backbone.embeddings.patch_embeddings.projection.{p}') for p in wb]
  for i in range(depth):
    o, h = f'pretrained.blocks.{i}', f'backbone.encoder.layer.{i}'
    pairs += [(f'{o}.ls1.gamma', f'{h}.layer_scale1.lambda1'),
              (f'{o}.ls2.gamma', f'{h}.layer_scale2.lambda1')]
    for a, b in (('norm1', 'norm1'), ('norm2', 'norm2'), ('mlp.fc1', 'mlp.fc1'),
                 ('mlp.fc2', 'mlp.fc2'), ('attn.proj', 'attention.output.dense')):
      pairs += [(f'{o}.{a}.{p}', f'{h}.{b}.{p}') for p in wb]
  pairs += [(f'pretrained.norm.{p}', f'backbone.layernorm.{p}') for p in wb]
  for i in range(4):
    pairs += [(f'depth_head.projects.{i}.{p}', f'neck.reassemble_stage.layers.{i}.projection.{p}')
              for p in wb]
    if i != 2:
      pairs += [(f'depth_head.resize_layers.{i}.{p}',
                 f'neck.reassemble_stage.layers.{i}.resize.{p}') for p in wb]
    pairs.append((f'depth_head.scratch.layer{i + 1}_rn.weight', f'neck.convs.{i}.weight'))
  for i in range(1, 5):
    o, h = f'depth_head.scratch.refinenet{i}', f'neck.fusion_stage.layers.{4 - i}'
    pairs += [(f'{o}.out_conv.{p}', f'{h}.projection.{p}') for p in wb]
    for u in (1, 2):
      for c in (1, 2):
        pairs += [(f'{o}.resConfUnit{u}.conv{c}.{p}', f'{h}.residual_layer{u}.convolution{c}.{p}')
                  for p in wb]
  for a, b in (('output_conv1', 'conv1'), ('output_conv2.0', 'conv2'), ('output_conv2.2', 'conv3')):
    pairs += [(f'depth_head.scratch.{a}.{p}', f'head.{b}.{p}') for p in wb]
  return pairs


def _depth_of(keys, pattern: str) -> int:
  found = [int(m.group(1)) for k in keys for m in [re.match(pattern, k)] if m]
  return max(found) + 1 if found else 0


def original_to_hf(tensors: dict) -> dict:
  """Original `.pth` names -> transformers names (qkv split into query, key, value)."""
  depth = _depth_of(tensors, r'pretrained\.blocks\.(\d+)\.')
  table = dict(_hf_table(depth))
  out = {}
  for k, v in tensors.items():
    m = re.match(r'pretrained\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$', k)
    if m:
      for name, part in zip(('query', 'key', 'value'), np.split(v, 3, axis=0)):
        out[f'backbone.encoder.layer.{m.group(1)}.attention.attention.{name}.{m.group(2)}'] = part
    else:
      out[table.get(k, k)] = v   # an unknown name passes through: the shape check names it
  return out


def hf_to_original(tensors: dict) -> dict:
  """Transformers names -> original `.pth` names (query, key, value fused into qkv)."""
  depth = _depth_of(tensors, r'backbone\.encoder\.layer\.(\d+)\.')
  table = {h: o for o, h in _hf_table(depth)}
  out, qkv = {}, {}
  for k, v in tensors.items():
    # transformers >= 5 saves the attention as q_proj, k_proj, v_proj, o_proj.
    k = re.sub(r'(layer\.\d+\.attention)\.([qkv])_proj\.',
               lambda m: f"{m[1]}.attention.{dict(q='query', k='key', v='value')[m[2]]}.", k)
    k = re.sub(r'(layer\.\d+\.attention)\.o_proj\.', r'\1.output.dense.', k)
    m = re.match(r'backbone\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.'
                 r'(weight|bias)$', k)
    if m:
      qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = v
    else:
      out[table.get(k, k)] = v
  for (i, p), parts in qkv.items():
    if set(parts) != {'query', 'key', 'value'}:
      missing = sorted({'query', 'key', 'value'} - set(parts))[0]
      raise KeyError(f'backbone.encoder.layer.{i}.attention.attention.{missing}.{p}')
    out[f'pretrained.blocks.{i}.attn.qkv.{p}'] = np.concatenate(
        [parts['query'], parts['key'], parts['value']], axis=0)
  return out


# ----------------------------------------------------------------------------------------------
# Loading


def _fail(path: str, msg: str) -> ValueError:
  return ValueError(f'depth_anything weights {path}: {msg}')


def read_weights(path: str) -> dict:
  """{original key: array} of a .pth / .safetensors file in either layout (see module doc)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'depth_anything weights {path}: file not found (nothing is '
                            'downloaded; see docs/depth.md for where the released files are)')
  try:
    if path.endswith('.safetensors'):
      with safe_open(path, framework='np') as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    else:
      tensors = read_torch_zip(path)
  except Exception as e:  # pylint: disable=broad-except  (safetensors has its own error types)
    raise _fail(path, f'not a readable .pth (zip) or .safetensors file, truncated? '
                f'({type(e).__name__}: {e})'.replace('\n', ' ')) from e
  if any(k.startswith('backbone.') for k in tensors):
    try:
      tensors = hf_to_original(tensors)
    except KeyError as e:
      raise _fail(path, f'missing tensor {e.args[0]!r}') from e
  return tensors


def infer_config(tensors: dict, path: str = '') -> Config:
  """The released variant whose embedding width the file's position embedding has."""
  pos = tensors.get('pretrained.pos_embed')
  if pos is None:
    raise _fail(path, "missing tensor 'pretrained.pos_embed' (backbone.embeddings."
                "position_embeddings): not a Depth Anything V2 state dict")
  for config in CONFIGS.values():
    if pos.shape[-1] == config.embed_dim:
      return config
  widths = ', '.join(f'{c.name} {c.embed_dim}' for c in CONFIGS.values())
  raise _fail(path, f"tensor 'pretrained.pos_embed' has width {pos.shape[-1]}, no variant has "
              f'it ({widths})')


def params_from_original(tensors: dict, config: Config, path: str = '') -> dict:
  """{original key: array} -> Flax {'params': tree}. Tensors are checked in the file's order
  (an unexpected or mis-shaped one), then the model's (a missing one): the first problem stops."""
  expected = {_original_key(p): (p, spec) for p, spec in abstract_params(config).items()}
  flat = {}
  for key, t in tensors.items():
    if key not in expected:
      extra = sum(k not in expected for k in tensors)
      raise _fail(path, f'unexpected tensor {key!r} ({extra} in all) for architecture '
                  f'{config.name}')
    fpath, spec = expected[key]
    t = _to_flax(key, np.asarray(t))
    if t.shape != spec.shape:
      want = _from_flax(key, np.empty(spec.shape, np.bool_)).shape
      raise _fail(path, f'tensor {key!r} has shape {tuple(tensors[key].shape)}, architecture '
                  f'{config.name} expects {want}')
    flat[fpath] = jnp.asarray(t, jnp.float32)
  for key in expected:
    if key not in tensors:
      raise _fail(path, f'missing tensor {key!r} (architecture {config.name}, '
                  f'{len(expected)} tensors expected, the file has {len(tensors)})')
  return {'params': traverse_util.unflatten_dict(flat)}


def load_depth_anything(path: str, config: Config | None = None) -> tuple:
  """(Config, params) of a weights file; config None: inferred from the file."""
  tensors = read_weights(path)
  config = config or infer_config(tensors, path)
  return config, params_from_original(tensors, config, path)


# ----------------------------------------------------------------------------------------------
# The estimator

DEPTH_RANGE = (1e-3, 1e4)


def network_size(height: int, width: int, input_size: int = 518) -> tuple:
  """The reference's 'lower_bound' resize: keep the aspect, the short side at least input_size,
  each side rounded to a multiple of 14 (rounded up when rounding would go below input_size)."""
  scale = max(input_size / height, input_size / width)

  def constrain(x):
    y = int(np.round(x / PATCH) * PATCH)   # numpy's round half to even, as the reference
    return int(np.ceil(x / PATCH) * PATCH) if y < input_size else y
  return constrain(scale * height), constrain(scale * width)


def preprocess(frame: np.ndarray, input_size: int = 518) -> np.ndarray:
  """uint8 [H, W, 3] RGB -> float32 [h, w, 3]: bicubic (OpenCV) resize of x / 255 in float64,
  then ImageNet normalisation, as the reference's `image2tensor`."""
  h, w = network_size(frame.shape[0], frame.shape[1], input_size)
  x = cv2.resize(frame / 255.0, (w, h), interpolation=cv2.INTER_CUBIC)
  return ((x - MEAN) / STD).astype(np.float32)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _disparity(config: Config, out_hw: tuple, params, x):
  """[N, h, w, 3] -> disparity [N, H, W], brought back to the image bilinearly (align_corners
  True, as the reference's `infer_image`). Module-level and keyed on the hashable config:
  estimators of one variant share compiled functions."""
  d = DepthAnythingV2(config).apply(params, x)[..., None]
  mh = bilinear_align_corners_matrix(d.shape[1], out_hw[0])
  mw = bilinear_align_corners_matrix(d.shape[2], out_hw[1])
  return resize_separable(d, mh, mw)[..., 0]


class DepthAnythingEstimator(DepthEstimator):
  """Depth Anything V2 as a `DepthEstimator` (the depth rule is in `depth_from_disparity`).

  Frames go through the network `batch_size` at a time (the last batch padded, so one shape
  compiles once), the batch split over the local devices' data-parallel mesh when there are
  several; progress is logged on inputs longer than one batch.
  """

  def __init__(self, config: Config, params, *, input_size: int = 518, scale: float = 1.0,
               min_disparity: float = 0.01, batch_size: int = 4):
    if input_size < PATCH or scale <= 0 or min_disparity <= 0 or batch_size < 1:
      raise ValueError(f'depth_anything: need input_size >= {PATCH}, scale > 0, '
                       f'min_disparity > 0, batch_size >= 1; got {input_size}, {scale}, '
                       f'{min_disparity}, {batch_size}')
    self.config, self.input_size, self.scale = config, int(input_size), float(scale)
    self.min_disparity = float(min_disparity)
    devices = jax.local_devices()
    self.mesh = sharding_lib.data_parallel_mesh(devices) if len(devices) > 1 else None
    self.batch_size = -(-batch_size // len(devices)) * len(devices)
    self.params = (jax.device_put(params, sharding_lib.replicated(self.mesh)) if self.mesh
                   else params)

  def disparity(self, rgb: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> relative inverse depth float32 [N, H, W] (the network's output)."""
    n, h, w, _ = rgb.shape
    out, b = [], self.batch_size
    for start in range(0, n, b):
      x = np.stack([preprocess(f, self.input_size) for f in rgb[start:start + b]])
      x = np.concatenate([x, np.zeros((b - len(x),) + x.shape[1:], x.dtype)])
      x = (jax.device_put(x, sharding_lib.batch_sharding(self.mesh)) if self.mesh
           else jnp.asarray(x))
      out.append(np.asarray(_disparity(self.config, (h, w), self.params, x)))
      if n > b:
        logging.info('depth_anything: %d / %d frames', min(start + b, n), n)
    return np.concatenate(out)[:n]

  def _estimate(self, rgb):
    return depth_from_disparity(self.disparity(rgb), self.scale, self.min_disparity)


def depth_from_disparity(disparity: np.ndarray, scale: float = 1.0,
                         min_disparity: float = 0.01) -> np.ndarray:
  """[N, H, W] relative inverse depth -> z-depth: scale / max(d / median(d), min_disparity).

  Per frame, d is divided by its median over positive pixels, so the median depth is `scale`;
  the network's unknown disparity shift is taken as 0; pixels at or near zero disparity (sky)
  get scale / min_disparity. Clipped to DEPTH_RANGE.
  """
  d = np.asarray(disparity, np.float64)
  out = np.empty(d.shape, np.float32)
  for i, frame in enumerate(d):
    pos = frame[frame > 0]
    med = np.median(pos) if pos.size else 1.0
    out[i] = np.clip(scale / np.maximum(frame / med, min_disparity), *DEPTH_RANGE)
  return out


SPEC_KEYS = ('scale', 'size', 'batch', 'min_disparity')


def make_depth_anything(arg: str) -> DepthAnythingEstimator:
  """'FILE' or 'FILE?scale=2&size=518&batch=4&min_disparity=0.01' -> the estimator."""
  path, _, query = arg.partition('?')
  opts = dict(urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
  unknown = sorted(set(opts) - set(SPEC_KEYS))
  if unknown:
    raise ValueError(f'depth_anything:{arg}: unknown option {unknown[0]!r} (known: '
                     f'{", ".join(SPEC_KEYS)})')
  try:
    kwargs = dict(scale=float(opts.get('scale', 1.0)), input_size=int(opts.get('size', 518)),
                  batch_size=int(opts.get('batch', 4)),
                  min_disparity=float(opts.get('min_disparity', 0.01)))
  except ValueError as e:
    raise ValueError(f'depth_anything:{arg}: bad option value ({e})') from e
  config, params = load_depth_anything(path)
  return DepthAnythingEstimator(config, params, **kwargs)
