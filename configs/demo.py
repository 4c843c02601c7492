"""`make demo`: render, train the VAE, cache latents, train ours, evaluate, print the table.

About 16 minutes on the idle 2-core CPU with the install (15m42s measured on a clean clone,
2026-12-06; the machine's speed varies ~20% day to day). Only the masked model trains;
the two trained baselines belong to configs/reference.py. The time goes where it buys
completion quality:
  - data: 2,048 synthetic scenes of 8 frames at 32x32 (rendered in 2 processes, ~20 s), each
    training clip's camera path scaled by a speed drawn from (0, 0, 0.1, 0.25, 0.5, 1): real
    video is mostly slow, the sampled paths all fast, and a model that never sees a static or
    slow clip never learns that copying another frame pays;
  - VAE: 4x down, 4 latent channels (a 6x smaller latent than the 16-channel reconstruction VAE
    of configs/vae_tiny.py: 20.6 dB test PSNR instead of 28, but a token of (1, 2, 2) patches is
    16 numbers instead of 64, and samples in it decode to structure instead of coloured noise),
    1,500 steps (~2 min with the latent cache);
  - transformer: the tiny one (4 blocks of width 128, 128 tokens per clip), both cores as two
    devices at batch 16, lr 1.5e-3, uniform t, RoPE theta 100 (a 8x4x4 grid), a quarter of the
    training masks 'endpoints' (interpolation), 2,000 steps (~7.5 min);
  - sampler (config.sample: the commands and the eval's `ours` row alike): 12 Euler steps with
    mask-dropout guidance 2 (two model passes a step, so the cost of 24 plain steps). Measured
    on this recipe's model, one sample of test interpolation (hole PSNR at camera speed
    x0.25 / x0.5 / x1): 25 plain steps 17.26 / 15.55 / 14.37, 12 plain steps 17.50 / 15.77 /
    14.54, 12 steps guidance 2 18.44 / 16.53 / 14.84 (LPIPS 0.485 -> 0.420 on the table's
    clips); nvs, holes and edit unchanged within 0.1 dB. More steps (100) or Heun/ancestral
    solvers change nothing: the spread of one sample is the model's, and guidance narrows it;
  - eval: 16 test and 16 ood clips of the four tasks, trivial answers beside ours (one sample,
    the mean of 4 samples, the one-step estimate), then the camera-speed sweep (8 clips per
    split at speeds 0 / 0.25 / 0.5 / 1); ~5 min (20-35 s per split/task with LPIPS and DISTS,
    the sweep ~1.5 min).
Measured tables: docs/reference_run.md (section "make demo").
"""
from configs import default


def get_config():
  c = default.get_config()
  c.job = 'demo'
  c.cpu_devices = 2
  c.data.clips = {'train': 2048, 'test': 32, 'ood': 32}
  c.data.worker_count = 2
  c.data.camera_speeds = (0.0, 0.0, 0.1, 0.25, 0.5, 1.0)
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
  c.diffusion.masks.endpoints = 0.25
  c.diffusion.masks.random_patches = 0.3
  c.diffusion.masks.spacetime_box = 0.1
  c.train.steps = 2000
  c.train.batch_size = 16
  c.train.learning_rate = 1.5e-3
  c.train.warmup_steps = 100
  c.train.ema_decay = 0.998
  c.train.log_every = 100
  c.train.checkpoint_every = 500
  c.sample.num_steps = 12
  c.sample.guidance = 2.0
  c.eval.num_clips = 16
  c.eval.methods = ('nearest_fill', 'cross_fade', 'temporal_nearest', 'no_propagation',
                      'colour_transfer', 'flow_warp', 'ours')
  c.eval.speeds = (0.0, 0.25, 0.5, 1.0)
  c.eval.speed_clips = 8
  # FVD needs >= 64 clips per split/task to rank a blurred copy below the truth (eval/README.md)
  # and costs ~0.75 s per clip on 2 CPU cores (I3D at 16x224x224, 50.2 GFLOP): ~9 min for this
  # table's 768 clips (over 3 min even at the CPU's peak), and noise at 16 clips.
  # configs/eval_fvd.py is the FVD evaluation (64 clips); the demo table has LPIPS and DISTS.
  c.eval.fvd_weights = ''
  return c
