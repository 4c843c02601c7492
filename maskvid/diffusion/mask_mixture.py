"""Training masks: which latent tokens are known (clean context) and which are to be generated.

Masks are drawn on the model's patch grid `(T/pt, h/ph, w/pw)` and expanded to the latent grid,
so they are constant inside each patch. True = known. Mask types (config.diffusion.masks gives
their mixture weights; each sample of a batch draws its own type, inside jit):

  random_patches  a fraction r ~ U(config.diffusion.mask_ratio) of patches masked, uniformly at
                  random (exactly round(r * num_patches), at least one).
  first_frame     the first temporal patch row known, all later frames masked (prediction).
  endpoints       first and last temporal rows known, the middle masked (interpolation).
  spacetime_box   one box masked: spatial area ~ r of the frame, random aspect in [1/2, 2];
                  half the time a tube through all frames, else a random temporal extent.
  random_frames   round(r * T) whole temporal rows masked (at least one, and at least one kept
                  when there are two or more).
  unconditional   nothing known.

A type that would leave nothing masked on a given grid (e.g. first_frame with one temporal patch)
falls back to random_patches, so every sample has something to learn from.
"""
from __future__ import annotations

import math
from typing import Sequence

import einops
import jax
import jax.numpy as jnp

MASK_TYPES = ('random_patches', 'first_frame', 'endpoints', 'spacetime_box', 'random_frames',
              'unconditional')


def _check_ratio(mask_ratio) -> tuple[float, float]:
  lo, hi = (float(r) for r in mask_ratio)
  if not 0.0 < lo <= hi <= 1.0:
    raise ValueError(f'config.diffusion.mask_ratio must satisfy 0 < lo <= hi <= 1, got {mask_ratio}')
  return lo, hi


# Every generator reads its randomness from one uniform draw per sample (`_draw`): a single
# threefry call keeps the compiled sampler small. Layout: 8 scalars, then one value per patch,
# then one per temporal patch row.
_NUM_SCALARS = 8


def _draw(rng, grid):
  u = jax.random.uniform(rng, (_NUM_SCALARS + math.prod(grid) + grid[0],))
  return u[:_NUM_SCALARS], u[_NUM_SCALARS:-grid[0]], u[-grid[0]:]


def _between(u, lo, hi):
  return lo + (hi - lo) * u


def _random_subset(u: jax.Array, k: jax.Array) -> jax.Array:
  """Bool `[n]` with exactly k True entries (the k smallest of u `[n]` by rank)."""
  n = u.shape[0]
  return jnp.zeros((n,), bool).at[jnp.argsort(u)].set(jnp.arange(n) < k)


def _random_patches(draws, grid, ratio):
  scalars, per_patch, _ = draws
  n = math.prod(grid)
  k = jnp.clip(jnp.round(_between(scalars[0], *ratio) * n), 1, n)
  return ~_random_subset(per_patch, k).reshape(grid)


def _time_index(grid):
  return jnp.broadcast_to(jnp.arange(grid[0])[:, None, None], grid)


def _first_frame(draws, grid, ratio):
  del draws, ratio
  return _time_index(grid) == 0


def _endpoints(draws, grid, ratio):
  del draws, ratio
  ti = _time_index(grid)
  return (ti == 0) | (ti == grid[0] - 1)


def _spacetime_box(draws, grid, ratio):
  u = draws[0]
  tp, hp, wp = grid
  r = _between(u[1], *ratio)
  aspect = jnp.exp(_between(u[2], -math.log(2), math.log(2)))
  bh = jnp.clip(jnp.round(jnp.sqrt(r * aspect) * hp), 1, hp)
  bw = jnp.clip(jnp.round(jnp.sqrt(r / aspect) * wp), 1, wp)
  # Half the time a tube through every frame, else a random temporal extent in [1, tp].
  bt = jnp.where(u[3] < 0.5, tp, jnp.clip(jnp.floor(u[4] * tp) + 1, 1, tp))

  def span(v, size, length):
    start = jnp.floor(v * (size - length + 1))
    idx = jnp.arange(size)
    return (idx >= start) & (idx < start + length)

  in_t, in_h, in_w = span(u[5], tp, bt), span(u[6], hp, bh), span(u[7], wp, bw)
  return ~(in_t[:, None, None] & in_h[None, :, None] & in_w[None, None, :])


def _random_frames(draws, grid, ratio):
  scalars, _, per_frame = draws
  tp = grid[0]
  k = jnp.clip(jnp.round(_between(scalars[0], *ratio) * tp), 1, max(tp - 1, 1))
  return jnp.broadcast_to(~_random_subset(per_frame, k)[:, None, None], grid)


def _unconditional(draws, grid, ratio):
  del draws, ratio
  return jnp.zeros(grid, bool)


_GENERATORS = {
    'random_patches': _random_patches, 'first_frame': _first_frame, 'endpoints': _endpoints,
    'spacetime_box': _spacetime_box, 'random_frames': _random_frames,
    'unconditional': _unconditional,
}


def patch_mask(rng: jax.Array, kind: str, patch_grid: Sequence[int],
               mask_ratio=(0.5, 0.95)) -> jax.Array:
  """One mask of type `kind` on the patch grid: bool `patch_grid` (Tp, hp, wp), True = known.

  No fallback here: first_frame on a one-frame grid is all known.
  """
  if kind not in _GENERATORS:
    raise ValueError(f'mask type must be one of {MASK_TYPES}, got {kind!r}')
  grid = tuple(int(g) for g in patch_grid)
  return _GENERATORS[kind](_draw(rng, grid), grid, _check_ratio(mask_ratio))


def mixture_weights(config) -> jax.Array:
  """config.diffusion.masks -> normalised float32 `[len(MASK_TYPES)]` in MASK_TYPES order."""
  weights = dict(config.masks)
  unknown = set(weights) - set(MASK_TYPES)
  if unknown:
    raise ValueError(f'config.diffusion.masks has unknown types {sorted(unknown)}; '
                     f'known: {MASK_TYPES}')
  w = [float(weights.get(k, 0.0)) for k in MASK_TYPES]
  if min(w) < 0 or sum(w) <= 0:
    raise ValueError(f'config.diffusion.masks weights must be >= 0 with a positive sum, got {weights}')
  return jnp.asarray(w, jnp.float32) / sum(w)


def patch_grid_of(grid: Sequence[int], patch_size: Sequence[int]) -> tuple[int, int, int]:
  grid = tuple(int(g) for g in grid)
  patch_size = tuple(int(p) for p in patch_size)
  if len(grid) != 3 or len(patch_size) != 3:
    raise ValueError(f'grid (T, h, w) and patch_size (pt, ph, pw) must have 3 entries, got '
                     f'{grid} and {patch_size}')
  if any(g % p for g, p in zip(grid, patch_size)):
    raise ValueError(f'latent grid {grid} is not divisible by patch_size {patch_size}')
  return tuple(g // p for g, p in zip(grid, patch_size))


def expand_to_latents(mask: jax.Array, patch_size: Sequence[int]) -> jax.Array:
  """Patch-grid mask `[B, Tp, hp, wp]` -> latent-grid mask `[B, Tp*pt, hp*ph, wp*pw]`."""
  pt, ph, pw = (int(p) for p in patch_size)
  return einops.repeat(mask, 'b t h w -> b (t pt) (h ph) (w pw)', pt=pt, ph=ph, pw=pw)


def sample_patch_masks(rng: jax.Array, batch_size: int, patch_grid: Sequence[int],
                       weights: jax.Array, mask_ratio) -> tuple[jax.Array, jax.Array]:
  """Masks on the patch grid, bool `[B, Tp, hp, wp]`, and their type indices int32 `[B]`.

  weights `[len(MASK_TYPES)]` (normalised) and mask_ratio (lo, hi) may be traced arrays, so one
  compiled function serves every mixture. Types that would leave nothing masked fall back to
  random_patches.
  """
  pgrid = tuple(int(g) for g in patch_grid)
  type_rng, mask_rng = jax.random.split(rng)
  types = jax.random.choice(type_rng, len(MASK_TYPES), (batch_size,), p=weights)

  def one(key, kind):
    draws = _draw(key, pgrid)
    # All generators run and one is selected: masks are tiny, and this keeps it vmappable.
    every = jnp.stack([_GENERATORS[k](draws, pgrid, mask_ratio) for k in MASK_TYPES])
    chosen = every[kind]
    fallback = every[MASK_TYPES.index('random_patches')]
    return jnp.where(jnp.all(chosen), fallback, chosen)

  return jax.vmap(one)(jax.random.split(mask_rng, batch_size), types), types


# Weights and ratios are traced, so every mixture shares one compile per (batch, grid); inside an
# outer jit this simply inlines.
_sample_patch_masks_jit = jax.jit(sample_patch_masks, static_argnums=(1, 2))


def sample_known_mask(rng: jax.Array, batch_size: int, grid: Sequence[int],
                      patch_size: Sequence[int], config, *,
                      return_types: bool = False):
  """Training masks bool `[B, T, h, w]` (True = known), patch-aligned; config = config.diffusion.

  grid: latent grid (T, h, w); patch_size: config.model.patch_size. Jittable (batch_size, grid
  and patch_size static). With return_types also returns the int32 `[B]` indices into MASK_TYPES.
  """
  pgrid = patch_grid_of(grid, patch_size)
  masks, types = _sample_patch_masks_jit(rng, batch_size, pgrid, mixture_weights(config),
                                         jnp.asarray(_check_ratio(config.mask_ratio), jnp.float32))
  masks = expand_to_latents(masks, patch_size)
  return (masks, types) if return_types else masks
