"""`make demo`: render data, train VAE, cache latents, train the tiny transformer and the two
trained baselines, evaluate, print the table. Measured: 13 min on this 2-core CPU (plus install).

The VAE follows configs/vae_tiny.py (16 latent channels + linear patch path: the synthetic
textures need them, see that file) with fewer steps; the transformer is the tiny default.
"""
from configs import default


def get_config():
  c = default.get_config()
  c.job = 'demo'
  c.vae.latent_channels = 16
  c.vae.linear_skip = True
  c.vae.train.steps = 600
  c.vae.train.batch_size = 8
  c.vae.train.learning_rate = 2e-3
  c.vae.train.checkpoint_every = 200
  c.train.steps = 300
  return c
