"""`evaluate(config, workdir)`: the evaluation protocol (job 'eval').

For each split in config.eval.splits (synthetic 'test' and 'ood': GT depth and cameras) and each
task in config.eval.tasks (`maskvid.eval.protocol`), the first config.eval.num_clips clips are
completed by every method in config.eval.methods and scored (`maskvid.eval.metrics`,
`maskvid.eval.consistency`). Methods:

  nearest_fill  trivial answer of 'holes' and 'nvs' (`protocol.Task.answers`; NaN elsewhere).
  cross_fade    trivial answer of 'interpolate' (NaN elsewhere).
  temporal_nearest  'nvs', 'interpolate', 'holes': each unknown pixel from the same pixel of the
                nearest frame where it is known (blind), else nearest fill: exact on a static
                clip, wrong when the camera moves.
  no_propagation, colour_transfer, flow_warp   'edit' only: the unedited frames (its trivial
                answer); the frame-0 edit's per-channel colour change applied inside the tracked
                region; the edited frame 0 pulled along the tracked optical flow into the region
                (the hint every generative method is given there, on its own).
  conditioning  same backbone trained with config.diffusion.objective='conditioning' (known latents
                and mask as input channels), Euler sampler, known tokens pasted back.
  replacement   same backbone trained with objective='unconditional', replacement sampler
                (`sampling.objectives.replacement_complete`).
  ours          the masked model (workdir's diffusion stage) with that run's config.sample (its
                diffusion/config.json, not this eval's config.sample; config.eval.sample_overrides
                changes a key explicitly): what `Completer.complete_video` and the task commands
                run (`eval.methods.with_run_sample`).
  ours_no_sc    the same with stochastic conditioning off (renoise_at = 0).

Each generative method gives one sample (the headline row, named after it), '<m> mean<K>' (pixel
mean of config.eval.num_samples samples) and '<m> one-step' (config.eval.one_step: the sampler at
one step, x1 - v(x1, 1)); on 'edit' also '<m> blank' (one sample without the warped hint: the
region unknown) and '<m> gt-region' (one sample with the renderer's object
mask instead of the tracked region: tracking vs repainting errors). Reference rows: ground_truth (the consistency metrics' floor),
vae_oracle (GT through the VAE), warp_oracle ('interpolate': GT-geometry warp of the endpoints).

The two trained baselines are read from their own diffusion dirs, {workdir}/baselines/<name>
(`workdir.baseline_dir`); the `baselines` stage (`stages.run_baselines`, run by the `eval` job
first) trains them with the run's data, VAE, latents and backbone, for config.eval.baseline_steps
(or config.train.steps when < 0). Evaluation itself never trains.

All generative methods see the same pixels, filled and encoded as the Completer does
(`fill.context_fill`: unknown pixels from other frames where the frames agree, as hints, then
nearest fill; `masks.pixel_to_token_masks` with the run's sample.min_valid). All samplers use
the run's sample.num_steps steps and the same random keys per batch. Decoded outputs are
composited: given pixels come back exactly.

With config.eval.speeds set, `eval.speed_sweep` then re-renders the first clips of each
synthetic split with the camera path scaled by each speed and reports hole PSNR against speed.

'edit' runs on its own clips, edit pairs rendered now (`clips.load_edit_pairs`), and scores
against the edited render; its notes and results['info'] give the tracked region's IoU.

Writes {eval_dir}/results.md, results.json (both list the sampler settings used,
results['sample']) and one PNG grid per split/task (first clip; rows:
ground truth, known input, methods; columns: frames), and the sweep's table, plot and grids. Returns {'summary', 'metrics', 'paths', ...}.
"""
from __future__ import annotations

import os
import time
from typing import Any

from absl import logging
import numpy as np

from maskvid import fileio
from maskvid import pictures
from maskvid.data import sources
from maskvid.eval import clips as clips_lib
from maskvid.eval import dists as dists_lib
from maskvid.eval import fvd as fvd_lib
from maskvid.eval import methods as methods_lib
from maskvid.eval import lpips as lpips_lib
from maskvid.eval import protocol
from maskvid.eval import report
from maskvid.eval import scoring
from maskvid.eval import speed_sweep
from maskvid.vae import codec as codec_lib
from maskvid.workdir import save_config
from maskvid.workdir import stage_dir

METHODS = methods_lib.TRIVIAL + methods_lib.GENERATIVE
# The tasks whose trivial answer (the bar to beat, `protocol.TRIVIAL`) each row is.
TRIVIAL_TASKS = {row: tuple(t for t, r in protocol.TRIVIAL.items() if r == row)
                 for row in set(protocol.TRIVIAL.values())}
REFERENCE_ROWS = ('ground_truth', 'vae_oracle', 'warp_oracle')


def known_input_row(task) -> np.ndarray:
  """Known (and hinted) pixels, unknown ones grey (0 in [-1, 1]), for the picture grid."""
  return np.where((task.known_pixels | task.hints)[..., None], task.known_frames, 0.0)


# ------------------------------------------------------------------------------------ main
def _check(config) -> tuple:
  methods = tuple(config.eval.methods)
  bad = [m for m in methods if m not in METHODS]
  if bad:
    raise ValueError(f'config.eval.methods has unknown methods {bad}; known: {METHODS}')
  tasks = protocol.check_tasks(config.eval.tasks)
  for key in ('num_clips', 'num_samples'):
    if int(config.eval[key]) < 1:
      raise ValueError(f'config.eval.{key} must be >= 1, got {config.eval[key]}')
  return methods, tasks


def _splits(config, workdir: str, notes: list, results: dict) -> list:
  """The eval splits the source has; for real video, which clips the test split holds."""
  have = sources.source_splits(config)
  splits = [s for s in config.eval.splits if s in have]
  for s in config.eval.splits:
    if s not in have:
      notes.append(f'{s}: not evaluated: the {config.data.source!r} source has no such split '
                   f'(it has {", ".join(have)}).')
  if config.data.source in sources.VIDEO_SOURCES:
    share = sources.held_out(config, stage_dir(config, workdir, 'data'))
    if share is None:
      results['info']['test split'] = 'the source\'s own test split'
    elif share.scores_training:
      results['scores_training'] = True
      notes.insert(0, f'test scores TRAINING clips: {share.rule}.')
      logging.warning('eval: the test split scores training clips (%s)', share.rule)
    else:
      results['info']['test split'] = f"{share.rule}: {', '.join(share.test)}"
  return splits


def run_task(config, task_name, task_clips, codec, samplers, rows, *, seed: int,
             clip_gt=None, clip_oracle=None) -> tuple[dict, list, dict]:
  """Every row of one task on `task_clips`: (preds {row: [N,T,H,W,3]}, tasks, inputs)."""
  bs = max(1, int(config.eval.batch_size))
  task_list = [protocol.make_task(task_name, c, seed=seed + i,
                                  coverage=tuple(config.eval.hole_coverage),
                                  edit_threshold=int(config.eval.edit_threshold),
                                  edit_dilate=int(config.eval.edit_dilate))
               for i, c in enumerate(task_clips)]
  if task_list[0].target is None and clip_gt is not None:
    gt, oracle = clip_gt, clip_oracle
  else:
    gt = (np.stack([t.target for t in task_list]) if task_list[0].target is not None else
          np.stack([pictures.to_float(c['rgb']) for c in task_clips]))
    oracle = methods_lib.batched(lambda x: codec.decode(codec.encode(x)), [gt], bs)
  inputs = {'': methods_lib.prepare(codec, np.stack([t.known_frames for t in task_list]),
                                    np.stack([t.known_pixels for t in task_list]),
                                    np.stack([t.hints for t in task_list]), config, bs)}
  variants = methods_lib.VARIANTS.get(task_name, ())
  for v in variants:
    known_px, frames, hint_px = (np.stack([t.variants[v][i] for t in task_list])
                                 for i in range(3))
    inputs[v] = methods_lib.prepare(codec, frames, known_px, hint_px, config, bs)
  preds = {'ground_truth': gt, 'vae_oracle': oracle}
  preds.update({r: np.stack([t.answers[r] for t in task_list])
                for r in task_list[0].answers if r in rows})
  for m, fn in samplers.items():
    if m == 'ours' and 'ours_no_sc' in preds and methods_lib.same_as_no_sc(config):
      preds.update({m + r[len('ours_no_sc'):]: p for r, p in preds.items()
                    if r.startswith('ours_no_sc')})
      continue
    preds.update(methods_lib.complete_rows(
        fn, m, inputs, codec, seed=int(config.seed), steps=int(config.sample.num_steps),
        num_samples=int(config.eval.num_samples), one_step=bool(config.eval.one_step),
        batch_size=bs, variants=variants))
  return {r: p for r, p in preds.items() if r in rows}, task_list, inputs


def score_rows(preds, gt, clips, task_list, rows, nets, num_samples: int) -> dict:
  """{row: scoring.score(...)} of every row (NaN scores for a row without predictions)."""
  block, net_cache = {}, {}
  for r in rows:
    if r in preds:
      # The learned metrics judge samples; a pixel mean or a one-step estimate is a PSNR
      # diagnostic of what the model knows.
      diagnostic = (r.endswith(methods_lib.ONE_STEP_SUFFIX)
                    or methods_lib.MEAN_SUFFIX.format(k=num_samples) in r)
      block[r] = scoring.score(preds[r], gt, clips, task_list, None if diagnostic else nets,
                               with_images=(r != 'ground_truth'), cache=net_cache)
    else:
      block[r] = scoring.nan_scores()
  return block


def _score_task(config, split, task_name, preds, task_list, inputs, task_clips, task_origin,
                rows, nets, results, eval_dir) -> dict:
  """Scores every row of one split/task, adds its notes, info and picture grid to `results`;
  returns {row: scores}."""
  notes = results['notes']
  gt = preds['ground_truth']
  block = score_rows(preds, gt, task_clips, task_list, rows, nets,
                     int(config.eval.num_samples))
  results['metrics'][split][task_name] = block
  x = inputs['']
  frac = float(np.mean([t.hole[list(t.frames)].mean() for t in task_list]))
  info = ''.join(f', {k} {np.mean([t.info[k] for t in task_list]):.3f}'
                 for k in task_list[0].info)
  copied = float((x.hint_px & ~np.stack([t.hints for t in task_list])).mean())
  notes.append(f'{split}/{task_name}: hole fraction of scored pixels {frac:.2f}, '
               f'known pixels {float(x.known_px.mean()):.2f} (+{copied:.2f} copied from other '
               f'frames), known tokens {float(x.known.mean()):.2f} of which exact '
               f'{float(x.exact.mean()):.2f}{info} (clips from {task_origin}).')
  for k in task_list[0].info:
    results['info'][f'{split}/{task_name} {k}'] = round(
        float(np.mean([t.info[k] for t in task_list])), 4)
  grid_rows = {'ground truth': gt[0], 'known input': known_input_row(task_list[0]),
               'vae oracle': preds['vae_oracle'][0]}
  grid_rows.update({r: preds[r][0] for r in rows if r in preds and r not in
                    ('ground_truth', 'vae_oracle')})
  png = pictures.save_grid(os.path.join(eval_dir, f'{split}_{task_name}.png'), grid_rows)
  results['pictures'][f'{split}/{task_name}'] = png
  return block


def sample_settings(config, workdir: str) -> dict:
  """results['sample']: the sampler settings every generative row used (`config.sample`, the
  trained run's after `methods.with_run_sample`), where they came from, the overrides."""
  source = os.path.join(stage_dir(config, workdir, 'diffusion'), 'config.json')
  if not fileio.path(source).exists():   # no trained run: `with_run_sample` took this config's
    source = 'the eval config (no trained run)'
  return dict(methods_lib.options.describe(config.sample), source=source,
              overrides=methods_lib.options.set_overrides(
                  config.eval.get('sample_overrides', {})))


def load_nets(config, notes: list) -> scoring.Nets:
  """The learned metrics' networks config.eval names (a note for each one skipped)."""
  nets = scoring.Nets(lpips=lpips_lib.maybe_load_lpips(config.eval.lpips_weights),
                      dists=dists_lib.maybe_load_dists(config.eval.dists_weights),
                      fvd=fvd_lib.maybe_load_fvd(config.eval.fvd_weights))
  for name, key in (('LPIPS and FD', 'lpips'), ('DISTS', 'dists'), ('FVD', 'fvd')):
    if getattr(nets, key) is None:
      notes.append(f'{name} skipped: config.eval.{key}_weights is empty.')
  return nets


def _header(config, workdir: str, rows: tuple, notes: list) -> dict:
  """The results dict before any score: rows, notes and the settings the table was made with,
  the sampler's in full (`results['sample']`: the trained run's config.sample, overrides)."""
  fills = methods_lib.options.fill_options(config.sample)
  return {'methods': list(rows), 'reference_rows': list(REFERENCE_ROWS), 'metrics': {},
          'notes': notes, 'pictures': {},
          'sample': sample_settings(config, workdir),
          'info': {'clips per split': int(config.eval.num_clips),
                   'sample steps': int(config.sample.num_steps),
                   'solver (ours)': config.sample.solver,
                   'renoise_at (ours)': float(config.sample.renoise_at),
                   'guidance (ours)': float(config.sample.guidance),
                   'context fill (all generative rows)': (
                       f"temporal, max_diff {fills['max_diff']}, window {fills['window']}"
                       if fills['temporal'] else 'spatial nearest only'),
                   'samples per mean': int(config.eval.num_samples),
                   'train steps': int(config.train.steps),
                   'baseline steps': (int(config.eval.baseline_steps)
                                      if int(config.eval.baseline_steps) > 0
                                      else int(config.train.steps))}}


def evaluate(config, workdir: str) -> dict[str, Any]:
  """Runs the protocol (module docstring), writes the report, prints the headline table.

  Every generative row samples with the trained run's config.sample (what its commands run),
  changed only where config.eval.sample_overrides names a key (`methods.with_run_sample`).
  """
  methods, tasks = _check(config)
  num_clips, num_samples = int(config.eval.num_clips), int(config.eval.num_samples)
  # The latent stats are always needed and its shards are ArrayRecord (local paths only).
  fileio.require_local(stage_dir(config, workdir, 'latents'), 'paths.latents')
  config, notes = methods_lib.with_run_sample(config, workdir)
  eval_dir = stage_dir(config, workdir, 'eval')
  save_config(config, eval_dir)

  nets = load_nets(config, notes)
  codec = codec_lib.LatentCodec.load(stage_dir(config, workdir, 'vae'),
                                     stage_dir(config, workdir, 'latents'))
  generative = tuple(m for m in methods if m in methods_lib.GENERATIVE)
  samplers = methods_lib.make_samplers(config, workdir, generative)
  bs = max(1, int(config.eval.batch_size))
  rows = (tuple(REFERENCE_ROWS) + tuple(m for m in methods if m in methods_lib.TRIVIAL)
          + tuple(methods_lib.generative_rows(generative, num_samples,
                                              bool(config.eval.one_step), tasks)))
  results = _header(config, workdir, rows, notes)
  start = time.time()
  splits = _splits(config, workdir, notes, results)
  for split in splits:
    clips, origin = clips_lib.load_clips(config, workdir, split, num_clips)
    logging.info('eval %s: %d clips (%s)', split, len(clips), origin)
    clip_gt = np.stack([pictures.to_float(c['rgb']) for c in clips])
    clip_oracle = methods_lib.batched(lambda x: codec.decode(codec.encode(x)), [clip_gt], bs)
    results['metrics'][split] = {}
    for task_name in tasks:
      if task_name in protocol.RENDERER_TASKS and not clips_lib.has_geometry(clips[0]):
        notes.append(f'{split}/{task_name}: skipped: needs the renderer\'s ground truth and '
                     f'config.data.source={config.data.source!r} is real video.')
        continue
      t0 = time.time()
      seed = int(config.seed) + 1000 * (list(config.eval.splits).index(split) + 1)
      task_clips, task_origin = (clips_lib.load_edit_pairs(config, split, num_clips)
                                 if task_name == 'edit' else (clips, origin))
      preds, task_list, inputs = run_task(config, task_name, task_clips, codec, samplers, rows,
                                          seed=seed, clip_gt=clip_gt, clip_oracle=clip_oracle)
      block = _score_task(config, split, task_name, preds, task_list, inputs, task_clips,
                          task_origin, rows, nets, results, eval_dir)
      logging.info('eval %s/%s done in %.1fs: %s', split, task_name, time.time() - t0,
                   {r: round(block[r]['psnr_hole'], 2) for r in rows if r in preds})
  if tuple(config.eval.get('speeds', ())):
    sweep = speed_sweep.run(config, codec, samplers, rows, run_task, eval_dir)
    if sweep:
      results['speed_sweep'] = sweep
    else:   # real video: no camera path to scale
      notes.append(f'speed sweep skipped: config.data.source={config.data.source!r} has no '
                   'camera paths to scale.')
  results['info']['eval seconds'] = round(time.time() - start, 1)
  results['summary'] = report.summarize(results)
  paths = report.write_report(results, eval_dir)
  paths['overview'] = report.plot_overview(results, os.path.join(eval_dir, 'overview.png'))
  results['paths'] = paths
  print(f'\nEvaluation ({eval_dir}):\n{report.overview(results)}\n', flush=True)
  if 'speed_sweep' in results:
    print(f"Quality against camera speed (hole PSNR, dB):\n{results['speed_sweep']['table']}\n",
          flush=True)
  return results
