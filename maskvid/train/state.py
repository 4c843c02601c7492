"""Train state and optimizer: AdamW, linear warmup + cosine decay, global-norm clipping, EMA.

The state is a plain pytree (a flax struct dataclass) so it can be jitted, sharded and
checkpointed as a whole. `rng` is a base key that never changes: the step's randomness is
`fold_in(rng, step)`, so a resumed run draws exactly what the uninterrupted run drew.
"""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 [] — number of updates applied so far
  params: Any              # model params (pytree of float32)
  opt_state: Any           # optax state
  ema_params: Any          # exponential moving average of params (used for sampling)
  rng: jax.Array           # typed PRNG key [] (base key; per-step keys are folded from it)


def make_schedule(train_config) -> optax.Schedule:
  """Linear warmup 0 -> lr over warmup_steps, then cosine decay to 0 at train.steps."""
  steps = int(train_config.steps)
  warmup = int(max(0, min(train_config.warmup_steps, steps)))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=float(train_config.learning_rate),
      warmup_steps=warmup, decay_steps=max(steps, warmup + 1), end_value=0.0)


def _decay_mask(params):
  # Weight decay only on matrices/kernels: biases, norm scales and 1-D embeddings are exempt.
  return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def make_optimizer(train_config) -> optax.GradientTransformation:
  """clip_by_global_norm(grad_clip) -> AdamW(schedule, weight_decay on >=2-D params)."""
  parts = []
  if train_config.grad_clip and train_config.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(float(train_config.grad_clip)))
  parts.append(optax.adamw(make_schedule(train_config), b1=0.9, b2=0.999, eps=1e-8,
                           weight_decay=float(train_config.weight_decay), mask=_decay_mask))
  return optax.chain(*parts)


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
