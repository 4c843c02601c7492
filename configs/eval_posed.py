"""Posed-benchmark evaluation job: the field's NVS and interpolation protocols on posed scenes.

  python -m maskvid.main --config=configs/eval_posed.py --workdir=RUN \
      --config.eval.posed_dir=DIR [--config.eval.posed_format=nerfstudio|re10k|colmap]

DIR holds one scene per folder (nerfstudio `transforms.json` + `train_test_split_N.json`, COLMAP
text models) or RealEstate10K camera files (`<seq>.txt` + `<seq>/`); docs/posed.md has the
layouts and the protocol. The model, its resolution, clip length and sampler settings are the
trained run's (RUN, or --config.eval.checkpoint=OTHER_RUN: its diffusion/config.json); the job
never trains. Writes RUN/eval_posed/results.md, results.json and one PNG grid per task.

Single-image NVS renders the targets along the scene's own path at the model's clip length T:
by default the path's targets are subsampled evenly to T - 1. --config.eval.posed_long_paths=True
keeps every target; a path longer than T is then completed by the generative rows window by
window with the long-video planner (`sampling.long_video.plan`, sliding windows of T frames with
2 finished context frames, as the nvs command), the trivial rows answer it whole, and every
target frame is scored (`maskvid.eval.posed_long`).
"""
from configs import default


def get_config():
  c = default.get_config()
  c.job = 'eval_posed'
  # The rows that answer nvs and interpolate without training anything else: the trivial ones
  # and the masked model (add 'conditioning' / 'replacement' when RUN/baselines holds them).
  c.eval.methods = ('nearest_fill', 'cross_fade', 'temporal_nearest', 'ours_no_sc', 'ours')
  c.eval.tasks = ('nvs', 'interpolate')
  c.eval.posed_long_paths = False   # True: every nvs target, long paths window by window
  return c
