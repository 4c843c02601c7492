"""The pieces every trainer shares (`maskvid.train`): the state's update, the loss step and the
sharded step builder, on a model whose answer is known (least squares)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from maskvid import sharding as sharding_lib
from maskvid.train import sharded as sharded_lib
from maskvid.train import state as state_lib

TARGET = np.array([1.5, -2.0, 0.5], np.float32)


def _least_squares(ema: bool):
  """A ShardedStep fitting w to y = x @ TARGET (batch {'x': [8, 3], 'y': [8]}), SGD lr 0.1."""
  tx = optax.sgd(0.1)

  def init_state(seed):
    return state_lib.create_state({'w': jnp.zeros(3)}, tx, jax.random.key(seed), ema=ema)

  def loss(params, batch, rng):
    del rng
    err = batch['x'] @ params['w'] - batch['y']
    return jnp.mean(err ** 2), {'max_err': jnp.max(jnp.abs(err))}

  step = state_lib.loss_step(loss, tx, ema_decay=0.5 if ema else None,
                             schedule=optax.constant_schedule(0.1))
  shapes = {'x': jax.ShapeDtypeStruct((8, 3), jnp.float32),
            'y': jax.ShapeDtypeStruct((8,), jnp.float32)}
  mesh = sharding_lib.data_parallel_mesh(jax.devices()[:1])
  return sharded_lib.ShardedStep(mesh, (), init_state, step, shapes)


def _batch(seed):
  x = np.random.default_rng(seed).standard_normal((8, 3)).astype(np.float32)
  return {'x': x, 'y': x @ TARGET}


def test_loss_step_fits_the_known_answer_and_reports_its_metrics():
  trainer = _least_squares(ema=False)
  state = trainer.init(0)
  losses = []
  for i in range(60):
    state, metrics = trainer.step(state, _batch(i))
    losses.append(float(metrics['loss']))
  assert int(state.step) == 60 and state.ema_params is None
  np.testing.assert_allclose(np.asarray(state.params['w']), TARGET, atol=1e-3)
  assert losses[-1] < 1e-4 * losses[0]
  assert set(metrics) == {'loss', 'max_err', 'grad_norm', 'learning_rate'}
  np.testing.assert_allclose(float(metrics['learning_rate']), 0.1)


def test_apply_gradients_is_one_sgd_update_and_the_ema_follows():
  tx = optax.sgd(0.5)
  state = state_lib.create_state({'w': jnp.ones(2)}, tx, jax.random.key(0))
  new = state_lib.apply_gradients(state, {'w': jnp.array([2.0, -2.0])}, tx, ema_decay=0.9)
  np.testing.assert_allclose(np.asarray(new.params['w']), [0.0, 2.0])
  # EMA warmup at step 0: decay min(0.9, 1/10) = 0.1 -> 0.1 * 1 + 0.9 * new.
  np.testing.assert_allclose(np.asarray(new.ema_params['w']), [0.1, 1.9], rtol=1e-6)
  assert int(new.step) == 1


def test_sharded_step_donates_the_state_and_lowers_on_abstract_inputs():
  trainer = _least_squares(ema=True)
  state = trainer.init(3)
  new, _ = trainer.step(state, _batch(0))
  assert state.params['w'].is_deleted()            # donated: the caller must not reuse it
  assert not new.params['w'].is_deleted()
  compiled = trainer.lower().compile()            # abstract state and batch: nothing placed
  again, metrics = compiled(new, trainer.put_batch(_batch(1)))
  assert int(again.step) == 2 and np.isfinite(float(metrics['loss']))
  assert trainer.num_params == 3
  assert trainer.abstract_batch['x'].sharding == trainer.batch_sharding


def test_the_step_key_is_folded_from_the_step_number():
  seen = []
  tx = optax.sgd(0.0)

  def loss(params, batch, rng):
    del batch
    return jnp.sum(params['w']) * 0 + jax.random.uniform(rng), {}

  step = jax.jit(state_lib.loss_step(loss, tx))
  state = state_lib.create_state({'w': jnp.zeros(1)}, tx, jax.random.key(7), ema=False)
  for _ in range(3):
    state, metrics = step(state, None)
    seen.append(float(metrics['loss']))
  assert len(set(seen)) == 3
  first, _ = step(state_lib.create_state({'w': jnp.zeros(1)}, tx, jax.random.key(7), ema=False),
                  None)
  assert int(first.step) == 1 and seen[0] == pytest.approx(float(
      jax.random.uniform(jax.random.fold_in(jax.random.key(7), 0))))
