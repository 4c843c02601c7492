"""Gradient accumulation (config.train.microbatches): the mean over microbatches is the batch's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from maskvid.diffusion import trainer as trainer_lib


def test_accumulated_gradient_equals_the_full_batch_gradient():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)
  mask = jnp.asarray(rng.random((8,)) > 0.5)
  params = {'w': jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
  seen = []

  def loss(p, x, m, r):
    del r
    per_row = (x @ p['w'] - jnp.where(m, 1.0, -1.0)) ** 2
    return jnp.mean(per_row), {'rows': jnp.float32(x.shape[0])}

  grad_fn = jax.value_and_grad(loss, has_aux=True)
  (l_full, _), g_full = grad_fn(params, x, mask, None)
  (l_acc, aux), g_acc = trainer_lib._accumulate(grad_fn, params, x, mask, jax.random.key(0), 4)
  np.testing.assert_allclose(l_acc, l_full, rtol=1e-6)
  np.testing.assert_allclose(g_acc['w'], g_full['w'], rtol=1e-5)
  assert float(aux['rows']) == 2.0                  # each microbatch held 8 / 4 rows


def test_trainer_with_microbatches_steps_and_checks_divisibility():
  c = tiny.get_config()
  c.model.depth, c.train.batch_size, c.train.microbatches = 1, 4, 2
  trainer = trainer_lib.Trainer(c)
  state = trainer.init(0)
  x = np.random.default_rng(0).normal(size=(4, *trainer.latent_shape)).astype(np.float32)
  for _ in range(2):
    state, metrics = trainer.step(state, x)
  assert int(state.step) == 2 and np.isfinite(float(metrics['loss']))
  c.train.microbatches = 3
  with pytest.raises(ValueError, match='config.train.microbatches=3'):
    trainer_lib.Trainer(c)
