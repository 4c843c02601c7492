"""Tiny monocular depth U-Net on 32x32 synthetic frames; trains on a CPU in a few minutes.

`python -m maskvid.main --config=configs/depth_tiny.py --workdir=DIR` (writes DIR/depth);
use it for novel-view synthesis with `--depth=net:DIR`.
Measured (CPU, 600 steps, 64 train clips x 8 frames): train SI-log loss 0.80 -> 0.04; on 8 held-out
'test' clips si_log 0.071, abs_rel 0.21, delta1 (< 1.25) 0.76.
"""
from configs import default


def get_config():
  c = default.get_config()
  c.job = 'depth'
  c.depth.resolution = 32
  c.depth.train_clips = 64
  c.depth.eval_clips = 8
  c.depth.steps = 600
  c.depth.warmup_steps = 50
  c.depth.batch_size = 16
  return c
