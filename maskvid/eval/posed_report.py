"""The posed eval's results (`eval.posed`): results.json, results.md, the headline summary.

Layout (what `evaluate_posed` fills; the synthetic eval's, with the benchmark as its one split):
  results['metrics']['posed'][task][row][metric]  scores over all scenes (`eval.scoring` keys)
  results['summary'][row]['task/metric']           the headline numbers (SUMMARY metrics)
  results['scenes'] = [{name, path, format, split_file, context_ids, target_ids, depth,
    alignment {view, method, residual, inlier_fraction, ...}, cases {task: {scene_ids,
    scored_frames, windows (a case longer than the clip: [{frames, new}], clip positions)}},
    metrics {task: {row: {metric: value}}}}]
  results['info'], ['notes'], ['sample'] (the sampler settings), ['pictures'] {task: png}.
"""
from __future__ import annotations

import math
import os

import numpy as np

from maskvid import fileio
from maskvid.eval import report
from maskvid.eval import scoring

SPLIT = 'posed'
# Per scene and in the summary: whole target frames first (the benchmarks' numbers), then the
# disoccluded pixels (nvs; every pixel on interpolate), the consistency, the distributions.
PER_SCENE = ('psnr', 'ssim', 'lpips', 'dists', 'psnr_hole', 'ssim_hole', 'reproj', 'chamfer')
SUMMARY = PER_SCENE + ('fd', 'fvd')
OVERVIEW = ('psnr', 'ssim', 'lpips', 'psnr_hole')


def _finite(v) -> bool:
  return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def scene_scores(block: dict) -> dict:
  """{row: {metric: value}} of one scene: the PER_SCENE metrics the row has (rows with none
  are left out)."""
  out = {}
  for row, scores in block.items():
    vals = {m: round(float(scores[m]), 4) for m in PER_SCENE if _finite(scores.get(m))}
    if vals:
      out[row] = vals
  return out


def weighted_block(entries: list, task: str, rows, weights) -> dict:
  """Scores over scenes whose cases differ in shape (no pooled batch): each metric the mean of
  the scenes' values weighted by their scored frames; FD and FVD not measured (NaN)."""
  block = {}
  for r in rows:
    scores = scoring.nan_scores()
    for m in PER_SCENE:
      pairs = [(e['metrics'][task].get(r, {}).get(m), w) for e, w in zip(entries, weights)]
      pairs = [(v, w) for v, w in pairs if _finite(v)]
      if pairs:
        scores[m] = float(np.average([v for v, _ in pairs], weights=[w for _, w in pairs]))
    block[r] = scores
  return block


def header(config, checkpoint: str, rows, notes: list, entries: list, size, clip_length: int,
           sample: dict) -> dict:
  """The results dict before any score."""
  return {'methods': list(rows), 'reference_rows': ['ground_truth', 'vae_oracle', 'warp_oracle'],
          'metrics': {SPLIT: {}}, 'notes': notes, 'pictures': {}, 'sample': sample,
          'scenes': entries,
          'info': {'posed_dir': config.eval.posed_dir,
                   'format': config.eval.posed_format or 'detected per scene',
                   'split N': int(config.eval.posed_num_context) or 'the one file there is',
                   'scenes': len(entries), 'depth': config.eval.posed_depth,
                   'model size': f'{size[0]}x{size[1]}', 'clip length': int(clip_length),
                   'nvs long paths': bool(config.eval.posed_long_paths),
                   'trained run': checkpoint,
                   'sample steps': int(config.sample.num_steps),
                   'samples per mean': int(config.eval.num_samples)}}


def summarize(results: dict) -> dict:
  """{row: {'task/metric': value}} over all scenes, for the SUMMARY metrics measured."""
  out = {}
  for row in results['methods']:
    out[row] = {f'{task}/{m}': round(float(block[row][m]), 4)
                for task, block in results['metrics'][SPLIT].items() for m in SUMMARY
                if _finite(block.get(row, {}).get(m))}
  return out


def overview(results: dict) -> str:
  """Rows that answer a task; columns: each task's whole-frame PSNR, SSIM, LPIPS, hole PSNR."""
  metrics = results['metrics'][SPLIT]
  cols = [(t, m) for t in metrics for m in OVERVIEW
          if any(_finite(s.get(m)) for s in metrics[t].values())]
  rows = []
  for r in results['methods']:
    cells = [report.METRICS[m][1].format(metrics[t][r][m]) if _finite(metrics[t][r].get(m))
             else '–' for t, m in cols]
    if any(c != '–' for c in cells):
      rows.append([r] + cells)
  return report.markdown_table(
      ['method'] + [f"{t} {report.METRICS[m][0]} {'↑' if report.METRICS[m][2] else '↓'}"
                    for t, m in cols], rows)


def _views(entry: dict, task: str) -> str:
  case = entry['cases'][task]
  ids = case['scene_ids']
  given = [ids[i] for i in range(len(ids)) if i not in case['scored_frames']]
  return f"{given} -> {[ids[i] for i in case['scored_frames']]}"


def scenes_table(results: dict) -> str:
  """One line per scene: format, split file, the views of each case, depth and its alignment."""
  tasks = list(results['metrics'][SPLIT])
  rows = []
  for e in results['scenes']:
    a = e['alignment']
    fit = (a['method'] if not _finite(a.get('residual')) else
           f"{a['method']}, residual {a['residual']:.3f}, inliers {a['inlier_fraction']:.2f}")
    rows.append([e['name'], e['format'], e['split_file'] or '(none: first / last frames)']
                + [_views(e, t) for t in tasks] + [os.path.basename(str(e['depth']['source'])),
                                                   fit])
  return report.markdown_table(['scene', 'format', 'split file']
                               + [f'{t} views (given -> scored)' for t in tasks]
                               + ['depth', f'alignment (view {a["view"]})' if results['scenes']
                                  else 'alignment'], rows)


def per_scene_table(results: dict, task: str) -> str:
  """Rows: scenes; columns: each row's whole-frame PSNR on the scene's target frames."""
  cols = [r for r in results['methods'] if r != 'ground_truth'
          and any(_finite(e['metrics'][task].get(r, {}).get('psnr')) for e in results['scenes'])]
  rows = [[e['name']] + [f"{e['metrics'][task][r]['psnr']:.2f}"
                         if _finite(e['metrics'][task].get(r, {}).get('psnr')) else '–'
                         for r in cols] for e in results['scenes']]
  return report.markdown_table(['scene'] + cols, rows)


def to_markdown(results: dict) -> str:
  """The synthetic eval's report (`report.to_markdown`: info, sampler, tables, metric notes,
  notes) titled for the posed benchmark, with the scenes and per-scene PSNR tables."""
  settings, _, rest = report.to_markdown(results).split('\n', 1)[1].partition('## Overview')
  parts = ['# maskvid posed-benchmark evaluation', settings.rstrip(), '',
           '## Scenes (views: scene frame indices, in clip order)', '', scenes_table(results), '',
           '## Headline (all scenes; whole target frames, hole PSNR: pixels no input shows)', '',
           overview(results), '']
  for task in results['metrics'][SPLIT]:
    parts += [f'## {task}: PSNR per scene (`{task}.png`: scene {results["scenes"][0]["name"]})',
              '', per_scene_table(results, task), '']
  return '\n'.join(parts) + '\n## Overview' + rest


def write(results: dict, out_dir: str) -> dict:
  """results.json (`report.write_report`'s JSON rules: null = not applicable) and results.md."""
  paths = report.write_report(results, out_dir)
  fileio.write_text_atomic(paths['markdown'], to_markdown(results))
  return paths
