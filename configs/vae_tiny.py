"""Tiny frame VAE (4x down, 16 latent channels, linear patch path) on synthetic 32x32 frames, CPU.

`python -m maskvid.main --config=configs/vae_tiny.py --workdir=DIR` renders the dataset if needed
(2048 training scenes, ~30 s), trains for at most `max_train_seconds` of wall time (the
warmup+cosine schedule is stretched or compressed to end by then) data-parallel over
`cpu_devices` = 2 XLA CPU devices (one per core here), and prints PSNR / SSIM per split (train,
test, ood); see DIR/vae/eval.json and DIR/vae/reconstructions.png. Full account: docs/vae_tiny.md.

Measured on the idle 2-core machine (issue 3 asks for >= 28 dB held-out within 20 min):
  256 scenes, 1 device, 6000 steps (18 min):     train 28.33  test 25.41  ood 22.28 dB (overfits)
  2048 scenes, 1 device, 6000 steps (18 min):    train 27.02  test 26.71  ood 23.52 dB
  2048 scenes, 2 devices, 10118 steps (18 min):  train 27.82  test 27.36  ood 24.23 dB
  faster GroupNorm/upsampler, lr 3e-3, checkpoints every 2500, 13354 steps (19 min):
                                                 train 28.24  test 27.76  ood 24.64 dB (this file)

Why these numbers: the synthetic frames carry fine checker/stripe textures, so 4x with 8 channels
(a 6x compression) is limited (a PCA of 4x4 patches with 8 components gives 21.5 dB, 16 give
23.6 dB); 16 channels (3x) and the linear patch path are needed. Small batches (8 frames) buy
more updates per second, which matters more than batch noise here. Measured at equal wall time
(240-300 s, 2 cores shared by two runs; test PSNR): L1 22.0 dB -> L2 23.0 dB (PSNR is an MSE
metric); channels 32x(1,2,2) -> 16x(1,2,4) 23.0 -> 24.0 dB (the 32-channel full-resolution
decoder blocks cost 3x the step time for no gain); lr 4e-3 did not help; decoding the posterior
mean (`vae.train.sample_posterior=False`) gave +0.1 dB at 2000 steps (24.75 vs 24.65), within
noise. 2 CPU devices run 9.3 steps/s against 7.2 for one (4 devices: 7.4); batch 16 on 2 devices
runs 5.3 steps/s, only 1.14x the frames/s of batch 8, so batch 8 stays. Replaying CPU step
counts on an H200 (benchmarks/vae_arch_sweep.py) showed lr 3e-3 beats 2e-3 by 0.24 dB and that
space-to-depth stems lose 0.7-2.1 dB despite more steps (docs/vae_tiny.md).
"""
from configs import default


def get_config():
  c = default.get_config()
  c.job = 'vae'
  c.cpu_devices = 2                        # the VAE batch split over both cores (1.29x steps/s)
  c.data.clips = {'train': 2048, 'test': 32, 'ood': 32}   # 256 scenes overfit (3 dB gap)
  c.vae.latent_channels = 16
  c.vae.base_channels = 16
  c.vae.channel_multipliers = (1, 2, 4)
  c.vae.linear_skip = True
  c.vae.kl_weight = 1e-6
  c.vae.reconstruction_loss = 'l2'
  c.vae.train.steps = 20000               # the time budget ends it first (~13k steps here)
  c.vae.train.batch_size = 8
  c.vae.train.learning_rate = 3e-3
  c.vae.train.warmup_steps = 50
  c.vae.train.max_train_seconds = 1140.0   # 19 min of training + compile; the stage ends < 19.5 min
  c.vae.train.log_every = 50
  c.vae.train.checkpoint_every = 2500      # async saves every 500 cost ~15% of the steps
  c.vae.train.eval_frames = 128
  return c
