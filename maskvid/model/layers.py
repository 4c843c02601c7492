"""Building blocks of the video transformer: timestep embedding, 3-D RoPE, adaLN-Zero block.

Shapes: tokens `[B, N, D]`, per-token conditioning `[B, N, D]`, positions `[N, 3]` (t, h, w
patch indices). Every parameter carries logical axis names (embed, mlp, heads, kv, qkv, patch);
the mesh rules in `config.mesh.rules` map them to mesh axes, never the model code.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from maskvid import sharding as sharding_lib
from maskvid.model import attention as attention_lib

Dtype = Any
Rules = tuple  # ((logical name, mesh axis | tuple of axes | None), ...)

# Logical names of activation dims (mapped to mesh axes by config.mesh.rules like the params').
TOKENS = ('activation_batch', 'activation_length', 'activation_embed')
HEADS = ('activation_batch', 'activation_length', 'activation_heads', 'activation_kv')
HIDDEN = ('activation_batch', 'activation_length', 'activation_mlp')

# Init helpers: logical names attached to the standard initialisers.
_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros_init()
_ones = nn.initializers.ones_init()


def logical(init, names):
  """An initialiser whose parameter carries logical axis names (mapped to mesh axes by config)."""
  return nn.with_logical_partitioning(init, names)


def timestep_features(t: jax.Array, dim: int = 256, max_period: float = 10_000.0) -> jax.Array:
  """Sinusoidal features of noise levels. t `[...]` in [0, 1] -> float32 `[..., dim]`.

  t is scaled by 1000 so that the fastest frequencies resolve small differences in t; t = 0
  (clean context) maps to a distinct, fixed vector (sin 0 = 0, cos 0 = 1).
  """
  if dim % 2:
    raise ValueError(f'timestep feature dim must be even, got {dim}')
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = (t.astype(jnp.float32) * 1000.0)[..., None] * freqs
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class TimestepEmbedder(nn.Module):
  """Per-token noise level t `[B, N]` -> conditioning vector `[B, N, D]`."""
  width: int
  freq_dim: int = 256
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    h = timestep_features(t, self.freq_dim)
    h = nn.Dense(self.width, dtype=self.dtype, param_dtype=jnp.float32,
                 kernel_init=logical(nn.initializers.normal(0.02), (None, 'embed')),
                 bias_init=logical(_zeros, ('embed',)), name='fc1')(h)
    h = nn.silu(h)
    h = nn.Dense(self.width, dtype=self.dtype, param_dtype=jnp.float32,
                 kernel_init=logical(nn.initializers.normal(0.02), ('mlp', 'embed')),
                 bias_init=logical(_zeros, ('embed',)), name='fc2')(h)
    return h


def rope_sections(head_dim: int) -> tuple[int, int, int]:
  """Split of the head dim between the (t, h, w) rotary sections; each even, summing to head_dim.

  Space gets equal shares, time takes the remainder (>= each spatial share).
  """
  if head_dim % 2 or head_dim < 6:
    raise ValueError(f'3-D RoPE needs an even head dim >= 6, got {head_dim} '
                     '(config.model.width / config.model.num_heads)')
  s = 2 * (head_dim // 6)
  return head_dim - 2 * s, s, s


def rope_angles(positions: jax.Array, head_dim: int, theta: float = 10_000.0) -> jax.Array:
  """Rotation angles for 3-D factorised RoPE. positions `[N, 3]` -> float32 `[N, head_dim // 2]`.

  Each axis (t, h, w) rotates its own slice of the head dim with standard 1-D RoPE frequencies,
  so attention logits depend on relative offsets along each axis separately.
  """
  parts = []
  for axis, sec in enumerate(rope_sections(head_dim)):
    inv = 1.0 / (theta ** (jnp.arange(0, sec, 2, dtype=jnp.float32) / sec))
    parts.append(positions[:, axis].astype(jnp.float32)[:, None] * inv[None, :])
  return jnp.concatenate(parts, axis=-1)


def apply_rope(x: jax.Array, angles: jax.Array) -> jax.Array:
  """Rotate pairs (x[..., :d/2], x[..., d/2:]) of x `[B, N, H, d]` by angles `[N, d/2]`."""
  dtype = x.dtype
  x = x.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  cos = jnp.cos(angles)[None, :, None, :]
  sin = jnp.sin(angles)[None, :, None, :]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(dtype)


def constrain(x: jax.Array, names, rules: Rules) -> jax.Array:
  """Pins an activation's layout from logical names (no-op without a mesh or rules)."""
  return sharding_lib.logical_constraint(x, names, rules)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
  return x * (1.0 + scale) + shift


class Attention(nn.Module):
  """Full spacetime self-attention with 3-D RoPE through `jax.nn.dot_product_attention`.

  x `[B, N, D]`, angles `[N, head_dim/2]` -> `[B, N, D]`.
  implementation: the resolved kernel, 'xla' | 'cudnn' | 'splash' (`model.attention`).
  """
  num_heads: int
  qk_norm: bool = True
  implementation: str = 'xla'
  dtype: Dtype = jnp.float32
  axis_rules: Rules = ()

  @nn.compact
  def __call__(self, x: jax.Array, angles: jax.Array) -> jax.Array:
    width = x.shape[-1]
    head_dim = width // self.num_heads
    qkv = nn.DenseGeneral(
        features=(3, self.num_heads, head_dim), dtype=self.dtype, param_dtype=jnp.float32,
        kernel_init=logical(_xavier, ('embed', 'qkv', 'heads', 'kv')),
        bias_init=logical(_zeros, ('qkv', 'heads', 'kv')), name='qkv')(x)
    q, k, v = (constrain(qkv[:, :, i], HEADS, self.axis_rules) for i in range(3))  # [B, N, H, d]
    if self.qk_norm:
      # RMS-normalised queries/keys keep bf16 logits bounded as width grows.
      q = nn.RMSNorm(dtype=self.dtype, param_dtype=jnp.float32,
                     scale_init=logical(_ones, ('kv',)), name='q_norm')(q)
      k = nn.RMSNorm(dtype=self.dtype, param_dtype=jnp.float32,
                     scale_init=logical(_ones, ('kv',)), name='k_norm')(k)
    q = apply_rope(q, angles)
    k = apply_rope(k, angles)
    rule = lambda name: sharding_lib.mesh_axes_of(name, self.axis_rules)
    out = attention_lib.attend(q, k, v, self.implementation, rule('activation_batch'),
                               rule('activation_heads'))
    out = constrain(out, HEADS, self.axis_rules)
    return nn.DenseGeneral(
        features=width, axis=(-2, -1), dtype=self.dtype, param_dtype=jnp.float32,
        kernel_init=logical(_xavier, ('heads', 'kv', 'embed')),
        bias_init=logical(_zeros, ('embed',)), name='out')(out)


class Mlp(nn.Module):
  hidden: int
  dtype: Dtype = jnp.float32
  axis_rules: Rules = ()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    h = nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32,
                 kernel_init=logical(_xavier, ('embed', 'mlp')),
                 bias_init=logical(_zeros, ('mlp',)), name='fc1')(x)
    h = constrain(nn.gelu(h, approximate=True), HIDDEN, self.axis_rules)
    return nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32,
                    kernel_init=logical(_xavier, ('mlp', 'embed')),
                    bias_init=logical(_zeros, ('embed',)), name='fc2')(h)


class Block(nn.Module):
  """DiT block with per-token adaLN-Zero.

  x `[B, N, D]` tokens, c `[B, N, D]` each token's own noise-level embedding,
  angles `[N, head_dim/2]`. The residual stream x stays float32 whatever the compute dtype
  (branch outputs are added in float32), so 24+ bf16 blocks do not accumulate rounding in it.
  The 6 modulation vectors (shift/scale/gate for attention and MLP)
  are computed per token, so a clean context token and a noisy token in the same clip are
  normalised differently. The modulation projection is zero-initialised: every block starts as
  the identity (gates = 0).

  adaln='block' (DiT): each block projects c `[B, N, D]` to its own modulation (6 D^2 weights and
  FLOPs per token per block). adaln='single' (PixArt-alpha adaLN-single): c is already the shared
  modulation `[B, N, 6D]`, projected once for the whole network, and each block only adds a
  learned offset `[6D]` (zero-initialised, so blocks still start as the identity).
  """
  num_heads: int
  mlp_ratio: float = 4.0
  qk_norm: bool = True
  implementation: str = 'xla'
  dtype: Dtype = jnp.float32
  adaln: str = 'block'
  axis_rules: Rules = ()

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array, angles: jax.Array) -> jax.Array:
    width = x.shape[-1]
    x = constrain(x, TOKENS, self.axis_rules)
    if self.adaln == 'single':
      offset = self.param('adaln_offset', logical(_zeros, ('mlp',)), (6 * width,), jnp.float32)
      mod = c + offset.astype(c.dtype)
    else:
      mod = nn.Dense(6 * width, dtype=self.dtype, param_dtype=jnp.float32,
                     kernel_init=logical(_zeros, ('embed', 'mlp')),
                     bias_init=logical(_zeros, ('mlp',)), name='adaln')(nn.silu(c))
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)
    norm = lambda name: nn.LayerNorm(use_scale=False, use_bias=False, epsilon=1e-6,
                                     dtype=self.dtype, name=name)
    h = modulate(norm('norm1')(x), shift1, scale1)
    h = Attention(self.num_heads, self.qk_norm, self.implementation, self.dtype,
                  self.axis_rules, name='attn')(h, angles)
    x = x + (gate1 * h).astype(x.dtype)
    h = modulate(norm('norm2')(x), shift2, scale2)
    h = Mlp(int(round(width * self.mlp_ratio)), self.dtype, self.axis_rules, name='mlp')(h)
    return constrain(x + (gate2 * h).astype(x.dtype), TOKENS, self.axis_rules)


class FinalLayer(nn.Module):
  """Per-token adaLN (shift, scale) then a zero-initialised projection to patch values."""
  out_features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
    width = x.shape[-1]
    mod = nn.Dense(2 * width, dtype=self.dtype, param_dtype=jnp.float32,
                   kernel_init=logical(_zeros, ('embed', 'mlp')),
                   bias_init=logical(_zeros, ('mlp',)), name='adaln')(nn.silu(c))
    shift, scale = jnp.split(mod, 2, axis=-1)
    x = modulate(nn.LayerNorm(use_scale=False, use_bias=False, epsilon=1e-6,
                              dtype=self.dtype, name='norm')(x), shift, scale)
    return nn.Dense(self.out_features, dtype=self.dtype, param_dtype=jnp.float32,
                    kernel_init=logical(_zeros, ('embed', 'patch')),
                    bias_init=logical(_zeros, ('patch',)), name='proj')(x)
