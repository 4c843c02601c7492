"""Train state of the transformer: params, optimiser state, EMA params, base rng (optimiser: `maskvid.optim`).

The state is a plain pytree (a flax struct dataclass) so it can be jitted, sharded and
checkpointed as a whole. `rng` is a base key that never changes: the step's randomness is
`fold_in(rng, step)`, so a resumed run draws exactly what the uninterrupted run drew.
"""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax  # for the type of create_state's tx


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 [] — number of updates applied so far
  params: Any              # model params (pytree of float32)
  opt_state: Any           # optax state
  ema_params: Any          # exponential moving average of params (used for sampling)
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


def create_state(params, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
  """Fresh state at step 0 (params may still be nn.Partitioned-boxed; optax keeps the boxes)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    ema_params=jax.tree.map(lambda p: p, params), rng=rng)
