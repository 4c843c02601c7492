"""Adapter for external depth weights stored locally (nothing is downloaded).

Format: a `.safetensors` file (or a numpy `.npz`) holding the weights of a network with the
DepthUNet layout (see `maskvid/depth/net.py`), named either PyTorch-style or Flax-style:

  Flax parameter (path joined by '/')   PyTorch-style key          layout change
  <module>/kernel  [kh, kw, in, out]    <module>.weight  [out, in, kh, kw]   transpose (3, 2, 0, 1)
  <module>/bias                          <module>.bias                        none
  <norm>/scale                           <norm>.weight                        none (GroupNorm gamma)
  <norm>/bias                            <norm>.bias                          none
e.g. `down_1/conv_0/kernel` <-> `down_1.conv_0.weight`,
`up_0/norm_1/scale` <-> `up_0.norm_1.weight`,
`stem/kernel` <-> `stem.weight`, `head/bias` <-> `head.bias`. Flax-style names are accepted with
'.' as separator too (`down_1.conv_0.kernel`).

Metadata (safetensors header metadata, or a string entry `__metadata__` in the npz), a JSON object
under the key `maskvid_depth`, all fields optional:
  base_channels, channel_multipliers   inferred from the stem / down_i tensor shapes if absent
  norm_groups                           default 8
  output       'log_depth' (default) | 'depth' | 'inverse_depth' (MiDaS-style disparity)
  scale, shift affine map of the raw output before the output transform (default 1, 0); relative
               (affine-ambiguous) models need a scene-specific scale/shift to give metric depth
  input_norm   'minus_one_one' (default) | 'imagenet'
Missing, unexpected or mis-shaped tensors raise a ValueError naming them.
"""
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from maskvid.depth import depth_anything
from maskvid.depth.estimator import UNetDepthEstimator, load_depth_estimator
from maskvid.depth.net import DepthUNet

METADATA_KEY = 'maskvid_depth'


def _torch_name(flax_path: tuple) -> str:
  *mod, leaf = flax_path
  leaf = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias'}[leaf]
  return '.'.join(mod + [leaf])


def _read(path: str):
  if not os.path.isfile(path):
    raise FileNotFoundError(f'external depth weights not found: {path}')
  if path.endswith('.safetensors'):
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    try:
      with safe_open(path, framework='np') as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
      raise ValueError(f'cannot read safetensors file {path}: {e}') from e
  elif path.endswith('.npz'):
    try:
      with np.load(path, allow_pickle=False) as z:
        tensors = {k: z[k] for k in z.files}
    except Exception as e:
      raise ValueError(f'cannot read npz file {path}: {e}') from e
    meta = tensors.pop('__metadata__', None)
    meta = json.loads(str(meta))[METADATA_KEY] if meta is not None else None
    meta = json.dumps(meta) if meta is not None else None
  else:
    raise ValueError(f'external depth weights must be .safetensors or .npz, got {path}')
  return tensors, (json.loads(meta) if meta else {})


def _infer_arch(tensors: dict, meta: dict) -> DepthUNet:
  def out_channels(name):
    for key in (f'{name}.weight', f'{name}.kernel', f'{name}/kernel'):
      if key in tensors:
        t = tensors[key]
        return t.shape[0] if key.endswith('.weight') else t.shape[-1]
    return None
  base = meta.get('base_channels') or out_channels('stem')
  if base is None:
    raise ValueError('external depth weights: no stem tensor (stem.weight / stem/kernel) to infer '
                     'base_channels from, and no base_channels in metadata')
  mults = meta.get('channel_multipliers')
  if mults is None:
    levels = sorted({int(m.group(1)) for k in tensors
                     for m in [re.match(r'down_(\d+)[./]conv_0', k)] if m})
    mults = [out_channels(f'down_{i}.conv_0') or out_channels(f'down_{i}/conv_0') for i in levels]
    mults = [c // base for c in mults]
  return DepthUNet(base_channels=int(base), channel_multipliers=tuple(int(m) for m in mults),
                   norm_groups=int(meta.get('norm_groups', 8)))


def load_external_depth(path: str) -> UNetDepthEstimator:
  """Maps a local .safetensors / .npz file onto a DepthUNet (see module docstring)."""
  tensors, meta = _read(path)
  module = _infer_arch(tensors, meta)
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  flat = traverse_util.flatten_dict(shapes['params'])
  used, params, problems = set(), {}, []
  for fpath, spec in flat.items():
    names = [_torch_name(fpath), '/'.join(fpath), '.'.join(fpath)]
    key = next((n for n in names if n in tensors), None)
    if key is None:
      problems.append(f'missing {names[0]}')
      continue
    used.add(key)
    t = np.asarray(tensors[key], np.float32)
    if key == names[0] and fpath[-1] == 'kernel':
      t = t.transpose(2, 3, 1, 0)
    if t.shape != spec.shape:
      problems.append(f'{key}: shape {t.shape} (after layout change), expected {spec.shape}')
      continue
    params[fpath] = jnp.asarray(t)
  unexpected = sorted(set(tensors) - used)
  if unexpected:
    more = ' ...' if len(unexpected) > 8 else ''
    problems.append(f'unexpected tensors {unexpected[:8]}{more}')
  if problems:
    raise ValueError(f'external depth weights {path} do not fit the DepthUNet layout '
                     f'{module}: ' + '; '.join(problems[:12]))
  return UNetDepthEstimator(module, {'params': traverse_util.unflatten_dict(params)},
                            output=meta.get('output', 'log_depth'),
                            scale=float(meta.get('scale', 1.0)),
                            shift=float(meta.get('shift', 0.0)),
                            input_norm=meta.get('input_norm', 'minus_one_one'))


def save_external_depth(path: str, module: DepthUNet, params, *, layout: str = 'torch',
                        **meta) -> None:
  """Writes params in the external format (the inverse of `load_external_depth`).

  layout 'torch' (PyTorch names/OIHW kernels) or 'flax' ('/'-joined names, HWIO kernels);
  meta: extra metadata fields (output, scale, shift, input_norm).
  """
  if layout not in ('torch', 'flax'):
    raise ValueError(f"layout must be 'torch' or 'flax', got {layout!r}")
  tensors = {}
  for fpath, v in traverse_util.flatten_dict(params['params']).items():
    v = np.asarray(v, np.float32)
    if layout == 'torch':
      tensors[_torch_name(fpath)] = np.ascontiguousarray(
          v.transpose(3, 2, 0, 1) if fpath[-1] == 'kernel' else v)
    else:
      tensors['/'.join(fpath)] = v
  info = dict(base_channels=module.base_channels,
              channel_multipliers=list(module.channel_multipliers),
              norm_groups=module.norm_groups, **meta)
  if path.endswith('.safetensors'):
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
    save_file(tensors, path, metadata={METADATA_KEY: json.dumps(info)})
  elif path.endswith('.npz'):
    np.savez(path, __metadata__=np.array(json.dumps({METADATA_KEY: info})), **tensors)
  else:
    raise ValueError(f'path must end in .safetensors or .npz, got {path}')


def make_depth_estimator(spec: str):
  """'net:DIR' -> trained DepthUNet; 'external:PATH' -> external weights;
  'depth_anything:FILE[?scale=S&size=N&batch=B&min_disparity=E]' -> Depth Anything V2
  (`maskvid/depth/depth_anything.py`, docs/depth.md)."""
  kind, _, arg = spec.partition(':')
  if kind == 'net' and arg:
    return load_depth_estimator(arg)
  if kind == 'external' and arg:
    return load_external_depth(arg)
  if kind == 'depth_anything' and arg:
    return depth_anything.make_depth_anything(arg)
  raise ValueError(f"depth spec must be 'net:DIR', 'external:PATH' or 'depth_anything:FILE', "
                   f"got {spec!r}")
