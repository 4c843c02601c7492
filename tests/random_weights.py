"""Train states with random weights everywhere, for tests that sample from a saved run.

`Trainer.init` zero-initialises the output layer, so a freshly initialised model predicts
v = 0 and a sampler run with it returns its start noise: every "was generated" check would be
met by the noise. Random normal weights (scale 0.2, a fixed seed) make the output depend on the
input, so tests can compare numbers against a reference path.
"""
import jax
import jax.numpy as jnp
import numpy as np


def random_params(params, scale: float = 0.2, seed: int = 0):
  """Same tree, shapes, dtypes and shardings as `params`, values scale * N(0, 1)."""
  rs = np.random.RandomState(seed)
  def draw(x):
    value = jnp.asarray(scale * rs.normal(size=x.shape), x.dtype)
    return jax.device_put(value, x.sharding) if hasattr(x, 'sharding') else value
  return jax.tree.map(draw, params)


def with_random_weights(state, scale: float = 0.2, seed: int = 0):
  """A transformer TrainState whose params and EMA params are the same random draw."""
  params = random_params(state.params, scale, seed)
  return state.replace(params=params, ema_params=params)


def start_noise(rng, shape):
  """The sampler's start noise for `rng` (a key or one per clip; `sampler._sample`: split into
  3, the first)."""
  from maskvid.sampling import noise  # pylint: disable=g-import-not-at-top
  return np.asarray(noise.normal(noise.split(rng, 3)[0], shape, jnp.float32))
