"""Completer end to end on a tiny run with random weights, written to a tmp workdir with the real
savers (random everywhere, output layer included: the model's output depends on its input)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from maskvid import workdir as workdir_lib
from maskvid import pictures
from maskvid.sampling import completer as completer_lib
from maskvid.sampling import fill
import random_weights

RES, FRAMES = 16, 2
# The integration tier (`make test-fast` skips it): a saved run loaded from disk, end to end.
pytestmark = pytest.mark.slow


def tiny_config():
  c = default.get_config()
  c.data.resolution, c.data.clip_length, c.data.num_frames = RES, FRAMES, FRAMES
  c.vae.base_channels, c.vae.channel_multipliers, c.vae.norm_groups = 8, (1, 2), 4  # factor 2
  c.model.width, c.model.depth, c.model.num_heads = 32, 1, 2
  c.train.batch_size, c.train.async_checkpoints = 1, False
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
  c.sample.num_steps, c.sample.solver = 2, 'euler'
  return c


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """diffusion/ (Trainer state via train.checkpoint), vae/ (a TrainState holding random params,
  the layout load_vae reads), latents/ (stats.json + COMPLETE.json as the cache writes them)."""
  from maskvid.train import checkpoint as ckpt_lib
  from maskvid.train import state as state_lib
  from maskvid import sharding
  from maskvid.diffusion import trainer as trainer_lib
  from maskvid.vae import cache
  from maskvid.vae import model as vae_model

  root = str(tmp_path_factory.mktemp('run'))
  config = tiny_config()
  for stage in ('diffusion', 'vae'):
    workdir_lib.save_config(config, os.path.join(root, stage))

  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  trainer = trainer_lib.Trainer(config, mesh=mesh)
  manager = ckpt_lib.make_manager(os.path.join(root, 'diffusion'))
  ckpt_lib.save(manager, random_weights.with_random_weights(trainer.init(0)), force=True)
  manager.wait_until_finished()
  manager.close()

  module = vae_model.from_config(config.vae)
  # Random weights from numpy on the init shapes: no init compile (eager init costs ~30 s CPU).
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 1, RES, RES, 3)))
  rs = np.random.RandomState(0)
  variables = jax.tree.map(lambda s: (0.1 * rs.normal(size=s.shape)).astype(s.dtype), shapes)
  vae_ckpt = ckpt_lib.make_manager(os.path.join(root, 'vae'))
  ckpt_lib.save(vae_ckpt, state_lib.TrainState(step=np.int32(0), params=variables,
                                               opt_state=np.zeros(()), ema_params=None,
                                               rng=np.zeros((), np.uint32)), force=True)
  vae_ckpt.wait_until_finished()
  vae_ckpt.close()

  latents = os.path.join(root, 'latents')
  os.makedirs(latents)
  with open(os.path.join(latents, cache.STATS_FILE), 'w') as f:
    json.dump({'shift': [0.1, -0.2, 0.0, 0.3], 'scale': [0.5, 2.0, 1.0, 1.5]}, f)
  with open(os.path.join(latents, cache.COMPLETE_FILE), 'w') as f:
    json.dump({}, f)
  return root


@pytest.fixture(scope='module')
def completer(workdir):
  return completer_lib.Completer.from_workdir(workdir)


def clip(seed=0, batch=None):
  rs = np.random.RandomState(seed)
  shape = (FRAMES, RES, RES, 3) if batch is None else (batch, FRAMES, RES, RES, 3)
  return rs.randint(0, 256, size=shape).astype(np.uint8)


def test_loads_run(completer):
  from maskvid.sampling import interface
  assert isinstance(completer, interface.VideoCompleter)
  assert completer.clip_length == FRAMES and completer.resolution == RES
  assert completer.latent_factor == 2 and completer.patch_size == (1, 2, 2)
  np.testing.assert_allclose(np.asarray(completer.codec.scale), [0.5, 2.0, 1.0, 1.5])
  assert completer.config.data.resolution == RES
  opts = completer.sample_options()
  assert opts == dict(num_steps=2, solver='euler', renoise_at=0.0, guidance=1.0, progress=False)


def test_encode_normalises_with_stats(completer):
  frames = clip(1)[None]
  z = np.asarray(completer.encode(frames))
  assert z.shape == (1, FRAMES, RES // 2, RES // 2, 4)
  vae = completer.codec.module
  encode = jax.jit(lambda v, x: vae.apply(v, x, method=vae.encode)[0])  # eager: op-by-op, slow
  raw = encode(completer.codec.variables, jnp.asarray(frames / 127.5 - 1.0, jnp.float32))
  np.testing.assert_allclose(z * np.asarray(completer.codec.scale) + np.asarray(completer.codec.shift),
                             np.asarray(raw), rtol=1e-4, atol=1e-4)


def key(seed):
  return jax.random.key(seed, impl='rbg')  # compiles much faster than threefry on XLA:CPU


def test_generated_tokens_are_the_euler_path_of_the_loaded_model(completer, workdir):
  """The Completer's latents = two Euler steps of the saved weights, integrated here by hand
  from the sampler's start noise with the model applied op by op (no jit, no scan): a dropped
  known mask, a wrong noise level or other weights than the run's EMA break it; a zero model
  (`Trainer.init`'s output layer) would leave the start noise, which the last check rejects."""
  from maskvid.model import model as model_lib
  frames = clip(5, batch=1)
  mask = np.ones(frames.shape[:-1], bool)
  mask[:, 1, :, 8:] = False        # frame 1's right half: its tokens are generated
  rng = key(4)
  res = completer.complete_video(frames, mask, rng=rng, return_latents=True)
  known = res['known_mask']
  z = np.asarray(res['latents'])
  _, module, ema = model_lib.load_for_inference(os.path.join(workdir, 'diffusion'))
  eps0 = random_weights.start_noise(rng, z.shape)
  x = np.where(known[..., None], z, eps0)
  for t, s in ((1.0, 0.5), (0.5, 0.0)):
    v = np.asarray(module.apply({'params': ema}, jnp.asarray(x),
                                jnp.asarray(np.where(known, 0.0, t), jnp.float32)))
    x = np.where(known[..., None], z, x - (t - s) * v)
  np.testing.assert_allclose(z, x, rtol=1e-4, atol=1e-4)
  assert np.abs(z[~known] - eps0[~known]).mean() > 0.1     # the model moved the noise


def test_clip_b_of_a_batch_is_the_clip_alone_with_seed_plus_b(completer):
  frames = clip(6, batch=2)
  mask = np.ones(frames.shape[:-1], bool)
  mask[:, 1, :, 8:] = False
  both = completer.complete_video(frames, mask, seed=3, return_latents=True)
  alone = completer.complete_video(frames[1:], mask[1:], seed=4, return_latents=True)
  np.testing.assert_allclose(both['latents'][1:], alone['latents'], rtol=1e-5, atol=1e-5)
  assert np.abs(both['video'][1:].astype(int) - alone['video'].astype(int)).max() <= 1
  assert not np.allclose(both['latents'][0][~both['known_mask'][0]],
                         both['latents'][1][~both['known_mask'][1]])


def test_all_known_comes_back_exactly_and_raw_decode_is_the_vae_round_trip(completer):
  frames = clip(2)
  mask = np.ones(frames.shape[:-1], bool)
  out = completer.complete_video(frames, mask, rng=key(0))
  assert out.dtype == np.uint8 and out.shape == frames.shape
  np.testing.assert_array_equal(out, frames)          # every given pixel is composited back
  raw = completer.complete_video(frames, mask, rng=key(0), paste_known=False)
  expect = pictures.to_uint8(completer.decode(completer.encode(frames[None])))[0]
  np.testing.assert_array_equal(raw, expect)


def test_partial_mask_keeps_known_latents_and_pixels(completer):
  frames = clip(3, batch=1)
  mask = np.ones(frames.shape[:-1], bool)
  mask[:, 1, 4:12, 4:12] = False   # a hole in frame 1: patches (1..2, 1..2) have no valid pixel
  mask[0, 0, 0, 0] = False         # one bad pixel: its patch stays known, but is not exact
  res = completer.complete_video(frames, mask, rng=key(1), return_latents=True,
                                 paste_known=False)
  assert res['video'].shape == frames.shape
  known = res['known_mask']
  assert known.shape == (1, FRAMES, RES // 2, RES // 2)
  assert not known[0, 1, 2:6, 2:6].any() and known[0, 0, :2, :2].all()
  assert known.sum() == 2 * 64 - 16
  # Known latents are the encoding of the nearest-filled frames, held exactly.
  filled = fill.nearest_fill(frames.astype(np.float32) / 127.5 - 1.0, mask)
  z = np.asarray(completer.encode(filled))
  np.testing.assert_array_equal(res['latents'][known], z[known])
  assert not np.allclose(res['latents'][~known], z[~known])
  pasted = completer.complete_video(frames, mask, rng=key(1))
  np.testing.assert_array_equal(pasted[mask], frames[mask])
  np.testing.assert_array_equal(pasted[~mask], res['video'][~mask])
  # Stochastic conditioning re-generates the inexact patch (0, 0) of frame 0 and keeps the
  # exact ones bit-equal.
  sc = completer.complete_video(frames, mask, rng=key(1), return_latents=True, renoise_at=0.5)
  exact = known.copy()
  exact[0, 0, :2, :2] = False
  np.testing.assert_array_equal(sc['latents'][exact], z[exact])
  assert not np.allclose(sc['latents'][0, 0, :2, :2], z[0, 0, :2, :2])
  # Float input in [-1, 1] is the same clip as uint8; another rng gives another completion.
  again = completer.complete_video(frames.astype(np.float32) / 127.5 - 1.0, mask, rng=key(1))
  np.testing.assert_array_equal(again, pasted)
  other = completer.complete_video(frames, mask, rng=key(2), return_latents=True)
  np.testing.assert_array_equal(other['latents'][known], z[known])
  assert not np.array_equal(other['video'][~mask], pasted[~mask])


def test_hinted_pixels_are_known_but_never_exact_or_pasted(completer):
  frames = clip(5, batch=1)
  mask = np.ones(frames.shape[:-1], bool)
  mask[:, 1, 4:12, 4:12] = False       # a hole in frame 1 (patches 1..2 x 1..2 of the 2x2 grid)
  hint = ~mask
  hint[:, 1, 4:8, 4:12] = False        # the hole's top half comes with a guess, the rest does not
  guess = frames.copy()
  guess[0, 1, 8:12, 4:12] = 255 - frames[0, 1, 8:12, 4:12]
  res = completer.complete_video(guess, mask, hint_mask=hint, rng=key(3), return_latents=True,
                                 renoise_at=0.0)
  known = res['known_mask']
  # Hinted patches (rows 4..5 of the latent grid, i.e. model patch row 2) are known context ...
  assert known[0, 1, 4:6, 2:6].all() and not known[0, 1, 2:4, 2:6].any()
  z = np.asarray(completer.encode(fill.nearest_fill(guess.astype(np.float32) / 127.5 - 1.0,
                                                    mask | hint)))
  np.testing.assert_array_equal(res['latents'][known], z[known])   # held as given without SC
  # ... given pixels are pasted; hinted ones are the hint moved by the model's change to the
  # decode (the unhinted patches next to them were generated, so the decode there changed).
  np.testing.assert_array_equal(res['video'][mask], guess[mask])
  x = guess.astype(np.float32) / 127.5 - 1.0
  moved = pictures.to_uint8(np.clip(x + completer.decode(res['latents']) - completer.decode(z),
                                    -1, 1))
  np.testing.assert_array_equal(res['video'][hint], moved[hint])
  assert not np.array_equal(res['video'][hint], guess[hint])
  # Where every patch is given or hinted and nothing is re-noised, the hint comes back as it was.
  full = completer.complete_video(guess, mask, hint_mask=~mask, rng=key(3), renoise_at=0.0)
  np.testing.assert_array_equal(full, guess)
  # Never exact: stochastic conditioning re-noises the hinted patches and keeps the rest.
  sc = completer.complete_video(guess, mask, hint_mask=hint, rng=key(3), return_latents=True,
                                renoise_at=0.5)
  assert not np.allclose(sc['latents'][0, 1, 4:6, 2:6], z[0, 1, 4:6, 2:6])
  np.testing.assert_array_equal(sc['latents'][0, 0], z[0, 0])
  # Another size goes through fullres with its hints; given pixels stay exact there too, and
  # where every low-resolution patch is given or hinted and nothing is re-noised, the hints come
  # back at full resolution as they were (the model changed nothing to move them by).
  g14, m14 = guess[:, :, :14, :14], mask[:, :, :14, :14]
  small = completer.complete_video(g14, m14, hint_mask=hint[:, :, :14, :14], rng=key(3),
                                   num_steps=1)
  np.testing.assert_array_equal(small[m14], g14[m14])
  whole = completer.complete_video(g14, m14, hint_mask=~m14, rng=key(3), num_steps=1,
                                   renoise_at=0.0)
  np.testing.assert_array_equal(whole, g14)
  with pytest.raises(ValueError, match='hint_mask must be bool'):
    completer.complete_video(guess, mask, hint_mask=hint[..., :-1])


def test_bad_inputs_are_named(completer):
  frames = clip(4)
  with pytest.raises(ValueError, match='pixel_mask must have shape'):
    completer.complete_video(frames, np.ones((FRAMES, RES, RES - 1), bool))
  with pytest.raises(TypeError, match='pixel_mask must be bool'):
    completer.complete_video(frames, np.ones((FRAMES, RES, RES), np.uint8))
  with pytest.raises(ValueError, match='frames must be'):
    completer.complete_video(frames[..., :2], np.ones((FRAMES, RES, RES), bool))
  # Another size is not an error any more: completed at the model's size, returned at 14x14.
  small = completer.complete_video(frames[:, :14, :14], np.ones((FRAMES, 14, 14), bool),
                                   num_steps=1)
  np.testing.assert_array_equal(small, frames[:, :14, :14])
  with pytest.raises(ValueError, match=r'float frames must lie in \[-1, 1\]'):
    completer.complete_video(frames.astype(np.float32), np.ones((FRAMES, RES, RES), bool))


def test_missing_checkpoints_raise_naming_the_directory(tmp_path, workdir):
  with pytest.raises(FileNotFoundError, match='has no trained diffusion stage'):
    completer_lib.Completer.from_workdir(str(tmp_path))
  with pytest.raises(FileNotFoundError, match='does not exist'):
    completer_lib.Completer.from_workdir(str(tmp_path / 'nope'))
  missing = str(tmp_path / 'vae')
  with pytest.raises(FileNotFoundError, match='vae_dir.*' + missing):
    completer_lib.Completer(os.path.join(workdir, 'diffusion'), missing)
  with pytest.raises(FileNotFoundError, match='latents_dir'):
    completer_lib.Completer(os.path.join(workdir, 'diffusion'), os.path.join(workdir, 'vae'),
                            latents_dir=str(tmp_path))


def test_static_clip_copies_what_the_other_frame_shows(completer):
  """A frame repeated, each copy missing other pixels: every pixel comes back exactly (the other
  frame's pixel reaches the model as a known token, held without stochastic conditioning)."""
  frame = clip(6)[0]
  frames = np.repeat(frame[None], FRAMES, axis=0)
  mask = np.zeros(frames.shape[:-1], bool)
  mask[0, :, :10], mask[1, :, 6:] = True, True     # each frame shows what the other misses
  res = completer.complete_video(frames, mask, rng=key(4), renoise_at=0.0, return_latents=True)
  assert res['known_mask'].all()
  np.testing.assert_array_equal(res['video'], frames)
  # Without the copy the missing halves are generated (and far from the truth here).
  fills = completer.fill_options
  completer.fill_options = dict(fills, temporal=False)
  try:
    blind = completer.complete_video(frames, mask, rng=key(4), renoise_at=0.0)
  finally:
    completer.fill_options = fills
  assert np.abs(blind[~mask].astype(int) - frames[~mask].astype(int)).mean() > 20
  # Stochastic conditioning may change the copies (unreliable), never the given pixels.
  sc = completer.complete_video(frames, mask, rng=key(4), renoise_at=0.5)
  np.testing.assert_array_equal(sc[mask], frames[mask])
  assert not np.array_equal(sc[~mask], frames[~mask])


def test_guide_frames_choose_what_guidance_drops(completer):
  """guide_frames (a long video's context frames): guidance over those frames only differs from
  guidance over everything known; guiding over no frame is the unguided sampler."""
  frames = clip(7, batch=1)
  mask = np.ones(frames.shape[:-1], bool)
  mask[:, 1, :, 8:] = False       # frame 1's right half generated, its left half and frame 0 given
  run = lambda **kw: np.asarray(completer.complete_video(frames, mask, rng=key(2), num_steps=2,
                                                         return_latents=True, **kw)['latents'])
  plain, guided = run(guidance=1.0), run(guidance=3.0)
  context_only = run(guidance=3.0, guide_frames=np.array([True, False]))
  none = run(guidance=3.0, guide_frames=np.zeros(2, bool))
  np.testing.assert_allclose(none, plain, rtol=1e-5, atol=1e-5)
  assert np.abs(guided - plain).max() > 1e-3
  assert np.abs(context_only - guided).max() > 1e-3 and np.abs(context_only - plain).max() > 1e-3


def test_training_preview_completes_as_the_completer_does(completer):
  """The training preview's pixel path (`preview.complete_clips` with the run's codec) is the
  Completer's: same fill, token rule, sampler options and per-clip keys, so its pictures are
  what `complete_video(frames, pixel_mask, seed=s)` returns for the training mask's pixels."""
  from maskvid import pictures
  from maskvid.sampling import preview
  frames = clip(9, batch=2)
  f = completer.latent_factor
  rs = np.random.RandomState(3)
  token_known = rs.uniform(size=(2, FRAMES, RES // f // 2, RES // f // 2)) < 0.5
  token_known[:, 0, 0, 0] = True
  known_mask = token_known.repeat(2, axis=2).repeat(2, axis=3)       # latent grid (patch 2)
  pixel_mask = known_mask.repeat(f, axis=2).repeat(f, axis=3)
  gt = np.asarray(completer.encode(frames))
  _, pred = preview.complete_clips(completer.config, completer.params, completer.apply_fn, gt,
                                   known_mask, 11, completer.codec, pictures.to_float(frames))
  want = completer.complete_video(frames, pixel_mask, seed=11)
  assert np.abs(pictures.to_uint8(pred).astype(int) - want.astype(int)).max() <= 1
  np.testing.assert_array_equal(pictures.to_uint8(pred)[pixel_mask], frames[pixel_mask])
  other = completer.complete_video(frames, pixel_mask, seed=12)
  assert np.abs(other.astype(int) - want.astype(int)).max() > 1   # the seed matters
