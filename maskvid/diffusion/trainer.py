"""The diffusion transformer's trainer: its pure train step and `Trainer` (the shared
`train.sharded.ShardedStep` over the run's mesh).

`train_step(state, batch_latents, *, apply_fn, tx, config)` is pure: it samples a known-mask
and (inside the loss) per-token noise levels from `fold_in(state.rng, state.step)` and takes one
update on the masked flow-matching loss (`train.state.apply_gradients`: AdamW + EMA). `Trainer`
builds the model, the optimizer and the sharded step; the parameters' logical axis names and
config.mesh.rules give their mesh shardings.
"""
import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from maskvid import optim
from maskvid import sharding as sharding_lib
from maskvid.diffusion import loss as loss_lib
from maskvid.diffusion import mask_mixture as masks_lib
from maskvid.model import attention as attention_lib
from maskvid.model import model as model_lib
from maskvid.train import sharded as sharded_lib
from maskvid.train import state as state_lib


def expected_latent_shape(config) -> tuple[int, int, int, int]:
  """(T, h, w, c) of one training example: clip_length frames of the VAE latent grid."""
  return tuple(model_lib.latent_grid(config))


def validate_batch(batch_latents, expected: tuple[int, ...]) -> None:
  """Raises a ValueError naming the expected [B, T, h, w, c] shape when the batch differs."""
  shape = tuple(np.shape(batch_latents))
  if shape != tuple(expected):
    names = 'B, T, h, w, c'
    raise ValueError(
        f'batch_latents must have shape [{names}] = {list(expected)} (B = config.train.batch_size '
        f'per process, T = config.data.clip_length, (h, w) = config.data.resolution / VAE '
        f'downsampling, c = config.vae.latent_channels), got {list(shape)}')
  dtype = batch_latents.dtype if hasattr(batch_latents, 'dtype') else np.asarray(batch_latents).dtype
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f'batch_latents must be floating point latents, got dtype {dtype}')


def train_step(state: state_lib.TrainState, batch_latents: jax.Array, *, apply_fn: Callable,
               tx: optax.GradientTransformation, config) -> tuple[state_lib.TrainState, dict]:
  """One optimizer step on clean normalised latents `batch_latents` [B, T, h, w, c].

  Returns the new state and scalar metrics (loss, grad_norm, learning_rate, ema_decay,
  known_fraction plus whatever the loss reports).
  """
  b, t, h, w, _ = batch_latents.shape
  rng = jax.random.fold_in(state.rng, state.step)
  mask_rng, loss_rng = jax.random.split(rng)
  known_mask = masks_lib.sample_known_mask(mask_rng, b, (t, h, w), tuple(config.model.patch_size),
                                           config.diffusion)

  def loss_fn(params, latents, mask, rng):
    return loss_lib.masked_flow_loss(apply_fn, params, latents, mask, rng, config.diffusion,
                                     patch_size=tuple(config.model.patch_size))

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  k = microbatches(config, b)
  if k == 1:
    (loss, aux), grads = grad_fn(state.params, batch_latents, known_mask, loss_rng)
  else:
    (loss, aux), grads = _accumulate(grad_fn, state.params, batch_latents, known_mask, loss_rng, k)
  new_state = state_lib.apply_gradients(state, grads, tx, config.train.ema_decay)
  metrics = {k: jnp.asarray(v, jnp.float32) for k, v in dict(aux).items()
             if jnp.ndim(v) == 0}
  metrics.update(
      loss=loss.astype(jnp.float32),
      grad_norm=optax.global_norm(grads),
      param_norm=optax.global_norm(new_state.params),
      learning_rate=optim.make_schedule(config.train)(state.step),
      ema_decay=state_lib.ema_decay_at(state.step, config.train.ema_decay),
      known_fraction=jnp.mean(known_mask.astype(jnp.float32)))
  return new_state, metrics


def microbatches(config, batch_size: int) -> int:
  """config.train.microbatches (gradient accumulation), checked against the batch size."""
  k = int(config.train.get('microbatches', 1))
  if k < 1 or batch_size % k:
    raise ValueError(f'config.train.microbatches={k} must be a positive divisor of the batch '
                     f'({batch_size})')
  return k


def _accumulate(grad_fn, params, latents, mask, rng, k: int):
  """Mean loss, metrics and gradients over k microbatches `[B/k, ...]`, one at a time (lax.scan):
  activation memory of one microbatch. Microbatch j takes rows j, j+k, j+2k, ...: each device's
  rows of a batch-sharded array stay on it, so every microbatch is spread over every device."""
  def split(x):
    return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)

  def one(latents_j, mask_j, rng_j):
    (loss_j, aux_j), grads_j = grad_fn(params, latents_j, mask_j, rng_j)
    return loss_j, {n: v for n, v in dict(aux_j).items() if jnp.ndim(v) == 0}, grads_j

  def body(acc, inputs):
    return jax.tree.map(jnp.add, acc, one(*inputs)), None

  parts = (split(latents), split(mask), jax.random.split(rng, k))
  zero = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                      jax.eval_shape(one, *(x[0] for x in parts)))
  total, _ = jax.lax.scan(body, zero, parts)
  loss, aux, grads = jax.tree.map(lambda x: x / k, total)
  return (loss, aux), grads


class Trainer:
  """Model + optimizer + mesh: sharded `init(seed)` and `step(state, batch)`.

  Args:
    config: the full run config.
    mesh: a ('data', 'fsdp', 'tensor') mesh; default `sharding.make_mesh(config.mesh)`.
    module: the Linen denoiser; default `maskvid.model.model.build_model(config)`.
  """

  def __init__(self, config, mesh=None, module: nn.Module | None = None):
    self.config = config
    self.mesh = mesh if mesh is not None else sharding_lib.make_mesh(config.mesh)
    self.rules = sharding_lib.logical_rules(config.mesh)
    self.platform = attention_lib.target_platform(self.mesh.devices)
    self.module = (module if module is not None
                   else model_lib.build_model(config, platform=self.platform))
    self.apply_fn = model_lib.make_apply_fn(self.module)
    self.tx = optim.make_optimizer(config.train)
    self.latent_shape = expected_latent_shape(config)
    self.global_batch_size = int(config.train.batch_size)
    divisor = sharding_lib.batch_divisor(self.mesh)
    _check_batch(config, self.global_batch_size, divisor, self.mesh)
    self.local_batch_size = self.global_batch_size // jax.process_count()
    self._init_batch = divisor
    self.sharded = sharded_lib.ShardedStep(
        self.mesh, self.rules, self._init_boxed,
        functools.partial(train_step, apply_fn=self.apply_fn, tx=self.tx, config=config),
        jax.ShapeDtypeStruct((self.global_batch_size, *self.latent_shape), jnp.float32))
    self.state_shardings = self.sharded.state_shardings
    self.abstract_state = self.sharded.abstract_state
    self.batch_sharding = self.sharded.batch_sharding
    self.abstract_batch = self.sharded.abstract_batch   # [B, T, h, w, c] float32, batch-sharded
    self.context = self.sharded.context
    self.replicate = self.sharded.replicate

  def _init_boxed(self, seed):
    param_rng, state_rng = jax.random.split(jax.random.key(seed))
    variables = self.module.init(param_rng,
                                 **model_lib.example_inputs(self.config, self._init_batch))
    return state_lib.create_state(variables['params'], self.tx, state_rng)

  def init(self, seed: int) -> state_lib.TrainState:
    """Fresh sharded state; params depend only on `seed`, not on the mesh."""
    return self.sharded.init(seed)

  def put_batch(self, batch_latents) -> jax.Array:
    """Validates this process's batch [B_local, T, h, w, c] and makes it a global sharded array."""
    if isinstance(batch_latents, jax.Array) and batch_latents.sharding == self.batch_sharding:
      validate_batch(batch_latents, (self.global_batch_size, *self.latent_shape))
      return batch_latents
    validate_batch(batch_latents, (self.local_batch_size, *self.latent_shape))
    return self.sharded.put_batch(np.asarray(batch_latents, np.float32))

  def step(self, state: state_lib.TrainState, batch_latents) -> tuple[state_lib.TrainState, dict]:
    """One sharded train step. `state` is donated: do not reuse it after the call."""
    return self.sharded.step(state, self.put_batch(batch_latents))

  @property
  def step_fn(self):
    """The jitted step itself: `(state, batch [B, T, h, w, c]) -> (state, metrics)`."""
    return self.sharded.step_fn

  def lower_step(self, state=None, batch_latents=None):
    """The step lowered on concrete or abstract inputs (default: `abstract_state`,
    `abstract_batch`); `.compile()` it for memory and cost analysis. Places nothing on devices."""
    if batch_latents is not None and not isinstance(batch_latents, jax.ShapeDtypeStruct):
      batch_latents = self.put_batch(batch_latents)
    return self.sharded.lower(state, batch_latents)

  @property
  def num_params(self) -> int:
    return self.sharded.num_params


def _check_batch(config, batch: int, divisor: int, mesh) -> None:
  if batch % divisor:
    raise ValueError(f'config.train.batch_size={batch} must be divisible by '
                     f'the data*fsdp mesh size {divisor} (mesh {dict(mesh.shape)})')
  if (batch // divisor) % microbatches(config, batch):
    raise ValueError(f'config.train.microbatches={config.train.get("microbatches", 1)} must '
                     f'divide the clips per device, batch {batch} / '
                     f'{divisor} devices on the batch axes')
  if batch % jax.process_count():
    raise ValueError(f'config.train.batch_size={batch} must be divisible by '
                     f'the process count {jax.process_count()}')
