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


def _random_subset(rng, n: int, k: jax.Array) -> jax.Array:
  """Bool `[n]` with exactly k True entries, uniformly at random."""
  ranks = jnp.argsort(jnp.argsort(jax.random.uniform(rng, (n,))))
  return ranks < k


def _random_patches(rng, grid, ratio):
  r_rng, p_rng = jax.random.split(rng)
  n = math.prod(grid)
  r = jax.random.uniform(r_rng, (), minval=ratio[0], maxval=ratio[1])
  k = jnp.clip(jnp.round(r * n), 1, n)
  return ~_random_subset(p_rng, n, k).reshape(grid)


def _time_index(grid):
  return jnp.broadcast_to(jnp.arange(grid[0])[:, None, None], grid)


def _first_frame(rng, grid, ratio):
  del rng, ratio
  return _time_index(grid) == 0


def _endpoints(rng, grid, ratio):
  del rng, ratio
  ti = _time_index(grid)
  return (ti == 0) | (ti == grid[0] - 1)


def _spacetime_box(rng, grid, ratio):
  keys = jax.random.split(rng, 6)
  tp, hp, wp = grid
  r = jax.random.uniform(keys[0], (), minval=ratio[0], maxval=ratio[1])
  aspect = jnp.exp(jax.random.uniform(keys[1], (), minval=-math.log(2), maxval=math.log(2)))
  bh = jnp.clip(jnp.round(jnp.sqrt(r * aspect) * hp), 1, hp).astype(jnp.int32)
  bw = jnp.clip(jnp.round(jnp.sqrt(r / aspect) * wp), 1, wp).astype(jnp.int32)
  tube = jax.random.bernoulli(keys[2])
  bt = jnp.where(tube, tp, jax.random.randint(keys[3], (), 1, tp + 1))

  def span(key, size, length):
    start = jax.random.randint(key, (), 0, size - length + 1)
    idx = jnp.arange(size)
    return (idx >= start) & (idx < start + length)

  in_t = span(keys[4], tp, bt)
  kh, kw = jax.random.split(keys[5])
  in_h, in_w = span(kh, hp, bh), span(kw, wp, bw)
  return ~(in_t[:, None, None] & in_h[None, :, None] & in_w[None, None, :])


def _random_frames(rng, grid, ratio):
  r_rng, f_rng = jax.random.split(rng)
  tp = grid[0]
  r = jax.random.uniform(r_rng, (), minval=ratio[0], maxval=ratio[1])
  k = jnp.clip(jnp.round(r * tp), 1, max(tp - 1, 1))
  masked = _random_subset(f_rng, tp, k)
  return jnp.broadcast_to(~masked[:, None, None], grid)


def _unconditional(rng, grid, ratio):
  del rng, ratio
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
  return _GENERATORS[kind](rng, grid, _check_ratio(mask_ratio))


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


def sample_mask_types(rng: jax.Array, batch_size: int, config) -> jax.Array:
  """Mask type index per sample, int32 `[B]` into MASK_TYPES, drawn from config.masks."""
  return jax.random.choice(rng, len(MASK_TYPES), (batch_size,), p=mixture_weights(config))


def sample_known_mask(rng: jax.Array, batch_size: int, grid: Sequence[int],
                      patch_size: Sequence[int], config, *,
                      return_types: bool = False):
  """Training masks bool `[B, T, h, w]` (True = known), patch-aligned; config = config.diffusion.

  grid: latent grid (T, h, w); patch_size: config.model.patch_size. Jittable (batch_size, grid
  and patch_size static). With return_types also returns the int32 `[B]` type indices.
  """
  pgrid = patch_grid_of(grid, patch_size)
  ratio = _check_ratio(config.mask_ratio)
  type_rng, mask_rng = jax.random.split(rng)
  types = sample_mask_types(type_rng, batch_size, config)

  def one(key, kind):
    keys = jax.random.split(key, len(MASK_TYPES))
    # All generators run and one is selected: masks are tiny, and this keeps it vmappable.
    every = jnp.stack([_GENERATORS[k](keys[i], pgrid, ratio) for i, k in enumerate(MASK_TYPES)])
    chosen = every[kind]
    fallback = every[MASK_TYPES.index('random_patches')]
    return jnp.where(jnp.all(chosen), fallback, chosen)

  masks = jax.vmap(one)(jax.random.split(mask_rng, batch_size), types)
  masks = expand_to_latents(masks, patch_size)
  return (masks, types) if return_types else masks
