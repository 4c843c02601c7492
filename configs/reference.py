"""Reference run: long enough for the evaluation table to mean something on a 2-core CPU.

Uses the VAE of configs/vae_tiny.py (same keys; train it first, or let this run train its own on
this run's 1024 scenes):

    python -m maskvid.main --config=configs/vae_tiny.py --workdir=runs/vae_tiny
    mkdir -p runs/reference && cp -r runs/vae_tiny/vae runs/reference/vae
    python -m maskvid.main --config=configs/reference.py --workdir=runs/reference --config.job=cache
    # the masked model and the two trained baselines, as three processes (or cluster jobs):
    python -m maskvid.main --config=configs/reference.py --workdir=runs/reference --config.job=diffusion &
    python -m maskvid.main --config=configs/reference.py --workdir=runs/reference \
        --config.job=baselines --config.eval.baselines="('conditioning',)" &
    python -m maskvid.main --config=configs/reference.py --workdir=runs/reference \
        --config.job=baselines --config.eval.baselines="('replacement',)" &
    wait
    python -m maskvid.main --config=configs/reference.py --workdir=runs/reference --config.job=eval

(`--config.job=demo` runs the same stages in one process, one after the other.) Every stage
resumes from what is on disk.

Sizes: 1024 training scenes (4x the demo), the tiny transformer (4 blocks of width 128, 1.27M
params, 128 tokens per 8-frame clip), 4000 steps of batch 8 per model (13x the demo), evaluated on
16 test and 16 ood clips. The train-step benchmark measured 374 ms/step for this model at batch 8
on an idle 2-core CPU, so one model is ~25 min alone; the three together took 52 min here
(2026-11-26, with a VAE experiment beside them for a while), then the eval job 5 min. That run's
tables and reading are in docs/reference_run.md.
"""
from configs import vae_tiny


def get_config():
  c = vae_tiny.get_config()    # VAE keys: the latent space measured for issue 3
  c.job = 'demo'
  c.cpu_devices = 0            # three training processes share the cores: one device each
  c.data.clips = {'train': 1024, 'test': 64, 'ood': 64}
  c.data.num_shards = 8
  c.data.worker_count = 0      # vae_tiny renders in 2 processes; here grain stays in-process
  c.data.batch_size = 8
  c.train.steps = 4000
  c.train.batch_size = 8
  c.train.learning_rate = 6e-4
  c.train.warmup_steps = 200
  c.train.log_every = 100
  c.train.checkpoint_every = 500
  c.train.ema_decay = 0.999
  c.sample.num_steps = 25
  c.eval.num_clips = 16
  c.eval.batch_size = 8
  c.eval.baseline_steps = -1      # baselines get exactly train.steps
  return c
