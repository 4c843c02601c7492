"""maskvid.eval.protocol / report / run: tasks, report writing, and the protocol end to end
with stand-in models (the trained-model path is exercised by `make demo`)."""
import json
import os

import imageio.v3 as iio
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from maskvid import pictures
from maskvid.data import synthetic
from maskvid.data import scenes
from maskvid.eval import metrics
from maskvid.eval import protocol
from maskvid.sampling import noise as noise_lib
from maskvid.eval import report
from maskvid.eval import methods as methods_lib
from maskvid.eval import run


@pytest.fixture(scope='module')
def clip():
  return synthetic.render_clip(int(scenes.split_seeds('test', 1)[0]), 'test', 4, 16, 16)


def test_nvs_task_known_pixels_are_the_valid_warp(clip):
  task = protocol.nvs_task(clip)
  gt = pictures.to_float(clip['rgb'])
  assert task.known_pixels[0].all() and not task.hole[0].any()
  assert task.frames == (1, 2, 3)
  np.testing.assert_array_equal(task.hole[1:], ~task.known_pixels[1:])
  assert task.hole[1:].any()                     # the camera moves: something is disoccluded
  k = task.known_pixels[1:]
  # Warped known pixels show the same surface (colours agree up to nearest-pixel splatting).
  assert np.abs(task.known_frames[1:][k] - gt[1:][k]).mean() < 0.15
  assert np.isfinite(task.trivial).all() and task.trivial.shape == gt.shape
  # The trivial answer keeps the warped pixels and nearest-fills the disocclusions.
  np.testing.assert_array_equal(task.trivial[1:][k], task.known_frames[1:][k])
  assert set(task.answers) == {'nearest_fill', 'temporal_nearest'}


def test_interpolate_and_holes_tasks(clip):
  task = protocol.interpolate_task(clip)
  assert task.frames == (1, 2)
  assert task.known_pixels[[0, 3]].all() and not task.known_pixels[1:3].any()
  assert task.hole[1:3].all() and not task.hole[[0, 3]].any()
  gt = pictures.to_float(clip['rgb'])
  # The geometry oracle (GT depth from both endpoints) beats a blank guess on the middle frames.
  assert np.abs(task.answers['warp_oracle'][1:3] - gt[1:3]).mean() < np.abs(gt[1:3]).mean()
  # The trivial answer is the cross-fade of the endpoints.
  np.testing.assert_allclose(task.trivial[1], gt[0] * 2 / 3 + gt[3] / 3, atol=1e-6)
  np.testing.assert_allclose(task.trivial[[0, 3]], gt[[0, 3]], atol=1e-6)
  holes = protocol.holes_task(clip, seed=3)
  cover = holes.hole.mean(axis=(1, 2))
  assert np.all(cover >= 0.4) and np.all(cover < 0.9)
  np.testing.assert_array_equal(holes.known_frames[holes.known_pixels], gt[holes.known_pixels])
  again = protocol.holes_task(clip, seed=3)
  np.testing.assert_array_equal(again.hole, holes.hole)
  with pytest.raises(ValueError, match='task'):
    protocol.make_task('outpaint', clip)


def _results():
  block = {m: {'psnr_hole': 20.0 + i, 'psnr_hole_se': 0.3, 'ssim_hole': 0.5,
               'psnr': float('inf'), 'ssim': 0.9, 'lpips': float('nan'), 'fvd': 50.0 - i,
               'fd': 0.1, 'reproj': 0.01 * i, 'chamfer': 0.002}
           for i, m in enumerate(run.REFERENCE_ROWS + run.METHODS)}
  return {'methods': list(run.REFERENCE_ROWS + run.METHODS), 'metrics': {
      'test': {'nvs': block, 'holes': dict(block)}, 'ood': {'nvs': dict(block)}}, 'notes': ['a note']}


def test_report_writer_has_every_method_and_number(tmp_path):
  res = _results()
  res['summary'] = report.summarize(res)
  paths = report.write_report(res, str(tmp_path))
  md = open(paths['markdown']).read()
  for m in res['methods']:
    assert f'| {m} |' in md
  assert '### test' in md and '### ood' in md and 'a note' in md
  overview = report.split_table(res, 'test')
  assert overview.splitlines()[0].startswith('| method | nvs PSNR-hole ↑ | nvs FVD ↓ | holes')
  assert 'LPIPS' not in overview                              # all-NaN metric columns are dropped
  assert f"| ours | {20.0 + len(res['methods']) - 1:.2f}±0.30 |" in overview   # value ± SE
  assert 'Reproj' in report.detail_table(res, 'ood', 'nvs')
  # A row that answers nothing in a task is left out of that task's table.
  res['metrics']['test']['holes']['ours'] = {k: float('nan') for k in res['metrics']['test'][
      'holes']['ours']}
  assert '| ours |' not in report.detail_table(res, 'test', 'holes')
  assert '| ours |' in report.detail_table(res, 'test', 'nvs')
  png = report.plot_overview(res, str(tmp_path / 'overview.png'))
  assert iio.imread(png).ndim == 3
  loaded = json.load(open(paths['json']))
  assert loaded['metrics']['test']['holes']['ours']['psnr_hole'] == 20.0 + len(res['methods']) - 1
  assert loaded['metrics']['ood']['nvs']['nearest_fill']['psnr'] == 'inf'
  assert loaded['metrics']['ood']['nvs']['ours']['lpips'] is None
  last = 20.0 + len(res['methods']) - 1
  assert loaded['summary']['ours']['test/nvs/psnr_hole'] == pytest.approx(last)
  png = pictures.save_grid(str(tmp_path / 'g.png'), {'gt': np.zeros((3, 8, 8, 3)),
                                                   'ours': np.ones((3, 8, 8, 3))})
  assert os.path.getsize(png) > 0


class _FakeLatents:
  """4x average-pool 'encoder' and nearest 'decoder' in place of a trained VAE."""
  factor = 4

  def encode(self, x):
    b, t, h, w, c = x.shape
    return jnp.asarray(x).reshape(b, t, h // 4, 4, w // 4, 4, c).mean(axis=(3, 5))

  def decode(self, z):
    return jnp.repeat(jnp.repeat(z, 4, axis=2), 4, axis=3)


@pytest.mark.slow
def _evaluate_with_stand_ins(tmp_path, monkeypatch):
  """`run.evaluate` on a 16x16 config with stand-in samplers, codec, DISTS and FVD: (config,
  results, sampler calls (method, task, steps), FVD feature calls (clips each))."""
  c = default.get_config()
  c.data.resolution, c.data.num_frames, c.data.clip_length = 16, 4, 4
  c.eval.splits, c.eval.num_clips, c.eval.batch_size = ('test',), 2, 2
  c.eval.num_samples = 3
  c.sample.renoise_at = 0.3   # 'ours' and 'ours_no_sc' are then different sampler calls
  c.model.patch_size = (1, 1, 1)
  # A tiny LPIPS net (torch layout) keeps this fast; the real VGG16 one: test_eval_lpips.py.
  import test_eval_metrics  # pylint: disable=g-import-not-at-top
  np.savez(str(tmp_path / 'lpips.npz'), **test_eval_metrics._torch_state(1))  # pylint: disable=protected-access
  c.eval.lpips_weights = str(tmp_path / 'lpips.npz')
  # Stand-ins for DISTS and FVD (the real networks: test_dists.py, test_fvd.py): a per-frame
  # distance and per-clip features, so the table's plumbing of both is checked here.
  fvd_clips = []
  class StandInFVD:
    def features(self, videos):
      fvd_clips.append(len(videos))
      return np.asarray(videos).mean(axis=(1, 2, 3))
    distance = staticmethod(metrics.frechet_distance)
  class StandInDISTS:
    def features(self, frames):
      return [np.asarray(frames)]
    def distance(self, fa, fb):
      return np.abs(fa[0] - fb[0]).mean(axis=(-3, -2, -1))
  monkeypatch.setattr(run.dists_lib, 'maybe_load_dists', lambda spec: StandInDISTS())
  monkeypatch.setattr(run.fvd_lib, 'maybe_load_fvd', lambda spec: StandInFVD())
  monkeypatch.setattr(run.codec_lib.LatentCodec, 'load', lambda *a: _FakeLatents())
  calls = []

  task_of = {}   # which task a call belongs to: the known-token fraction differs per task

  def stand_in(m):
    def fn(k, mk, ex, rng, steps):
      calls.append((m, task_of.get('now'), steps))
      # Known latents where known; elsewhere N(0, 1) noise that depends on the sample's key.
      noise = noise_lib.normal(rng, k.shape)
      return jnp.where(mk[..., None], k, noise)
    return fn
  monkeypatch.setattr(methods_lib, 'make_samplers', lambda cfg, wd, methods: {
      m: stand_in(m) for m in methods})
  make_task = run.protocol.make_task

  def tracking_make_task(name, *a, **k):
    task_of['now'] = name
    return make_task(name, *a, **k)
  monkeypatch.setattr(run.protocol, 'make_task', tracking_make_task)
  return c, run.evaluate(c, str(tmp_path)), calls, fvd_clips


def test_evaluate_end_to_end_with_stand_in_models(tmp_path, monkeypatch):
  c, out, calls, fvd_clips = _evaluate_with_stand_ins(tmp_path, monkeypatch)
  ev = tmp_path / 'eval'
  for name in ('results.md', 'results.json', 'test_nvs.png', 'test_interpolate.png',
               'test_holes.png', 'test_edit.png'):
    assert (ev / name).exists(), name
  m = out['metrics']['test']
  assert set(m) == {'nvs', 'interpolate', 'holes', 'edit'}
  gen = [g for g in methods_lib.GENERATIVE if g in c.eval.methods]
  rows = (set(run.REFERENCE_ROWS + methods_lib.TRIVIAL)
          | set(methods_lib.generative_rows(gen, 3, True, c.eval.tasks)))
  assert {'ours mean3', 'ours one-step', 'conditioning one-step', 'ours gt-region',
          'ours blank'} <= rows
  for task in m.values():
    assert set(task) == rows
    assert task['ground_truth']['reproj'] < 0.1        # 16x16 frames: sampling error only
    assert np.isnan(task['ground_truth']['psnr'])        # reference row: consistency only
    for name in rows - {'ground_truth'}:
      # Every row that answers the task has LPIPS, except the PSNR diagnostics (mean, one-step).
      if np.isfinite(task[name]['psnr_hole']):
        diagnostic = name.endswith((' mean3', ' one-step'))
        for metric in ('lpips', 'fd', 'dists', 'dists_se', 'fvd'):
          assert np.isfinite(task[name][metric]) != diagnostic, (name, metric)
  assert m['holes']['ours']['lpips'] > 0
  assert m['holes']['ours']['dists'] > 0 and m['holes']['vae_oracle']['dists'] > 0
  # FVD: the true clips' features once per split/task, then once per scored (sample) row.
  scored = sum(np.isfinite(t[r]['fvd']) for t in m.values() for r in t)
  assert len(fvd_clips) == scored + len(m) and set(fvd_clips) == {2}
  # Each task is scored against its own trivial answer only; the GT-warp oracle on interpolate.
  assert np.isfinite(m['holes']['nearest_fill']['psnr_hole'])
  assert np.isnan(m['holes']['cross_fade']['psnr_hole'])
  assert np.isfinite(m['interpolate']['cross_fade']['psnr_hole'])
  assert np.isnan(m['interpolate']['nearest_fill']['psnr_hole'])
  assert np.isfinite(m['interpolate']['warp_oracle']['psnr_hole'])
  assert np.isnan(m['holes']['warp_oracle']['psnr_hole'])
  # 'edit': scored against the edited render. The unedited frames change nothing outside the
  # object (exact: 100 dB) and miss it inside; every row that answers it has an outside score;
  # the GT-region variant is a row of 'edit' only; the tracked region's IoU is reported.
  e = m['edit']
  assert e['no_propagation']['psnr_outside'] == 100.0
  for row in ('colour_transfer', 'ours', 'ours gt-region', 'ours blank', 'conditioning'):
    assert np.isfinite(e[row]['psnr_hole']) and np.isfinite(e[row]['psnr_outside']), row
  assert np.isnan(m['holes']['ours gt-region']['psnr_hole'])
  assert np.isnan(m['holes']['ours']['psnr_outside'])
  assert np.isnan(m['holes']['no_propagation']['psnr_hole'])
  assert 0.0 <= out['info']['test/edit region_iou'] <= 1.0
  # Every output is composited: known pixels come back exactly, so whole-frame PSNR on 'holes'
  # is above hole PSNR for the generative rows too.
  assert m['holes']['ours']['psnr'] > m['holes']['ours']['psnr_hole']
  # K samples per method at the configured steps, one call at 1 step for the one-step row.
  def steps_of(method, task):
    return sorted(n for g, t, n in calls if g == method and t == task)
  assert steps_of('ours_no_sc', 'holes') == [1] + [c.sample.num_steps] * 3
  assert steps_of('conditioning', 'interpolate') == [1] + [c.sample.num_steps] * 3
  # With stochastic conditioning on, 'ours' is its own sampler call on every task, and 'edit'
  # adds one sample on the GT region per method.
  assert steps_of('ours', 'holes') == [1] + [c.sample.num_steps] * 3
  assert steps_of('ours', 'interpolate') == [1] + [c.sample.num_steps] * 3
  assert steps_of('conditioning', 'edit') == [1] + [c.sample.num_steps] * 5   # + blank, gt-region
  # The trivial temporal copy answers the tasks with frames to copy from.
  for task in ('nvs', 'interpolate', 'holes'):
    assert np.isfinite(m[task]['temporal_nearest']['psnr_hole']), task
  assert np.isnan(m['edit']['temporal_nearest']['psnr_hole'])
  # The mean of 3 differently seeded samples: its noise has a third of one sample's variance,
  # so it is closer to the truth where tokens are generated (0.7 dB here, part of the holes is
  # held from hints; equal seeds or a mean over one sample: 0 dB).
  assert m['holes']['ours mean3']['psnr_hole'] > m['holes']['ours']['psnr_hole'] + 0.3
  assert 'ours' in out['summary'] and 'test/nvs/psnr_hole' in out['summary']['ours']


def _known_token_fraction(tmp_path, monkeypatch, min_valid):
  c = default.get_config()
  c.data.resolution, c.data.num_frames, c.data.clip_length = 16, 4, 4
  c.eval.splits, c.eval.num_clips, c.eval.batch_size = ('test',), 2, 2
  c.eval.tasks, c.eval.methods = ('holes',), ('ours',)
  c.eval.sample_overrides.min_valid = min_valid
  c.eval.sample_overrides.temporal_fill = False   # given pixels only: copies would be known too
  c.eval.num_samples, c.eval.one_step = 1, False
  c.eval.lpips_weights = ''   # token masks only
  c.eval.dists_weights = c.eval.fvd_weights = ''
  c.model.patch_size = (1, 1, 1)
  seen = []
  monkeypatch.setattr(run.codec_lib.LatentCodec, 'load', lambda *a: _FakeLatents())
  monkeypatch.setattr(methods_lib, 'make_samplers', lambda cfg, wd, methods: {
      m: (lambda k, mk, ex, r, n: (seen.append((np.asarray(mk), np.asarray(ex))), k)[1])
      for m in methods})
  run.evaluate(c, str(tmp_path / str(min_valid)))
  known = np.concatenate([k for k, _ in seen])
  exact = np.concatenate([e for _, e in seen])
  assert not (exact & ~known).any()                  # exact tokens are known tokens
  return known.mean(), exact.mean()


def test_eval_min_valid_sets_which_tokens_are_known(tmp_path, monkeypatch):
  strict, exact_strict = _known_token_fraction(tmp_path, monkeypatch, 1.0)
  loose, exact_loose = _known_token_fraction(tmp_path, monkeypatch, 0.01)
  # 40-70% blob holes: far fewer 4x4-pixel tokens are wholly known than partly known.
  assert strict == exact_strict == exact_loose
  assert 0.0 <= strict < loose <= 1.0
  assert loose - strict > 0.1


def test_baselines_job_trains_only_the_trained_baselines(tmp_path, monkeypatch):
  from maskvid import stages
  trained = []
  monkeypatch.setattr(stages, 'ensure_baseline', lambda cfg, wd, name: trained.append(name) or name)
  c = default.get_config()
  c.eval.methods = ('nearest_fill', 'replacement', 'ours', 'conditioning')
  assert stages.run_baselines(c, str(tmp_path)) == ['replacement', 'conditioning']
  c.eval.methods = ('nearest_fill', 'ours')
  with pytest.raises(ValueError, match='eval.methods'):
    stages.run_baselines(c, str(tmp_path))


@pytest.mark.slow
def test_speed_sweep_reports_hole_psnr_against_camera_speed(tmp_path, monkeypatch):
  c = default.get_config()
  c.data.resolution, c.data.num_frames, c.data.clip_length = 16, 4, 4
  c.eval.splits, c.eval.num_clips, c.eval.batch_size = ('test',), 2, 2
  c.eval.tasks, c.eval.methods = ('holes',), ('nearest_fill', 'cross_fade',
                                                 'temporal_nearest', 'ours')
  c.eval.num_samples, c.eval.one_step, c.eval.lpips_weights = 1, False, ''
  c.eval.dists_weights = c.eval.fvd_weights = ''
  c.eval.speeds = (0.0, 1.0)
  c.model.patch_size = (1, 1, 1)
  monkeypatch.setattr(run.codec_lib.LatentCodec, 'load', lambda *a: _FakeLatents())
  # A stand-in that keeps known tokens and fills the others with zeros (grey).
  monkeypatch.setattr(methods_lib, 'make_samplers', lambda cfg, wd, methods: {
      m: (lambda k, mk, ex, r, n: jnp.where(mk[..., None], k, 0.0)) for m in methods})
  out = run.evaluate(c, str(tmp_path))
  sweep = out['speed_sweep']
  m = sweep['metrics']['test']
  assert set(m) == {'interpolate', 'holes', 'nvs'}
  assert set(m['nvs']) == {1.0}                      # a static camera leaves nvs nothing to do
  still, moving = m['holes'][0.0], m['holes'][1.0]
  # Static: the temporal copy is exact where any frame shows the pixel (4 frames with 40-70%
  # holes leave ~10% of pixels unseen: those are nearest-filled).
  assert still['temporal_nearest'][0] > moving['temporal_nearest'][0] + 5
  assert still['temporal_nearest'][0] > still['nearest_fill'][0] + 5
  assert m['interpolate'][0.0]['cross_fade'][0] > 60      # a cross-fade of equal frames
  # Ours sees the copied pixels as known tokens: on a static clip it beats the spatial fill.
  assert still['ours'][0] > still['nearest_fill'][0] + 3
  for name in ('speed_sweep.png', 'speed_test_holes.png', 'results.md'):
    assert (tmp_path / 'eval' / name).exists(), name
  assert '| test | holes | temporal_nearest |' in sweep['table']
  assert 'Quality against camera speed' in (tmp_path / 'eval' / 'results.md').read_text()
