"""Tiny transformer on the synthetic latent cache; trains on a CPU in minutes.

Latents [T=8, 8, 8, 4] (32x32 frames, 4x VAE), patches (1, 2, 2) -> 128 tokens per clip;
width 128, depth 4 (~1.3M params), batch 8 -> 1,024 tokens/step, ~8.6 GFLOP/step.
`python -m maskvid.bench.train_step --config=configs/tiny.py` measures the step on this machine.
"""
from configs import default


def get_config():
  c = default.get_config()
  c.job = 'diffusion'
  c.model.width = 128
  c.model.depth = 4
  c.model.num_heads = 4
  c.train.steps = 600
  c.train.batch_size = 8
  c.train.learning_rate = 5e-4
  c.train.warmup_steps = 50
  c.train.ema_decay = 0.995       # short run: a 0.999 average would lag hundreds of steps
  c.train.log_every = 50
  c.train.checkpoint_every = 200
  c.train.keep_checkpoints = 2
  c.train.eval_every = 0          # once, at the end
  c.sample.num_steps = 25
  c.sample.preview_clips = 4
  return c
