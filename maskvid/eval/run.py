"""`evaluate(config, workdir)`: the evaluation protocol (job 'eval').

For each split in config.eval.splits (synthetic 'test' and 'ood': GT depth and cameras) and each
task in config.eval.tasks (`maskvid.eval.protocol`), the first config.eval.num_clips clips are
completed by every method in config.eval.baselines and scored (`maskvid.eval.metrics`,
`maskvid.eval.consistency`). Methods:

  nearest_fill  trivial answer of 'holes' and 'nvs' (`protocol.Task.answers`; NaN elsewhere).
  cross_fade    trivial answer of 'interpolate' (NaN elsewhere).
  no_propagation, colour_transfer, flow_warp   'edit' only: the unedited frames (its trivial
                answer); the frame-0 edit's per-channel colour change applied inside the tracked
                region; the edited frame 0 pulled along the tracked optical flow into the region
                (the hint every generative method is given there, on its own).
  conditioning  same backbone trained with config.diffusion.objective='conditioning' (known latents
                and mask as input channels), Euler sampler, known tokens pasted back.
  replacement   same backbone trained with objective='unconditional', replacement sampler
                (`baselines.replacement_complete`).
  ours_no_sc    the masked model (workdir's diffusion stage), `sampler.complete` without re-noising.
  ours          the masked model with stochastic conditioning: renoise_at = config.eval.renoise_at
                on the tasks in config.eval.renoise_tasks
                (unreliable tokens re-noised, exact ones clean; elsewhere it is ours_no_sc).

Each generative method gives one sample (the headline row, named after it), '<m> mean<K>' (pixel
mean of config.eval.num_samples samples) and '<m> one-step' (config.eval.one_step: the sampler at
one step, x1 - v(x1, 1)); on 'edit' also '<m> gt-region' (one sample with the renderer's object
mask instead of the tracked region: tracking vs repainting errors). Reference rows: ground_truth (the consistency metrics' floor),
vae_oracle (GT through the VAE), warp_oracle ('interpolate': GT-geometry warp of the endpoints).

The two trained baselines are read from their own diffusion dirs, {workdir}/baselines/<name>
(`workdir.baseline_dir`); the `baselines` stage (`stages.run_baselines`, run by the `eval` job
first) trains them with the run's data, VAE, latents and backbone, for config.eval.baseline_steps
(or config.train.steps when < 0). Evaluation itself never trains.

All generative methods see the same known pixels, encoded by the run's VAE from the frames with
their unknown pixels nearest-filled; `sampling.masks.pixel_to_token_masks` makes a model patch
known when at least config.eval.min_valid of its pixels are given and exact when all are. All
samplers use config.sample.num_steps steps and the same random keys per batch. Decoded outputs
are composited: given pixels come back exactly.

'edit' runs on its own clips, edit pairs rendered now (`clips.load_edit_pairs`), and scores
against the edited render; its notes and results['info'] give the tracked region's IoU.

Writes {eval_dir}/results.md, results.json and one PNG grid per split/task (first clip; rows:
ground truth, known input, methods; columns: frames). Returns {'summary', 'metrics', 'paths', ...}.
"""
from __future__ import annotations

import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from maskvid import fileio
from maskvid import pictures
from maskvid.eval import baselines
from maskvid.eval import clips as clips_lib
from maskvid.eval import metrics as metrics_lib
from maskvid.eval import protocol
from maskvid.eval import report
from maskvid.eval import scoring
from maskvid.model import model as model_lib
from maskvid.sampling import composite
from maskvid.sampling import masks as sampling_masks
from maskvid.sampling import sampler
from maskvid.train import checkpoint
from maskvid.vae import codec as codec_lib
from maskvid.workdir import baseline_dir
from maskvid.workdir import save_config
from maskvid.workdir import stage_dir

# Rows answered by the tasks themselves (`protocol.Task.answers`), each on the tasks it answers.
TRIVIAL = ('nearest_fill', 'cross_fade', 'no_propagation', 'colour_transfer', 'flow_warp')
GENERATIVE = ('conditioning', 'replacement', 'ours_no_sc', 'ours')
METHODS = TRIVIAL + GENERATIVE
# The tasks whose trivial answer (the bar to beat, `protocol.TRIVIAL`) each row is.
TRIVIAL_TASKS = {row: tuple(t for t, r in protocol.TRIVIAL.items() if r == row)
                 for row in set(protocol.TRIVIAL.values())}
REFERENCE_ROWS = ('ground_truth', 'vae_oracle', 'warp_oracle')
MEAN_SUFFIX, ONE_STEP_SUFFIX = ' mean{k}', ' one-step'
VARIANTS = {'edit': ('gt-region',)}   # protocol.Task.variants: one sample per generative method


# ------------------------------------------------------------------------------------ models
def _model(diffusion_dir: str):
  cfg, module, params = checkpoint.load_for_inference(diffusion_dir)
  return cfg, model_lib.make_apply_fn(module), params


def _renoise(config):
  return float(config.eval.renoise_at)


def _trained_baseline(workdir: str, name: str) -> str:
  d = baseline_dir(workdir, name)
  if not (fileio.path(d) / 'checkpoints').is_dir():
    raise FileNotFoundError(f'config.eval.baselines names {name!r} but {d!r} holds no trained run: '
                            'train it first (`--config.job=baselines`, or `--config.job=eval`, '
                            'which trains the missing baselines)')
  return d


def make_samplers(config, workdir: str, methods) -> dict:
  """method -> fn(known, known_mask, exact_mask, rng, task, num_steps) -> latents [B,T,h,w,c].

  known [B,T,h,w,c]; known_mask / exact_mask bool [B,T,h,w] (`masks.pixel_to_token_masks`).
  Only the masked model distinguishes exact from unreliable tokens; the baselines take every
  known token as given.
  """
  out = {}
  if 'ours' in methods or 'ours_no_sc' in methods:
    _, apply_fn, params = _model(stage_dir(config, workdir, 'diffusion'))
    solver, guidance = config.sample.solver, float(config.sample.guidance)
    renoise = _renoise(config)
    sc_tasks = tuple(config.eval.renoise_tasks)

    def ours(known, mask, exact, rng, task, steps, sc):
      r = renoise if (sc and task in sc_tasks and steps > 1) else 0.0
      return sampler.complete(apply_fn, params, known, mask, rng, num_steps=steps,
                              solver=solver if steps > 1 else 'euler', renoise_at=r,
                              guidance=guidance, exact_mask=exact)
    out['ours_no_sc'] = lambda k, m, e, r, t, n: ours(k, m, e, r, t, n, False)
    out['ours'] = lambda k, m, e, r, t, n: ours(k, m, e, r, t, n, True)
  if 'conditioning' in methods:
    _, cond_apply, cond_params = _model(_trained_baseline(workdir, 'conditioning'))
    out['conditioning'] = lambda k, m, e, r, t, n: baselines.conditioning_complete(
        cond_apply, cond_params, k, m, r, num_steps=n)
  if 'replacement' in methods:
    _, unc_apply, unc_params = _model(_trained_baseline(workdir, 'replacement'))
    out['replacement'] = lambda k, m, e, r, t, n: baselines.replacement_complete(
        unc_apply, unc_params, k, m, r, num_steps=n)
  return {m: out[m] for m in methods if m in out}


def _batched(fn, arrays, batch_size):
  outs = []
  n = len(arrays[0])
  for s in range(0, n, batch_size):
    outs.append(np.asarray(fn(*[a[s:s + batch_size] for a in arrays])))
  return np.concatenate(outs)


def _known_input_row(task) -> np.ndarray:
  """Known (and hinted) pixels, unknown ones grey (0 in [-1, 1]), for the picture grid."""
  return np.where((task.known_pixels | task.hints)[..., None], task.known_frames, 0.0)


def generative_rows(methods, num_samples: int, one_step: bool, tasks=()) -> list:
  """Table rows of the generative methods: one sample (the headline, named after the method),
  then the mean of `num_samples` samples and the one-step estimate x1 - v(x1, 1) when asked,
  then one sample on each input variant of `tasks` (VARIANTS)."""
  rows = []
  for m in methods:
    rows.append(m)
    if num_samples > 1:
      rows.append(m + MEAN_SUFFIX.format(k=num_samples))
    if one_step:
      rows.append(m + ONE_STEP_SUFFIX)
    rows += [f'{m} {v}' for t in tasks for v in VARIANTS.get(t, ())]
  return rows


# ------------------------------------------------------------------------------------ main
def evaluate(config, workdir: str) -> dict[str, Any]:
  """Runs the protocol (module docstring), writes the report, prints the headline table."""
  methods = tuple(config.eval.baselines)
  bad = [m for m in methods if m not in METHODS]
  if bad:
    raise ValueError(f'config.eval.baselines has unknown methods {bad}; known: {METHODS}')
  tasks = protocol.check_tasks(config.eval.tasks)
  num_clips = int(config.eval.num_clips)
  if num_clips < 1:
    raise ValueError(f'config.eval.num_clips must be >= 1, got {num_clips}')
  num_samples = int(config.eval.num_samples)
  if num_samples < 1:
    raise ValueError(f'config.eval.num_samples must be >= 1, got {num_samples}')
  one_step = bool(config.eval.one_step)
  # The latent stats are always needed and its shards are ArrayRecord (local paths only).
  fileio.require_local(stage_dir(config, workdir, 'latents'), 'paths.latents')
  eval_dir = stage_dir(config, workdir, 'eval')
  save_config(config, eval_dir)

  notes = []
  lpips = metrics_lib.maybe_load_lpips(config.eval.lpips_weights)
  if lpips is None:
    notes.append('LPIPS and FD skipped: config.eval.lpips_weights is empty.')
  latents = codec_lib.LatentCodec.load(stage_dir(config, workdir, 'vae'),
                                       stage_dir(config, workdir, 'latents'))
  generative = tuple(m for m in methods if m in GENERATIVE)
  samplers = make_samplers(config, workdir, generative)
  patch = tuple(int(p) for p in config.model.patch_size)
  bs = max(1, int(config.eval.batch_size))
  steps = int(config.sample.num_steps)
  renoise_tasks = tuple(config.eval.renoise_tasks)
  rows = (tuple(REFERENCE_ROWS) + tuple(m for m in methods if m in TRIVIAL)
          + tuple(generative_rows(generative, num_samples, one_step, tasks)))
  results = {'methods': list(rows), 'reference_rows': list(REFERENCE_ROWS), 'metrics': {},
             'notes': notes, 'pictures': {},
             'info': {'clips per split': num_clips, 'sample steps': steps,
                      'solver (ours)': config.sample.solver,
                      'renoise_at (ours)': f'{_renoise(config)} on {renoise_tasks}',
                      'samples per mean': num_samples,
                      'train steps': int(config.train.steps),
                      'baseline steps': (int(config.eval.baseline_steps)
                                         if int(config.eval.baseline_steps) > 0
                                         else int(config.train.steps))}}
  start = time.time()
  for split in config.eval.splits:
    clips, origin = clips_lib.load_clips(config, workdir, split, num_clips)
    logging.info('eval %s: %d clips (%s)', split, len(clips), origin)
    clip_gt = np.stack([pictures.to_float(c['rgb']) for c in clips])
    clip_oracle = _batched(lambda x: latents.decode(latents.encode(x)), [clip_gt], bs)
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
      task_list = [protocol.make_task(task_name, c, seed=seed + i,
                                      coverage=tuple(config.eval.hole_coverage),
                                      edit_threshold=int(config.eval.edit_threshold),
                                      edit_dilate=int(config.eval.edit_dilate))
                   for i, c in enumerate(task_clips)]
      if task_list[0].target is None:
        gt, oracle = clip_gt, clip_oracle
      else:
        gt = np.stack([t.target for t in task_list])
        oracle = _batched(lambda x: latents.decode(latents.encode(x)), [gt], bs)

      def prepare(known_frames, known_px, hint_px):
        # Hinted pixels count as given for `known`, never for `exact`, and are not pasted back.
        known_lat = _batched(latents.encode, [known_frames], bs)
        mask, exact = (np.asarray(a) for a in sampling_masks.pixel_to_token_masks(
            jnp.asarray(known_px), latents.factor, patch, min_valid=float(config.eval.min_valid),
            hint_mask=jnp.asarray(hint_px)))
        decoded_in = _batched(latents.decode, [known_lat], bs) if hint_px.any() else None
        return known_frames, known_px, known_lat, mask, exact, hint_px, decoded_in

      inputs = {'': prepare(np.stack([t.known_frames for t in task_list]),
                            np.stack([t.known_pixels for t in task_list]),
                            np.stack([t.hints for t in task_list]))}
      for v in VARIANTS.get(task_name, ()):
        known_px, frames, hint_px = (np.stack([t.variants[v][i] for t in task_list])
                                     for i in range(3))
        inputs[v] = prepare(frames, known_px, hint_px)

      preds = {'ground_truth': gt, 'vae_oracle': oracle}
      preds.update({r: np.stack([t.answers[r] for t in task_list])
                    for r in task_list[0].answers if r in REFERENCE_ROWS or r in methods})
      for m in methods:
        if m in TRIVIAL:
          continue
        # 'ours' is the same sampler call as 'ours_no_sc' wherever it does not re-noise (tasks
        # outside eval.renoise_tasks, and the one-step estimate): reuse those rows.
        reuse = m == 'ours' and 'ours_no_sc' in preds
        if reuse and task_name not in renoise_tasks:
          preds.update({m + r[len('ours_no_sc'):]: p for r, p in preds.items()
                        if r.startswith('ours_no_sc')})
          continue
        fn = samplers[m]
        key = jax.random.PRNGKey(int(config.seed))

        def run(n, sample, variant=''):
          known_frames, known_px, known_lat, mask, exact, hint_px, decoded_in = inputs[variant]
          lat = _batched(lambda k, mk, ex, i: fn(
              jnp.asarray(k), jnp.asarray(mk), jnp.asarray(ex),
              jax.random.fold_in(jax.random.fold_in(key, sample), int(i[0])), task_name, n),
                         [known_lat, mask, exact, np.arange(len(task_list))], bs)
          # Given pixels come back exactly, hinted ones moved by the model's change to them.
          return composite.composite(_batched(latents.decode, [lat], bs), known_frames,
                                     known_px, hint_px, decoded_in)

        samples = [run(steps, k) for k in range(num_samples)]
        preds[m] = samples[0]
        if num_samples > 1:
          preds[m + MEAN_SUFFIX.format(k=num_samples)] = np.mean(samples, axis=0)
        if one_step:
          preds[m + ONE_STEP_SUFFIX] = (preds['ours_no_sc' + ONE_STEP_SUFFIX] if reuse
                                        else run(1, 0))
        for v in VARIANTS.get(task_name, ()):
          preds[f'{m} {v}'] = run(steps, 0, v)
      block, lpips_cache = {}, {}
      for r in rows:
        if r in preds:
          block[r] = scoring.score(preds[r], gt, task_clips, task_list, lpips,
                                   with_images=(r != 'ground_truth'), cache=lpips_cache)
        else:
          block[r] = scoring.nan_scores()
      results['metrics'][split][task_name] = block
      _, known_px, _, mask, exact, _, _ = inputs['']
      frac = float(np.mean([t.hole[list(t.frames)].mean() for t in task_list]))
      info = ''.join(f', {k} {np.mean([t.info[k] for t in task_list]):.3f}'
                     for k in task_list[0].info)
      notes.append(f'{split}/{task_name}: hole fraction of scored pixels {frac:.2f}, '
                   f'known pixels {float(known_px.mean()):.2f}, known tokens '
                   f'{float(mask.mean()):.2f} of which exact {float(exact.mean()):.2f}{info} '
                   f'(clips from {task_origin}).')
      for k in task_list[0].info:
        results['info'][f'{split}/{task_name} {k}'] = round(
            float(np.mean([t.info[k] for t in task_list])), 4)
      grid_rows = {'ground truth': gt[0], 'known input': _known_input_row(task_list[0]),
                   'vae oracle': oracle[0]}
      grid_rows.update({r: preds[r][0] for r in rows if r in preds and r not in
                        ('ground_truth', 'vae_oracle')})
      png = pictures.save_grid(os.path.join(eval_dir, f'{split}_{task_name}.png'), grid_rows)
      results['pictures'][f'{split}/{task_name}'] = png
      logging.info('eval %s/%s done in %.1fs: %s', split, task_name, time.time() - t0,
                   {r: round(block[r]['psnr_hole'], 2) for r in rows if r in preds})
  results['info']['eval seconds'] = round(time.time() - start, 1)
  results['summary'] = report.summarize(results)
  paths = report.write_report(results, eval_dir)
  results['paths'] = paths
  table = report.headline_table(results)
  print(f'\nEvaluation ({eval_dir}):\n{table}\n', flush=True)
  return results
