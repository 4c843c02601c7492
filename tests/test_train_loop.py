"""The diffusion stage end to end on a tiny latent cache: outputs, kill-and-resume, inference load.

The scenarios run in one subprocess (this file's __main__) with XLA backend optimisation level
0 and a persistent compilation cache, so the identical train steps of the three runs compile
once. The subprocess prints a JSON report that the tests check.
"""
import json
import os
import subprocess
import sys

import local_processes
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, KILL_AT = 6, 2


def tiny_config():
  from configs import tiny  # pylint: disable=g-import-not-at-top
  c = tiny.get_config()
  c.model.width, c.model.depth, c.model.num_heads = 32, 1, 2
  c.data.clip_length, c.data.num_frames, c.data.resolution = 4, 6, 32   # latents [6, 8, 8, 4]
  c.train.batch_size, c.train.warmup_steps, c.train.steps = 4, 0, STEPS
  c.train.checkpoint_every, c.train.log_every, c.train.keep_checkpoints = KILL_AT, 2, 5
  c.sample.num_steps, c.sample.preview_clips = 3, 2
  return c


def make_latent_cache(latents_dir: str, seed: int = 0) -> None:
  from maskvid.vae import testing  # pylint: disable=g-import-not-at-top
  testing.write_latent_cache(latents_dir, seed)


def _leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _scenarios(tmp: str) -> dict:
  import shutil  # pylint: disable=g-import-not-at-top
  from maskvid.diffusion import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  from maskvid.model import model as model_lib  # pylint: disable=g-import-not-at-top
  from maskvid import stages  # pylint: disable=g-import-not-at-top
  from maskvid.diffusion import train as loop  # pylint: disable=g-import-not-at-top
  report = {}
  config = tiny_config()

  # No cache yet: a clear error that says which stage to run.
  try:
    stages.run_diffusion(config, os.path.join(tmp, 'empty'))
  except FileNotFoundError as e:
    report['missing_cache_error'] = str(e)

  # Uninterrupted run A.
  wd_a, wd_b = os.path.join(tmp, 'a'), os.path.join(tmp, 'b')
  for wd in (wd_a, wd_b):
    make_latent_cache(os.path.join(wd, 'latents'))
  from maskvid.vae import cache  # pylint: disable=g-import-not-at-top
  batch = next(loop.train_batches(cache.LatentSource(os.path.join(wd_a, 'latents'), 'train'),
                                  config, 4, 0))
  report['batch_shape'] = list(batch.shape)
  report['batch_channel_mean'] = batch.mean(axis=(0, 1, 2, 3)).tolist()
  report['batch_channel_std'] = batch.std(axis=(0, 1, 2, 3)).tolist()
  report['result_a'] = stages.run_diffusion(config, wd_a)
  diff_a = os.path.join(wd_a, 'diffusion')
  report['files_a'] = sorted(os.listdir(diff_a))
  report['steps_a'] = sorted(int(s) for s in os.listdir(os.path.join(diff_a, 'checkpoints'))
                             if s.isdigit())
  _, _, ema_a = model_lib.load_for_inference(diff_a)

  # Run B, "killed" right after checkpoint KILL_AT: later checkpoints and outputs never existed.
  stages.run_diffusion(config, wd_b)
  diff_b = os.path.join(wd_b, 'diffusion')
  for s in os.listdir(os.path.join(diff_b, 'checkpoints')):
    if s.isdigit() and int(s) > KILL_AT:
      shutil.rmtree(os.path.join(diff_b, 'checkpoints', s))
  os.remove(os.path.join(diff_b, loop.FINAL_METRICS))
  report['result_b'] = stages.run_diffusion(config, wd_b)   # resumes from KILL_AT
  cfg_b, module_b, ema_b = model_lib.load_for_inference(diff_b)
  report['inference_module'] = type(module_b).__name__
  report['inference_width'] = int(cfg_b.model.width)
  report['inference_patch_size'] = list(cfg_b.model.patch_size)
  report['ema_max_abs_diff'] = max(float(np.max(np.abs(a - b)))
                                   for a, b in zip(_leaves(ema_a), _leaves(ema_b)))
  report['ema_num_leaves'] = len(_leaves(ema_a))
  init = trainer_lib.Trainer(config).init(int(config.seed)).params
  report['ema_vs_init_max_abs_diff'] = max(float(np.max(np.abs(a - b)))
                                           for a, b in zip(_leaves(ema_a), _leaves(init)))

  # A finished run called again does nothing and returns the same metrics.
  report['result_again'] = stages.run_diffusion(config, wd_a)

  try:
    model_lib.load_for_inference(os.path.join(tmp, 'nowhere', 'diffusion'))
  except FileNotFoundError as e:
    report['missing_ckpt_error'] = str(e)
  return report


def test_subprocess_imports_this_checkout(tmp_path, monkeypatch):
  local_processes.assert_script_imports_this_checkout(os.path.abspath(__file__), tmp_path,
                                                     monkeypatch)


def test_training_evaluates_the_ema_params(tmp_path, monkeypatch):
  """The loop's evaluation (preview pictures, eval/* metrics) is given the EMA weights, the ones
  a Completer samples with, not the raw params: after one step they differ (EMA decay 0.1 at
  step 0)."""
  import jax  # pylint: disable=g-import-not-at-top
  from maskvid import stages  # pylint: disable=g-import-not-at-top
  from maskvid.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  config.train.steps, config.train.batch_size, config.train.checkpoint_every = 1, 1, 1
  config.train.async_checkpoints, config.mesh.data = False, 1
  make_latent_cache(str(tmp_path / 'latents'))
  given, saved = [], []
  monkeypatch.setattr(stages.preview, 'make_evaluator', lambda cfg, wd: (
      lambda params, apply_fn, step, write: given.append(jax.device_get(params)) or {}))
  # The state each checkpoint would hold (not written: the test needs the last one only).
  monkeypatch.setattr(ckpt_lib, 'save', lambda manager, state, force=False: (
      saved.append(jax.device_get(state)) and False))
  stages.run_diffusion(config, str(tmp_path))
  final = saved[-1]
  assert len(given) == 1 and int(final.step) == 1   # eval_every 0: once, at the end
  assert max(np.abs(a - b).max()
             for a, b in zip(_leaves(final.ema_params), _leaves(final.params))) > 1e-5
  for a, b in zip(_leaves(given[0]), _leaves(final.ema_params)):
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope='module')
def report(tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp('loop'))
  env = local_processes.checkout_env(JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_backend_optimization_level=0',
             JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, 'xla_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), tmp], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-5000:]
  return json.loads(proc.stdout.strip().splitlines()[-1]), tmp


@pytest.mark.slow   # the integration tier (`make test-fast` skips it)
def test_missing_cache_names_the_stage(report):
  msg = report[0]['missing_cache_error']
  assert 'latents' in msg and 'cache' in msg and 'job=demo' in msg


@pytest.mark.slow   # the integration tier (`make test-fast` skips it)
def test_training_batches_are_normalised_clips(report):
  r, _ = report
  assert r['batch_shape'] == [4, 4, 8, 8, 4]            # [B, clip_length, h, w, c]
  np.testing.assert_allclose(r['batch_channel_mean'], 0.0, atol=0.15)
  np.testing.assert_allclose(r['batch_channel_std'], 1.0, atol=0.15)


@pytest.mark.slow   # the integration tier (`make test-fast` skips it)
def test_run_writes_checkpoints_pictures_and_stats(report):
  r, tmp = report
  assert r['result_a']['step'] == STEPS
  assert np.isfinite(r['result_a']['train/loss']) and r['result_a']['train/loss'] > 0
  assert r['steps_a'] == [2, 4, 6]
  for name in ('config.json', 'stats.json', 'final_metrics.json', f'samples_{STEPS:07d}.png',
               f'samples_{STEPS:07d}.mp4'):
    assert name in r['files_a'], (name, r['files_a'])
  assert any(f.startswith('events.out.tfevents') for f in r['files_a'])
  # Known latents are reproduced exactly by the sampler; holes are generated.
  assert r['result_a']['eval/latent_mse_known'] == pytest.approx(0.0, abs=1e-10)
  assert r['result_a']['eval/latent_mse_holes'] > 0.0
  import imageio.v2 as imageio  # pylint: disable=g-import-not-at-top
  png = imageio.imread(os.path.join(tmp, 'a', 'diffusion', f'samples_{STEPS:07d}.png'))
  # 2 clips x 3 labelled rows (truth / known / completion), 4 frames upscaled to 64 + padding
  # after a label margin.
  assert png.shape[0] == 2 + 2 * 3 * (64 + 2) and png.shape[2] == 3
  assert png.shape[1] > 4 * (64 + 2)


@pytest.mark.slow   # the integration tier (`make test-fast` skips it)
def test_kill_and_resume_reproduces_the_uninterrupted_run(report):
  r, _ = report
  assert r['result_b']['step'] == STEPS
  assert r['ema_num_leaves'] > 0
  assert r['ema_max_abs_diff'] == 0.0
  assert r['ema_vs_init_max_abs_diff'] > 1e-4   # ...and the EMA weights did train
  for k, v in r['result_a'].items():
    assert r['result_b'][k] == pytest.approx(v, rel=1e-6, abs=1e-7), k


@pytest.mark.slow   # the integration tier (`make test-fast` skips it)
def test_inference_load_and_finished_run_is_a_no_op(report):
  r, _ = report
  assert r['inference_module'] == 'VideoTransformer'
  assert r['inference_width'] == 32 and r['inference_patch_size'] == [1, 2, 2]
  assert r['result_again'] == r['result_a']
  assert 'nowhere' in r['missing_ckpt_error']


if __name__ == '__main__':
  if sys.argv[1] == '--which':   # the maskvid this process imports (test above)
    import maskvid  # pylint: disable=g-import-not-at-top
    print(maskvid.__file__)
    sys.exit(0)
  print(json.dumps(_scenarios(sys.argv[1])))
