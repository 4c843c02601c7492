"""Image metrics for evaluation: PSNR / SSIM (whole frame and holes only), Fréchet distance.

Conventions: frames are float in [-1, 1] shaped `[..., H, W, 3]` (any number of leading axes,
e.g. `[B, T, H, W, 3]`); they are mapped to [0, 1] before PSNR / SSIM so that the dynamic range
is 1 (what dm_pix assumes). Masks are bool `[..., H, W]` with True = pixel counted ("hole").

* PSNR: `-10 log10(MSE)`, MSE over all pixels and channels of one frame (whole) or over hole
  pixels only (masked). Identical frames give +inf. Averages over frames skip nothing: callers
  average per-frame values with `finite_mean`, which clips inf to `PSNR_CAP` so a perfect frame
  does not make the mean infinite.
* SSIM: dm_pix SSIM (Gaussian window 11, sigma 1.5, k1 0.01, k2 0.03). Whole-frame SSIM is the
  standard one (mean of the 'valid' SSIM map). Masked SSIM needs a map aligned with the pixels, so
  the frame is reflect-padded by half a window first; the full-resolution map is then averaged over
  hole pixels. For frames smaller than the window the window shrinks to the frame size.
* LPIPS: `maskvid.eval.lpips`.
* Fréchet distance: FID formula between Gaussian fits of per-frame features: the LPIPS
  backbone's last stage, spatially averaged (512-d, `lpips.LPIPS.pooled_features`). With the few
  hundred frames of a small eval (N ~ D) the estimate is biased and noisy: compare methods on
  the same frames only, never with published FIDs (Inception features, 50k samples).
"""
from __future__ import annotations

import warnings

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

PSNR_CAP = 100.0   # dB; stands in for +inf (identical frames) when averaging


def _to_unit(x):
  return (jnp.asarray(x, jnp.float32) + 1.0) / 2.0


def check_pair(a, b, name_a='a', name_b='b'):
  if a.shape != b.shape:
    raise ValueError(f'{name_a} and {name_b} must have the same shape, got {a.shape} vs {b.shape}')
  if a.ndim < 3 or a.shape[-1] != 3:
    raise ValueError(f'{name_a} must be [..., H, W, 3] frames in [-1, 1], got shape {a.shape}')


def _check_mask(mask, frames):
  if tuple(mask.shape) != tuple(frames.shape[:-1]):
    raise ValueError(f'mask must be bool [..., H, W] matching frames {frames.shape[:-1]}, '
                     f'got {mask.shape}')


@jax.jit
def psnr(a, b):
  """Per-frame PSNR in dB. a, b: [..., H, W, 3] in [-1, 1] -> [...]; identical -> +inf."""
  check_pair(a, b)
  mse = jnp.mean((_to_unit(a) - _to_unit(b)) ** 2, axis=(-3, -2, -1))
  return -10.0 * jnp.log10(mse)


@jax.jit
def masked_psnr(a, b, mask):
  """Per-frame PSNR over mask pixels only (MSE over hole pixels and channels).

  a, b: [..., H, W, 3] in [-1, 1]; mask: bool [..., H, W]. Frames with an empty mask give NaN
  (excluded by `finite_mean`), identical hole content gives +inf.
  """
  check_pair(a, b)
  _check_mask(mask, a)
  w = jnp.asarray(mask, jnp.float32)[..., None]
  sq = ((_to_unit(a) - _to_unit(b)) ** 2) * w
  count = jnp.sum(w, axis=(-3, -2, -1)) * a.shape[-1]
  mse = jnp.sum(sq, axis=(-3, -2, -1)) / jnp.where(count > 0, count, jnp.nan)
  return -10.0 * jnp.log10(mse)


def _flat_frames(x):
  return x.reshape((-1,) + x.shape[-3:])


def _window(h, w):
  return min(11, h, w)


@jax.jit   # eager dm_pix SSIM dispatches op by op: ~50x slower per clip
def ssim(a, b):
  """Per-frame SSIM (standard, 'valid' window map). a, b: [..., H, W, 3] in [-1, 1] -> [...]."""
  check_pair(a, b)
  lead = a.shape[:-3]
  size = _window(*a.shape[-3:-1])
  val = pix.ssim(_flat_frames(_to_unit(a)), _flat_frames(_to_unit(b)), max_val=1.0,
                 filter_size=size)
  return val.reshape(lead)


@jax.jit
def ssim_map(a, b):
  """Full-resolution SSIM map, channel-averaged: [..., H, W, 3] -> [..., H, W].

  Frames are reflect-padded by half a window so every pixel has a full window; this makes the
  map align with pixel masks (used by `masked_ssim`).
  """
  check_pair(a, b)
  h, w = a.shape[-3:-1]
  size = _window(h, w)
  lo, hi = size // 2, size - 1 - size // 2
  pad = lambda x: jnp.pad(_flat_frames(_to_unit(x)), ((0, 0), (lo, hi), (lo, hi), (0, 0)),
                          mode='reflect')
  m = pix.ssim(pad(a), pad(b), max_val=1.0, filter_size=size, return_map=True)
  return jnp.mean(m, axis=-1).reshape(a.shape[:-1])


@jax.jit
def masked_ssim(a, b, mask):
  """Per-frame SSIM map averaged over mask pixels. mask: bool [..., H, W]; empty mask -> NaN."""
  _check_mask(mask, a)
  m = ssim_map(a, b)
  w = jnp.asarray(mask, jnp.float32)
  count = jnp.sum(w, axis=(-2, -1))
  return jnp.sum(m * w, axis=(-2, -1)) / jnp.where(count > 0, count, jnp.nan)


def finite_mean(values) -> float:
  """Mean over all entries, +inf clipped to PSNR_CAP and NaN (empty masks) skipped."""
  v = np.asarray(values, np.float64).ravel()
  v = np.where(np.isposinf(v), PSNR_CAP, v)
  v = v[~np.isnan(v)]
  return float(v.mean()) if v.size else float('nan')


# ----------------------------------------------------------------------------------------------
# Fréchet distance


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
  """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between Gaussian fits of [N, D] features.

  Needs N >= 2 in each set; with N <= D the covariances are rank deficient, which the matrix
  square root tolerates (the imaginary round-off is dropped) but makes the value noisy.
  """
  a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
    raise ValueError(f'features must be [N>=2, D] with equal D, got {a.shape} and {b.shape}')
  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  with warnings.catch_warnings():
    # Rank-deficient covariances (few samples) are expected; the result is still usable.
    warnings.simplefilter('ignore', scipy.linalg.LinAlgWarning)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.all(np.isfinite(covmean)):
      eps = 1e-6 * np.eye(a.shape[1])
      covmean = scipy.linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
  covmean = np.real(covmean)
  value = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * covmean)
  return float(max(value, 0.0))
