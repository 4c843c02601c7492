"""Training: the pure step learns, EMA is exact, bad input is rejected clearly, runs resume exactly.

Tiny shapes throughout: transformer width 32, depth 1; latents [T=4, 8, 8, 4]; batch 4. One
Trainer (one compile) is shared by the step tests; the loop tests share a persistent XLA
compilation cache so their identical steps compile once.
"""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position

from maskvid import optim
from maskvid import sharding as sharding_lib  # pylint: disable=wrong-import-position
from maskvid.train import state as state_lib  # pylint: disable=wrong-import-position
from maskvid.diffusion import trainer as trainer_lib  # pylint: disable=wrong-import-position

SHAPE = (4, 8, 8, 4)   # latents per example [T, h, w, c]
BATCH = 4


def tiny_config(**train):
  from configs import default  # pylint: disable=g-import-not-at-top
  c = default.get_config()
  c.model.width, c.model.depth, c.model.num_heads = 32, 1, 2
  c.data.clip_length, c.data.num_frames, c.data.resolution = 4, 4, 32
  c.train.batch_size, c.train.warmup_steps, c.train.learning_rate = BATCH, 0, 3e-3
  c.train.steps = 100
  for k, v in train.items():
    c.train[k] = v
  return c


@pytest.fixture(scope='module')
def trainer():
  return trainer_lib.Trainer(tiny_config())


def fixed_batch(seed=0):
  # Smooth structured latents (a per-clip colour ramp) rather than white noise: learnable.
  rng = np.random.default_rng(seed)
  ramp = np.linspace(-1, 1, SHAPE[2], dtype=np.float32)
  base = (ramp[:, None] + ramp[None, :])[None, None, :, :, None]       # [1, 1, h, w, 1]
  colours = rng.normal(size=(BATCH, 1, 1, 1, SHAPE[3])).astype(np.float32)
  time = np.linspace(0, 1, SHAPE[0], dtype=np.float32)[None, :, None, None, None]
  return (base * colours + time).astype(np.float32)


@pytest.mark.slow   # a trainer run for many steps: the integration tier
def test_steps_lower_the_loss_on_a_fixed_batch(trainer):
  from maskvid.diffusion import loss as loss_lib  # pylint: disable=g-import-not-at-top
  from maskvid.diffusion import mask_mixture as masks_lib  # pylint: disable=g-import-not-at-top
  config = trainer.config
  batch = fixed_batch()
  assert batch.shape == (BATCH, *SHAPE)
  key = jax.random.key(7)
  mask = masks_lib.sample_known_mask(key, BATCH, SHAPE[:3], config.model.patch_size,
                                     config.diffusion)

  @jax.jit
  def eval_loss(params):   # same mask, times and noise every time: a deterministic probe
    return loss_lib.masked_flow_loss(trainer.apply_fn, params, batch, mask, key, config.diffusion,
                                     patch_size=config.model.patch_size)[0]

  state = trainer.init(0)
  before = float(eval_loss(state.params))
  losses = []
  for _ in range(30):
    state, metrics = trainer.step(state, batch)
    losses.append(float(metrics['loss']))
  after = float(eval_loss(state.params))
  assert int(state.step) == 30
  assert np.all(np.isfinite(losses))
  assert after < 0.7 * before, (before, after)
  assert np.mean(losses[-10:]) < np.mean(losses[:5]), losses


def test_each_step_draws_new_masks_and_noise(trainer):
  """The step's masks, times and noise come from fold_in(rng, step): the same state gives the
  same step, the same params at another step count a different draw (a step that reused one
  draw would see the same holes forever)."""
  batch = fixed_batch(3)
  _, a = trainer.step(trainer.init(3), batch)
  _, again = trainer.step(trainer.init(3), batch)
  later = trainer.init(3)
  _, b = trainer.step(later.replace(step=later.step + 1), batch)
  for k in ('loss', 'known_fraction', 't_masked_mean'):
    assert float(a[k]) == float(again[k]), k
  assert float(a['loss']) != float(b['loss'])
  assert (float(a['known_fraction']), float(a['t_masked_mean'])) != (
      float(b['known_fraction']), float(b['t_masked_mean']))


def test_ema_update_is_exact(trainer):
  # The formula itself.
  ema = {'a': jnp.array([1.0, 2.0]), 'b': jnp.array(4.0)}
  new = {'a': jnp.array([3.0, 0.0]), 'b': jnp.array(0.0)}
  out = state_lib.ema_update(ema, new, jnp.float32(0.75))
  np.testing.assert_allclose(out['a'], [1.5, 1.5])
  np.testing.assert_allclose(out['b'], 3.0)
  # Warmup: min(decay, (1 + s) / (10 + s)).
  np.testing.assert_allclose(state_lib.ema_decay_at(0, 0.999), 0.1, rtol=1e-6)
  np.testing.assert_allclose(state_lib.ema_decay_at(90, 0.999), 0.91, rtol=1e-6)
  np.testing.assert_allclose(state_lib.ema_decay_at(10**6, 0.999), 0.999, rtol=1e-6)
  # Inside the step: ema_1 = d0 * params_0 + (1 - d0) * params_1 and ema_2 likewise.
  state = trainer.init(1)
  p0 = jax.device_get(state.params)
  assert all(np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(p0), jax.tree.leaves(jax.device_get(state.ema_params))))
  state, m1 = trainer.step(state, fixed_batch(1))
  p1, e1 = jax.device_get((state.params, state.ema_params))
  state, m2 = trainer.step(state, fixed_batch(2))
  p2, e2 = jax.device_get((state.params, state.ema_params))
  d0, d1 = float(m1['ema_decay']), float(m2['ema_decay'])
  assert d0 == pytest.approx(0.1) and d1 == pytest.approx(2 / 11)
  moved = 0
  for a0, a1, a2, b1, b2 in zip(*(jax.tree.leaves(t) for t in (p0, p1, p2, e1, e2))):
    np.testing.assert_allclose(b1, d0 * a0 + (1 - d0) * a1, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b2, d1 * b1 + (1 - d1) * a2, rtol=1e-6, atol=1e-7)
    moved += int(not np.array_equal(a0, a2))
  assert moved > 0, 'the step must change the params'


def test_wrong_batch_shape_names_the_expected_shape(trainer):
  state = trainer.init(0)
  with pytest.raises(ValueError, match=r'\[4, 4, 8, 8, 4\].*got \[4, 4, 16, 16, 4\]'):
    trainer.step(state, np.zeros((BATCH, 4, 16, 16, 4), np.float32))
  with pytest.raises(ValueError, match=r'batch_latents must have shape'):
    trainer.step(state, np.zeros((BATCH, *SHAPE[:3]), np.float32))
  with pytest.raises(ValueError, match='floating point'):
    trainer.step(state, np.zeros((BATCH, *SHAPE), np.int32))


def test_unknown_config_key_is_rejected():
  # The same config flag maskvid.main defines: overrides of existing keys work, typos fail.
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  tiny = os.path.join(ROOT, 'configs', 'tiny.py')

  def parse(*args):
    argv = ['prog', f'--config={tiny}', *args]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file('config', None, 'cfg', flag_values=fv, lock_config=True,
                                    sys_argv=argv)   # overrides are registered from argv
    fv(argv)
    return fv.config

  assert parse('--config.train.batch_size=2').train.batch_size == 2
  with pytest.raises(Exception, match='batch_sise'):
    parse('--config.train.batch_sise=2')
  config = parse()
  with pytest.raises(AttributeError, match='stepz'):
    config.train.stepz = 3


def test_mesh_shape_resolution_and_errors():
  from configs import default  # pylint: disable=g-import-not-at-top
  m = default.get_config().mesh
  m.data, m.fsdp, m.tensor = -1, 2, 2
  assert sharding_lib.mesh_shape(m, 8) == (2, 2, 2)
  with pytest.raises(ValueError, match='not divisible'):
    sharding_lib.mesh_shape(m, 6)
  m.data = 3
  with pytest.raises(ValueError, match='needs 12 devices'):
    sharding_lib.mesh_shape(m, 8)
  m.data, m.fsdp = -1, -1
  with pytest.raises(ValueError, match='at most one'):
    sharding_lib.mesh_shape(m, 8)
  mesh = sharding_lib.make_mesh(default.get_config().mesh)
  assert mesh.axis_names == ('data', 'fsdp', 'tensor')
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_schedule_warmup_then_cosine_to_zero():
  c = tiny_config(steps=100, warmup_steps=10, learning_rate=1e-3)
  sched = optim.make_schedule(c.train)
  assert float(sched(0)) == 0.0
  assert float(sched(5)) == pytest.approx(5e-4)
  assert float(sched(10)) == pytest.approx(1e-3)
  assert float(sched(55)) == pytest.approx(5e-4, rel=1e-3)
  assert float(sched(100)) == pytest.approx(0.0, abs=1e-9)
