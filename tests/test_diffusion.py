"""Masked flow matching: schedule, training masks, per-token t, loss and its baselines."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from maskvid.diffusion import loss as L
from maskvid.diffusion import mask_mixture as K
from maskvid.diffusion import schedule as S
from maskvid.model import model as M

GRID = (4, 8, 8)
PATCH = (1, 2, 2)


def dcfg(**kw):
  c = default.get_config().diffusion
  for k, v in kw.items():
    c[k] = v
  return c


def one_type(kind, **kw):
  return dcfg(masks={k: float(k == kind) for k in K.MASK_TYPES}, **kw)


def sample(config, batch=64, grid=GRID, patch=PATCH, seed=0):
  # Mixture weights are traced inside sample_known_mask: one compile per (batch, grid).
  m, types = K.sample_known_mask(jax.random.key(seed), batch, grid, patch, config,
                                 return_types=True)
  return np.asarray(m), np.asarray(types)


# ---------------------------------------------------------------- schedule

def test_add_noise_exact_at_zero_and_endpoints():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 4, 3)) * 7.3
  eps = jax.random.normal(jax.random.key(1), x.shape) * 1e30
  t = jnp.zeros(x.shape[:4]).at[:, 1].set(1.0).at[:, 2].set(0.25)
  x_t = np.asarray(S.add_noise(x, eps, t))
  assert np.array_equal(x_t[:, 0], np.asarray(x)[:, 0])          # bit-equal at t = 0
  assert np.array_equal(x_t[:, 3], np.asarray(x)[:, 3])
  np.testing.assert_allclose(x_t[:, 1], np.asarray(eps)[:, 1], rtol=1e-6)
  e = jax.random.normal(jax.random.key(1), x.shape)
  np.testing.assert_allclose(S.add_noise(x, e, t)[:, 2], 0.75 * x[:, 2] + 0.25 * e[:, 2],
                             rtol=1e-6)
  np.testing.assert_array_equal(S.velocity_target(x, e), e - x)


@pytest.mark.parametrize('kind', ['logit_normal', 'uniform'])
def test_sample_t_range(kind):
  c = dcfg(time_sampling=kind, t_min=0.01)
  t = np.asarray(S.sample_t(jax.random.key(0), (20000,), c))
  assert t.min() >= 0.01 and t.max() <= 1.0
  assert abs(t.mean() - 0.5) < 0.02
  if kind == 'uniform':
    assert abs(t.std() - (1 / 12) ** 0.5) < 0.02
  else:   # logit-normal concentrates around the middle
    assert t.std() < 0.25
  with pytest.raises(ValueError, match='time_sampling'):
    S.sample_t(jax.random.key(0), (2,), dcfg(time_sampling='cosine'))


@pytest.mark.parametrize('per_token', [False, True])
def test_token_times_zero_on_known_positive_on_masked(per_token):
  c = dcfg(per_token_t=per_token)
  m = sample(c)[0][:8]
  t = np.asarray(S.token_times(jax.random.key(3), m, c, PATCH))
  assert np.all(t[m] == 0.0)
  assert np.all(t[~m] >= c.t_min) and np.all(t <= 1.0)
  # Constant inside each patch (the model pools per patch).
  assert np.array_equal(t, np.repeat(np.repeat(t[:, :, ::2, ::2], 2, 2), 2, 3))
  for b in range(t.shape[0]):
    levels = np.unique(t[b][~m[b]])
    if per_token:
      assert len(levels) > 1 or (~m[b]).sum() <= 4
    else:
      assert len(levels) == 1


# ---------------------------------------------------------------- masks

def test_masks_patch_aligned_and_ratio_of_random_patches():
  c = one_type('random_patches', mask_ratio=(0.5, 0.95))
  m, types = sample(c)
  assert m.dtype == bool and m.shape == (64,) + GRID
  assert np.all(types == K.MASK_TYPES.index('random_patches'))
  assert np.array_equal(m, np.repeat(np.repeat(m[:, :, ::2, ::2], 2, 2), 2, 3))
  masked = 1.0 - m.mean(axis=(1, 2, 3))
  n = 4 * 4 * 4
  assert masked.min() >= 0.5 - 1 / n and masked.max() <= 0.95 + 1 / n
  assert masked.max() - masked.min() > 0.2          # ratio really varies


def test_each_mask_type_produces_its_pattern():
  kind = lambda k: sample(one_type(k))[0][:16]
  ff = kind('first_frame')
  assert ff[:, 0].all() and not ff[:, 1:].any()
  ep = kind('endpoints')
  assert ep[:, 0].all() and ep[:, -1].all() and not ep[:, 1:-1].any()
  assert not kind('unconditional').any()
  rf = kind('random_frames')
  per_frame = rf.mean(axis=(2, 3))
  assert np.all((per_frame == 0) | (per_frame == 1))             # whole frames only
  assert np.all(per_frame.sum(1) >= 1) and np.all(per_frame.sum(1) <= 3)
  box = ~kind('spacetime_box')
  for b in box:
    idx = np.nonzero(b)
    assert len(idx[0]) > 0
    lo, hi = [i.min() for i in idx], [i.max() + 1 for i in idx]
    sl = tuple(slice(a, z) for a, z in zip(lo, hi))
    assert b[sl].all() and b.sum() == b[sl].size                   # a single solid box


def test_mixture_and_fallback():
  m, types = map(np.concatenate, zip(*[sample(dcfg(), seed=s) for s in range(8)]))
  freq = np.bincount(types, minlength=len(K.MASK_TYPES)) / len(types)
  w = np.asarray(K.mixture_weights(dcfg()))
  np.testing.assert_allclose(freq, w, atol=0.06)
  assert np.all((~m).any(axis=(1, 2, 3)))                           # something is always masked
  # One temporal patch: first_frame would know everything -> falls back to random patches.
  m1, _ = sample(one_type('first_frame'), grid=(1, 8, 8))
  assert np.all((~m1).any(axis=(1, 2, 3))) and np.all(m1.any(axis=(1, 2, 3)))
  with pytest.raises(ValueError, match='unknown types'):
    K.mixture_weights(dcfg(masks={'random_patches': 1.0, 'checkerboard': 1.0}))
  with pytest.raises(ValueError, match='not divisible by patch_size'):
    K.sample_known_mask(jax.random.key(0), 2, (4, 7, 8), PATCH, dcfg())


# ---------------------------------------------------------------- loss

def _x0(batch=2, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch,) + GRID + (3,))


def test_loss_conventions_with_an_oracle():
  """An apply_fn that knows x0 recovers the target exactly: conventions agree."""
  x0 = _x0()
  m = sample(dcfg())[0][:2]
  def oracle(params, x_t, t):
    tt = t[..., None]
    return jnp.where(tt > 0, (x_t - x0) / jnp.where(tt > 0, tt, 1.0), 0.0)
  loss, metrics = L.masked_flow_loss(oracle, None, x0, m, jax.random.key(0), dcfg())
  assert float(loss) < 1e-8
  np.testing.assert_allclose(metrics['masked_fraction'], 1.0 - m.mean(), rtol=1e-6)
  zero = lambda params, x_t, t: jnp.zeros_like(x_t)
  loss0, _ = L.masked_flow_loss(zero, None, x0, m, jax.random.key(0), dcfg())
  assert 1.5 < float(loss0) < 2.5                       # E|eps - x|^2 = 2 for unit Gaussians


def test_loss_ignores_clean_targets_but_model_sees_context():
  c = dcfg()
  x0 = _x0()
  m = sample(one_type('first_frame'))[0][:2]
  x0b = jnp.where(m[..., None], x0 + 3.0, x0)           # change only the known tokens
  rng = jax.random.key(5)
  # Pointwise apply_fn (ignores other tokens): the loss is exactly unchanged.
  pointwise = lambda params, x_t, t: params * x_t + t[..., None]
  l1, _ = L.masked_flow_loss(pointwise, 0.7, x0, m, rng, c)
  l2, _ = L.masked_flow_loss(pointwise, 0.7, x0b, m, rng, c)
  assert float(l1) == float(l2)
  # The real transformer attends to the known tokens, so the loss moves.
  mc = default.get_config()
  mc.model.width, mc.model.depth, mc.model.num_heads = 32, 1, 2
  module = M.build_model(mc)
  shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), x0, jnp.zeros(m.shape)))
  rs = np.random.RandomState(1)   # random values everywhere, zero-initialised layers included
  params = jax.tree.map(lambda p: jnp.asarray(0.3 * rs.randn(*p.shape), jnp.float32),
                        shapes['params'])
  f = jax.jit(lambda x: L.masked_flow_loss(M.make_apply_fn(module), params, x, m, rng, c)[0])
  assert abs(float(f(x0)) - float(f(x0b))) > 1e-2


def test_loss_with_nothing_masked_is_zero_not_nan():
  x0 = _x0()
  m = jnp.ones(x0.shape[:4], bool)
  loss, metrics = L.masked_flow_loss(lambda p, x, t: x, None, x0, m, jax.random.key(0), dcfg())
  assert float(loss) == 0.0 and float(metrics['masked_fraction']) == 0.0


def test_objective_variants():
  x0 = _x0()
  m = sample(one_type('first_frame'))[0][:2]
  seen = {}

  def spy(params, x_t, t, *cond):
    seen['t'], seen['cond'] = t, cond
    return jnp.zeros_like(x_t)

  _, met = L.masked_flow_loss(spy, None, x0, m, jax.random.key(0), dcfg(objective='unconditional'))
  assert float(met['masked_fraction']) == 1.0 and np.all(np.asarray(seen['t']) > 0)
  _, met = L.masked_flow_loss(spy, None, x0, m, jax.random.key(0), dcfg(objective='conditioning'))
  t = np.asarray(seen['t'])
  assert np.all(t > 0) and np.all(t == t[:, :1, :1, :1])            # one level per sample
  np.testing.assert_array_equal(np.asarray(seen['cond'][1]), m)
  np.testing.assert_allclose(float(met['masked_fraction']), 1 - m.mean())
  _, met = L.masked_flow_loss(spy, None, x0, m, jax.random.key(0), dcfg(objective='masked'))
  assert not seen['cond'] and np.all(np.asarray(seen['t'])[m] == 0)
  # The real conditioning model plugs into the loss (traced only: no compile).
  mc = default.get_config()
  mc.model.width, mc.model.depth, mc.model.num_heads = 32, 1, 2
  mc.model.input_conditioning, mc.diffusion.objective = True, 'conditioning'
  module = M.build_model(mc)
  params = jax.eval_shape(module.init, jax.random.key(0), x0, m.astype(jnp.float32), x0, m)
  out = jax.eval_shape(lambda p: L.masked_flow_loss(M.make_apply_fn(module), p, x0, m,
                                                    jax.random.key(0), mc.diffusion),
                       nn.unbox(params['params']))
  assert out[0].shape == () and out[0].dtype == jnp.float32
  with pytest.raises(ValueError, match='objective'):
    L.masked_flow_loss(spy, None, x0, m, jax.random.key(0), dcfg(objective='ddpm'))
  with pytest.raises(ValueError, match='patch_size'):
    L.masked_flow_loss(spy, None, x0, m, jax.random.key(0), dcfg(per_token_t=True))


def test_few_steps_overfit_tiny_batch():
  c = default.get_config()
  c.model.width, c.model.depth, c.model.num_heads = 32, 1, 2
  c.diffusion.per_token_t = True
  module = M.build_model(c)
  apply_fn = M.make_apply_fn(module)
  x0 = _x0(batch=2, seed=3)
  m = sample(c.diffusion)[0][:2]
  params = nn.unbox(jax.jit(module.init)(jax.random.key(0), x0, jnp.zeros(m.shape))['params'])
  tx = optax.adam(3e-3)
  rng = jax.random.key(7)           # fixed noise: the batch is a fixed regression problem
  loss_fn = lambda p: L.masked_flow_loss(apply_fn, p, x0, m, rng, c.diffusion, patch_size=PATCH)

  @jax.jit
  def step(p, s):
    (l, _), g = jax.value_and_grad(loss_fn, has_aux=True)(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, l

  state = tx.init(params)
  losses = []
  for _ in range(30):
    params, state, l = step(params, state)   # l: loss before this update
    losses.append(float(l))
  assert 1.0 < losses[0] < 3.0                # zero output at init: ~E|eps - x|^2 = 2
  assert losses[-1] < 0.7 * losses[0], losses
