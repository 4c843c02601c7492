"""Video transformer over latent spacetime patches with a noise level per token.

`build_model(config)` returns a Linen module whose `__call__(x_t [B,T,h,w,c], t [B,T,h,w])`
predicts the flow-matching velocity `v [B,T,h,w,c]`. Pipeline:

  latents -> patches `[B, N, pt*ph*pw*c]` (einops) -> linear embed `[B, N, D]`
  t -> max-pool per patch `[B, N]` -> sinusoidal + MLP -> per-token conditioning `[B, N, D]`
  depth x (adaLN-Zero block: full spacetime attention with 3-D RoPE, MLP)
  final per-token adaLN + zero-initialised linear -> unpatchify.

`config.model.adaln` picks where the per-token modulation is projected: in every block (DiT
adaLN-Zero, default) or once for the whole network plus per-block learned offsets (adaLN-single,
PixArt-alpha; drops 6 D^2 weights and FLOPs per token per block, about a third of each block).
Because the final projection is zero-initialised the model outputs exactly 0 at init.
Compute runs in `config.model.dtype` (e.g. bfloat16); parameters are always float32.
With `config.model.input_conditioning` the module also takes `(cond_latents, cond_mask)` and
concatenates the known latents (zeros where unknown) and the mask as extra input channels: the
"conditioning-based" baseline, trained with `config.diffusion.objective = 'conditioning'`.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import os

from maskvid import fileio
from maskvid import sharding as sharding_lib
from maskvid import workdir as workdir_lib
from maskvid.model import attention as attention_lib
from maskvid.train import checkpoint as checkpoint_lib
from maskvid.model import layers

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}
_REMAT = ('none', 'full', 'dots')
_ADALN = ('block', 'single')


def _check_inputs(x_t, t, patch_size, cond_latents, cond_mask, input_conditioning):
  if x_t.ndim != 5:
    raise ValueError(f'x_t must be [B, T, h, w, c], got shape {x_t.shape}')
  if t.shape != x_t.shape[:4]:
    raise ValueError(f't must be [B, T, h, w] matching x_t {x_t.shape[:4]}, got shape {t.shape}')
  for name, size, p in zip(('T', 'h', 'w'), x_t.shape[1:4], patch_size):
    if size % p:
      raise ValueError(f'x_t {name}={size} is not divisible by config.model.patch_size '
                       f'{tuple(patch_size)} (x_t shape {x_t.shape})')
  if input_conditioning:
    if cond_latents is None or cond_mask is None:
      raise ValueError('config.model.input_conditioning=True: call with (x_t, t, cond_latents, '
                       'cond_mask)')
    if cond_latents.shape != x_t.shape:
      raise ValueError(f'cond_latents must match x_t {x_t.shape}, got {cond_latents.shape}')
    if cond_mask.shape != t.shape:
      raise ValueError(f'cond_mask must be [B, T, h, w] {t.shape}, got {cond_mask.shape}')
  elif cond_latents is not None or cond_mask is not None:
    raise ValueError('cond_latents/cond_mask given but config.model.input_conditioning=False')


class VideoTransformer(nn.Module):
  """Masked video diffusion transformer. See the module docstring for the data flow."""
  patch_size: Sequence[int] = (1, 2, 2)
  width: int = 128
  depth: int = 4
  num_heads: int = 4
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32
  remat: str = 'none'
  attention: str = 'xla'
  qk_norm: bool = True
  input_conditioning: bool = False
  scan_layers: bool = False
  adaln: str = 'block'
  rope_theta: float = 10_000.0
  axis_rules: layers.Rules = ()   # logical -> mesh axes for activation constraints (config.mesh.rules)

  @nn.compact
  def __call__(self, x_t: jax.Array, t: jax.Array, cond_latents: Optional[jax.Array] = None,
               cond_mask: Optional[jax.Array] = None) -> jax.Array:
    """x_t `[B,T,h,w,c]`, t `[B,T,h,w]` (+ cond `[B,T,h,w,c]`, `[B,T,h,w]`) -> v `[B,T,h,w,c]`."""
    pt, ph, pw = self.patch_size
    _check_inputs(x_t, t, self.patch_size, cond_latents, cond_mask, self.input_conditioning)
    if self.width % self.num_heads:
      raise ValueError(f'config.model.width={self.width} not divisible by num_heads='
                       f'{self.num_heads}')
    if self.remat not in _REMAT:
      raise ValueError(f'config.model.remat must be one of {_REMAT}, got {self.remat!r}')
    b, T, h, w, c = x_t.shape
    grid = (T // pt, h // ph, w // pw)
    head_dim = self.width // self.num_heads

    inputs = x_t.astype(jnp.float32)
    if self.input_conditioning:
      m = cond_mask.astype(bool)
      known = jnp.where(m[..., None], cond_latents.astype(jnp.float32), 0.0)
      inputs = jnp.concatenate([inputs, known, m[..., None].astype(jnp.float32)], axis=-1)

    patch_pattern = 'b (t pt) (h ph) (w pw) c -> b (t h w) (pt ph pw c)'
    tokens = einops.rearrange(inputs, patch_pattern, pt=pt, ph=ph, pw=pw)
    # A patch with any noisy latent counts as noisy: its level is the max inside it.
    t_tok = einops.reduce(t.astype(jnp.float32), 'b (t pt) (h ph) (w pw) -> b (t h w)', 'max',
                          pt=pt, ph=ph, pw=pw)

    x = nn.Dense(self.width, dtype=self.dtype, param_dtype=jnp.float32,
                 kernel_init=layers.logical(nn.initializers.xavier_uniform(), ('patch', 'embed')),
                 bias_init=layers.logical(nn.initializers.zeros_init(), ('embed',)),
                 name='patch_embed')(tokens).astype(jnp.float32)   # float32 residual stream
    cond = layers.TimestepEmbedder(self.width, dtype=self.dtype, name='t_embed')(t_tok)

    pos = np.stack(np.meshgrid(*[np.arange(g) for g in grid], indexing='ij'), -1).reshape(-1, 3)
    angles = layers.rope_angles(jnp.asarray(pos), head_dim, self.rope_theta)

    if self.attention not in ('xla', 'cudnn', 'splash'):
      raise ValueError(f'VideoTransformer.attention must be a resolved kernel (xla, cudnn, '
                       f'splash; see attention.resolve_attention), got {self.attention!r}')
    impl = self.attention
    if self.adaln not in _ADALN:
      raise ValueError(f'config.model.adaln must be one of {_ADALN}, got {self.adaln!r}')
    x = layers.constrain(x, layers.TOKENS, self.axis_rules)
    cond = layers.constrain(cond, layers.TOKENS, self.axis_rules)
    block_args = (self.num_heads, self.mlp_ratio, self.qk_norm, impl, self.dtype, self.adaln,
                  self.axis_rules)
    block_cond = cond
    if self.adaln == 'single':
      # One per-token modulation for all blocks (each block adds its own learned offset).
      block_cond = nn.Dense(6 * self.width, dtype=self.dtype, param_dtype=jnp.float32,
                            kernel_init=layers.logical(nn.initializers.zeros_init(), ('embed', 'mlp')),
                            bias_init=layers.logical(nn.initializers.zeros_init(), ('mlp',)),
                            name='adaln_single')(nn.silu(cond))
    block_cls = _ScanBlock if self.scan_layers else layers.Block
    if self.remat != 'none':
      policy = (None if self.remat == 'full'
                else jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
      block_cls = nn.remat(block_cls, policy=policy, prevent_cse=not self.scan_layers)
    if self.scan_layers:
      # One traced block, parameters stacked on a leading 'layers' axis: compile time stops
      # growing with depth.
      stack = nn.scan(block_cls, variable_axes={'params': 0}, split_rngs={'params': True},
                      in_axes=(nn.broadcast, nn.broadcast), length=self.depth,
                      metadata_params={nn.PARTITION_NAME: 'layers'})
      x, _ = stack(*block_args, name='blocks')(x, block_cond, angles)
    else:
      for i in range(self.depth):
        x = block_cls(*block_args, name=f'block_{i}')(x, block_cond, angles)

    out = layers.FinalLayer(pt * ph * pw * c, dtype=self.dtype, name='final')(x, cond)
    v = einops.rearrange(out, 'b (t h w) (pt ph pw c) -> b (t pt) (h ph) (w pw) c',
                         t=grid[0], h=grid[1], w=grid[2], pt=pt, ph=ph, pw=pw)
    return v.astype(jnp.float32)


class _ScanBlock(layers.Block):
  """Block with the (carry, output) signature nn.scan expects."""

  def __call__(self, x, c, angles):
    return super().__call__(x, c, angles), None


def build_model(config, platform: Optional[str] = None) -> VideoTransformer:
  """Module from the full config (reads config.model and config.mesh.rules; checks
  config.diffusion.objective). platform: the target the attention kernel is resolved for
  ('cpu' | 'gpu' | 'tpu'; default this host's backend)."""
  m = config.model
  if m.dtype not in _DTYPES:
    raise ValueError(f'config.model.dtype must be one of {sorted(_DTYPES)}, got {m.dtype!r}')
  patch_size = tuple(int(p) for p in m.patch_size)
  if len(patch_size) != 3 or min(patch_size) < 1:
    raise ValueError(f'config.model.patch_size must be 3 positive ints (t, h, w), got {patch_size}')
  input_conditioning = bool(m.get('input_conditioning', False))
  objective = config.get('diffusion', {}).get('objective', 'masked')
  if (objective == 'conditioning') != input_conditioning:
    raise ValueError(
        f"config.diffusion.objective={objective!r} needs config.model.input_conditioning="
        f"{objective == 'conditioning'} (got {input_conditioning}): the conditioning baseline "
        'feeds known latents as input channels, the other objectives do not.')
  width, num_heads = int(m.width), int(m.num_heads)
  if width % num_heads:
    raise ValueError(f'config.model.width={width} not divisible by num_heads={num_heads}')
  attention = attention_lib.resolve_attention(m.attention, _DTYPES[m.dtype], num_heads,
                                              width // num_heads, platform)
  return VideoTransformer(
      patch_size=patch_size, width=width, depth=int(m.depth),
      num_heads=num_heads, mlp_ratio=float(m.mlp_ratio), dtype=_DTYPES[m.dtype],
      remat=m.remat, attention=attention, qk_norm=bool(m.get('qk_norm', True)),
      input_conditioning=input_conditioning, scan_layers=bool(m.get('scan_layers', False)),
      adaln=m.get('adaln', 'block'), rope_theta=float(m.get('rope_theta', 10_000.0)),
      axis_rules=sharding_lib.logical_rules(config.mesh) if 'mesh' in config else ())


def make_apply_fn(module: nn.Module) -> Callable[..., jax.Array]:
  """Pure `apply_fn(params, x_t, t[, cond_latents, cond_mask]) -> v`.

  `params` is the 'params' collection (`variables['params']`), boxed or unboxed.
  """
  def apply_fn(params, x_t, t, cond_latents=None, cond_mask=None):
    return module.apply({'params': params}, x_t, t, cond_latents, cond_mask)
  return apply_fn


def latent_grid(config) -> tuple[int, int, int, int]:
  """(T, h, w, c) of one training example's latents, derived from the data and VAE config."""
  down = 2 ** (len(config.vae.channel_multipliers) - 1)
  if config.data.resolution % down:
    raise ValueError(f'config.data.resolution={config.data.resolution} not divisible by the VAE '
                     f'downsampling {down}')
  hw = config.data.resolution // down
  return int(config.data.clip_length), hw, hw, int(config.vae.latent_channels)


def example_inputs(config, batch_size: int = 1) -> dict:
  """Zero inputs of the training shape, as keyword arguments for `module.init(rng, **inputs)`."""
  T, h, w, c = latent_grid(config)
  inputs = {'x_t': jnp.zeros((batch_size, T, h, w, c), jnp.float32),
            't': jnp.zeros((batch_size, T, h, w), jnp.float32)}
  if config.model.get('input_conditioning', False):
    inputs['cond_latents'] = jnp.zeros((batch_size, T, h, w, c), jnp.float32)
    inputs['cond_mask'] = jnp.zeros((batch_size, T, h, w), bool)
  return inputs


def num_tokens(config) -> int:
  """Tokens per training example: latent grid divided by the patch size."""
  T, h, w, _ = latent_grid(config)
  pt, ph, pw = config.model.patch_size
  return (T // pt) * (h // ph) * (w // pw)


def matmul_params(config, latent_channels: Optional[int] = None) -> int:
  """Weights that multiply every token (all Dense kernels), counted from the config."""
  m = config.model
  d = int(m.width)
  hidden = int(round(d * float(m.mlp_ratio)))
  c = latent_channels if latent_channels is not None else int(config.vae.latent_channels)
  patch = int(np.prod(m.patch_size))
  c_in = 2 * c + 1 if m.get('input_conditioning', False) else c
  single = m.get('adaln', 'block') == 'single'
  per_block = 3 * d * d + d * d + 2 * d * hidden + (0 if single else 6 * d * d)
  return (patch * c_in * d                   # patch embed
          + 256 * d + d * d                  # timestep MLP
          + (6 * d * d if single else 0)     # shared adaLN projection
          + int(m.depth) * per_block
          + 2 * d * d + d * patch * c)       # final adaLN + projection


def flops_per_token(config, tokens: Optional[int] = None, training: bool = True) -> float:
  """Analytic FLOPs per token (for MFU): matmuls 2*P forward plus attention 4*N*D per layer.

  Training counts backward as twice forward: 6*P + 12*depth*N*D (PaLM appendix B convention);
  elementwise ops, norms and softmax are ignored. tokens: sequence length N (default: from the
  config's latent grid).
  """
  n = num_tokens(config) if tokens is None else int(tokens)
  fwd = 2 * matmul_params(config) + 4 * int(config.model.depth) * n * int(config.model.width)
  return float(3 * fwd if training else fwd)


def load_for_inference(diffusion_dir: str):
  """(config, module, ema_params) from a diffusion stage dir alone, on one device.

  The config comes from `diffusion_dir/config.json`, the module from `build_model(config)` for
  this host's platform, the EMA params from the newest readable checkpoint (orbax partial
  restore: the optimizer state and the raw params are never read). Raises FileNotFoundError
  naming the directory when the config or a checkpoint is missing.
  """
  config_path = os.path.join(diffusion_dir, 'config.json')
  if not fileio.path(config_path).exists():
    raise FileNotFoundError(
        f'No diffusion run in {diffusion_dir!r}: {config_path} is missing. Train one with '
        '`python -m maskvid.main --config=configs/tiny.py --workdir=DIR` (job=diffusion).')
  config = workdir_lib.read_config(config_path)
  module = build_model(config, platform=attention_lib.target_platform(jax.devices()[:1]))
  boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), **example_inputs(config)))
  ema = checkpoint_lib.restore_subtree(diffusion_dir, 'ema_params', nn.unbox(boxed['params']),
                                       'diffusion stage')
  return config, module, ema
