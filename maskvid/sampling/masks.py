"""Masks from pixel space to the sampler's token space.

`pixel_to_token_masks` is the rule the evaluation, the Completer and the task commands use: per
model patch, *known* if >= min_valid of its pixels are given, *exact* if all are.
`align_to_patches` makes a latent mask constant per model patch (a patch is known only if all its
latents are; the model pools t per patch and trains on patch-aligned masks), for callers that
build masks in latent space (the sampler benchmark). Pure jnp functions (jit/vmap friendly);
shapes must divide evenly.
"""
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

# The pixel -> token rule's thresholds: the library default and configs/default.py's
# `sample.min_valid` / `sample.min_hinted` (which read them from here, so the two cannot differ).
# A patch with any given pixel of its 1% is known; one known only through hints needs 90%
# covered (a patch of sparse copies, nearest-filled from them, is poor context held clean:
# 0.01 lost ~1 dB on interpolation at camera speed 0.25 against 0.9).
MIN_VALID = 0.01
MIN_HINTED = 0.9


def _patch(patch_size) -> tuple[int, int, int]:
  patch = tuple(int(p) for p in np.atleast_1d(patch_size))
  if len(patch) != 3 or min(patch) < 1:
    raise ValueError(f'patch_size must be three positive ints (t, h, w), got {patch_size!r}')
  return patch


def align_to_patches(mask, patch_size: Union[Sequence[int], int]) -> jax.Array:
  """Makes a latent mask constant per model patch: a patch is known only if all its latents are.

  Args:
    mask: bool [B, T, h, w] (True = known).
    patch_size: (pt, ph, pw) in latent units (config.model.patch_size); T, h, w must be multiples.

  Returns:
    bool [B, T, h, w], True only inside fully known patches.
  """
  mask = jnp.asarray(mask)
  if mask.dtype != jnp.bool_:
    raise TypeError(f'mask must be bool (True = known), got dtype {mask.dtype}')
  if mask.ndim != 4:
    raise ValueError(f'mask must be [B, T, h, w], got shape {mask.shape}')
  patch = _patch(patch_size)
  b, t, h, w = mask.shape
  pt, ph, pw = patch
  if t % pt or h % ph or w % pw:
    raise ValueError(f'mask grid {(t, h, w)} must be divisible by patch_size {patch}')
  blocks = mask.reshape(b, t // pt, pt, h // ph, ph, w // pw, pw)
  known = jnp.all(blocks, axis=(2, 4, 6), keepdims=True)
  return jnp.broadcast_to(known, blocks.shape).reshape(mask.shape)


def pixel_to_token_masks(pixel_mask, factor: int, patch_size: Union[Sequence[int], int],
                         min_valid: float = MIN_VALID, hint_mask=None,
                         min_hinted: Optional[float] = MIN_HINTED) -> tuple[jax.Array, jax.Array]:
  """Pixel validity -> (known, exact) latent masks, constant per model patch.

  The one rule from pixels to the sampler's tokens: a model patch covers pt frames of
  (ph * factor) x (pw * factor) pixels. It is *exact* when all of those pixels are valid, and
  *known* when at least `min_valid` of them are, or when at least `min_hinted` of them are
  valid or hinted (defaults: the configured rule, MIN_VALID and MIN_HINTED). Known but not
  exact patches are the sampler's unreliable context (values from nearest-filled pixels;
  stochastic conditioning re-noises them), exact ones stay clean (`sampler.complete(exact_mask=...)`). Hinted pixels (a
  guess: an edit warped along optical flow, a pixel copied from another frame) never count for
  *exact*.

  Args:
    pixel_mask: bool [B, T, H, W], True = valid pixel.
    factor: VAE spatial downsampling factor.
    patch_size: (pt, ph, pw) in latent units; T, H / factor, W / factor must be multiples.
    min_valid: fraction in (0, 1] of a patch's pixels that must be valid for it to be known.
    hint_mask: optional bool [B, T, H, W], True = hinted pixel.
    min_hinted: fraction in (0, 1] of a patch's pixels that must be valid or hinted for it to
      be known through its hints (None: min_valid).

  Returns:
    (known, exact): bool [B, T, H // factor, W // factor] each, exact implies known.
  """
  pixel_mask = jnp.asarray(pixel_mask)
  if pixel_mask.dtype != jnp.bool_:
    raise TypeError(f'pixel_mask must be bool (True = valid), got dtype {pixel_mask.dtype}')
  if pixel_mask.ndim != 4:
    raise ValueError(f'pixel_mask must be [B, T, H, W], got shape {pixel_mask.shape}')
  if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
    raise ValueError(f'factor must be a positive int, got {factor!r}')
  if not 0.0 < float(min_valid) <= 1.0:
    raise ValueError(f'min_valid must be in (0, 1], got {min_valid!r}')
  patch = _patch(patch_size)
  b, t, height, width = pixel_mask.shape
  pt, ph, pw = patch
  bh, bw = ph * factor, pw * factor
  if t % pt or height % bh or width % bw:
    raise ValueError(f'pixel_mask [B, T, H, W] = {pixel_mask.shape} needs T divisible by {pt} and '
                     f'H, W by {bh} x {bw} (VAE factor {factor} x patch {ph} x {pw})')
  if hint_mask is not None:
    hint_mask = jnp.asarray(hint_mask)
    if hint_mask.dtype != jnp.bool_ or hint_mask.shape != pixel_mask.shape:
      raise ValueError(f'hint_mask must be bool of pixel_mask\'s shape {pixel_mask.shape}, got '
                       f'{hint_mask.dtype} {hint_mask.shape}')

  def count(mask):   # valid pixels per patch, [B, T/pt, 1, H/bh, 1, W/bw, 1]
    blocks = mask.reshape(b, t // pt, pt, height // bh, bh, width // bw, bw)
    return jnp.sum(blocks, axis=(2, 4, 6), dtype=jnp.int32, keepdims=True)
  if min_hinted is None:
    min_hinted = min_valid
  if not 0.0 < float(min_hinted) <= 1.0:
    raise ValueError(f'min_hinted must be in (0, 1], got {min_hinted!r}')
  valid = count(pixel_mask)
  total = pt * bh * bw
  needed = max(1, int(np.ceil(float(min_valid) * total - 1e-6)))
  known = valid >= needed
  if hint_mask is not None:
    needed_hinted = max(1, int(np.ceil(float(min_hinted) * total - 1e-6)))
    hinted = count(hint_mask & ~pixel_mask) > 0   # only patches with hints are known through them
    known = known | (hinted & (count(pixel_mask | hint_mask) >= needed_hinted))
  lat_shape = (b, t // pt, pt, height // bh, ph, width // bw, pw)
  out_shape = (b, t, height // factor, width // factor)
  known = jnp.broadcast_to(known, lat_shape).reshape(out_shape)
  exact = jnp.broadcast_to(valid == total, lat_shape).reshape(out_shape)
  return known, exact
