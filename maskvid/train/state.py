"""The train state of every trainer and the update every trainer applies.

The state is a plain pytree (a flax struct dataclass) so it can be jitted, sharded and
checkpointed as a whole. `rng` is a base key that never changes: the step's randomness is
`fold_in(rng, step)`, so a resumed run draws exactly what the uninterrupted run drew.
`ema_params` is None for trainers without an EMA (the VAE and the depth net).

  apply_gradients(state, grads, tx, ema_decay) -> state      one optimizer update (+ EMA)
  loss_step(loss_fn, tx, ema_decay) -> step(state, batch)     the whole step from a loss
"""
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 [] — number of updates applied so far
  params: Any              # model params (pytree of float32)
  opt_state: Any           # optax state
  ema_params: Any          # exponential moving average of params (sampling), or None
  rng: jax.Array           # typed PRNG key [] (base key; per-step keys are folded from it)


def ema_decay_at(step: jax.Array, ema_decay: float) -> jax.Array:
  """EMA decay with warmup: min(ema_decay, (1 + step) / (10 + step)).

  Without the warmup a 0.999 EMA of a few-hundred-step CPU run would still be mostly the
  random init; with it the average tracks the early params and settles to ema_decay.
  """
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(ema_decay), (1.0 + step) / (10.0 + step))


def ema_update(ema_params, params, decay: jax.Array):
  """ema <- decay * ema + (1 - decay) * params, leafwise."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p.astype(e.dtype),
                      ema_params, params)


def create_state(params, tx: optax.GradientTransformation, rng: jax.Array, *,
                 ema: bool = True) -> TrainState:
  """Fresh state at step 0 (params may still be nn.Partitioned-boxed; optax keeps the boxes)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    ema_params=jax.tree.map(lambda p: p, params) if ema else None, rng=rng)


def apply_gradients(state: TrainState, grads, tx: optax.GradientTransformation,
                    ema_decay: float | None = None) -> TrainState:
  """One optimizer update of `state.params` by `grads`, the EMA (when the state keeps one) and
  the step counter."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema_params = state.ema_params
  if ema_params is not None:
    ema_params = ema_update(ema_params, params, ema_decay_at(state.step, ema_decay))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       ema_params=ema_params)


LossFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, dict]]


def loss_step(loss_fn: LossFn, tx: optax.GradientTransformation, *,
              ema_decay: float | None = None, schedule: optax.Schedule | None = None) -> Callable:
  """`step(state, batch) -> (state, metrics)` for `loss_fn(params, batch, rng) -> (loss, aux)`.

  The step's key is `fold_in(state.rng, state.step)`; metrics are aux's scalars, loss,
  grad_norm and (given the optimizer's `schedule`) learning_rate.
  """
  def step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
    metrics = {k: jnp.asarray(v, jnp.float32) for k, v in dict(aux).items() if jnp.ndim(v) == 0}
    metrics.update(loss=jnp.asarray(loss, jnp.float32), grad_norm=optax.global_norm(grads))
    if schedule is not None:
      metrics['learning_rate'] = jnp.asarray(schedule(state.step), jnp.float32)
    return apply_gradients(state, grads, tx, ema_decay), metrics
  return step
