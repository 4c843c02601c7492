"""Sampler behaviour: exact known tokens, analytic convergence, compile-once, renoise, guidance."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskvid.sampling import sampler

# Per-channel Gaussian data x ~ N(MU, SIG^2): its flow-matching velocity is known in closed form.
MU = jnp.array([1.5, -0.5, 0.0, 2.0], jnp.float32)
SIG = jnp.array([0.5, 1.0, 2.0, 0.25], jnp.float32)


def gaussian_velocity(params, x_t, t):
  """E[eps - x | x_t] for x ~ N(mu, sig^2), x_t = (1 - t) x + t eps (t per token)."""
  mu, sig = params
  t = t[..., None]
  var_t = (1 - t) ** 2 * sig ** 2 + t ** 2
  dev = x_t - (1 - t) * mu
  return (t - (1 - t) * sig ** 2) / var_t * dev - mu


def shift_velocity(params, x_t, t):
  """Toy model that reads the context: v = a x_t + mean noise level of the clip."""
  return params * x_t + jnp.mean(t, axis=(1, 2, 3))[:, None, None, None, None]


def strict_velocity(params, x_t, t):
  """gaussian_velocity that turns to NaN if any unknown token is evaluated at t = 0 (= clean).

  params = (mu, sig, known_mask); the mask is tiled when the sampler doubles the batch (guidance).
  """
  mu, sig, mask = params
  mask = jnp.tile(mask, (x_t.shape[0] // mask.shape[0], 1, 1, 1))
  bad = jnp.any(~mask & (t <= 0))
  return jnp.where(bad, jnp.nan, gaussian_velocity((mu, sig), x_t, t))


def key(seed):
  # The 'rbg' PRNG compiles ~10x faster than threefry on XLA:CPU (seconds per program here); the
  # sampler is agnostic to the key type. Test data comes from numpy for the same reason.
  return jax.random.key(seed, impl='rbg')


def random_problem(seed, shape=(2, 3, 4, 4, 4), frac=0.5):
  rs = np.random.RandomState(seed)
  known = jnp.asarray(rs.normal(size=shape) * 3.0 + 1.0, jnp.float32)
  mask = jnp.asarray(rs.uniform(size=shape[:-1]) < frac)
  return known, mask


@pytest.mark.parametrize('solver', sampler.SOLVERS)
def test_known_tokens_bit_equal_and_noisy_tokens_never_at_t0(solver):
  known, mask = random_problem(0)
  run = functools.partial(sampler.complete, strict_velocity, num_steps=4, solver=solver)
  out = np.asarray(run((MU, SIG, mask), known, mask, key(1)))
  m, k = np.asarray(mask), np.asarray(known)
  assert out.shape == known.shape and out.dtype == known.dtype
  assert np.all(np.isfinite(out))  # strict_velocity never saw a noisy token labelled clean
  np.testing.assert_array_equal(out[m], k[m])
  assert not np.any(out[~m] == k[~m])  # unknown tokens were generated, not copied
  # All known: the output is the input, exactly (same compiled function, new values).
  full = jnp.ones_like(mask)
  np.testing.assert_array_equal(np.asarray(run((MU, SIG, full), known, full, key(2))),
                                k)
  # Same rng -> same result; another rng -> another sample.
  np.testing.assert_array_equal(np.asarray(run((MU, SIG, mask), known, mask, key(1))),
                                out)
  other = np.asarray(run((MU, SIG, mask), known, mask, key(3)))
  assert not np.allclose(other, out)


@pytest.fixture(scope='module')
def gaussian_samples():
  """Per solver: (initial noise, samples), unknown tokens only, [n, c] (about 5700 per channel)."""
  known, mask = random_problem(4, (256, 2, 4, 4, 4), frac=0.3)
  m = ~np.asarray(mask)
  samples = {}
  for solver, num_steps in [('euler', 64), ('heun', 32), ('ancestral', 128)]:
    out, traj, _ = sampler.sample_trajectory(gaussian_velocity, (MU, SIG), known, mask,
                                             key(5), num_steps=num_steps,
                                             solver=solver)
    samples[solver] = np.asarray(traj[0])[m], np.asarray(out)[m]
  return samples


def affine_fit(noise, out):
  """The Gaussian ODE flow is affine per channel: out = a * noise + b; returns (a, b)."""
  a = out.std(0) / noise.std(0)
  return a, out.mean(0) - a * noise.mean(0)


@pytest.mark.parametrize('solver,tol', [('euler', 0.04), ('heun', 0.008)])
def test_ode_solvers_transport_noise_to_data(gaussian_samples, solver, tol):
  noise, out = gaussian_samples[solver]
  a, b = affine_fit(noise, out)
  # Exactly affine (deterministic per-token solver), so the fit removes sampling noise from the
  # check: the solver maps N(0, 1) to N(b, a^2) and must hit N(mu, sig^2).
  np.testing.assert_allclose(out, a * noise + b, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(a, SIG, rtol=tol)
  np.testing.assert_allclose(b, MU, atol=1e-4)


def ancestral_std_reference(num_steps):
  """Std the ancestral sampler must produce on Gaussian data (variance recursion in numpy).

  With the exact linear field v = c_t (x_t - (1-t) mu) - mu, a step is x_s = k x_t + const +
  sigma z, so Var_s = k^2 Var_t + sigma^2 starting from Var_1 = 1. It tends to SIG as steps grow.
  """
  sig = np.asarray(SIG, np.float64)
  grid = np.linspace(1, 0, num_steps + 1)
  var = np.ones_like(sig)
  for t, s in zip(grid[:-1], grid[1:]):
    c = (t - (1 - t) * sig ** 2) / ((1 - t) ** 2 * sig ** 2 + t ** 2)
    ratio = (1 - t) * s / ((1 - s) * t)
    sigma = s * np.sqrt(max(1 - ratio ** 2, 0))
    k = (1 - s) * (1 - t * c) + np.sqrt(s * s - sigma * sigma) * (1 + (1 - t) * c)
    var = k * k * var + sigma * sigma
  return np.sqrt(var)


def test_ancestral_reaches_data_moments(gaussian_samples):
  _, out = gaussian_samples['ancestral']
  n = out.shape[0]
  assert n > 5000
  assert np.all(np.abs(out.mean(0) - MU) < 4 * np.asarray(SIG) / np.sqrt(n))  # 4 std errors
  reference = ancestral_std_reference(128)
  np.testing.assert_allclose(reference, SIG, rtol=0.045)  # the discretisation bias is small
  np.testing.assert_allclose(out.std(0), reference, rtol=4 / np.sqrt(2 * n))  # 4 std errors


def test_heun_beats_euler_on_fewer_evals(gaussian_samples):
  # Heun with 32 steps (63 passes) vs Euler with 64 passes.
  err = {s: np.abs(affine_fit(*gaussian_samples[s])[0] / np.asarray(SIG) - 1).max()
         for s in ('euler', 'heun')}
  assert err['heun'] < err['euler'] / 4


def test_compiles_once_per_shape():
  apply_fn = functools.partial(gaussian_velocity)  # a fresh function object: fresh cache entry
  known, mask = random_problem(7)
  run = functools.partial(sampler.complete, apply_fn, (MU, SIG), num_steps=3, solver='heun')
  before = sampler.trace_count()
  a = run(known, mask, key(0))
  b = run(known + 1.0, ~mask, key(1))
  c = run(known, mask, key(0))
  assert sampler.trace_count() == before + 1
  assert not np.allclose(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


def test_vmap_matches_per_item_calls():
  known, mask = random_problem(0)
  known = jnp.stack([known, known * 2])
  mask = jnp.stack([mask, ~mask])
  # threefry: its vmapped draws equal the per-item ones ('rbg' makes no such promise).
  keys = jax.random.split(jax.random.key(0, impl='threefry2x32'), 2)
  fn = functools.partial(sampler.complete, gaussian_velocity, (MU, SIG), num_steps=4,
                         solver='ancestral')
  batched = jax.vmap(fn)(known, mask, keys)
  for i in range(2):
    np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(fn(known[i], mask[i], keys[i])),
                               rtol=1e-5, atol=1e-5)


def test_time_grid():
  np.testing.assert_allclose(sampler.time_grid(4), [1, 0.75, 0.5, 0.25, 0])
  grid = sampler.time_grid(10, renoise_at=0.33)
  assert grid[0] == 1 and grid[-1] == 0 and len(grid) == 11
  assert np.float32(0.33) in grid and np.all(np.diff(grid) < 0)
  assert sampler.time_grid(4, renoise_at=0.0).tolist() == sampler.time_grid(4).tolist()
  for bad in (-1.0, 1.0, None):
    with pytest.raises(ValueError, match=r'renoise_at must be 0 \(off\)'):
      sampler.time_grid(4, renoise_at=bad)
  assert sampler.num_function_evals(10, 'heun') == 19
  assert sampler.num_function_evals(10, 'euler', guidance=2.0) == 20
  assert sampler.num_function_evals(10, 'euler', guidance=2.0, renoise_at=0.3) == 17
  assert sampler.num_function_evals(10, 'heun', guidance=2.0, renoise_at=0.3) == 19 + 14


@pytest.mark.parametrize('solver', ['heun', 'ancestral'])
def test_renoise_changes_known_tokens_only_below_threshold(solver):
  known, mask = random_problem(10)
  m, k = np.asarray(mask), np.asarray(known)
  out, traj, grid = sampler.sample_trajectory(gaussian_velocity, (MU, SIG), known, mask,
                                              key(0), num_steps=4, solver=solver,
                                              renoise_at=0.5)
  traj, grid = np.asarray(traj), np.asarray(grid)
  np.testing.assert_allclose(grid, [1, 0.75, 0.5, 0.25, 0])
  assert traj.shape == (5,) + known.shape
  np.testing.assert_array_equal(traj[-1], np.asarray(out))
  for step, t in enumerate(grid):
    # Clean and exact down to t = 0.5 (the state before re-noising), then free.
    assert np.array_equal(traj[step][m], k[m]) == (t >= 0.5), (step, t)
  # From 0.5 down, known tokens move like the rest: with the context-free analytic model they
  # end near the data distribution, far from their original values (drawn ~N(1, 9)).
  assert np.abs(np.asarray(out)[m] - k[m]).mean() > 0.5


@pytest.mark.parametrize('solver', ['euler', 'heun'])
def test_renoise_repairs_unreliable_tokens_and_keeps_exact_ones(solver):
  known, mask = random_problem(12, frac=0.7)
  rs = np.random.RandomState(0)
  exact = jnp.asarray(np.asarray(mask) & (rs.uniform(size=mask.shape) < 0.5))
  m, e, k = np.asarray(mask), np.asarray(exact), np.asarray(known)
  assert e.any() and (m & ~e).any()
  # strict_velocity turns to NaN if a token outside the known mask is ever fed at t = 0.
  out, traj, grid = sampler.sample_trajectory(strict_velocity, (MU, SIG, mask), known, mask,
                                              key(0), num_steps=4, solver=solver,
                                              renoise_at=0.5, exact_mask=exact)
  out, traj, grid = np.asarray(out), np.asarray(traj), np.asarray(grid)
  assert np.isfinite(out).all()
  np.testing.assert_array_equal(out[e], k[e])                # exact: bit-equal all the way
  for step, t in enumerate(grid):
    np.testing.assert_array_equal(traj[step][e], k[e])
    unreliable = m & ~e
    assert np.array_equal(traj[step][unreliable], k[unreliable]) == (t >= 0.5), (step, t)
  assert np.abs(out[m & ~e] - k[m & ~e]).mean() > 0.5        # re-generated from the model
  # Without stochastic conditioning every known token, exact or not, stays bit-equal.
  plain = np.asarray(sampler.complete(strict_velocity, (MU, SIG, mask), known, mask, key(0),
                                      num_steps=4, solver=solver, exact_mask=exact))
  np.testing.assert_array_equal(plain[m], k[m])


@pytest.mark.parametrize('renoise_at', [0.3, 0.5])
def test_renoise_level_is_the_threshold(renoise_at):
  """With a model that never moves anything (v = 0) the output is what the sampler put in:
  unreliable tokens re-noised to (1 - r) known + r z with z ~ N(0, 1), unknown ones the start
  noise. A wrong level (say 0.6 for 0.5) leaves z's estimate with std ~1.3."""
  known, mask = random_problem(14, shape=(4, 4, 8, 8, 8), frac=0.8)
  rs = np.random.RandomState(1)
  exact = jnp.asarray(np.asarray(mask) & (rs.uniform(size=mask.shape) < 0.3))
  still = lambda params, x, t: jnp.zeros_like(x)
  out = np.asarray(sampler.complete(still, None, known, mask, key(3), num_steps=4,
                                    renoise_at=renoise_at, exact_mask=exact))
  m, e, k = np.asarray(mask), np.asarray(exact), np.asarray(known)
  np.testing.assert_array_equal(out[e], k[e])
  z = (out[m & ~e] - (1 - renoise_at) * k[m & ~e]) / renoise_at
  assert z.size > 1000
  assert abs(z.mean()) < 0.1 and abs(z.std() - 1.0) < 0.05, (z.mean(), z.std())
  start = out[~m]                                    # unknown tokens: the N(0, 1) start
  assert abs(start.mean()) < 0.1 and abs(start.std() - 1.0) < 0.1


def test_exact_mask_must_match_known_mask():
  known, mask = random_problem(13)
  with pytest.raises(ValueError, match='exact_mask'):
    sampler.complete(gaussian_velocity, (MU, SIG), known, mask, key(0), num_steps=2,
                     exact_mask=mask[:, :1])


def test_trajectory_holds_known_tokens_and_starts_from_noise():
  known, mask = random_problem(11)
  m, k = np.asarray(mask), np.asarray(known)
  _, traj, grid = sampler.sample_trajectory(gaussian_velocity, (MU, SIG), known, mask,
                                            key(0), num_steps=5)
  np.testing.assert_allclose(np.asarray(grid), [1, 0.8, 0.6, 0.4, 0.2, 0], atol=1e-7)
  for step in range(6):
    np.testing.assert_array_equal(np.asarray(traj)[step][m], k[m])
  noise = np.asarray(traj)[0][~m]  # the initial state of unknown tokens: N(0, 1) noise
  assert abs(noise.mean()) < 0.15 and abs(noise.std() - 1) < 0.15


@pytest.mark.parametrize('known_shape,mask,match', [
    ((2, 3, 4, 4, 4), np.zeros((2, 3, 4, 5), bool), 'known_mask must have shape'),
    ((2, 3, 4, 4, 4), np.zeros((2, 3, 4, 4), np.float32), 'known_mask must be a bool'),
    ((3, 4, 4, 4), np.zeros((3, 4, 4), bool), 'known must be latents'),
])
def test_bad_inputs_name_the_argument(known_shape, mask, match):
  with pytest.raises((ValueError, TypeError), match=match):
    sampler.complete(gaussian_velocity, (MU, SIG), jnp.zeros(known_shape), jnp.asarray(mask),
                     key(0), num_steps=2)


def test_bad_options_name_the_argument():
  known, mask = random_problem(14)
  run = functools.partial(sampler.complete, gaussian_velocity, (MU, SIG), known, mask,
                          key(0))
  with pytest.raises(TypeError, match='known must be a floating'):
    sampler.complete(gaussian_velocity, (MU, SIG), jnp.zeros(known.shape, jnp.int32), mask,
                     key(0), num_steps=2)
  with pytest.raises(ValueError, match='solver must be one of'):
    run(num_steps=2, solver='rk4')
  with pytest.raises(ValueError, match='num_steps must be a positive int'):
    run(num_steps=0)
  with pytest.raises(ValueError, match='renoise_at must be'):
    run(num_steps=4, renoise_at=1.5)


def test_progress_logs_one_line_per_step_and_changes_nothing(caplog):
  known, mask = random_problem(3)
  run = functools.partial(sampler.complete, strict_velocity, num_steps=4, solver='euler')
  quiet = np.asarray(run((MU, SIG, mask), known, mask, key(1)))
  with caplog.at_level('INFO'):
    loud = np.asarray(run((MU, SIG, mask), known, mask, key(1), progress=True))
    jax.effects_barrier()
  np.testing.assert_array_equal(quiet, loud)
  steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith('sampler: step')]
  assert steps == [f'sampler: step {i}/4' for i in range(1, 5)]
