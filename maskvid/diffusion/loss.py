"""Masked flow-matching loss and its baselines (config.diffusion.objective).

'masked' (ours): known tokens stay exactly clean (t = 0); masked tokens are noised with t > 0
  (one t per sample, or one per patch with config.diffusion.per_token_t). The model sees every
  token with its own t and the loss is the mean squared velocity error over masked latents only.
'conditioning' (baseline): every token is noised at one standard level t per sample (always
  shared, whatever config.per_token_t says), and the known latents (zeros where unknown) plus the
  mask are fed as extra input channels: apply_fn(params, x_t, t, x0, known_mask), model built
  with config.model.input_conditioning = True. Loss over masked latents.
'unconditional' (baseline for guidance/replacement sampling): the known mask is ignored
  (forced all False): plain video flow matching over every token.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from maskvid.diffusion import schedule

OBJECTIVES = ('masked', 'conditioning', 'unconditional')


def masked_flow_loss(apply_fn: Callable[..., jax.Array], params, x0: jax.Array,
                     known_mask: jax.Array, rng: jax.Array, config, *,
                     patch_size: Optional[Sequence[int]] = None) -> tuple[jax.Array, dict]:
  """Loss and metrics for one batch. config = config.diffusion.

  apply_fn(params, x_t, t[, cond_latents, cond_mask]) -> v `[B,T,h,w,c]`;
  x0 clean latents `[B,T,h,w,c]`; known_mask bool `[B,T,h,w]` (True = known, patch-aligned);
  patch_size: config.model.patch_size, needed only with config.per_token_t (t drawn per patch).
  Returns (scalar loss, dict of scalar metrics). The mean is over all masked latent values of the
  batch; a batch with nothing masked gives loss 0 rather than nan.
  """
  objective = config.get('objective', 'masked')
  if objective not in OBJECTIVES:
    raise ValueError(f'config.diffusion.objective must be one of {OBJECTIVES}, got {objective!r}')
  if x0.ndim != 5:
    raise ValueError(f'x0 must be [B, T, h, w, c], got shape {x0.shape}')
  known_mask = jnp.asarray(known_mask)
  if known_mask.shape != x0.shape[:4]:
    raise ValueError(f'known_mask must be [B, T, h, w] {x0.shape[:4]}, got {known_mask.shape}')
  if config.per_token_t and patch_size is None and objective != 'conditioning':
    raise ValueError('config.diffusion.per_token_t=True: pass patch_size=config.model.patch_size '
                     'so t is drawn once per model patch')
  known_mask = known_mask.astype(bool)
  if objective == 'unconditional':
    known_mask = jnp.zeros_like(known_mask)

  t_rng, eps_rng = jax.random.split(rng)
  x0 = x0.astype(jnp.float32)
  eps = jax.random.normal(eps_rng, x0.shape, jnp.float32)
  if objective == 'conditioning':
    t = jnp.broadcast_to(schedule.sample_t(t_rng, (x0.shape[0], 1, 1, 1), config), known_mask.shape)
    x_t = schedule.add_noise(x0, eps, t)
    v = apply_fn(params, x_t, t, x0, known_mask)
  else:
    t = schedule.token_times(t_rng, known_mask, config, patch_size or (1, 1, 1))
    x_t = schedule.add_noise(x0, eps, t)
    v = apply_fn(params, x_t, t)

  target = schedule.velocity_target(x0, eps)
  weight = (~known_mask).astype(jnp.float32)
  num_masked = weight.sum()
  sq = jnp.square(v.astype(jnp.float32) - target).sum(-1)          # [B, T, h, w]
  loss = (sq * weight).sum() / jnp.maximum(num_masked * x0.shape[-1], 1.0)
  metrics = {
      'loss': loss,
      'masked_fraction': weight.mean(),
      't_masked_mean': (t * weight).sum() / jnp.maximum(num_masked, 1.0),
  }
  return loss, metrics
