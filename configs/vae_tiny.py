"""Tiny frame VAE (4x down, 16 latent channels, linear patch path) on synthetic 32x32 frames, CPU.

`python -m maskvid.main --config=configs/vae_tiny.py --workdir=DIR` renders the dataset if needed
(8192 training scenes in 2 processes, ~1 min), trains for at most `max_train_seconds` of wall
time (the warmup+cosine schedule is stretched or compressed to end by then) data-parallel over
`cpu_devices` = 2 XLA CPU devices (one per core here), and prints PSNR / SSIM per split (train,
test, ood); see DIR/vae/eval.json and DIR/vae/reconstructions.png. Full account: docs/vae_tiny.md.

Measured on the idle 2-core machine (issue 3 asks for >= 28 dB held-out within 20 min):
  256 scenes, 1 device, 6000 steps (18 min):     train 28.33  test 25.41  ood 22.28 dB (overfits)
  2048 scenes, 1 device, 6000 steps (18 min):    train 27.02  test 26.71  ood 23.52 dB
  2048 scenes, 2 devices, 10118 steps (18 min):  train 27.82  test 27.36  ood 24.23 dB
  faster GroupNorm/upsampler, lr 3e-3, checkpoints every 2500, 13354 steps (19 min):
                                                 train 28.24  test 27.76  ood 24.64 dB
  8192 scenes, lr 3e-3, 11690 steps (19m40s incl. render):
                                                 train 28.31  test 27.83  ood 24.73 dB
  8192 scenes, lr 4e-3, 9746 steps (a slower day: 8.9 steps/s against 11.8 above):
                                                 train 28.06  test 27.65  ood 24.51 dB
  same at 1080 s, 9360 steps:                    train 27.94  test 27.54  ood 24.37 dB
  one gradient all-reduce per step, 10151 steps:  train 28.08  test 27.69  ood 24.50 dB
  + linear decay to 0 at lr 5.5e-3 (this file), 9806 steps (19m41s incl. render):
                                                 train 28.20  test 27.77  ood 24.64 dB
  the same, rerun: 10067 steps (19m37s):          train 28.23  test 27.80  ood 24.66 dB
  leaner loop (session 7; a slow day, ~10 steps/s), 10183 steps (19m37s):
                                                 train 28.30  test 27.88  ood 24.61 dB
  unchanged (session 8; a fast day, ~12.7 steps/s), 13268 steps (19m15s incl. render):
                                                 train 28.55  test 28.13  ood 24.91 dB
  the same, rerun: 13075 steps (19m17s):          train 28.58  test 28.11  ood 24.91 dB

Why these numbers: the synthetic frames carry fine checker/stripe textures, so 4x with 8 channels
(a 6x compression) is limited (a PCA of 4x4 patches with 8 components gives 21.5 dB, 16 give
23.6 dB); 16 channels (3x) and the linear patch path are needed. Small batches (8 frames) buy
more updates per second, which matters more than batch noise here. L2 beats L1 (PSNR is an MSE
metric); 16x(1,2,4) channels beat 32x(1,2,2); space-to-depth stems lose 0.7-2.1 dB despite more
steps (GPU replay). With 2048 scenes the model memorises: over 256 fresh scenes per split train
scores 0.39 dB above test; 8192 scenes (rendered in 2 processes, ~25 s more) cut that to 0.14 dB
and gain ~0.2 dB held-out at equal steps. lr 4e-3 beat 3e-3 by 0.15 dB at 3000 steps; left-right
flips (`vae.train.hflip`) gave nothing on top of 8192 scenes. A linear decay to zero beat cosine
by 0.14 dB at 3000 steps and took a higher peak (5.5e-3: +0.11 dB more; 7e-3 no better).
Full account: docs/vae_tiny.md.
"""
from configs import default


def get_config():
  c = default.get_config()
  c.job = 'vae'
  c.cpu_devices = 2                        # the VAE batch split over both cores (~1.4x steps/s)
  c.data.clips = {'train': 8192, 'test': 32, 'ood': 32}   # fewer scenes overfit (see above)
  c.data.worker_count = 2                  # render in 2 processes (8192 clips in ~50 s)
  c.vae.latent_channels = 16
  c.vae.base_channels = 16
  c.vae.channel_multipliers = (1, 2, 4)
  c.vae.linear_skip = True
  c.vae.kl_weight = 1e-6
  c.vae.reconstruction_loss = 'l2'
  c.vae.train.steps = 20000               # the time budget ends it first (9-13k steps here)
  c.vae.train.batch_size = 8
  c.vae.train.learning_rate = 5.5e-3
  c.vae.train.warmup_steps = 50
  c.vae.train.adam_b1 = 0.9                # 0.8: +0.30 dB at 3000 steps, -0.03 dB over a full run
  c.vae.train.decay = 'linear'             # straight to zero: +0.25 dB over cosine at 3000 steps
  c.vae.train.end_lr_fraction = 0.0
  c.vae.train.hflip = False                # mirrored frames: no gain once 8192 scenes are rendered
  c.vae.train.cpu_optimization_level = 1   # compiles in 25 s instead of 39 s, steps as fast
  c.vae.train.cache_frames = True          # ~200 MB; decoding records cost ~6 ms of a 100-ms step
  c.vae.train.max_train_seconds = 1080.0   # render (~1 min) + this + startup/eval (~45 s) < 20 min
  c.vae.train.log_every = 50
  c.vae.train.checkpoint_every = 2500      # async saves every 500 cost ~15% of the steps
  c.vae.train.eval_frames = 128
  return c
