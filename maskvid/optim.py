"""One learning-rate schedule and one AdamW for the VAE and transformer trainers.

Both read a train config block with the same keys: steps, warmup_steps, learning_rate, decay
('cosine' | 'linear'), end_lr_fraction, grad_clip, weight_decay, adam_b1, adam_b2.
"""
import functools

import jax
import optax

DECAYS = ('cosine', 'linear')


def make_schedule(train_config, name: str = 'config.train') -> optax.Schedule:
  """Linear warmup 0 -> lr, then `decay` down to end_lr_fraction * lr at `steps`."""
  steps = int(train_config.steps)
  warmup = min(max(int(train_config.warmup_steps), 0), max(steps - 1, 0))
  peak = float(train_config.learning_rate)
  end = float(train_config.end_lr_fraction) * peak
  decay = str(train_config.decay)
  if decay not in DECAYS:
    raise ValueError(f'{name}.decay must be one of {DECAYS}, got {decay!r}')
  if decay == 'cosine':
    return optax.warmup_cosine_decay_schedule(init_value=0.0, peak_value=peak,
                                              warmup_steps=warmup,
                                              decay_steps=max(steps, warmup + 1), end_value=end)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup),
       optax.linear_schedule(peak, end, max(steps - warmup, 1))], [warmup])


def decay_mask(params):
  """True for the parameters weight decay applies to: those named 'kernel' (Dense, DenseGeneral,
  Conv). Biases, norm scales and learned offsets are exempt whatever their rank: the qkv bias is
  [3, H, d], and with `scan_layers` every stacked bias and scale has a leading layers axis."""
  def is_kernel(path, _):
    # The innermost dict key names the parameter (boxed leaves add an attribute key after it).
    keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return bool(keys) and keys[-1] == 'kernel'
  return jax.tree_util.tree_map_with_path(is_kernel, params)


def adam_direction(train_config) -> optax.GradientTransformation:
  """AdamW's update *direction* (clip, Adam, decoupled weight decay); the caller scales by -lr.

  For trainers that apply the learning rate in their own step (the VAE's, an argument of it).
  """
  return _adam_direction(float(train_config.grad_clip), float(train_config.weight_decay),
                         float(train_config.adam_b1), float(train_config.adam_b2))


@functools.lru_cache(maxsize=16)  # same settings -> same object -> jit cache hits across runs
def _adam_direction(grad_clip, weight_decay, b1, b2):
  parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  parts += [optax.scale_by_adam(b1=b1, b2=b2, eps=1e-8),
            optax.add_decayed_weights(weight_decay, mask=decay_mask)]
  return optax.chain(*parts)


def make_optimizer(train_config, name: str = 'config.train') -> optax.GradientTransformation:
  """clip_by_global_norm -> AdamW on `make_schedule` (weight decay on kernels only, by name)."""
  return optax.chain(adam_direction(train_config),
                     optax.scale_by_learning_rate(make_schedule(train_config, name)))
