"""Tiny frame VAE (4x down, 8 latent channels) trained on synthetic 32x32 frames on a CPU.

`python -m maskvid.main --config=configs/vae_tiny.py --workdir=DIR` renders the dataset if needed,
trains, and prints PSNR / SSIM per split (train, test, ood); see DIR/vae/eval.json.
"""
from configs import default


def get_config():
  c = default.get_config()
  c.job = 'vae'
  c.vae.latent_channels = 8
  c.vae.base_channels = 32
  c.vae.channel_multipliers = (1, 2, 2)
  c.vae.kl_weight = 1e-6
  c.vae.train.steps = 1500
  c.vae.train.batch_size = 16
  c.vae.train.learning_rate = 2e-3
  c.vae.train.warmup_steps = 100
  c.vae.train.log_every = 50
  c.vae.train.checkpoint_every = 250
  c.vae.train.eval_frames = 128
  return c
