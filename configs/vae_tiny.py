"""Tiny frame VAE (4x down, 4 latent channels) trained on synthetic 32x32 frames on a CPU."""
from configs import default


def get_config():
  c = default.get_config()
  c.job = 'vae'
  return c
