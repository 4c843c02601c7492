"""Evaluation job: `python -m maskvid.main --config=configs/eval.py --workdir=DIR`.

Expects DIR to hold a trained run (DIR/vae, DIR/latents, DIR/diffusion, e.g. from `make demo` or
configs/reference.py with the same model/data keys). Trains the two baselines that need training
(conditioning, replacement) into DIR/baselines/<name> if they are not there yet, with the same
backbone and step budget, then writes DIR/eval/results.md, results.json and PNG grids.
The data/VAE/model keys must match the run being evaluated: override them on the command line
(or evaluate with the run's own config plus --config.job=eval). The sampler settings are the
trained run's (DIR/diffusion/config.json `sample`: what its commands run), not this config's
`sample`; change one for the eval only explicitly, e.g.
`--config.eval.sample_overrides.num_steps=50`. results.md lists the settings used.
"""
from configs import default


def get_config():
  c = default.get_config()
  c.job = 'eval'
  c.eval.num_clips = 8
  return c
