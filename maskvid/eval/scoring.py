"""Scores of one method on one split/task: hole and whole-frame PSNR/SSIM, LPIPS, DISTS, FD,
FVD, and the 3D-consistency metrics (`maskvid.eval.consistency`; clips with GT depth and cameras
only), with standard errors across clips.

  score(pred, gt, clips, tasks, nets=None, with_images=True, cache=None) -> {metric: float}
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from maskvid.eval import consistency
from maskvid.eval import metrics as metrics_lib

# What `score` returns: per-clip metrics, their standard errors, and the Fréchet distances.
# psnr_outside: the scored frames' pixels outside the holes ('edit' only: what else changed).
SCORES = ('psnr', 'ssim', 'psnr_hole', 'ssim_hole', 'psnr_outside', 'lpips', 'dists', 'reproj',
          'chamfer')
SE_SCORES = ('psnr_hole', 'ssim_hole', 'psnr_outside', 'lpips', 'dists', 'reproj')
DISTANCES = ('fd', 'fvd')      # one number per split/task (a distribution, not a clip, each)
_IMAGE_SCORES = ('psnr', 'ssim', 'psnr_hole', 'ssim_hole', 'psnr_outside', 'lpips', 'dists')


class Nets(NamedTuple):
  """The learned metrics' networks (None: that metric is skipped)."""
  lpips: Any = None    # lpips.LPIPS: LPIPS per frame, FD from its pooled features
  dists: Any = None    # dists.DISTS: DISTS per frame
  fvd: Any = None      # fvd.FVD: I3D features per clip -> FVD over the split/task


def score(pred: np.ndarray, gt: np.ndarray, clips: list, tasks: list, nets: Nets | None = None,
          with_images: bool = True, cache: dict | None = None) -> dict:
  """Metrics of one method on one split/task. pred, gt: [N, T, H, W, 3] in [-1, 1].

  `nets`: the perceptual and distribution metrics to compute (None: none of them).
  `cache`: a dict shared by the rows of one split/task; each network runs on the ground-truth
  frames once per task and on each row's frames once (LPIPS and FD from one pass).
  """
  nets = nets or Nets()
  cache = {} if cache is None else cache
  lpips = nets.lpips
  vals = {k: [] for k in SCORES}
  scored_pred, scored_gt = [], []
  for i, (clip, task) in enumerate(zip(clips, tasks)):
    f = list(task.frames)
    p, g, hole = pred[i][f], gt[i][f], task.hole[f]
    if with_images:
      vals['psnr'].append(np.asarray(metrics_lib.psnr(p, g)))
      vals['ssim'].append(np.asarray(metrics_lib.ssim(p, g)))
      vals['psnr_hole'].append(np.asarray(metrics_lib.masked_psnr(p, g, hole)))
      vals['ssim_hole'].append(np.asarray(metrics_lib.masked_ssim(p, g, hole)))
      if task.name == 'edit':
        vals['psnr_outside'].append(np.asarray(metrics_lib.masked_psnr(p, g, ~hole)))
    if 'depth' in clip:   # GT geometry (synthetic clips; real video has none)
      geo = (clip['depth'], clip['intrinsics'], clip['world_to_camera'])
      vals['reproj'].append(consistency.reprojection_error(pred[i], *geo))
      vals['chamfer'].append(consistency.chamfer_distance(pred[i], gt[i], *geo, frame_ids=f))
    scored_pred.append(p)
    scored_gt.append(g)
  feats = None
  if with_images and lpips is not None:
    if 'gt' not in cache:
      cache['gt'] = lpips.features(np.concatenate(scored_gt))
    feats = lpips.features(np.concatenate(scored_pred))
    per_frame = lpips.distance(feats, cache['gt'])
    vals['lpips'] = np.split(per_frame, np.cumsum([len(x) for x in scored_pred])[:-1])
  if with_images and nets.dists is not None:
    if 'gt_dists' not in cache:
      cache['gt_dists'] = nets.dists.features(np.concatenate(scored_gt))
    per_frame = nets.dists.distance(nets.dists.features(np.concatenate(scored_pred)),
                                    cache['gt_dists'])
    vals['dists'] = np.split(per_frame, np.cumsum([len(x) for x in scored_pred])[:-1])
  out = {k: metrics_lib.finite_mean(np.concatenate([np.ravel(x) for x in v])) if len(v) else
         float('nan') for k, v in vals.items()}
  # Spread across clips (standard error of the per-clip means) for the headline metrics.
  for k in SE_SCORES:
    per_clip = np.array([metrics_lib.finite_mean(x) for x in vals[k]], np.float64)
    per_clip = per_clip[np.isfinite(per_clip)]
    out[f'{k}_se'] = (float(per_clip.std(ddof=1) / np.sqrt(len(per_clip)))
                      if len(per_clip) > 1 else float('nan'))
  out['fd'] = out['fvd'] = float('nan')
  if with_images:
    if feats is not None and len(feats[-1]) >= 2:
      out['fd'] = metrics_lib.frechet_distance(cache['gt'][-1], feats[-1])
    if nets.fvd is not None and len(pred) >= 2:
      if 'gt_i3d' not in cache:
        cache['gt_i3d'] = nets.fvd.features(gt)
      out['fvd'] = nets.fvd.distance(cache['gt_i3d'], nets.fvd.features(pred))
  else:
    for k in _IMAGE_SCORES:
      out[k] = float('nan')
  return out


def nan_scores() -> dict:
  """`score`'s keys, all NaN: a row that does not answer this task."""
  return {k: float('nan') for k in SCORES + DISTANCES + tuple(f'{k}_se' for k in SE_SCORES)}
