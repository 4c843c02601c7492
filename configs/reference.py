"""Reference run: ours, the two trained baselines and the trivial answers, at equal steps.

About an hour on the 2-core CPU, one command (every stage resumes from what is on disk):

    python -m maskvid.main --config=configs/reference.py --workdir=runs/reference
    # then the scaling ladder (reuses the run's data, VAE, cache and its 4000-step model):
    python -m maskvid.bench.ladder --config=configs/reference.py --workdir=runs/reference \
        --steps=250,1000,4000

The demo's latent space and model (configs/demo.py) with 4x the scenes, a longer VAE run and
2x the diffusion steps; the `conditioning` and `replacement` baselines train on demand in the
eval stage with the same backbone, data and steps. Evaluated on 16 test and 16 ood clips with 4
samples per method (one sample is the headline; the mean of 4 and the one-step estimate are
reported beside it). Its measured tables are in docs/reference_run.md.
"""
from configs import demo


def get_config():
  c = demo.get_config()
  c.job = 'demo'
  c.data.clips = {'train': 8192, 'test': 64, 'ood': 64}
  c.data.num_shards = 8
  c.vae.train.steps = 4000
  c.vae.train.checkpoint_every = 1000
  c.train.steps = 4000
  c.train.warmup_steps = 200
  c.train.ema_decay = 0.999
  c.train.checkpoint_every = 1000
  c.eval.num_clips = 16
  c.eval.num_samples = 4
  c.eval.methods = ('nearest_fill', 'cross_fade', 'no_propagation', 'colour_transfer',
                      'flow_warp', 'conditioning', 'replacement', 'ours_no_sc', 'ours')
  c.eval.baseline_steps = -1      # baselines get exactly train.steps
  return c
