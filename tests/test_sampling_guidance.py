"""Mask-dropout guidance in the sampler: the formula, guidance over part of the context, with
re-noising and exact tokens (against a hand-written reference Euler loop), and per-clip keys."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskvid.sampling import noise
from maskvid.sampling import sampler

from test_sampling import MU, SIG, key, random_problem, shift_velocity, strict_velocity


def test_guidance_one_equals_plain_and_formula_holds():
  known, mask = random_problem(12)
  m, k = np.asarray(mask), np.asarray(known)
  rng = key(3)
  run = functools.partial(sampler.complete, shift_velocity, jnp.float32(0.3), known, mask, rng,
                          num_steps=1)
  plain = np.asarray(run())
  np.testing.assert_array_equal(np.asarray(run(guidance=1.0)), plain)
  # One Euler step from t = 1: out = eps - v with v = 0.3 eps + mean_t. The conditional pass has
  # mean_t = unknown fraction f_u (known tokens at t = 0), the unconditional one 1, so the
  # guided v = 0.3 eps + 1 + w (f_u - 1).
  _, traj, _ = sampler.sample_trajectory(shift_velocity, jnp.float32(0.3), known, mask, rng,
                                         num_steps=1)
  eps = np.asarray(traj)[0]
  f_u = 1.0 - m.reshape(m.shape[0], -1).mean(1)[:, None, None, None, None]
  for w, out in ((1.0, plain), (2.5, np.asarray(run(guidance=2.5)))):
    expect = np.broadcast_to(eps - (0.3 * eps + 1 + w * (f_u - 1)), eps.shape)
    np.testing.assert_allclose(out[~m], expect[~m], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[m], k[m])


def mixing_velocity(params, x_t, t):
  """Toy model that reads other tokens' values and noise levels: v = a x + b mean(x) + mean(t)."""
  a, b = params
  return (a * x_t + b * jnp.mean(x_t, axis=(1, 2, 3), keepdims=True)
          + jnp.mean(t, axis=(1, 2, 3))[:, None, None, None, None])


def reference_euler(velocity, params, known, mask, exact, rng, num_steps, renoise_at, guidance,
                    guide=None):
  """The module doc's sampler written out step by step in numpy (Euler only): the reference the
  jitted scan must match. Noise from the sampler's key layout (init, re-noise, steps)."""
  k, m, e = np.asarray(known), np.asarray(mask) | np.asarray(exact), np.asarray(exact)
  g = np.ones_like(m) if guide is None else np.asarray(guide)
  k_init, k_renoise, _ = jax.random.split(rng, 3)
  eps0 = np.asarray(jax.random.normal(k_init, k.shape))
  z = np.asarray(jax.random.normal(k_renoise, k.shape))
  grid = sampler.time_grid(num_steps, renoise_at)
  n1 = int(np.argmin(np.abs(grid - renoise_at))) if renoise_at else num_steps
  x, held = np.where(m[..., None], k, eps0), m
  for i in range(num_steps):
    t, s = float(grid[i]), float(grid[i + 1])
    if i == n1:   # re-noise the unreliable known tokens; from here only exact ones are held
      x = np.where((m & ~e)[..., None], (1 - renoise_at) * k + renoise_at * z, x)
      held = e
    t_noisy = np.full(held.shape, t, np.float32)
    v = np.asarray(velocity(params, jnp.asarray(x), jnp.asarray(np.where(held, 0.0, t_noisy))))
    if guidance != 1.0:   # guided known tokens noised to t; the others clean in both passes
      x_u = np.where((held & g)[..., None], (1 - t) * k + t * eps0, x)
      t_u = np.where(held & ~g, 0.0, t_noisy)
      v_u = np.asarray(velocity(params, jnp.asarray(x_u), jnp.asarray(t_u)))
      v = v_u + guidance * (v - v_u)
    x = np.where(held[..., None], k, x - (t - s) * v)
  return x


def test_guidance_with_renoise_and_exact_tokens_matches_the_reference():
  """guidance x stochastic conditioning x exact tokens, against the step-by-step reference. The
  tolerance (1e-4) resolves every term: dropping guidance after the re-noise, re-noising the
  exact tokens too, or guiding without the noised known tokens moves the output by >= 1e-2."""
  known, mask = random_problem(21, frac=0.6)
  rs = np.random.RandomState(2)
  exact = jnp.asarray(np.asarray(mask) & (rs.uniform(size=mask.shape) < 0.5))
  params = (jnp.float32(0.4), jnp.float32(0.8))
  rng = key(7)
  opts = dict(num_steps=4, renoise_at=0.5, guidance=2.5)
  out = np.asarray(sampler.complete(mixing_velocity, params, known, mask, rng, exact_mask=exact,
                                    **opts))
  ref = reference_euler(mixing_velocity, params, known, mask, exact, rng, **opts)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
  # The reference is sensitive to each term the sampler must get right.
  no_exact = reference_euler(mixing_velocity, params, known, mask, jnp.zeros_like(exact), rng,
                             **opts)
  unguided = reference_euler(mixing_velocity, params, known, mask, exact, rng,
                             **dict(opts, guidance=1.0))
  no_sc = reference_euler(mixing_velocity, params, known, mask, exact, rng,
                          **dict(opts, renoise_at=0.0))
  for other in (no_exact, unguided, no_sc):
    assert np.abs(other - ref).max() > 1e-2


def test_guidance_over_part_of_the_context_matches_the_reference():
  """guide_mask: only those known tokens are noised in the guidance branch (a long video's
  earlier windows); None = all of them; an empty mask makes both passes equal (no guidance)."""
  known, mask = random_problem(23, frac=0.6)
  rs = np.random.RandomState(4)
  exact = jnp.asarray(np.asarray(mask) & (rs.uniform(size=mask.shape) < 0.5))
  guide = jnp.asarray(np.asarray(mask) & (rs.uniform(size=mask.shape) < 0.5))
  params, rng = (jnp.float32(0.4), jnp.float32(0.8)), key(8)
  opts = dict(num_steps=4, renoise_at=0.5, guidance=2.5)
  run = lambda g: np.asarray(sampler.complete(mixing_velocity, params, known, mask, rng,
                                              exact_mask=exact, guide_mask=g, **opts))
  ref = reference_euler(mixing_velocity, params, known, mask, exact, rng, guide=guide, **opts)
  np.testing.assert_allclose(run(guide), ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(run(mask | exact), run(None))
  assert np.abs(run(guide) - run(None)).max() > 1e-2
  plain = reference_euler(mixing_velocity, params, known, mask, exact, rng,
                          **dict(opts, guidance=1.0))
  np.testing.assert_allclose(run(jnp.zeros_like(mask)), plain, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match='guide_mask'):
    run(mask[:, :1])


@pytest.mark.parametrize('solver', ['euler', 'ancestral'])
def test_one_key_per_clip_makes_a_clip_independent_of_its_batch(solver):
  """With keys [B] (`sampling.noise`), clip b's result is the one it gets alone with key b.
  Threefry keys (the default; 'rbg' draws differ under vmap)."""
  known, mask = random_problem(22, shape=(3, 2, 4, 4, 4))
  keys = noise.clip_keys(5, 3)
  opts = dict(num_steps=3, solver=solver, renoise_at=0.5, guidance=2.0)
  params = (jnp.float32(0.4), jnp.float32(0.8))
  batch = np.asarray(sampler.complete(mixing_velocity, params, known, mask, keys, **opts))
  alone = np.asarray(sampler.complete(mixing_velocity, params, known[1:2], mask[1:2],
                                      noise.clip_keys(6, 1), **opts))
  np.testing.assert_allclose(batch[1:2], alone, rtol=1e-6, atol=1e-6)
  # ... while one key for the batch draws other noise for the same clip.
  shared = np.asarray(sampler.complete(mixing_velocity, params, known, mask, keys[1], **opts))
  assert np.abs(shared[1] - alone[0]).max() > 1e-2
  with pytest.raises(ValueError, match='one key per clip needs 3'):
    sampler.complete(mixing_velocity, params, known, mask, keys[:2], **opts)


def test_guidance_is_noop_for_context_free_model():
  known, mask = random_problem(0)
  rng = key(1)
  run = functools.partial(sampler.complete, strict_velocity, num_steps=4, solver='heun')
  plain = run((MU, SIG, mask), known, mask, rng)  # compiled already by the first test
  guided = run((MU, SIG, mask), known, mask, rng, guidance=3.0)
  assert np.all(np.isfinite(np.asarray(guided)))
  np.testing.assert_allclose(np.asarray(guided), np.asarray(plain), rtol=1e-4, atol=1e-4)
  full = jnp.ones_like(mask)
  np.testing.assert_array_equal(
      np.asarray(run((MU, SIG, full), known, full, rng, guidance=3.0)), np.asarray(known))
