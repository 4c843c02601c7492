"""sampling.fill (the trivial hole filler), the baselines' replacement / conditioning samplers and the
objective -> sampler table."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskvid.sampling import objectives
from maskvid.sampling import fill


def test_nearest_fill_fills_holes_from_nearest_valid_pixel():
  frames = np.zeros((1, 4, 6, 3), np.float32)
  frames[0, :, :3] = 1.0
  frames[0, :, 3:] = -1.0
  valid = np.ones((1, 4, 6), bool)
  valid[0, :, 1] = False     # nearest valid: column 0 or 2 -> both 1.0
  valid[0, :, 5] = False     # nearest valid: column 4 -> -1.0
  garbage = frames.copy()
  garbage[~valid] = 7.0
  out = fill.nearest_fill(garbage, valid)
  np.testing.assert_array_equal(out, frames)
  empty = fill.nearest_fill(garbage, np.zeros_like(valid), empty_value=0.5)
  assert np.all(empty == 0.5)


def _oracle(target):
  """Exact flow-matching velocity for a data distribution concentrated on `target`."""
  def apply_fn(params, x, t, *cond):
    del params, cond
    return (x - target) / t[..., None]
  return apply_fn


def test_replacement_keeps_known_tokens_on_the_noising_path():
  shape = (2, 3, 4, 4, 8)
  known = jax.random.normal(jax.random.PRNGKey(0), shape)
  mask = jax.random.bernoulli(jax.random.PRNGKey(1), 0.5, shape[:-1])
  target = jnp.full(shape, 0.25)
  out, traj = objectives.replacement_complete(_oracle(target), None, known, mask,
                                             jax.random.PRNGKey(2), num_steps=8,
                                             return_trajectory=True)
  m = np.asarray(mask)
  np.testing.assert_array_equal(np.asarray(out)[m], np.asarray(known)[m])  # exact at t = 0
  np.testing.assert_allclose(np.asarray(out)[~m], 0.25, atol=1e-5)         # oracle reaches data
  # After step k the known tokens sit at level s = 1 - (k + 1) / 8: (x - (1 - s) known) / s ~ N(0, 1)
  for k in (1, 3, 5):
    s = 1 - (k + 1) / 8
    z = (np.asarray(traj[k]) - (1 - s) * np.asarray(known)) / s
    assert abs(z[m].mean()) < 0.2 and abs(z[m].std() - 1.0) < 0.2
  # Fresh noise every step: the residuals of consecutive steps are uncorrelated.
  z1 = (np.asarray(traj[1]) - 0.75 * np.asarray(known)) / 0.75
  z2 = (np.asarray(traj[2]) - 0.625 * np.asarray(known)) / 0.625
  assert abs(np.corrcoef(z1[m], z2[m])[0, 1]) < 0.3


def test_conditioning_sampler_feeds_known_as_channels_and_pastes_back():
  shape = (1, 2, 4, 4, 3)
  known = jax.random.normal(jax.random.PRNGKey(0), shape)
  mask = jnp.zeros(shape[:-1], bool).at[:, 0].set(True)
  seen = {}

  def apply_fn(params, x, t, cond, cond_mask):
    seen['cond'], seen['mask'] = cond, cond_mask
    # Oracle towards the conditioning channels: unknown tokens (cond = 0) converge to 0.
    return (x - cond) / t[..., None]

  out = objectives.conditioning_complete(apply_fn, None, known, mask, jax.random.PRNGKey(1),
                                        num_steps=4)
  np.testing.assert_array_equal(np.asarray(out[:, 0]), np.asarray(known[:, 0]))
  np.testing.assert_allclose(np.asarray(out[:, 1]), 0.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['conditioning', 'replacement'])
def test_training_preview_samples_a_baseline_with_its_own_sampler(name):
  """The preview of a baseline run (`stages.baseline_config`) goes through the objective ->
  sampler table: its latents are what the baseline's own sampler gives, not the masked one's."""
  import os
  import sys
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from configs import tiny
  from maskvid import sharding, stages
  from maskvid.sampling import noise, preview
  from maskvid.diffusion import trainer as trainer_lib
  import random_weights
  c = stages.baseline_config(tiny.get_config(), '/unused', name)
  c.model.width, c.model.depth, c.model.num_heads = 32, 1, 2
  c.data.clip_length, c.sample.num_steps = 2, 2
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
  trainer = trainer_lib.Trainer(c, mesh=sharding.make_mesh(c.mesh, devices=jax.devices()[:1]))
  params = random_weights.with_random_weights(trainer.init(0)).ema_params
  h, w, ch = trainer.latent_shape[1:]
  gt = np.random.RandomState(0).normal(size=(2, 2, h, w, ch)).astype(np.float32)
  known = np.zeros(gt.shape[:-1], bool)
  known[:, 0] = True
  got, _ = preview.complete_clips(c, params, trainer.apply_fn, gt, known, 5)
  own = {'conditioning': objectives.conditioning_complete,
         'replacement': objectives.replacement_complete}[name]
  want = own(trainer.apply_fn, params, jnp.where(known[..., None], gt, 0.0), jnp.asarray(known),
             noise.clip_keys(5, 2), num_steps=2)
  np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got[:, 0], gt[:, 0], atol=1e-6)   # known tokens come back
