"""Posed-benchmark evaluation job: the field's NVS and interpolation protocols on posed scenes.

  python -m maskvid.main --config=configs/eval_posed.py --workdir=RUN \
      --config.eval.posed_dir=DIR [--config.eval.posed_format=nerfstudio|re10k|colmap]

DIR holds one scene per folder (nerfstudio `transforms.json` + `train_test_split_N.json`, COLMAP
text models) or RealEstate10K camera files (`<seq>.txt` + `<seq>/`); docs/posed.md has the
layouts and the protocol. The model, its resolution, clip length and sampler settings are the
trained run's (RUN, or --config.eval.checkpoint=OTHER_RUN: its diffusion/config.json); the job
never trains. Writes RUN/eval_posed/results.md, results.json and one PNG grid per task.
"""
from configs import default


def get_config():
  c = default.get_config()
  c.job = 'eval_posed'
  # The rows that answer nvs and interpolate without training anything else: the trivial ones
  # and the masked model (add 'conditioning' / 'replacement' when RUN/baselines holds them).
  c.eval.methods = ('nearest_fill', 'cross_fade', 'temporal_nearest', 'ours_no_sc', 'ours')
  c.eval.tasks = ('nvs', 'interpolate')
  return c
