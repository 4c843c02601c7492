"""The one completion entry, by training objective, and the samplers of the trained baselines.

  complete(objective, apply_fn, params, known, known_mask, rng, *, exact_mask=None, **options)
    the sampler a model trained with `config.diffusion.objective` is completed with: 'masked'
    (ours) -> `sampler.complete` with every option; 'conditioning' -> `conditioning_complete`,
    'unconditional' -> `replacement_complete` (num_steps only: plain Euler). The eval's rows and
    the training preview both call it, so a baseline is never sampled the masked way.

* `replacement_complete`: the guidance/replacement baseline. The model is trained without masks
  (config.diffusion.objective = 'unconditional': every token shares one t). At sampling all tokens
  sit at the grid level t, and after every step (to level s) the known tokens are overwritten by
  the known latents forward-noised to s with fresh noise, `(1 - s) known + s z` (the "replacement"
  method of Song et al. 2021 / Ho et al. 2022, video diffusion). After the last step (t = 0) the
  known tokens equal `known` exactly.
* `conditioning_complete`: the conditioning baseline's sampler. The model takes the known latents
  and mask as extra input channels (config.model.input_conditioning) and all tokens of x_t share
  the grid t; the known tokens are pasted back at the end (the model is only supervised on
  unknown tokens, so its output there is not meaningful).

Both samplers are pure, `jax.jit`-compiled with the static options, and run one `lax.scan` of
Euler steps over the uniform grid `linspace(1, 0, num_steps + 1)` (the same grid and solver as
`maskvid.sampling.sampler.complete` with solver='euler'), so equal step counts mean equal compute.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from maskvid.sampling import noise
from maskvid.sampling import sampler


def _check(known, known_mask, num_steps):
  if getattr(known, 'ndim', None) != 5:
    raise ValueError(f'known must be latents [B, T, h, w, c], got shape {getattr(known, "shape", None)}')
  if getattr(known_mask, 'shape', None) != known.shape[:-1] or known_mask.dtype != jnp.bool_:
    raise ValueError(f'known_mask must be bool [B, T, h, w] = {known.shape[:-1]}, got '
                     f'{getattr(known_mask, "shape", None)} {getattr(known_mask, "dtype", None)}')
  if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f'num_steps must be a positive int, got {num_steps!r}')


def _grid(num_steps):
  return jnp.asarray(np.linspace(1.0, 0.0, num_steps + 1, dtype=np.float32))


@functools.partial(jax.jit, static_argnames=('apply_fn', 'num_steps', 'return_trajectory'))
def replacement_complete(apply_fn, params, known, known_mask, rng, *, num_steps: int,
                         return_trajectory: bool = False):
  """Replacement sampling with an unconditional model.

  Args:
    apply_fn: `apply_fn(params, x_t [B,T,h,w,c], t [B,T,h,w]) -> v` (unconditional model).
    known: float [B, T, h, w, c] latents; known_mask: bool [B, T, h, w] (True = known).
    rng: PRNG key. num_steps: Euler steps from t = 1 to 0.
    return_trajectory: also return the states after each step [num_steps, B, T, h, w, c].
  Returns:
    latents [B, T, h, w, c] (known tokens equal `known`), or (latents, trajectory).
  """
  _check(known, known_mask, num_steps)
  grid = _grid(num_steps)
  m = known_mask[..., None]
  k0, k1 = noise.split(rng, 2)
  x = noise.normal(k0, known.shape, known.dtype)
  keys = noise.split(k1, num_steps)

  def step(x, inputs):
    t, s, key = inputs
    v = apply_fn(params, x, jnp.full(known.shape[:-1], t, jnp.float32)).astype(known.dtype)
    x = x - (t - s) * v
    # Known tokens take their forward-noised values at the new level s with fresh noise, so the
    # next call sees them on the noising path at its t (exactly `known` at s = 0). At t = 1 the
    # initial pure noise already is that path.
    z = noise.normal(key, known.shape, known.dtype)
    x = jnp.where(m, (1.0 - s) * known + s * z, x)
    return x, (x if return_trajectory else None)

  x, traj = lax.scan(step, x, (grid[:-1], grid[1:], keys))
  return (x, traj) if return_trajectory else x


@functools.partial(jax.jit, static_argnames=('apply_fn', 'num_steps'))
def conditioning_complete(apply_fn, params, known, known_mask, rng, *, num_steps: int):
  """Euler sampling of an input-conditioned model (known latents + mask as channels).

  apply_fn: `apply_fn(params, x_t, t, cond_latents, cond_mask) -> v`. Shapes as in
  `replacement_complete`. Returns latents [B, T, h, w, c] with known tokens pasted back.
  """
  _check(known, known_mask, num_steps)
  grid = _grid(num_steps)
  cond = jnp.where(known_mask[..., None], known, 0.0)
  x = noise.normal(rng, known.shape, known.dtype)

  def step(x, inputs):
    t, s = inputs
    v = apply_fn(params, x, jnp.full(known.shape[:-1], t, jnp.float32), cond, known_mask)
    return x - (t - s) * v.astype(known.dtype), None

  x, _ = lax.scan(step, x, (grid[:-1], grid[1:]))
  return jnp.where(known_mask[..., None], known, x)


def complete(objective: str, apply_fn, params, known, known_mask, rng, *, exact_mask=None,
             **options):
  """Completes `known` [B,T,h,w,c] (`known_mask` [B,T,h,w]) with the sampler of `objective`.

  options: `sampler.complete`'s (num_steps, solver, renoise_at, guidance, progress); the
  baselines' samplers take num_steps and ignore the rest (their training has no known-clean
  tokens to guide or re-noise), and exact_mask.
  """
  if objective == 'masked':
    return sampler.complete(apply_fn, params, known, known_mask, rng, exact_mask=exact_mask,
                            **options)
  if objective not in BASELINE_SAMPLERS:
    raise ValueError(f'objective must be one of {("masked",) + tuple(BASELINE_SAMPLERS)}, got '
                     f'{objective!r}')
  return BASELINE_SAMPLERS[objective](apply_fn, params, known, known_mask, rng,
                                      num_steps=int(options['num_steps']))


BASELINE_SAMPLERS = {'conditioning': conditioning_complete,
                     'unconditional': replacement_complete}
