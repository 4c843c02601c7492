"""Masked completion sampler: integrate the flow-matching ODE/SDE from t = 1 to 0 with known tokens.

Conventions (docs/interfaces.md): `x_t = (1 - t) x + t eps`, the model predicts `v = eps - x`,
sampling integrates `dx/dt = v` from t = 1 down to t = 0. Every token carries its own t: known
tokens are fed with t = 0 and their exact values; unknown tokens start as pure Gaussian noise at
t = 1 and follow the time grid.

Public API:
  complete(apply_fn, params, known, known_mask, rng, *, num_steps, solver, renoise_at=0.0,
           guidance, exact_mask=None, guide_mask=None) -> latents [B, T, h, w, c]
  sample_trajectory(...same...) -> (latents, trajectory [num_steps + 1, B, T, h, w, c], t_grid)
  time_grid(num_steps, renoise_at) -> np.ndarray [num_steps + 1]
  num_function_evals(num_steps, solver, guidance, renoise_at) -> int (model passes per clip)

Both entry points are `jax.jit`-compiled with the Python-level options static
(`apply_fn, num_steps, solver, renoise_at, guidance`), so they compile once per (shapes, options)
and `trace_count()` lets tests prove it. Inside, one `lax.scan` runs over the grid (two when
`renoise_at` splits it), so no Python loop per step. They are pure functions of their arrays:
`jax.vmap` and sharded inputs under a mesh work (the batch sharding propagates through the scan).

Solvers (per step t -> s < t):
  euler      x_s = x_t - (t - s) v(x_t, t)
  heun       Euler predictor then trapezoid corrector with v(x_pred, s); the last step (s = 0) is
             plain Euler, since the model never sees noisy tokens labelled t = 0 (that means clean).
             Costs 2 * num_steps - 1 model passes.
  ancestral  DDPM-style posterior step: x0 = x_t - t v, eps = x_t + (1 - t) v, then
             x_s = (1 - s) x0 + sqrt(s^2 - sigma^2) eps + sigma z with fresh z ~ N(0, 1) and
             sigma = s * sqrt(1 - (1 - t)^2 s^2 / ((1 - s)^2 t^2)) (the posterior std of
             q(x_s | x_t, x0) for this path), i.e. DDIM with eta = 1.

Known tokens come in two kinds (`exact_mask`, a subset of `known_mask`): *exact* tokens (every
pixel given, e.g. the NVS source frame) are held clean for the whole trajectory; *unreliable*
tokens (partly given and nearest-filled, or warped across a depth edge) are clean context early
and, with stochastic conditioning, repaired late. `exact_mask=None` means no known token is exact.

Stochastic conditioning (`renoise_at = r` in (0, 1)): the grid is made piecewise uniform so that
it contains r exactly (round(num_steps * (1 - r)) steps from 1 to r, the rest from r to 0). Known
tokens are clean (t = 0, exact values) while the grid is above r; at t = r the unreliable ones are
re-noised to `(1 - r) known + r z` with fresh z and from then on are ordinary noisy tokens that
share the grid t, so the model may correct them, while exact tokens stay clean context (the
masked mode the model was trained in). `renoise_at = 0` is off: the one convention of the
package (configs, the Completer and the task commands pass the number through unchanged).

Mask-dropout guidance (`guidance = w != 1`): each velocity is `v_u + w (v_c - v_u)` where v_c is
the conditional prediction (known tokens clean, t = 0) and v_u is the model's unconditional mode
(known_mask all False: every token noisy at the grid t, as in the few-percent unconditional
training masks). For v_u the known positions hold `(1 - t) known + t eps0`, the forward-noised
known latents with the noise drawn at initialisation (fixed along the trajectory), i.e. the
clip noised to the current level exactly as the training unconditional mode sees it. Both passes
are one model call on a 2B batch. `guide_mask` narrows what the guidance branch drops: only the
known tokens in it are noised there, the others stay clean context in both passes, so the
guidance amplifies what those tokens add (a long video's context from earlier windows, with the
window's own given frames in both passes). After re-noising (`renoise_at`) only exact tokens
are known; without any (`exact_mask=None`) v_c = v_u and guidance no longer applies.
`guidance = 1` is the plain sampler (no extra pass).
"""
import collections
import functools
import math
import numbers
from typing import Any, Callable, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from maskvid.sampling import noise

SOLVERS = ('euler', 'heun', 'ancestral')
_STATIC = ('apply_fn', 'num_steps', 'solver', 'renoise_at', 'guidance', 'progress')

# Incremented each time the sampler body is traced (i.e. compiled); read via trace_count().
_TRACES = collections.Counter()


def trace_count(name: str = 'sample') -> int:
  """How many times the sampler body has been traced in this process (compile-once checks)."""
  return _TRACES[name]


def _renoise_level(renoise_at) -> Optional[float]:
  """The threshold in (0, 1), or None for renoise_at == 0 (off)."""
  if (isinstance(renoise_at, bool) or not isinstance(renoise_at, numbers.Real)
      or not 0.0 <= float(renoise_at) < 1.0):
    raise ValueError(f'renoise_at must be 0 (off) or a threshold t in (0, 1), got {renoise_at!r}')
  return float(renoise_at) or None


def _check_options(num_steps, solver, renoise_at, guidance) -> Optional[float]:
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f'num_steps must be a positive int, got {num_steps!r}')
  if solver not in SOLVERS:
    raise ValueError(f'solver must be one of {SOLVERS}, got {solver!r}')
  if (isinstance(guidance, bool) or not isinstance(guidance, numbers.Real)
      or not math.isfinite(guidance)):
    raise ValueError(f'guidance must be a finite Python float, got {guidance!r}')
  r = _renoise_level(renoise_at)
  if r is not None and num_steps < 2:
    raise ValueError(f'renoise_at needs num_steps >= 2 (one step each side), got {num_steps}')
  return r


def time_grid(num_steps: int, renoise_at: float = 0.0) -> np.ndarray:
  """Noise levels visited by the sampler: float32 [num_steps + 1], 1 -> 0, decreasing.

  Uniform; with `renoise_at = r` piecewise uniform so that r is a grid point (see module doc).
  """
  r = _check_options(num_steps, 'euler', renoise_at, 1.0)
  if r is None:
    return np.linspace(1.0, 0.0, num_steps + 1, dtype=np.float32)
  n1 = _renoise_index(num_steps, r)
  return np.concatenate([np.linspace(1.0, r, n1 + 1, dtype=np.float32),
                         np.linspace(r, 0.0, num_steps - n1 + 1, dtype=np.float32)[1:]])


def _renoise_index(num_steps: int, r: float) -> int:
  """Grid index where t == renoise_at: the number of steps taken with clean known tokens."""
  return int(min(max(round(num_steps * (1.0 - r)), 1), num_steps - 1))


def num_function_evals(num_steps: int, solver: str = 'euler', guidance: float = 1.0,
                       renoise_at: float = 0.0, with_exact: bool = False) -> int:
  """Model passes per clip (a guided pass counts 2: it runs on a doubled batch).

  with_exact: an `exact_mask` is passed, so guidance also applies after re-noising.
  """
  r = _check_options(num_steps, solver, renoise_at, guidance)
  per_step = 2 if solver == 'heun' else 1
  total = per_step * num_steps - (1 if solver == 'heun' else 0)
  if guidance == 1.0:
    return total
  if r is None or with_exact:
    return 2 * total
  return total + per_step * _renoise_index(num_steps, r)


def _validate(apply_fn, known, known_mask, exact_mask=None):
  if not callable(apply_fn):
    raise TypeError(f'apply_fn must be callable apply_fn(params, x_t, t) -> v, got {apply_fn!r}')
  if getattr(known, 'ndim', None) != 5:
    raise ValueError('known must be latents [B, T, h, w, c] (5 dims), got shape '
                     f'{getattr(known, "shape", type(known))}')
  if not jnp.issubdtype(known.dtype, jnp.floating):
    raise TypeError(f'known must be a floating array [B, T, h, w, c], got dtype {known.dtype}')
  if getattr(known_mask, 'shape', None) != known.shape[:-1]:
    raise ValueError(f'known_mask must have shape [B, T, h, w] = known.shape[:-1] = '
                     f'{tuple(known.shape[:-1])}, got {getattr(known_mask, "shape", type(known_mask))}')
  if known_mask.dtype != jnp.bool_:
    raise TypeError(f'known_mask must be a bool array (True = known), got dtype {known_mask.dtype}')
  _validate_mask('exact_mask', exact_mask, known_mask)


def _validate_mask(name, mask, known_mask):
  if mask is not None and (getattr(mask, 'shape', None) != known_mask.shape
                           or mask.dtype != jnp.bool_):
    got = getattr(mask, 'shape', type(mask))
    raise ValueError(f'{name} must be None or bool [B, T, h, w] = known_mask.shape = '
                     f'{tuple(known_mask.shape)}, got {got} {getattr(mask, "dtype", "")}')


def _report_step(step, num_steps):
  """Host side of `progress=True`: one line per sampler step (jax.debug.callback)."""
  logging.info('sampler: step %d/%d', int(step) + 1, num_steps)


def _ancestral_step(x, v, t, s, z):
  """x_t -> x_s drawn from q(x_s | x_t, x0) for x_t = (1-t) x0 + t eps (x0, eps from v)."""
  x0 = x - t * v
  eps = x + (1 - t) * v
  # Posterior std; 0 at s = 0.
  ratio = ((1 - t) * s) / ((1 - s) * t)
  sigma = s * jnp.sqrt(jnp.clip(1 - ratio * ratio, 0, 1))
  return (1 - s) * x0 + jnp.sqrt(jnp.maximum(s * s - sigma * sigma, 0)) * eps + sigma * z


def _sample(apply_fn, params, known, known_mask, exact_mask, rng, *, num_steps, solver,
            renoise_at, guidance, keep_trajectory, progress=False, guide_mask=None):
  """Shared body of complete / sample_trajectory (traced once per shapes + static options)."""
  _TRACES['sample'] += 1
  _validate(apply_fn, known, known_mask, exact_mask)
  _validate_mask('guide_mask', guide_mask, known_mask)
  r = _check_options(num_steps, solver, renoise_at, guidance)
  guidance = float(guidance)
  grid = jnp.asarray(time_grid(num_steps, r or 0.0))
  dtype = known.dtype
  # Exact tokens are known by definition, whatever the caller's known_mask says.
  exact = (jnp.zeros_like(known_mask) if exact_mask is None else exact_mask)
  known_mask = known_mask | exact
  noise.check(rng, known.shape[0])
  k_init, k_renoise, k_steps = noise.split(rng, 3)
  eps0 = noise.normal(k_init, known.shape, dtype)
  step_keys = noise.split(k_steps, num_steps)

  def velocity(x, t, held, guide: bool):
    """Model velocity at grid level t (scalar); tokens in `held` are clean context (t = 0)."""
    t_noisy = jnp.full(x.shape[:-1], t, jnp.float32)
    t_cond = jnp.where(held, jnp.float32(0), t_noisy)
    if not guide:
      return apply_fn(params, x, t_cond).astype(dtype)
    # The guidance branch: the guided known tokens noised to the grid level with the rest.
    dropped = held if guide_mask is None else held & guide_mask
    x_uncond = jnp.where(dropped[..., None], (1 - t) * known + t * eps0, x)
    t_uncond = jnp.where(held & ~dropped, jnp.float32(0), t_noisy)
    v = apply_fn(params, jnp.concatenate([x, x_uncond]), jnp.concatenate([t_cond, t_uncond]))
    v_cond, v_uncond = jnp.split(v.astype(dtype), 2)
    return v_uncond + guidance * (v_cond - v_uncond)

  def integrate(x, lo, hi, held, guide: bool):
    """Steps grid[lo] -> grid[hi] in one lax.scan; returns (x, states after each step)."""
    def hold(y):
      return jnp.where(held[..., None], known, y)

    def step(x, inputs):
      t, s, key, index = inputs
      if progress:
        jax.debug.callback(functools.partial(_report_step, num_steps=num_steps), index)
      t, s = t.astype(dtype), s.astype(dtype)
      v = velocity(x, t, held, guide)
      if solver == 'euler':
        x_next = x - (t - s) * v
      elif solver == 'heun':
        x_pred = hold(x - (t - s) * v)
        x_next = lax.cond(s > 0,
                          lambda: x - (t - s) * 0.5 * (v + velocity(x_pred, s, held, guide)),
                          lambda: x_pred)
      else:
        x_next = _ancestral_step(x, v, t, s, noise.normal(key, x.shape, dtype))
      x_next = hold(x_next)
      return x_next, (x_next if keep_trajectory else None)

    return lax.scan(step, x, (grid[lo:hi], grid[lo + 1:hi + 1], step_keys[lo:hi],
                              jnp.arange(lo, hi)))

  guided = guidance != 1.0
  x = jnp.where(known_mask[..., None], known, eps0)
  states = [x[None]]
  if r is None:
    x, traj = integrate(x, 0, num_steps, known_mask, guided)
    states.append(traj)
  else:
    n1 = _renoise_index(num_steps, r)
    x, traj = integrate(x, 0, n1, known_mask, guided)
    states.append(traj)
    z = noise.normal(k_renoise, known.shape, dtype)
    unreliable = (known_mask & ~exact)[..., None]
    x = jnp.where(unreliable, (1 - r) * known + r * z, x)
    x, traj = integrate(x, n1, num_steps, exact, guided and exact_mask is not None)
    states.append(traj)
  trajectory = jnp.concatenate(states) if keep_trajectory else None
  return x, trajectory, grid


@functools.partial(jax.jit, static_argnames=_STATIC)
def complete(apply_fn: Callable[..., Any], params: Any, known: jax.Array, known_mask: jax.Array,
             rng: jax.Array, *, num_steps: int, solver: str = 'euler',
             renoise_at: float = 0.0, guidance: float = 1.0,
             exact_mask: Optional[jax.Array] = None, progress: bool = False,
             guide_mask: Optional[jax.Array] = None) -> jax.Array:
  """Fills the unknown tokens of `known` by sampling the masked flow-matching model.

  Args:
    apply_fn: pure `apply_fn(params, x_t [B,T,h,w,c], t [B,T,h,w]) -> v [B,T,h,w,c]` (static:
      pass the same function object to reuse the compiled sampler).
    params: model parameters (any pytree; may be sharded).
    known: float [B, T, h, w, c] latents; values where `known_mask` is False are ignored.
    known_mask: bool [B, T, h, w], True = known (held clean at t = 0 with its exact value).
    rng: PRNG key for the initial noise (and ancestral / re-noising noise), or one typed key per
      clip [B] (`sampling.noise`: each clip's draws then depend on its key only).
    num_steps: number of grid steps from t = 1 to t = 0 (static).
    solver: 'euler' | 'heun' | 'ancestral' (static).
    renoise_at: stochastic-conditioning threshold t in (0, 1), or 0 for off (static).
    guidance: mask-dropout guidance weight w (static Python float); 1.0 = off.
    exact_mask: bool [B, T, h, w] or None: known tokens that are exact (kept clean even past
      `renoise_at`); the other known tokens are unreliable. None: no token is exact.
    progress: log one line per step from inside the compiled loop (a host callback; static).
    guide_mask: bool [B, T, h, w] or None: the known tokens the guidance branch noises; the
      other known tokens stay clean in both branches, so guidance amplifies only what the guided
      ones add (e.g. a long video's context from earlier windows). None: every known token.

  Returns:
    latents [B, T, h, w, c], dtype of `known`; known tokens bit-equal to `known` unless
    `renoise_at` is set (then the unreliable ones are re-generated from level renoise_at; exact
    tokens stay bit-equal).
  """
  return _sample(apply_fn, params, known, known_mask, exact_mask, rng, num_steps=num_steps,
                 solver=solver, renoise_at=renoise_at, guidance=guidance,
                 keep_trajectory=False, progress=progress, guide_mask=guide_mask)[0]


@functools.partial(jax.jit, static_argnames=_STATIC)
def sample_trajectory(apply_fn, params, known, known_mask, rng, *, num_steps: int,
                      solver: str = 'euler', renoise_at: float = 0.0,
                      guidance: float = 1.0, exact_mask: Optional[jax.Array] = None,
                      progress: bool = False, guide_mask: Optional[jax.Array] = None):
  """Same as `complete`, also returning every state on the grid (for inspection and tests).

  Returns:
    (latents [B,T,h,w,c], trajectory [num_steps + 1, B,T,h,w,c], t_grid float32 [num_steps + 1]);
    trajectory[k] is the state at noise level t_grid[k] (trajectory[0] the initial noise with
    known tokens in place, trajectory[-1] == latents). With `renoise_at`, trajectory[k] at
    t_grid[k] == renoise_at is the state just before the known tokens are re-noised.
  """
  return _sample(apply_fn, params, known, known_mask, exact_mask, rng, num_steps=num_steps,
                 solver=solver, renoise_at=renoise_at, guidance=guidance, keep_trajectory=True,
                 progress=progress, guide_mask=guide_mask)
