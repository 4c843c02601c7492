"""eval.scoring.score: the hole metrics see the holes only, the whole-frame ones everything."""
import types

import numpy as np

from maskvid.eval import scoring


def _case():
  rng = np.random.default_rng(0)
  gt = rng.uniform(-1, 1, (2, 3, 16, 16, 3)).astype(np.float32)
  hole = np.zeros((3, 16, 16), bool)
  hole[:, 4:12, 4:12] = True                 # a quarter of every frame is unknown
  task = types.SimpleNamespace(name='holes', frames=(1, 2), hole=hole)
  # The base completion is a little off inside the hole (finite hole PSNR), exact elsewhere.
  pred = np.where(hole[..., None], gt + 0.05, gt).astype(np.float32)
  return gt, pred, hole, [task, task]


def _scores(pred, gt, tasks):
  return scoring.score(pred, gt, [{}, {}], tasks)


def test_hole_psnr_sees_only_the_hole():
  gt, pred, hole, tasks = _case()
  base = _scores(pred, gt, tasks)
  # Wrong only outside the hole: the hole PSNR does not move, the whole-frame one drops (SSIM's
  # window reaches across the hole's edge, so SSIM-hole is not a per-pixel score).
  outside = np.where(hole[..., None], pred, -gt)
  wrong_out = _scores(outside, gt, tasks)
  assert wrong_out['psnr_hole'] == base['psnr_hole']
  assert wrong_out['psnr'] < base['psnr'] - 10
  # Wrong only inside: the hole PSNR drops by what the error is, 20 log10(0.5 / 0.05) = 20 dB.
  inside = np.where(hole[..., None], gt + 0.5, gt)
  wrong_in = _scores(inside, gt, tasks)
  np.testing.assert_allclose(base['psnr_hole'] - wrong_in['psnr_hole'], 20.0, atol=0.01)
  # 0.05 in [-1, 1] is 0.025 in [0, 1]: 20 log10(1 / 0.025) = 32.04 dB.
  np.testing.assert_allclose(base['psnr_hole'], 32.04, atol=0.01)
