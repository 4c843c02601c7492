"""`evaluate_posed(config, workdir)`: the posed benchmarks (job 'eval_posed', docs/posed.md).

For each scene under config.eval.posed_dir (`find_scenes`: one folder per nerfstudio or COLMAP
scene, one `<seq>.txt` per RealEstate10K sequence; posed_format '' = detected per scene):
  1. `maskvid.posed.read_scene` (posed_num_context picks the SEVA split file), frames loaded;
  2. the protocol's cases at the trained run's resolution and clip length
     (`posed.protocol.nvs_case` with clip_length - 1 targets, `interpolate_case` with
     clip_length - 2 frames between the endpoints); with posed_long_paths the nvs case keeps
     every target and runs window by window (`eval.posed_long`);
  3. depth of the cases' frames (`scene_depth`): a depth file in the scene folder as given
     ('gt', 'gt:FILE'; 'auto' takes gt_depth.npy when there), else a monocular estimate
     ('plane', 'net:DIR', 'external:PATH', 'depth_anything:FILE'; 'auto': CHECKPOINT/depth,
     else plane) aligned to the scene's poses per frame (`posed.align.align_depth`). The input
     views' depth drives the NVS warp and the interpolation warp oracle; every frame's drives the
     reprojection consistency, as GT depth does in the synthetic eval;
  4. `posed.protocol.case_clip` -> the synthetic eval's tasks and rows (`eval.run.run_task`:
     `eval.protocol.nvs_task` / `interpolate_task`, the trivial answers, every generative row
     through `eval.methods`), scored on the case's target frames (`eval.scoring.score`).
Cases of one shape run as one batch (clip i's sample draws from key(config.seed + i), as in the
synthetic eval). Scores: per scene (no FVD: one clip), and over all scenes (FVD and FD from the
pooled clips where all scenes' cases share a shape; else the frame-weighted mean of the scenes').
The model, its resolution, clip length and sampler settings are the trained run's:
config.eval.checkpoint, else the workdir (its diffusion/config.json; `methods.with_run_sample`).
Writes {workdir}/eval_posed/results.json, results.md and `<task>.png` (`eval.posed_report`).
"""
from __future__ import annotations

import copy
import glob
import os
import time
from typing import Any

from absl import logging
import numpy as np

from maskvid import pictures
from maskvid import workdir as workdir_lib
from maskvid.depth import external as depth_external
from maskvid.eval import methods as methods_lib
from maskvid.eval import posed_long
from maskvid.eval import posed_report
from maskvid.eval import run as run_lib
from maskvid.eval import scoring
from maskvid.posed import FORMATS, detect_format, load_frames, read_scene
from maskvid.posed import align as align_lib
from maskvid.posed import protocol as posed_protocol
from maskvid.posed.export import GT_DEPTH
from maskvid.posed.scene import PosedFormatError
from maskvid.tasks import io as task_io
from maskvid.vae import codec as codec_lib
from maskvid.workdir import save_config
from maskvid.workdir import stage_dir

OUT_DIR = 'eval_posed'
ESTIMATORS = ('net', 'external', 'depth_anything')


# ------------------------------------------------------------------------------------ scenes
def _is_re10k(path: str) -> bool:
  try:
    return detect_format(path)[0] == 're10k' and os.path.isfile(path)
  except PosedFormatError:
    return False


def find_scenes(posed_dir: str, fmt: str = '') -> list:
  """[(name, folder)] of the scenes under posed_dir: the folder itself when it is one scene
  (transforms.json or a COLMAP model in it), else each RealEstate10K camera file `<seq>.txt`
  (folder = the .txt) and each other subfolder (not a `<seq>/` frame folder), sorted."""
  if not os.path.isdir(posed_dir):
    raise FileNotFoundError(f'config.eval.posed_dir={posed_dir!r} is not a folder')
  if fmt not in ('',) + FORMATS:
    raise ValueError(f"config.eval.posed_format must be '' (detect) or one of {FORMATS}, "
                     f'got {fmt!r}')
  if fmt != 're10k':
    try:
      if detect_format(posed_dir)[0] in ('nerfstudio', 'colmap'):
        return [(os.path.basename(os.path.normpath(posed_dir)), posed_dir)]
    except PosedFormatError:
      pass
  cams = [p for p in sorted(glob.glob(os.path.join(posed_dir, '*.txt'))) if _is_re10k(p)]
  frame_dirs = {os.path.splitext(p)[0] for p in cams}
  out = [(os.path.splitext(os.path.basename(p))[0], p) for p in cams]
  out += [(name, os.path.join(posed_dir, name)) for name in sorted(os.listdir(posed_dir))
          if not name.startswith('.') and os.path.isdir(os.path.join(posed_dir, name))
          and os.path.join(posed_dir, name) not in frame_dirs]
  if not out:
    raise FileNotFoundError(f'config.eval.posed_dir={posed_dir!r} holds no scene folder or '
                            'RealEstate10K camera file')
  return out


def read_posed_scene(folder: str, fmt: str = '', num_context: int = 0):
  """(PosedScene with frames, format) of one scene; any reading error names the folder."""
  try:
    if not fmt:
      fmt, path = detect_format(folder)
    elif fmt == 're10k' and os.path.isdir(folder):
      cams = [p for p in sorted(glob.glob(os.path.join(folder, '*.txt'))) if _is_re10k(p)]
      if len(cams) != 1:
        raise PosedFormatError(f'{folder}: {len(cams)} RealEstate10K camera files in it, need 1')
      path = cams[0]
    else:
      path = folder
    kwargs = {'num_context': int(num_context) or None} if fmt != 're10k' else {}
    return load_frames(read_scene(path, fmt, **kwargs)), fmt
  except (PosedFormatError, FileNotFoundError, OSError, ValueError, KeyError) as e:
    told = f' as config.eval.posed_format={fmt!r}' if fmt else ''
    raise PosedFormatError(f'scene {folder}: cannot be read{told}: {e}') from e


def split_file(scene, fmt: str) -> str | None:
  """The benchmark split file the scene's context / target views came from (None: no split)."""
  if scene.context_ids is None:
    return None
  if fmt == 're10k':
    return 'evaluation_index.json'
  return f'train_test_split_{len(scene.context_ids)}.json'


# ------------------------------------------------------------------------------------ depth
def _depth_file(folder: str, name: str) -> str | None:
  """FILE of a scene: in its folder (RE10K: its `<seq>/` frame folder, then the camera file's)."""
  places = ([os.path.splitext(folder)[0], os.path.dirname(folder)] if os.path.isfile(folder)
            else [folder])
  return next((os.path.join(p, name) for p in places
               if os.path.isfile(os.path.join(p, name))), None)


def resolve_depth(spec: str, folder: str, checkpoint: str) -> str:
  """'auto' -> 'gt' (the scene has gt_depth.npy), else 'net:CHECKPOINT/depth' (a trained depth
  network), else 'plane'; other specs as given."""
  if spec != 'auto':
    return spec
  if _depth_file(folder, GT_DEPTH):
    return 'gt'
  net = os.path.join(checkpoint, 'depth')
  return f'net:{net}' if os.path.isfile(os.path.join(net, 'config.json')) else 'plane'


def _mono(spec: str, frames: np.ndarray, size, estimators: dict) -> np.ndarray:
  """Monocular z-depth [n, H, W] of frames uint8 [n, H, W, 3] by the depth spec."""
  if spec == 'plane':
    return np.ones(frames.shape[:3], np.float32)
  if spec not in estimators:
    estimators[spec] = depth_external.make_depth_estimator(spec)
  if spec.startswith('depth_anything:'):   # resizes to its own input size and back
    return estimators[spec].estimate(frames)
  # The depth nets run at the model's size; their maps come back to the frames' (nearest).
  small = estimators[spec].estimate(task_io.resize_frames(frames, *size))
  return task_io.resize_frames(small, *frames.shape[1:3], nearest=True)


def scene_depth(spec: str, scene, folder: str, ids, size, estimators: dict, seed: int = 0):
  """(depth float32 [N, H, W], nan off `ids`; info) for the scene's frames `ids`.

  spec 'gt' / 'gt:FILE': the depth file in the scene folder, as given (every frame). Otherwise
  the estimate of each frame in `ids`, aligned to the scene (`align.align_depth`, per frame);
  info['views'][id] holds each fit's method, scale, shift, residual and inlier fraction.
  """
  kind, _, arg = spec.partition(':')
  n, (h, w) = len(scene), scene.image_size
  if kind == 'gt':
    path = _depth_file(folder, arg or GT_DEPTH)
    if path is None:
      raise FileNotFoundError(f'scene {folder}: config.eval.posed_depth={spec!r} needs '
                              f'{arg or GT_DEPTH} in the scene folder')
    depth = np.load(path).astype(np.float32)
    if depth.shape != (n, h, w):
      raise ValueError(f'{path}: depth must be [N, H, W] = [{n}, {h}, {w}], got {depth.shape}')
    return depth, {'source': path, 'aligned': False}
  if spec != 'plane' and kind not in ESTIMATORS:
    raise ValueError(f"config.eval.posed_depth must be auto, gt, gt:FILE, plane, net:DIR, "
                     f"external:PATH or depth_anything:FILE, got {spec!r}")
  ids = sorted(set(int(i) for i in ids))
  mono = _mono(spec, scene.frames[ids], size, estimators)
  depth = np.full((n, h, w), np.nan, np.float32)
  views = {}
  for i, m in zip(ids, mono):
    a = align_lib.align_depth(m, scene, view=i, seed=seed)
    depth[i] = a.depth
    views[i] = {'method': a.method, 'scale': round(float(a.scale), 6),
                'shift': round(float(a.shift), 6), 'residual': float(a.residual),
                'inlier_fraction': round(float(a.inlier_fraction), 4),
                'num_targets': int(a.num_targets)}
  return depth, {'source': spec, 'aligned': True, 'views': views}


# ------------------------------------------------------------------------------------ cases
def scene_cases(scene, tasks, size, clip_length: int, depth=None, long_paths=False) -> dict:
  """{task: posed.protocol.Case} at the model's size and clip length (long_paths: the nvs case
  holds every target, however many)."""
  targets = None if long_paths else clip_length - 1
  makers = {'nvs': lambda d: posed_protocol.nvs_case(scene, size, targets, depth=d),
            'interpolate': lambda d: posed_protocol.interpolate_case(scene, size,
                                                                     clip_length - 2, depth=d)}
  return {t: makers[t](depth) for t in tasks}


def load_scene(config, name: str, folder: str, size, clip_length: int, checkpoint: str,
               estimators: dict) -> tuple:
  """(cases {task: Case}, entry: the scene's results.json record without scores)."""
  tasks, long_paths = tuple(config.eval.tasks), bool(config.eval.posed_long_paths)
  scene, fmt = read_posed_scene(folder, config.eval.posed_format, config.eval.posed_num_context)
  try:
    ids = [i for c in scene_cases(scene, tasks, size, clip_length, long_paths=long_paths).values()
           for i in c.scene_ids]
  except ValueError as e:
    raise ValueError(f'scene {folder}: {e}') from e
  spec = resolve_depth(config.eval.posed_depth, folder, checkpoint)
  depth, depth_info = scene_depth(spec, scene, folder, ids, size, estimators,
                                  seed=int(config.seed))
  cases = scene_cases(scene, tasks, size, clip_length, depth, long_paths)
  first = cases[tasks[0]].scene_ids[0]
  views = depth_info.get('views', {})
  entry = {'name': name, 'path': folder, 'format': fmt, 'frames': len(scene),
           'image_size': list(scene.image_size), 'split_file': split_file(scene, fmt),
           'context_ids': scene.context_ids, 'target_ids': scene.target_ids,
           'depth': depth_info,
           'alignment': dict(views.get(first, {'method': 'given (depth file)',
                                               'residual': None, 'inlier_fraction': None}),
                             view=int(first)),
           'cases': {t: {'scene_ids': [int(i) for i in c.scene_ids],
                         'scored_frames': list(c.scored_frames)} for t, c in cases.items()}}
  for t, c in cases.items():   # the windows a case longer than the clip runs in
    if len(c.scene_ids) > clip_length:
      entry['cases'][t]['windows'] = [
          {'frames': list(w.frames), 'new': list(w.new)}
          for w in posed_long.windows(len(c.scene_ids), clip_length, c.known_frames)]
  return cases, entry


# ------------------------------------------------------------------------------------ the job
def trained_run(config, workdir: str) -> tuple:
  """(config with the trained run's model, resolution, clip length and sample; checkpoint dir;
  notes). Without a trained run (stand-in models) this config's own keys are used, noted."""
  checkpoint = config.eval.checkpoint or workdir
  notes = []
  out = copy.deepcopy(config)
  try:
    run = workdir_lib.load_config(stage_dir(config, checkpoint, 'diffusion'), 'diffusion')
  except FileNotFoundError:
    notes.append(f'model resolution and clip length from this config\'s data: no trained run '
                 f'in {stage_dir(config, checkpoint, "diffusion")}.')
  else:
    with out.unlocked():
      out.model = copy.deepcopy(run.model)
      out.data.resolution, out.data.clip_length = run.data.resolution, run.data.clip_length
  out, sample_notes = methods_lib.with_run_sample(out, checkpoint)
  return out, checkpoint, notes + sample_notes


def _check(config) -> tuple:
  bad = [t for t in config.eval.tasks if t not in posed_protocol.TASKS]
  if bad or not config.eval.tasks:
    raise ValueError(f'config.eval.tasks must be among {posed_protocol.TASKS} for the posed '
                     f'eval, got {tuple(config.eval.tasks)}')
  bad = [m for m in config.eval.methods if m not in run_lib.METHODS]
  if bad:
    raise ValueError(f'config.eval.methods has unknown methods {bad}; known: {run_lib.METHODS}')
  if not config.eval.posed_dir:
    raise ValueError('config.eval.posed_dir is empty: pass --config.eval.posed_dir=DIR')
  if int(config.eval.num_samples) < 1:
    raise ValueError(f'config.eval.num_samples must be >= 1, got {config.eval.num_samples}')
  return tuple(config.eval.tasks), tuple(config.eval.methods)


def run_cases(config, task: str, cases: list, codec, samplers, rows) -> tuple:
  """Every row of `task` on `cases` (batched by shape): (preds {row: [S, T, h, w, 3]} per
  case, tasks, clips), in the order of `cases`. Cases longer than the model's clip run window
  by window (`posed_long.run_long`)."""
  by_shape = {}
  for i, c in enumerate(cases):
    by_shape.setdefault(c.rgb.shape, []).append(i)
  preds, tasks, clips = [None] * len(cases), [None] * len(cases), [None] * len(cases)
  for idx in by_shape.values():
    group = [posed_protocol.case_clip(cases[i]) for i in idx]
    if len(cases[idx[0]].scene_ids) > int(config.data.clip_length):
      out, task_list, _ = posed_long.run_long(config, task, group, cases[idx[0]].known_frames,
                                              codec, samplers, rows)
    else:
      out, task_list, _ = run_lib.run_task(config, task, group, codec, samplers, rows,
                                           seed=int(config.seed))
    for j, i in enumerate(idx):
      if task_list[j].frames != cases[i].scored_frames:
        raise AssertionError(f'{task}: scored frames {task_list[j].frames} != the case\'s '
                             f'{cases[i].scored_frames}')
      preds[i] = {r: p[j:j + 1] for r, p in out.items()}
      tasks[i], clips[i] = task_list[j], group[j]
  return preds, tasks, clips


def score_task(config, preds, tasks, clips, rows, nets, entries, task) -> dict:
  """Scores of every row: per scene into entries[s]['metrics'][task], pooled -> returned."""
  k = int(config.eval.num_samples)
  per_clip = scoring.Nets(lpips=nets.lpips, dists=nets.dists)   # FVD needs >= 2 clips
  for s, entry in enumerate(entries):
    block = run_lib.score_rows(preds[s], preds[s]['ground_truth'], [clips[s]], [tasks[s]],
                               rows, per_clip, k)
    entry.setdefault('metrics', {})[task] = posed_report.scene_scores(block)
  shapes = {p['ground_truth'].shape for p in preds}
  if len(shapes) == 1:
    stacked = {r: np.concatenate([p[r] for p in preds]) for r in preds[0]}
    return run_lib.score_rows(stacked, stacked['ground_truth'], clips, tasks, rows, nets, k)
  return posed_report.weighted_block(entries, task, rows,
                                     [len(t.frames) for t in tasks])


def evaluate_posed(config, workdir: str) -> dict[str, Any]:
  """The job (module docstring): returns the results dict it writes."""
  tasks, methods = _check(config)
  config, checkpoint, notes = trained_run(config, workdir)
  out_dir = os.path.join(workdir, OUT_DIR)
  save_config(config, out_dir)
  res, clip_length = int(config.data.resolution), int(config.data.clip_length)
  scenes = find_scenes(config.eval.posed_dir, config.eval.posed_format)
  estimators, cases, entries = {}, {t: [] for t in tasks}, []
  for name, folder in scenes:
    scene_cases_, entry = load_scene(config, name, folder, (res, res), clip_length,
                                     checkpoint, estimators)
    for t in tasks:
      cases[t].append(scene_cases_[t])
    entries.append(entry)
  estimated = [e['name'] for e in entries if e['depth']['aligned']]
  notes.append('Reproj and Chamfer use each scene\'s depth of every clip frame: its depth file '
               + (f"(the others), else the aligned estimate ({', '.join(estimated)})."
                  if estimated else '(every scene has one).'))
  if config.eval.posed_long_paths and 'nvs' in tasks:
    notes.append(posed_long.note(clip_length))
  nets = run_lib.load_nets(config, notes)
  codec = codec_lib.LatentCodec.load(stage_dir(config, checkpoint, 'vae'),
                                     stage_dir(config, checkpoint, 'latents'))
  generative = tuple(m for m in methods if m in methods_lib.GENERATIVE)
  samplers = methods_lib.make_samplers(config, checkpoint, generative)
  num_samples = int(config.eval.num_samples)
  rows = (tuple(run_lib.REFERENCE_ROWS) + tuple(m for m in methods if m in methods_lib.TRIVIAL)
          + tuple(methods_lib.generative_rows(generative, num_samples,
                                              bool(config.eval.one_step), tasks)))
  results = posed_report.header(config, checkpoint, rows, notes, entries, (res, res),
                                clip_length, run_lib.sample_settings(config, checkpoint))
  start = time.time()
  for t in tasks:
    preds, task_list, clips = run_cases(config, t, cases[t], codec, samplers, rows)
    block = score_task(config, preds, task_list, clips, rows, nets, entries, t)
    results['metrics'][posed_report.SPLIT][t] = block
    grid = {'ground truth': preds[0]['ground_truth'][0],
            'known input': run_lib.known_input_row(task_list[0])}
    grid.update({r: p[0] for r, p in preds[0].items() if r != 'ground_truth'})
    results['pictures'][t] = pictures.save_grid(os.path.join(out_dir, f'{t}.png'), grid)
    logging.info('eval_posed %s: %s', t, {r: round(block[r]['psnr'], 2) for r in rows
                                          if r in preds[0]})
  results['info']['eval seconds'] = round(time.time() - start, 1)
  results['summary'] = posed_report.summarize(results)
  results['paths'] = posed_report.write(results, out_dir)
  print(f"\nPosed evaluation ({out_dir}):\n{posed_report.overview(results)}\n", flush=True)
  return results
