"""Long runs survive: SIGTERM saves and exits, a corrupt newest checkpoint is stepped over, a NaN
stops the run before it reaches a checkpoint, and every trainer resumes bit-exactly."""
import os
import signal
import sys

import jax
import numpy as np
import pytest

from maskvid import recovery
from maskvid import stages
from maskvid.diffusion import trainer as trainer_lib
from maskvid.model import model as model_lib
from maskvid.train import sharded as sharded_lib

import test_train_loop

HERE = os.path.dirname(os.path.abspath(__file__))


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _ema(diffusion_dir):
  return _leaves(model_lib.load_for_inference(diffusion_dir)[2])


def _workdir(tmp_path, name):
  d = str(tmp_path / name)
  test_train_loop.make_latent_cache(os.path.join(d, 'latents'))
  return d


def _steps_on_disk(diffusion_dir):
  return sorted(int(s) for s in os.listdir(os.path.join(diffusion_dir, 'checkpoints'))
                if s.isdigit())


@pytest.mark.slow
def test_sigterm_saves_the_step_and_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch,
                                                                        capsys):
  """The diffusion stage through `main.run`: SIGTERM arrives before step 3 (sent by the step
  itself: no race with a log line), the step in flight finishes, is saved, the run exits with
  recovery.EXIT_CODE; the restart resumes there and ends bit-equal to an uninterrupted run."""
  sys.path.insert(0, HERE)
  import recovery_worker  # pylint: disable=g-import-not-at-top
  steps = 6
  full = _workdir(tmp_path, 'full')
  assert recovery_worker.run(full, steps) == 0
  cut = _workdir(tmp_path, 'cut')
  restore = _sigterm_before_step(monkeypatch, 3)
  assert recovery_worker.run(cut, steps) == recovery.EXIT_CODE
  message = [l for l in capsys.readouterr().err.splitlines() if l.startswith('maskvid: preempted')]
  assert len(message) == 1 and 'saved step 4' in message[0], message
  assert _steps_on_disk(os.path.join(cut, 'diffusion')) == [4]      # 0 steps lost
  restore()
  assert recovery_worker.run(cut, steps) == 0
  assert _steps_on_disk(os.path.join(cut, 'diffusion'))[-1] == steps
  for a, b in zip(_ema(os.path.join(full, 'diffusion')), _ema(os.path.join(cut, 'diffusion'))):
    np.testing.assert_array_equal(a, b)


def _tiny(steps, every=2):
  c = test_train_loop.tiny_config()
  c.train.steps, c.train.checkpoint_every, c.train.log_every = steps, every, 1
  c.train.async_checkpoints = False
  c.sample.preview_clips = 1
  return c


@pytest.mark.slow
def test_corrupt_newest_checkpoint_falls_back_and_is_kept_aside(tmp_path, caplog):
  full = _workdir(tmp_path, 'full')
  stages.run_diffusion(_tiny(6), full)
  run = _workdir(tmp_path, 'run')
  stages.run_diffusion(_tiny(6), run)
  diffusion = os.path.join(run, 'diffusion')
  ckpts = os.path.join(diffusion, 'checkpoints')
  assert _steps_on_disk(diffusion) == [2, 4, 6]
  # Truncate the biggest file of the newest checkpoint, as a crash mid-copy would, and ask for
  # the run again (its final metrics gone, so it must restore to know where it is).
  files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(ckpts, '6')) for f in fs]
  victim = max(files, key=os.path.getsize)
  with open(victim, 'r+b') as f:
    f.truncate(os.path.getsize(victim) // 2)
  os.remove(os.path.join(diffusion, 'final_metrics.json'))
  with caplog.at_level('WARNING'):
    stages.run_diffusion(_tiny(6), run)
  assert any('checkpoint step 6' in r.getMessage() and 'cannot be restored' in r.getMessage()
             for r in caplog.records)
  aside = ckpts + recovery.UNREADABLE_SUFFIX
  assert os.listdir(aside) == ['6']                   # moved aside, not deleted
  assert _steps_on_disk(diffusion) == [2, 4, 6]      # resumed from 4, step 6 written again
  for a, b in zip(_ema(os.path.join(full, 'diffusion')), _ema(diffusion)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_changed_config_moves_nothing_and_says_so(tmp_path):
  run = _workdir(tmp_path, 'run')
  stages.run_diffusion(_tiny(2), run)
  diffusion = os.path.join(run, 'diffusion')
  before = sorted(os.listdir(diffusion)), _steps_on_disk(diffusion)
  with open(os.path.join(diffusion, 'config.json')) as f:
    config_before = f.read()
  wider = _tiny(4)
  wider.model.width = 48                                  # no checkpoint fits this model
  with pytest.raises(RuntimeError, match=r'no checkpoint in .* restores.*nothing was moved'):
    stages.run_diffusion(wider, run)
  assert (sorted(os.listdir(diffusion)), _steps_on_disk(diffusion)) == before
  with open(os.path.join(diffusion, 'config.json')) as f:
    assert f.read() == config_before


@pytest.mark.slow
def test_non_finite_loss_stops_before_any_checkpoint_holds_it(tmp_path, monkeypatch):
  real_step = trainer_lib.Trainer.step

  def poisoned(self, state, batch):
    state, metrics = real_step(self, state, batch)
    if int(jax.device_get(state.step)) == 3:   # the 3rd update goes bad
      metrics = dict(metrics, loss=metrics['loss'] * np.nan)
    return state, metrics

  monkeypatch.setattr(trainer_lib.Trainer, 'step', poisoned)
  run = _workdir(tmp_path, 'nan')
  with pytest.raises(recovery.NonFiniteLoss, match=r'loss nan at step 3.*last good checkpoint: '
                     r'step 2'):
    stages.run_diffusion(_tiny(6), run)
  assert _steps_on_disk(os.path.join(run, 'diffusion')) == [2]


def test_check_finite_names_the_step():
  params = {'w': np.ones(3, np.float32)}
  recovery.check_finite([1.0, 2.0], params, 7, 'step 5')
  with pytest.raises(recovery.NonFiniteLoss, match='loss inf at step 7'):
    recovery.check_finite([1.0, np.inf], params, 7, 'step 5')
  with pytest.raises(recovery.NonFiniteLoss, match='non-finite parameters after step 7'):
    recovery.check_finite([1.0], {'w': np.array([1.0, np.nan], np.float32)}, 7, 'step 5')


def _sigterm_before_step(monkeypatch, step_to_signal):
  """Every trainer's sharded step sends this process SIGTERM before update `step_to_signal`."""
  real = sharded_lib.ShardedStep.step

  def step(self, state, batch):
    if int(state.step) == step_to_signal:
      os.kill(os.getpid(), signal.SIGTERM)
    return real(self, state, batch)
  monkeypatch.setattr(sharded_lib.ShardedStep, 'step', step)
  return lambda: monkeypatch.setattr(sharded_lib.ShardedStep, 'step', real)


@pytest.mark.slow
def test_vae_trainer_saves_on_sigterm_and_resumes_bit_exactly(tmp_path, monkeypatch):
  from maskvid.vae import model as vae_model
  from maskvid.vae import testing
  from maskvid.vae import train as vae_train
  sources = {'train': testing.ProceduralClips(6, 4, 16, seed=0),
             'test': testing.ProceduralClips(2, 4, 16, seed=1)}
  c = testing.tiny_config(steps=6)
  c.vae.train.checkpoint_every = 100
  vae_train.train_vae_on_sources(c, str(tmp_path / 'full'), sources)
  restore = _sigterm_before_step(monkeypatch, 2)
  with pytest.raises(recovery.Preempted, match='saved step 3'):
    vae_train.train_vae_on_sources(c, str(tmp_path / 'cut'), sources)
  restore()
  vae_train.train_vae_on_sources(c, str(tmp_path / 'cut'), sources)
  for a, b in zip(_leaves(vae_model.load_vae(str(tmp_path / 'full'))[1]),
                  _leaves(vae_model.load_vae(str(tmp_path / 'cut'))[1])):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_depth_trainer_saves_on_sigterm_and_resumes_bit_exactly(tmp_path, monkeypatch):
  from configs import default
  from maskvid import depth as depth_lib
  from maskvid.depth import train as depth_train
  c = default.get_config()
  c.depth.resolution, c.depth.steps, c.depth.batch_size = 16, 6, 4
  c.depth.base_channels, c.depth.channel_multipliers = 8, (1, 2)
  c.depth.checkpoint_every, c.depth.log_every = 100, 1
  rng = np.random.default_rng(0)
  data = {'rgb': rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8),
          'depth': rng.uniform(1, 5, (8, 16, 16)).astype(np.float32)}
  depth_train.train_depth(c, str(tmp_path / 'full'), train_data=data, eval_data=data)
  restore = _sigterm_before_step(monkeypatch, 2)
  with pytest.raises(recovery.Preempted, match='saved step 3'):
    depth_train.train_depth(c, str(tmp_path / 'cut'), train_data=data, eval_data=data)
  restore()
  depth_train.train_depth(c, str(tmp_path / 'cut'), train_data=data, eval_data=data)
  a = depth_lib.load_depth_estimator(str(tmp_path / 'full' / 'depth')).params
  b = depth_lib.load_depth_estimator(str(tmp_path / 'cut' / 'depth')).params
  for x, y in zip(_leaves(a), _leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_multi_process_guard_gathers_flags_only_every_sync_every_steps(monkeypatch):
  """No host sync on most steps (async dispatch survives); all hosts agree at sync steps."""
  gathered = []
  monkeypatch.setattr(recovery.jax, 'process_count', lambda: 2)
  def fake_allgather(x):
    gathered.append(int(x))
    return np.array([int(x), 0])
  monkeypatch.setattr(recovery.multihost_utils, 'process_allgather', fake_allgather)
  guard = recovery.Guard(sync_every=5)
  guard.request()
  assert [guard.should_stop(s) for s in range(1, 5)] == [False] * 4
  assert gathered == []
  assert guard.should_stop(5) and gathered == [1]
  assert guard.should_stop(7, force=True) and gathered == [1, 1]
