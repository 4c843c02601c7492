"""`make demo`: render data, train VAE, cache latents, train the tiny transformer, evaluate. CPU minutes."""
from configs import default


def get_config():
  c = default.get_config()
  c.job = 'demo'
  return c
