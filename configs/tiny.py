"""Tiny transformer on the synthetic latent cache; trains on a CPU in minutes."""
from configs import default


def get_config():
  c = default.get_config()
  c.job = 'diffusion'
  return c
