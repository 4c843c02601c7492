"""The eval's `ours` row is what a user's call returns: a task command (the library function
behind it) run on an eval clip gives that clip's `ours` frames bit for bit.

The eval runs with configs/eval.py (its own `sample` section is the defaults: 25 plain steps)
on a run trained with other sampler settings (3 steps, guidance 2, stochastic conditioning, a
stricter token rule): both sides must take the run's (`eval.methods.with_run_sample`).

Both build their inputs with the task modules (`tasks.nvs.nvs_conditioning` with the clip's GT
depth, `tasks.interpolate.interpolation_conditioning`, `tasks.edit.edit_inputs`), go through
`sampling.inputs` with config.sample's options, and sample clip i with jax.random.key(seed + i)
(`sampling.noise`: one key per clip, so the eval's batch of 2 changes nothing). Each test fails
when the eval's keys are shifted by one (tried).
"""
import os

import numpy as np
import pytest

from configs import eval as eval_config
from maskvid import pictures
from maskvid import workdir as workdir_lib
from maskvid.data import synthetic
from maskvid.data import scenes
from maskvid.eval import clips as clips_lib
from maskvid.eval import methods
from maskvid.eval import methods as methods_lib
from maskvid.eval import run
from maskvid.sampling import completer as completer_lib
from maskvid.tasks import edit
from maskvid.tasks import interpolate
from maskvid.tasks import nvs
from maskvid.vae import codec as codec_lib
import test_tasks_e2e

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings('ignore:os.fork')]
NUM_CLIPS = 2
# The trained run's sampler settings, none of them configs/eval.py's.
RUN_SAMPLE = dict(num_steps=3, guidance=2.0, renoise_at=0.5, min_valid=0.3, fill_window=5)


def eval_py_config(run_config):
  """configs/eval.py with the data keys of the run, as a user overrides them on the command line,
  and a small table (one split, no learned metrics)."""
  c = eval_config.get_config()
  c.data.resolution, c.data.clip_length = run_config.data.resolution, run_config.data.clip_length
  c.data.num_frames = c.data.clip_length
  c.eval.splits, c.eval.num_clips, c.eval.batch_size = ('test',), NUM_CLIPS, NUM_CLIPS
  c.eval.num_samples, c.eval.one_step, c.eval.speeds = 1, False, ()
  c.eval.lpips_weights = c.eval.dists_weights = c.eval.fvd_weights = ''
  return c


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('cmd_eval') / 'run')
  test_tasks_e2e.write_tiny_workdir(workdir)   # random weights, 32x32, clips of 4 frames
  diffusion_dir = os.path.join(workdir, 'diffusion')
  run_config = workdir_lib.load_config(diffusion_dir)
  run_config.sample.update(RUN_SAMPLE)
  workdir_lib.save_config(run_config, diffusion_dir)
  given = eval_py_config(run_config)
  assert given.sample.num_steps == 25 and given.sample.guidance == 1.0
  config = methods.with_run_sample(given, workdir)[0]     # what `evaluate` runs run_task with
  codec = codec_lib.LatentCodec.load(os.path.join(workdir, 'vae'),
                                     os.path.join(workdir, 'latents'))
  samplers = methods.make_samplers(given, workdir, ('ours',))   # reads the run's settings itself
  completer = completer_lib.Completer.from_workdir(workdir)
  res = int(config.data.resolution)
  clips = [synthetic.render_clip(int(s), 'test', int(config.data.clip_length), res, res)
           for s in scenes.split_seeds('test', NUM_CLIPS)]
  return dict(config=config, codec=codec, samplers=samplers, completer=completer, clips=clips,
              workdir=workdir, run_config=run_config)


def eval_rows(setup, task, clips, row='ours'):
  preds, tasks, _ = run.run_task(setup['config'], task, clips, setup['codec'], setup['samplers'],
                                 (row,), seed=7)
  return pictures.to_uint8(preds[row]), tasks


def seed_of(setup, i):
  return int(setup['config'].seed) + i


def test_nvs_command_is_the_eval_row(setup):
  ours, _ = eval_rows(setup, 'nvs', setup['clips'])
  for i, clip in enumerate(setup['clips']):
    out = nvs.novel_view_synthesis(setup['completer'], clip['rgb'][0], clip['depth'][0],
                                   clip['intrinsics'], clip['world_to_camera'],
                                   seed=seed_of(setup, i))
    np.testing.assert_array_equal(out['video'], ours[i])


def test_interpolate_command_is_the_eval_row(setup):
  ours, _ = eval_rows(setup, 'interpolate', setup['clips'])
  for i, clip in enumerate(setup['clips']):
    out = interpolate.interpolate(setup['completer'], clip['rgb'][0], clip['rgb'][-1],
                                  len(clip['rgb']), seed=seed_of(setup, i))
    np.testing.assert_array_equal(out['video'], ours[i])


def test_eval_job_with_eval_py_is_the_command(setup, monkeypatch):
  """`evaluate` itself, given configs/eval.py: its `ours` holes are the Completer's, and the
  report names the run's sampler settings."""
  config = eval_py_config(setup['run_config'])
  config.eval.tasks, config.eval.methods = ('holes',), ('ours',)
  seen, run_task = {}, run.run_task
  # The loaded codec and the `ours` sampler the other tests compiled (loading and compiling
  # them again costs 5 s); the sampler's options are checked by `make_samplers`'s own tests.
  monkeypatch.setattr(run.codec_lib.LatentCodec, 'load', lambda *a: setup['codec'])
  monkeypatch.setattr(methods_lib, 'make_samplers', lambda cfg, wd, rows: (
      seen.update(sample=cfg.sample.to_dict()) or setup['samplers']))

  def spy(*args, **kwargs):
    preds, tasks, inputs = run_task(*args, **kwargs)
    seen.update(preds=preds, tasks=tasks, clips=args[2])
    return preds, tasks, inputs
  monkeypatch.setattr(run, 'run_task', spy)
  results = run.evaluate(config, setup['workdir'])
  ours = pictures.to_uint8(seen['preds']['ours'])
  for i, (clip, task) in enumerate(zip(seen['clips'], seen['tasks'])):
    video = setup['completer'].complete_video(clip['rgb'], task.known_pixels,
                                              seed=seed_of(setup, i))
    np.testing.assert_array_equal(video, ours[i])
  assert {k: results['sample'][k] for k in RUN_SAMPLE} == RUN_SAMPLE
  assert {k: seen['sample'][k] for k in RUN_SAMPLE} == RUN_SAMPLE
  assert results['sample']['overrides'] == {}
  report = open(os.path.join(setup['workdir'], 'eval', 'results.md')).read()
  assert 'num_steps 3, solver euler, renoise_at 0.5, guidance 2.0, min_valid 0.3' in report
  assert any("sample {'num_steps': 25" in n for n in results['notes'])


def test_edit_command_is_the_eval_row(setup):
  config = setup['config']
  pairs, _ = clips_lib.load_edit_pairs(config, 'test', NUM_CLIPS)
  # With the warped hint (the region's tokens are held from it) and without (`--nowarp_hint`,
  # the eval's 'ours blank': the region is generated).
  for row, warp_hint in (('ours', True), ('ours blank', False)):
    ours, _ = eval_rows(setup, 'edit', pairs, row)
    for i, pair in enumerate(pairs):
      out = edit.propagate_edit(setup['completer'], pair['rgb'], pair['rgb_edited'][0],
                                threshold=int(config.eval.edit_threshold),
                                dilate_radius=int(config.eval.edit_dilate),
                                seed=seed_of(setup, i), warp_hint=warp_hint)
      np.testing.assert_array_equal(out['video'], ours[i], err_msg=row)
