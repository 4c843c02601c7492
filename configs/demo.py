"""`make demo` (experiment draft)."""
from configs import default


def get_config():
  c = default.get_config()
  c.job = 'demo'
  c.cpu_devices = 2
  c.data.clips = {'train': 2048, 'test': 32, 'ood': 32}
  c.data.worker_count = 2
  c.vae.latent_channels = 4
  c.vae.base_channels = 16
  c.vae.channel_multipliers = (1, 2, 4)
  c.vae.linear_skip = True
  c.vae.reconstruction_loss = 'l2'
  c.vae.train.steps = 1500
  c.vae.train.batch_size = 8
  c.vae.train.learning_rate = 5.5e-3
  c.vae.train.decay = 'linear'
  c.vae.train.end_lr_fraction = 0.0
  c.vae.train.checkpoint_every = 500
  c.vae.train.cpu_optimization_level = 1
  c.vae.train.cache_frames = True
  c.model.rope_theta = 100.0
  c.diffusion.time_sampling = 'uniform'
  c.train.steps = 2000
  c.train.batch_size = 16
  c.train.learning_rate = 1.5e-3
  c.train.warmup_steps = 100
  c.train.ema_decay = 0.998
  c.train.log_every = 100
  c.train.checkpoint_every = 500
  c.eval.num_clips = 16
  c.eval.min_valid = 0.01
  c.eval.baselines = ('nearest_fill', 'cross_fade', 'ours_no_sc', 'ours')
  return c
