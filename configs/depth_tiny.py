"""Tiny monocular depth U-Net on 32x32 synthetic frames; trains on a CPU in a few minutes.

`python -m maskvid.depth.train --config=configs/depth_tiny.py --workdir=DIR` (writes DIR/depth);
use it for novel-view synthesis with `--depth=net:DIR`.
"""
from configs import default


def get_config():
  c = default.get_config()
  c.depth.resolution = 32
  c.depth.train_clips = 64
  c.depth.eval_clips = 8
  c.depth.steps = 600
  c.depth.batch_size = 16
  return c
