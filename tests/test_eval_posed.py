"""maskvid.eval.posed: the posed-benchmark job end to end on exported synthetic scenes with
stand-in models, its errors, and the synthetic eval as an instance of the posed protocol."""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from configs import eval_posed as eval_posed_config
from maskvid.data import scenes
from maskvid.data import synthetic
from maskvid.eval import methods as methods_lib
from maskvid.eval import metrics
from maskvid.eval import posed
from maskvid.eval import posed_report
from maskvid.eval import protocol
from maskvid.eval import run
from maskvid.posed import export, read_scene
from maskvid.posed import protocol as posed_protocol
from maskvid.posed.scene import PosedFormatError
from maskvid.sampling import noise as noise_lib
from test_eval_protocol import _FakeLatents  # pylint: disable=g-bad-import-order

H = W = 16
T = 4
SEED = int(scenes.split_seeds('test', 2)[0])


def _config(posed_dir=''):
  c = eval_posed_config.get_config()
  c.data.resolution, c.data.num_frames, c.data.clip_length = H, T, T
  c.eval.posed_dir = posed_dir
  c.eval.num_samples, c.eval.one_step = 1, False
  c.eval.lpips_weights = c.eval.dists_weights = c.eval.fvd_weights = ''
  c.model.patch_size = (1, 1, 1)
  return c


def _stand_ins(mp, captured=None):
  """Stand-in codec (4x pooling) and samplers: known latents where known, elsewhere N(0, 1)
  from the clip's key (deterministic given the key)."""
  mp.setattr(run.codec_lib.LatentCodec, 'load', lambda *a: _FakeLatents())

  def stand_in(k, mk, ex, rng, steps):
    return jnp.where(mk[..., None], k, noise_lib.normal(rng, k.shape))
  mp.setattr(methods_lib, 'make_samplers', lambda cfg, wd, methods: {m: stand_in for m in methods})
  if captured is not None:
    run_task = run.run_task

    def capture(config, task, clips, *a, **k):
      out = run_task(config, task, clips, *a, **k)
      captured.setdefault(task, []).append((clips, out))
      return out
    mp.setattr(run, 'run_task', capture)


@pytest.fixture(scope='module')
def posed_dir(tmp_path_factory):
  """Two scenes: a nerfstudio one with its split file (train_test_split_1.json) and GT depth
  (clip 0 of the synthetic test split), a COLMAP one without either (clip 1: frames 0 / N-1,
  depth estimated ('plane') and aligned to its points)."""
  d = tmp_path_factory.mktemp('posed')
  export.export_synthetic(str(d / 'a_nerfstudio'), 'nerfstudio', SEED, 'test', T, H, W,
                          num_points=300, num_context=1)
  export.export_synthetic(str(d / 'b_colmap'), 'colmap', SEED + 1, 'test', T, H, W,
                          num_points=300, num_context=1)
  os.remove(d / 'b_colmap' / 'train_test_split_1.json')
  os.remove(d / 'b_colmap' / export.GT_DEPTH)
  return d


@pytest.fixture(scope='module')
def job(posed_dir, tmp_path_factory):
  """The job on posed_dir with stand-in models and a tiny LPIPS, DISTS and FVD."""
  import test_eval_metrics  # pylint: disable=g-import-not-at-top
  work = tmp_path_factory.mktemp('run')
  c = _config(str(posed_dir))
  np.savez(str(work / 'lpips.npz'), **test_eval_metrics._torch_state(1))  # pylint: disable=protected-access
  c.eval.lpips_weights = str(work / 'lpips.npz')

  class StandInNet:   # per-frame distance (DISTS) and per-clip features (FVD)
    def features(self, x):
      return np.asarray(x).reshape(len(x), -1, 3).mean(1) if np.ndim(x) == 5 else [np.asarray(x)]
    def distance(self, a, b):
      if isinstance(a, list):
        return np.abs(a[0] - b[0]).mean(axis=(-3, -2, -1))
      return metrics.frechet_distance(a, b)
  captured = {}
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(run.dists_lib, 'maybe_load_dists', lambda spec: StandInNet())
    mp.setattr(run.fvd_lib, 'maybe_load_fvd', lambda spec: StandInNet())
    _stand_ins(mp, captured)
    out = posed.evaluate_posed(c, str(work))
  return c, out, captured, work


def test_results_hold_the_summary_and_every_scene(job, posed_dir):
  c, out, _, work = job
  files = {p: (work / 'eval_posed' / p) for p in ('results.json', 'results.md', 'nvs.png',
                                                   'interpolate.png', 'config.json')}
  assert all(p.exists() for p in files.values()), files
  res = json.loads(files['results.json'].read_text())
  for row in ('nearest_fill', 'temporal_nearest', 'ours', 'vae_oracle'):
    for key in ('nvs/psnr', 'nvs/ssim', 'nvs/lpips', 'nvs/dists', 'nvs/psnr_hole'):
      assert np.isfinite(res['summary'][row][key]), (row, key)
  for row in ('cross_fade', 'temporal_nearest', 'ours', 'warp_oracle'):
    assert np.isfinite(res['summary'][row]['interpolate/psnr']), row
  # Trivial rows answer only their task; FVD over the 2 scenes' clips; consistency of outputs.
  assert 'interpolate/psnr' not in res['summary']['nearest_fill']
  assert 'nvs/psnr' not in res['summary']['cross_fade']
  assert np.isfinite(res['summary']['ours']['nvs/fvd'])
  assert res['summary']['ground_truth']['nvs/reproj'] < 0.1
  a, b = res['scenes']
  assert (a['name'], a['format'], a['split_file']) == ('a_nerfstudio', 'nerfstudio',
                                                        'train_test_split_1.json')
  assert (b['name'], b['format'], b['split_file']) == ('b_colmap', 'colmap', None)
  assert a['depth']['source'].endswith('gt_depth.npy') and not a['depth']['aligned']
  # The COLMAP scene's depth: a plane aligned to its points (scale only: a plane has no spread).
  assert b['depth']['source'] == 'plane' and b['alignment']['method'] == 'points/scale'
  assert 0 < b['alignment']['residual'] < 1 and b['alignment']['view'] == 0
  assert a['cases'] == {'nvs': {'scene_ids': [0, 1, 2, 3], 'scored_frames': [1, 2, 3]},
                        'interpolate': {'scene_ids': [0, 1, 2, 3], 'scored_frames': [1, 2]}}
  for e in (a, b):
    assert np.isfinite(e['metrics']['nvs']['ours']['psnr'])
    assert np.isfinite(e['metrics']['interpolate']['cross_fade']['psnr'])
  # The pooled PSNR is the mean over both scenes' frames (equal frame counts).
  np.testing.assert_allclose(
      res['summary']['cross_fade']['interpolate/psnr'],
      np.mean([e['metrics']['interpolate']['cross_fade']['psnr'] for e in (a, b)]), atol=2e-4)
  md = files['results.md'].read_text()
  assert 'a_nerfstudio' in md and 'train_test_split_1.json' in md and 'points/scale' in md
  assert '| ours |' in md


def test_ours_is_scored_on_the_target_frames_only(job):
  _, out, captured, _ = job
  [(clips, (preds, tasks, _))] = captured['nvs']
  assert [t.frames for t in tasks] == [(1, 2, 3)] * 2
  p, g = preds['ours'][0], preds['ground_truth'][0]
  np.testing.assert_array_equal(p[0], g[0])   # the input view comes back exactly
  targets = metrics.finite_mean(np.asarray(metrics.psnr(p[1:], g[1:])))
  every = metrics.finite_mean(np.asarray(metrics.psnr(p, g)))
  scene = out['scenes'][0]['metrics']['nvs']['ours']['psnr']
  assert scene == pytest.approx(targets, abs=1e-3) and every > targets + 1.0
  [(_, (ipreds, itasks, _))] = captured['interpolate']
  assert [t.frames for t in itasks] == [(1, 2)] * 2
  np.testing.assert_array_equal(ipreds['ours'][0][[0, 3]], ipreds['ground_truth'][0][[0, 3]])


def test_unreadable_scene_names_its_folder(posed_dir, tmp_path):
  bad = tmp_path / 'posed'
  (bad / '0_empty').mkdir(parents=True)
  with pytest.raises(PosedFormatError, match='0_empty'):
    posed.evaluate_posed(_config(str(bad)), str(tmp_path))
  c = _config(str(posed_dir))
  c.eval.posed_format = 'colmap'   # the nerfstudio folder is not a COLMAP scene
  with pytest.raises(PosedFormatError, match=r"a_nerfstudio.*posed_format='colmap'"):
    posed.evaluate_posed(c, str(tmp_path))
  c.eval.posed_format, c.eval.posed_depth = '', 'gt'
  with pytest.raises(FileNotFoundError, match='b_colmap.*gt_depth.npy'):
    posed.evaluate_posed(c, str(tmp_path))
  with pytest.raises(ValueError, match='posed_dir'):
    posed.evaluate_posed(_config(''), str(tmp_path))


def test_synthetic_eval_is_an_instance_of_the_posed_protocol(job, posed_dir, tmp_path,
                                                             monkeypatch):
  """The synthetic eval's clip 0 exported (nerfstudio, context (0,)) and read back gives the same
  task inputs, and the same scores with a deterministic stand-in sampler (issue: <= 0.05 dB)."""
  clip = synthetic.render_clip(SEED, 'test', T, H, W)
  scene = read_scene(str(posed_dir / 'a_nerfstudio'))
  depth = np.load(posed_dir / 'a_nerfstudio' / export.GT_DEPTH)
  for name, make in (('nvs', posed_protocol.nvs_case), ('interpolate',
                                                         posed_protocol.interpolate_case)):
    case = make(scene, (H, W), T - (1 if name == 'nvs' else 2), depth=depth)
    ours, theirs = (protocol.make_task(name, c) for c in (posed_protocol.case_clip(case), clip))
    np.testing.assert_array_equal(ours.known_pixels, theirs.known_pixels)
    np.testing.assert_allclose(ours.known_frames, theirs.known_frames, atol=1e-6)
    assert ours.frames == theirs.frames == case.scored_frames
  c = default.get_config()
  c.data.resolution, c.data.num_frames, c.data.clip_length = H, T, T
  c.eval.splits, c.eval.num_clips, c.eval.tasks = ('test',), 1, ('nvs', 'interpolate')
  c.eval.methods = ('nearest_fill', 'cross_fade', 'temporal_nearest', 'ours')
  c.eval.num_samples, c.eval.one_step = 1, False
  c.eval.lpips_weights = c.eval.dists_weights = c.eval.fvd_weights = ''
  c.model.patch_size = (1, 1, 1)
  _stand_ins(monkeypatch)
  synthetic_eval = run.evaluate(c, str(tmp_path))['metrics']['test']
  scene_metrics = job[1]['scenes'][0]['metrics']
  for task, rows in (('nvs', ('nearest_fill', 'temporal_nearest', 'ours', 'vae_oracle')),
                     ('interpolate', ('cross_fade', 'temporal_nearest', 'ours', 'warp_oracle'))):
    for row in rows:
      for m in ('psnr_hole', 'psnr'):
        # The issue asks <= 0.05 dB; the inputs are equal, so only results.json's rounding to
        # 4 decimals is left.
        assert abs(scene_metrics[task][row][m] - synthetic_eval[task][row][m]) <= 1e-4, (
            task, row, m)


@pytest.mark.parametrize('fmt', ['nerfstudio', 're10k', 'colmap'])
def test_every_format_gives_the_synthetic_evals_task_inputs(fmt, tmp_path):
  """Clip 0 of the synthetic test split, exported in each format and read back, gives the
  synthetic eval's nvs and interpolate inputs (pixels exactly, cameras to float error): the
  scores the job computes from them are then the synthetic eval's (the nerfstudio case is
  scored end to end above)."""
  clip = synthetic.render_clip(SEED, 'test', T, H, W)
  scene = read_scene(export.export_synthetic(str(tmp_path), fmt, SEED, 'test', T, H, W,
                                             num_points=50, num_context=1))
  depth = np.load(tmp_path / export.GT_DEPTH)
  for name, make in (('nvs', posed_protocol.nvs_case),
                     ('interpolate', posed_protocol.interpolate_case)):
    case = make(scene, (H, W), T - (1 if name == 'nvs' else 2), depth=depth)
    ours, theirs = (protocol.make_task(name, c) for c in (posed_protocol.case_clip(case), clip))
    np.testing.assert_array_equal(ours.known_pixels, theirs.known_pixels)
    np.testing.assert_allclose(ours.known_frames, theirs.known_frames, atol=1e-5)
    assert ours.frames == theirs.frames == case.scored_frames


def test_scene_discovery_and_report_helpers(posed_dir, tmp_path):
  assert [n for n, _ in posed.find_scenes(str(posed_dir))] == ['a_nerfstudio', 'b_colmap']
  # A folder that is itself a scene is the one scene; an RE10K sequence is found by its file.
  assert posed.find_scenes(str(posed_dir / 'a_nerfstudio')) == [
      ('a_nerfstudio', str(posed_dir / 'a_nerfstudio'))]
  scene, _ = posed.read_posed_scene(str(posed_dir / 'b_colmap'))
  from maskvid.posed import WRITERS  # pylint: disable=g-import-not-at-top
  WRITERS['re10k'](scene, str(tmp_path / 're'), name='seq')
  [(name, path)] = posed.find_scenes(str(tmp_path / 're'))
  assert name == 'seq' and path.endswith('seq.txt')
  assert posed.read_posed_scene(path)[1] == 're10k'
  entries = [{'metrics': {'nvs': {'r': {'psnr': 10.0}}}}, {'metrics': {'nvs': {'r': {'psnr': 20.0}}}}]
  block = posed_report.weighted_block(entries, 'nvs', ('r',), [1, 3])
  assert block['r']['psnr'] == 17.5 and np.isnan(block['r']['fvd'])


def test_estimated_depth_is_aligned_to_the_scene(posed_dir, tmp_path, monkeypatch):
  """A depth spec's estimator (here 3x the GT depth, a wrong scale) runs on the cases' frames and
  its maps are aligned to the scene's points: the GT depth comes back."""
  from maskvid.depth import GroundTruthDepth  # pylint: disable=g-import-not-at-top
  folder = str(posed_dir / 'a_nerfstudio')
  scene, _ = posed.read_posed_scene(folder)
  gt = np.load(posed_dir / 'a_nerfstudio' / export.GT_DEPTH)
  seen = []

  class ThreeTimes(GroundTruthDepth):
    def _estimate(self, rgb):
      seen.append(rgb.shape)
      return 3.0 * super()._estimate(rgb)
  monkeypatch.setattr(posed.depth_external, 'make_depth_estimator',
                      lambda spec: ThreeTimes(scene.frames, gt))
  depth, info = posed.scene_depth('net:ANY', scene, folder, [0, 2], (H, W), {})
  assert seen == [(2, H, W, 3)] and info['aligned'] and set(info['views']) == {0, 2}
  assert np.isnan(depth[[1, 3]]).all()
  for i in (0, 2):
    assert info['views'][i]['method'].startswith('points')
    assert np.median(np.abs(depth[i] / gt[i] - 1)) < 0.01
  # 'auto': the scene's depth file, else the run's depth network, else a plane.
  assert posed.resolve_depth('auto', folder, str(tmp_path)) == 'gt'
  other = str(posed_dir / 'b_colmap')
  assert posed.resolve_depth('auto', other, str(tmp_path)) == 'plane'
  (tmp_path / 'depth').mkdir()
  (tmp_path / 'depth' / 'config.json').write_text('{}')
  assert posed.resolve_depth('auto', other, str(tmp_path)) == f'net:{tmp_path}/depth'
  with pytest.raises(ValueError, match='posed_depth'):
    posed.scene_depth('midas:x', scene, folder, [0], (H, W), {})


def test_long_paths_complete_every_target_window_by_window(tmp_path, monkeypatch):
  """A scene of 2x the clip's frames with eval.posed_long_paths: every target is scored, the
  windows (long_video.plan, sliding) cover every target once, window 0's given frame is the
  input view, and frames given as context to a later window come back exactly; the trivial rows
  answer the whole path. With posed_long_paths False the path is subsampled as before."""
  folder = tmp_path / 'posed' / 'long'
  export.export_synthetic(str(folder), 'nerfstudio', SEED, 'test', 2 * T, H, W, num_points=50,
                          num_context=1)
  scene, _ = posed.read_posed_scene(str(folder))
  assert posed.scene_cases(scene, ('nvs',), (H, W), T)['nvs'].scene_ids == (0, 1, 4, 7)
  assert posed.scene_cases(scene, ('nvs',), (H, W), T, long_paths=True)['nvs'].scene_ids == (
      tuple(range(2 * T)))
  c = _config(str(tmp_path / 'posed'))
  c.eval.tasks, c.eval.methods = ('nvs',), ('nearest_fill', 'temporal_nearest', 'ours')
  c.eval.posed_long_paths = True
  captured, calls = {}, []
  _stand_ins(monkeypatch, captured)
  complete_rows = methods_lib.complete_rows

  def capture(fn, name, inputs, *a, **k):
    out = complete_rows(fn, name, inputs, *a, **k)
    calls.append((k['seed'], inputs[''].frames, inputs[''].known_px, out[name][0]))
    return out
  monkeypatch.setattr(methods_lib, 'complete_rows', capture)
  out = posed.evaluate_posed(c, str(tmp_path))
  [entry] = out['scenes']
  case = entry['cases']['nvs']
  assert case['scene_ids'] == list(range(2 * T))
  assert case['scored_frames'] == list(range(1, 2 * T))
  windows = case['windows']
  assert [w['frames'] for w in windows] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]
  assert sorted(f for w in windows for f in w['new']) == list(range(1, 2 * T))
  assert [s for s, *_ in calls] == [c.seed + j for j in range(len(windows))]
  [(_, (preds, tasks, _))] = captured['nvs']
  assert tasks[0].frames == tuple(range(1, 2 * T))
  gt, ours = preds['ground_truth'][0], preds['ours'][0]
  assert preds['nearest_fill'].shape == preds['temporal_nearest'].shape == (1, 2 * T, H, W, 3)
  # Window 0: the input view is its given frame (and comes back exactly).
  _, frames0, known0, out0 = calls[0]
  assert known0[0, 0].all() and not known0[0, 1:].all()
  np.testing.assert_array_equal(frames0[0, 0], gt[0])
  np.testing.assert_array_equal(ours[0], gt[0])
  for w, (_, frames, known, win_out) in zip(windows, calls):
    for k, t in enumerate(w['frames']):
      if t in w['new']:   # the window's completion is the row's frame
        np.testing.assert_array_equal(ours[t], win_out[k])
      else:               # context: given in full, exactly the finished frame, back exactly
        assert known[0, k].all()
        np.testing.assert_array_equal(frames[0, k], ours[t])
        np.testing.assert_array_equal(win_out[k], ours[t])
  targets = metrics.finite_mean(np.asarray(metrics.psnr(ours[1:], gt[1:])))
  assert entry['metrics']['nvs']['ours']['psnr'] == pytest.approx(targets, abs=1e-3)
  for row in ('nearest_fill', 'temporal_nearest', 'ours'):
    assert np.isfinite(out['summary'][row]['nvs/psnr']), row
  assert out['info']['nvs long paths'] and any('posed_long_paths' in n for n in out['notes'])
