"""Load external AutoencoderKL weights from a local safetensors file (nothing is downloaded).

Source naming: diffusers `AutoencoderKL` state dicts (e.g. `diffusion_pytorch_model.safetensors`
of a Stable Diffusion VAE). Our Linen tree mirrors that layout, so the mapping is mechanical:

  diffusers key                                   Linen path (under 'params')
  encoder.conv_in.weight            [O,I,kh,kw]   encoder/conv_in/kernel          [kh,kw,I,O]
  encoder.down_blocks.0.resnets.1.norm1.weight    encoder/down_blocks_0/resnets_1/norm1/scale
  encoder.down_blocks.0.downsamplers.0.conv.bias  encoder/down_blocks_0/downsamplers_0/conv/bias
  encoder.mid_block.attentions.0.to_q.weight [O,I] encoder/mid_block/attentions_0/to_q/kernel [I,O]
  encoder.mid_block.attentions.0.to_out.0.weight  encoder/mid_block/attentions_0/to_out_0/kernel
  decoder.up_blocks.2.upsamplers.0.conv.weight    decoder/up_blocks_2/upsamplers_0/conv/kernel
  quant_conv.weight / post_quant_conv.weight      quant_conv/kernel / post_quant_conv/kernel

Rules: a dot followed by an integer joins with '_' (`resnets.1` -> `resnets_1`); `weight` of a
conv (4-D) becomes `kernel` transposed OIHW -> HWIO; `weight` of a linear layer (2-D) becomes
`kernel` transposed [out,in] -> [in,out]; `weight` of a GroupNorm (1-D) becomes `scale`; `bias`
stays. Older diffusers attention names (`query`, `key`, `value`, `proj_attn`) are renamed to
`to_q`, `to_k`, `to_v`, `to_out.0`, and 1x1-conv attention weights [O,I,1,1] are squeezed.
(Original CompVis/LDM checkpoints use another naming, `encoder.down.0.block.1...`; convert them
to diffusers names first, e.g. with diffusers' conversion script.)

The architecture must match: build the module with the file's channel widths, e.g. SD's VAE is
`AutoencoderKL(latent_channels=4, base_channels=128, channel_multipliers=(1, 2, 4, 4),
num_res_blocks=2, norm_groups=32, mid_attention=True)`. Our frames are in [-1, 1] like diffusers'.
"""
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np

_OLD_ATTENTION_NAMES = {'query': 'to_q', 'key': 'to_k', 'value': 'to_v', 'proj_attn': 'to_out.0'}


def map_key(name: str) -> tuple[str, ...]:
  """diffusers key -> Linen path under 'params' (leaf name 'weight' kept; resolved by ndim)."""
  parts = name.split('.')
  if len(parts) >= 2 and parts[-2] in _OLD_ATTENTION_NAMES:
    parts = parts[:-2] + _OLD_ATTENTION_NAMES[parts[-2]].split('.') + parts[-1:]
  out = []
  for p in parts:
    if re.fullmatch(r'\d+', p) and out:
      out[-1] = f'{out[-1]}_{p}'
    else:
      out.append(p)
  return tuple(out)


def convert_state_dict(state_dict: dict, target_params) -> dict:
  """Maps a diffusers-named dict of numpy arrays onto `target_params` (an `init` output).

  `target_params` is the variables dict `{'params': ...}` (arrays or ShapeDtypeStructs) that fixes
  the expected tree and shapes. Returns a new variables dict of jnp arrays. Raises ValueError
  listing missing, unexpected or mis-shaped keys.
  """
  flat_target = flax.traverse_util.flatten_dict(target_params['params'])
  converted, unexpected, mismatched, seen = {}, [], [], set()
  for name, value in state_dict.items():
    value = np.asarray(value)
    path = map_key(name)
    leaf = path[-1]
    if leaf == 'weight':
      if value.ndim == 4:
        kernel_path = path[:-1] + ('kernel',)
        if kernel_path in flat_target and len(flat_target[kernel_path].shape) == 2:
          value = value[:, :, 0, 0].T  # 1x1-conv attention projection -> Dense kernel
        else:
          value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        path = kernel_path
      elif value.ndim == 2:
        value, path = value.T, path[:-1] + ('kernel',)
      elif value.ndim == 1:
        path = path[:-1] + ('scale',)
    if path not in flat_target:
      unexpected.append(name)
      continue
    seen.add(path)
    if tuple(flat_target[path].shape) != value.shape:
      mismatched.append(f'{name} {value.shape} -> {"/".join(path)} {flat_target[path].shape}')
      continue
    converted[path] = jnp.asarray(value, dtype=flat_target[path].dtype)
  missing = ['/'.join(p) for p in flat_target if p not in seen]
  if unexpected or missing or mismatched:
    raise ValueError(
        'external VAE weights do not match the module: '
        f'{len(missing)} missing {missing[:8]}, {len(unexpected)} unexpected {unexpected[:8]}, '
        f'{len(mismatched)} shape mismatches {mismatched[:8]}')
  return {'params': flax.traverse_util.unflatten_dict(converted)}


def load_safetensors(path: str, module, frame_size: int = 32) -> dict:
  """Reads a local diffusers-named .safetensors file into `module`'s variables dict."""
  import os  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f'external VAE weights file {path!r} does not exist')
  if getattr(module, 'linear_skip', False):
    raise ValueError('external (diffusers) VAE weights have no linear patch path: build the '
                     'module with linear_skip=False (config.vae.linear_skip)')
  f = module.downsample_factor
  size = max(frame_size // f, 1) * f
  target = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 1, size, size, 3)))
  return convert_state_dict(load_file(path), target)


def to_state_dict(params) -> dict:
  """Inverse mapping: Linen variables dict -> diffusers-named numpy dict (for export and tests)."""
  out = {}
  for path, value in flax.traverse_util.flatten_dict(params['params']).items():
    value = np.asarray(value)
    *prefix, leaf = path
    if leaf == 'kernel':
      value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
      leaf = 'weight'
    elif leaf == 'scale':
      leaf = 'weight'
    name = '.'.join(re.sub(r'_(\d+)$', r'.\1', p) for p in prefix)
    out[f'{name}.{leaf}'] = np.ascontiguousarray(value)
  return out
