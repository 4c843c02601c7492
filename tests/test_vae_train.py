"""VAE training: loss goes down, exact resume, completed runs are not retrained, loading."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from maskvid import optim
from maskvid.train import checkpoint
from maskvid.vae import evaluate as vae_eval
from maskvid.vae import model as vae_model
from maskvid.vae import pipeline as vae_pipeline
from maskvid.vae import testing
from maskvid.vae import train

tiny_config = testing.tiny_config


def sources():
  return {'train': testing.ProceduralClips(6, 4, 16, seed=0),
          'test': testing.ProceduralClips(2, 4, 16, seed=1),
          'ood': testing.ProceduralClips(2, 4, 16, seed=2)}


@pytest.mark.slow
def test_training_lowers_the_loss():
  c = tiny_config(steps=40)
  module, trainer = train.make_trainer(c)
  state = trainer.init(0)
  data = vae_pipeline.frame_dataset(sources()['train'], batch_size=4, resolution=16, seed=0)
  eval_set = vae_pipeline.eval_frames(sources()['test'], 8)
  before = vae_eval.evaluate(module, state.params, {'test': eval_set})['test']
  l1 = []
  for s in range(40):
    state, m = trainer.step(state, data[s]['frames'])
    l1.append(float(m['l1']))
  after = vae_eval.evaluate(module, state.params, {'test': eval_set})['test']
  assert np.mean(l1[-5:]) < 0.6 * np.mean(l1[:3]), l1
  assert after['psnr'] > before['psnr'] + 3.0, (before, after)


def test_schedule_warmup_then_cosine_or_linear_decay():
  c = tiny_config(steps=110)
  c.vae.train.warmup_steps, c.vae.train.learning_rate = 10, 2e-3
  cosine = optim.make_schedule(c.vae.train, 'config.vae.train')
  c.vae.train.decay, c.vae.train.end_lr_fraction = 'linear', 0.0
  linear = optim.make_schedule(c.vae.train, 'config.vae.train')
  for sched, end in ((cosine, 2e-5), (linear, 0.0)):
    np.testing.assert_allclose([sched(0), sched(5), sched(10), sched(110)], [0, 1e-3, 2e-3, end],
                               atol=1e-9)
  np.testing.assert_allclose(linear(60), 1e-3, rtol=1e-6)            # halfway down the line
  np.testing.assert_allclose(cosine(60), 1e-3 + 1e-5, rtol=1e-5)     # cosine midpoint: (peak+end)/2
  np.testing.assert_allclose(linear(85), 0.5e-3, rtol=1e-6)
  assert cosine(85) < linear(85)                                     # cosine is lower late on
  c.vae.train.decay = 'step'
  with pytest.raises(ValueError, match="config.vae.train.decay must be one of"):
    optim.make_schedule(c.vae.train, 'config.vae.train')


def test_frame_dataset_is_indexable_by_step():
  data = vae_pipeline.frame_dataset(sources()['train'], batch_size=3, resolution=16, seed=5)
  a, b = data[7]['frames'], data[7]['frames']
  assert a.shape == (3, 1, 16, 16, 3) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert a.min() >= -1.0 and a.max() <= 1.0
  assert not np.array_equal(data[7]['frames'], data[8]['frames'])



@pytest.mark.slow
def test_resume_matches_uninterrupted_run(tmp_path):
  c = tiny_config(steps=4)
  full = str(tmp_path / 'full')
  res_full = train.train_vae_on_sources(c, full, sources())
  assert res_full['step'] == 4 and res_full['resumed_from'] == 0
  assert sorted(os.listdir(os.path.join(full, checkpoint.CHECKPOINT_SUBDIR))) == ['2', '4']
  for name in ('eval.json', 'reconstructions.png', 'config.json'):
    assert os.path.exists(os.path.join(full, name)), name
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(full))
  with open(os.path.join(full, 'eval.json')) as f:
    saved = json.load(f)
  assert set(saved['splits']) == {'train', 'test', 'ood'}
  assert all(np.isfinite(m['psnr']) and -1 <= m['ssim'] <= 1 for m in saved['splits'].values())

  # Simulate a crash after step 2: drop the last checkpoint and the final outputs.
  crashed = str(tmp_path / 'crashed')
  shutil.copytree(full, crashed)
  shutil.rmtree(os.path.join(crashed, checkpoint.CHECKPOINT_SUBDIR, '4'))
  os.remove(os.path.join(crashed, 'eval.json'))
  res_resumed = train.train_vae_on_sources(c, crashed, sources())
  assert res_resumed['resumed_from'] == 2 and res_resumed['step'] == 4
  # Step 4's loss (and every metric) equals the uninterrupted run's: same data, rng and state.
  for k in ('final_train_loss', 'final_train_l1', 'final_train_kl', 'test/psnr'):
    np.testing.assert_allclose(res_resumed[k], res_full[k], rtol=1e-5, err_msg=k)
  _, p_full = vae_model.load_vae(full)
  _, p_resumed = vae_model.load_vae(crashed)
  for a, b in zip(jax.tree.leaves(p_full), jax.tree.leaves(p_resumed)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  # A finished run returns its saved eval without training again.
  again = train.train_vae_on_sources(c, full, sources())
  assert again == res_full


def test_load_vae_errors_name_the_directory(tmp_path):
  missing = str(tmp_path / 'no_such_vae')
  with pytest.raises(FileNotFoundError, match='no_such_vae'):
    vae_model.load_vae(missing)
  empty = tmp_path / 'empty_vae'
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match='empty_vae'):
    vae_model.load_vae(str(empty))



def _first_batch():
  return vae_pipeline.frame_dataset(sources()['train'], batch_size=4, resolution=16,
                                    seed=0)[0]['frames']


def _loss(trainer, frames, **changes):
  """Loss of one step from a fresh state with `changes` (the step donates its state)."""
  return float(trainer.step(trainer.init(0).replace(**changes), frames)[1]['loss'])


@pytest.mark.slow
def test_sample_posterior_flag():
  """sample_posterior=False decodes the posterior mean: the step no longer depends on the rng."""
  c, frames = tiny_config(), _first_batch()
  losses = {}
  for sample in (True, False):
    c.vae.train.sample_posterior = sample
    _, trainer = train.make_trainer(c)
    losses[sample] = [_loss(trainer, frames, rng=jax.random.key(k)) for k in (0, 1)]
  assert losses[True][0] != losses[True][1]
  assert losses[False][0] == losses[False][1]


class _CountingSource:
  def __init__(self, source):
    self.source, self.reads = source, 0

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    self.reads += 1
    return self.source[i]


def test_cached_frames_give_the_same_batches_and_read_each_clip_once():
  counting = _CountingSource(sources()['train'])
  cached = vae_pipeline.frame_dataset(counting, batch_size=4, resolution=16, seed=5, cache_rgb=True)
  plain = vae_pipeline.frame_dataset(sources()['train'], batch_size=4, resolution=16, seed=5)
  for s in range(9):   # 36 frames: six epochs of the 6 clips
    np.testing.assert_array_equal(cached[s]['frames'], plain[s]['frames'])
  assert counting.reads == len(counting)


@pytest.mark.slow   # ~12 s of compile: the integration tier
def test_step_folds_the_step_number_into_the_rng():
  """The state holds one base key; steps 0 and 1 still draw different posterior noise."""
  _, trainer = train.make_trainer(tiny_config())
  frames = _first_batch()
  at0 = _loss(trainer, frames)
  assert at0 == _loss(trainer, frames)
  assert at0 != _loss(trainer, frames, step=np.int32(1))


@pytest.mark.slow
def test_cpu_optimization_level_keeps_the_step_and_rejects_bad_values():
  c, frames = tiny_config(), _first_batch()
  out = {}
  for level in (-1, 1):
    c.vae.train.cpu_optimization_level = level
    _, trainer = train.make_trainer(c)
    new_state, m = trainer.step(trainer.init(0), frames)
    out[level] = (float(m['loss']), np.asarray(jax.tree.leaves(new_state.params)[0]))
  np.testing.assert_allclose(out[1][0], out[-1][0], rtol=1e-5)
  np.testing.assert_allclose(out[1][1], out[-1][1], rtol=1e-4, atol=1e-6)
  c.vae.train.cpu_optimization_level = 7
  with pytest.raises(ValueError, match='config.vae.train.cpu_optimization_level'):
    train.make_trainer(c)
