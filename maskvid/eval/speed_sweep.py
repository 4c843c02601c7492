"""Quality against camera speed: the eval's scenes again, the camera path scaled by each speed.

  run(config, codec, samplers, rows, run_task, eval_dir) -> dict(metrics, table, plot, pictures)

For every synthetic split in config.eval.splits and speed s in config.eval.speeds, the first
config.eval.speed_clips clips are rendered with their camera path shrunk toward the first pose
(`scenes.scale_path`: 0 = a static clip, 1 = the table's clips) and the tasks of
config.eval.speed_tasks run through the same `run_task` as the table (nvs only at s > 0: a
static camera leaves it nothing to do). Scored: hole PSNR and its standard error over clips
(no LPIPS or geometry: the sweep asks whether the model copies what the other frames show).
Rows: the VAE oracle (the ceiling), the trivial answers (nearest fill, cross-fade, temporal
nearest) and the generative rows (one sample, mean of K, one-step). Writes speed_sweep.png
(hole PSNR against speed, a line per row) and speed_<split>_<task>.png (per speed: ground
truth, known input, ours).
"""
from __future__ import annotations

import os

from absl import logging
import numpy as np

from maskvid import pictures
from maskvid.eval import clips as clips_lib
from maskvid.eval import report
from maskvid.eval import scoring

SKIP_ROWS = ('ground_truth', 'warp_oracle', 'no_propagation', 'colour_transfer', 'flow_warp')


def _rows(rows) -> list:
  return [r for r in rows if r not in SKIP_ROWS and not r.endswith((' gt-region', ' blank'))]


def run(config, codec, samplers, rows, run_task, eval_dir: str) -> dict:
  """The sweep (module docstring); `run_task` is `eval.run.run_task`."""
  speeds = tuple(float(s) for s in config.eval.speeds)
  tasks = tuple(config.eval.speed_tasks)
  bad = [t for t in tasks if t not in ('nvs', 'interpolate', 'holes')]
  if bad:
    raise ValueError(f'config.eval.speed_tasks: {bad} are not sweepable; choose from nvs, '
                     'interpolate, holes')
  if config.data.source != 'synthetic':
    logging.info('speed sweep skipped: config.data.source=%r has no camera paths to scale',
                 config.data.source)
    return {}
  num = int(config.eval.get('speed_clips', 0)) or int(config.eval.num_clips)
  table_rows = _rows(rows)
  metrics, pictures_out = {}, {}
  for split in config.eval.splits:
    seed = int(config.seed) + 1000 * (list(config.eval.splits).index(split) + 1)
    metrics[split] = {t: {} for t in tasks}
    grids = {t: {} for t in tasks}
    for speed in speeds:
      clips = clips_lib.render_clips(config, split, num, speed)
      for task in tasks:
        if task == 'nvs' and speed == 0:
          continue
        preds, task_list, _ = run_task(config, task, clips, codec, samplers,
                                       table_rows + ['ground_truth'], seed=seed)
        gt = preds['ground_truth']
        rgb_only = [{'rgb': c['rgb']} for c in clips]
        block = {}
        for r in table_rows:
          if r in preds:
            sc = scoring.score(preds[r], gt, rgb_only, task_list)
            block[r] = (sc['psnr_hole'], sc['psnr_hole_se'])
        metrics[split][task][speed] = block
        logging.info('speed sweep %s/%s x%g: %s', split, task, speed,
                     {r: round(v[0], 2) for r, v in block.items()})
        known = np.where((task_list[0].known_pixels | task_list[0].hints)[..., None],
                         task_list[0].known_frames, 0.0)
        grids[task][f'x{speed:g} truth'] = gt[0]
        grids[task][f'x{speed:g} known'] = known
        if 'ours' in preds:
          grids[task][f'x{speed:g} ours'] = preds['ours'][0]
    for task in tasks:
      path = os.path.join(eval_dir, f'speed_{split}_{task}.png')
      pictures_out[f'{split}/{task}'] = pictures.save_grid(path, grids[task])
  out = {'metrics': metrics, 'speeds': list(speeds), 'pictures': pictures_out,
         'table': table(metrics, speeds, table_rows)}
  out['plot'] = plot(metrics, speeds, table_rows, os.path.join(eval_dir, 'speed_sweep.png'))
  return out


def table(metrics: dict, speeds, rows) -> str:
  """Markdown: a line per (split, task, row), a column per speed, cells 'PSNR ± SE'."""
  header = ['split', 'task', 'row'] + [f'x{s:g}' for s in speeds]
  lines = []
  for split, by_task in metrics.items():
    for task, by_speed in by_task.items():
      for r in rows:
        cells = [f'{by_speed[s][r][0]:.2f} ± {by_speed[s][r][1]:.2f}'
                 if s in by_speed and r in by_speed[s] else '–' for s in speeds]
        if any(c != '–' for c in cells):
          lines.append([split, task, r] + cells)
  return report.markdown_table(header, lines)


def plot(metrics: dict, speeds, rows, path: str) -> str:
  """speed_sweep.png: hole PSNR against camera speed, a panel per split (rows) and task
  (columns), a line per row (one colour per row in every panel). Values more than 8 dB above the
  VAE oracle (a static clip copied exactly: up to 100 dB) are drawn at the top edge as '^'."""
  import matplotlib   # pylint: disable=g-import-not-at-top  (only the sweep draws plots)
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt   # pylint: disable=g-import-not-at-top
  splits = list(metrics)
  tasks = sorted({t for by_task in metrics.values() for t in by_task})
  colours = {r: plt.get_cmap('tab10')(i % 10) for i, r in enumerate(rows)}
  fig, axes = plt.subplots(len(splits), len(tasks), figsize=(4.2 * len(tasks), 3.4 * len(splits)),
                           squeeze=False)
  for (i, split), (j, task) in ((a, b) for a in enumerate(splits) for b in enumerate(tasks)):
    ax, by_speed = axes[i][j], metrics[split].get(task, {})
    oracle = [v['vae_oracle'][0] for v in by_speed.values() if 'vae_oracle' in v]
    top = (max(oracle) if oracle else 30.0) + 8.0
    for r in rows:
      xs = [s for s in speeds if s in by_speed and r in by_speed[s]]
      if not xs:
        continue
      ys = np.array([by_speed[s][r][0] for s in xs])
      ax.errorbar(xs, np.minimum(ys, top), [by_speed[s][r][1] if by_speed[s][r][0] < top else 0
                                           for s in xs],
                  label=r, marker='o', capsize=2, color=colours[r],
                  linestyle='--' if r == 'vae_oracle' else '-')
      off = ys >= top
      if off.any():
        ax.plot(np.asarray(xs)[off], np.full(off.sum(), top), '^', color=colours[r], ms=9)
    ax.set_ylim(top=top + 0.5)
    ax.set_title(f'{split} / {task}')
    ax.set_xlabel('camera speed (x the sampled path)')
    ax.set_ylabel('hole PSNR (dB)')
    ax.grid(alpha=0.3)
  handles = [plt.Line2D([], [], color=colours[r], marker='o', label=r) for r in rows]
  fig.legend(handles=handles, loc='lower center', ncol=min(len(rows), 7), fontsize=8)
  fig.tight_layout(rect=(0, 0.06, 1, 1))
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=90)
  plt.close(fig)
  os.replace(tmp, path)
  return path
