"""Flow-matching noise schedule with a noise level per latent token.

`x_t = (1 - t) * x + t * eps`, t in [0, 1]; the model predicts the velocity `v = eps - x`, and
sampling integrates `dx/dt = v` from t = 1 down to 0. t = 0 means exactly clean: `add_noise`
returns x bit-for-bit there, so context tokens reach the model unchanged.
"""
from __future__ import annotations

from typing import Sequence

import einops
import jax
import jax.numpy as jnp

_TIME_SAMPLING = ('logit_normal', 'uniform')


def add_noise(x: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
  """x, eps `[B,T,h,w,c]`, t `[B,T,h,w]` (or broadcastable to x[..., 0]) -> x_t `[B,T,h,w,c]`."""
  if x.shape != eps.shape:
    raise ValueError(f'eps must match x {x.shape}, got {eps.shape}')
  t = jnp.asarray(t, jnp.float32)[..., None]
  x_t = (1.0 - t) * x + t * eps
  # Exactly x where t == 0, whatever eps holds (0 * inf would give nan otherwise).
  return jnp.where(t == 0, x, x_t).astype(x.dtype)


def velocity_target(x: jax.Array, eps: jax.Array) -> jax.Array:
  """d x_t / dt = eps - x, `[B,T,h,w,c]`."""
  return eps - x


def sample_t(rng: jax.Array, shape: Sequence[int], config) -> jax.Array:
  """Noise levels float32 `shape` in [t_min, 1] (config = config.diffusion).

  logit_normal: sigmoid(N(logit_mean, logit_std)) concentrates training on mid-range t, where
  velocity prediction is hardest (SD3); uniform: U(0, 1). Both are clipped to [t_min, 1] so a
  masked token is never exactly clean.
  """
  t_min = float(config.t_min)
  if not 0.0 < t_min < 1.0:
    raise ValueError(f'config.diffusion.t_min must be in (0, 1), got {t_min}')
  kind = config.time_sampling
  if kind == 'logit_normal':
    z = config.logit_mean + config.logit_std * jax.random.normal(rng, shape, jnp.float32)
    t = jax.nn.sigmoid(z)
  elif kind == 'uniform':
    t = jax.random.uniform(rng, shape, jnp.float32)
  else:
    raise ValueError(f'config.diffusion.time_sampling must be one of {_TIME_SAMPLING}, '
                     f'got {kind!r}')
  return jnp.clip(t, t_min, 1.0)


def token_times(rng: jax.Array, known_mask: jax.Array, config,
                patch_size: Sequence[int] = (1, 1, 1)) -> jax.Array:
  """Per-token noise levels `[B,T,h,w]` for a known mask `[B,T,h,w]` (True = known).

  Known tokens get exactly 0. Masked tokens get one t per sample (config.per_token_t False) or
  one t per patch of `patch_size` (True): t is drawn on the patch grid so all latents of a patch
  share a level, matching the model's per-patch pooling.
  """
  known_mask = jnp.asarray(known_mask, bool)
  if known_mask.ndim != 4:
    raise ValueError(f'known_mask must be [B, T, h, w], got shape {known_mask.shape}')
  b = known_mask.shape[0]
  if config.per_token_t:
    pt, ph, pw = (int(p) for p in patch_size)
    grid = known_mask.shape[1:]
    if any(g % p for g, p in zip(grid, (pt, ph, pw))):
      raise ValueError(f'known_mask grid {grid} is not divisible by patch_size {patch_size}')
    t = sample_t(rng, (b, grid[0] // pt, grid[1] // ph, grid[2] // pw), config)
    t = einops.repeat(t, 'b t h w -> b (t pt) (h ph) (w pw)', pt=pt, ph=ph, pw=pw)
  else:
    t = jnp.broadcast_to(sample_t(rng, (b, 1, 1, 1), config), known_mask.shape)
  return jnp.where(known_mask, 0.0, t)
