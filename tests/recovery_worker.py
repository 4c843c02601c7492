"""Subprocess of tests/test_recovery.py: the diffusion stage through `maskvid.main.run`.

  python tests/recovery_worker.py WORKDIR STEPS
Runs the tiny config of test_train_loop for STEPS steps (one log line per step, checkpoints only
at the end or on SIGTERM) and exits with `main.run`'s status.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))                  # tests/
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo

from absl import logging  # pylint: disable=wrong-import-position

import test_train_loop  # pylint: disable=wrong-import-position
from maskvid import main  # pylint: disable=wrong-import-position


def run(workdir: str, steps: int) -> int:
  config = test_train_loop.tiny_config()
  config.train.steps, config.train.log_every = steps, 1
  config.train.checkpoint_every = 10 * steps
  config.train.async_checkpoints = False
  config.sample.preview_clips = 1
  logging.set_verbosity(logging.INFO)
  return main.run(config, workdir)


if __name__ == '__main__':
  sys.exit(run(sys.argv[1], int(sys.argv[2])))
