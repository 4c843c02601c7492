"""Pretraining scale on the synthetic dataset (smoke tests of a pod or cluster before real video).

256x256 frames, 8x VAE, the ~457M-parameter transformer; 100,000 rendered clips. Job
'diffusion' (run the 'vae' and 'cache' jobs first, or --config.job=all). `configs/pretrain.py` is
the same model on real video.
"""
from configs import default


def get_config():
  c = default.get_config()
  c.job = 'diffusion'
  c.data.resolution = 256
  c.data.num_frames = 16
  c.data.clip_length = 16
  c.data.clips = {'train': 100_000, 'test': 512, 'ood': 512}
  c.data.num_shards = 256
  c.data.worker_count = 8
  c.vae.latent_channels = 16
  c.vae.base_channels = 128
  c.vae.channel_multipliers = (1, 2, 4, 4)
  c.vae.num_res_blocks = 2
  c.vae.norm_groups = 32
  c.model.patch_size = (1, 2, 2)
  c.model.width = 1024
  c.model.depth = 24
  c.model.num_heads = 16
  c.model.dtype = 'bfloat16'
  c.model.remat = 'dots'
  c.model.attention = 'flash'  # cuDNN on GPU, splash on TPU
  c.model.scan_layers = True   # one traced block: trace+compile time independent of depth
  c.train.steps = 400_000
  c.train.batch_size = 256
  c.train.learning_rate = 1e-4
  c.train.warmup_steps = 5_000
  c.train.log_every = 100
  c.train.checkpoint_every = 5_000
  c.train.eval_every = 10_000
  c.train.ema_decay = 0.9999
  # One slice fully sharded (FSDP over every chip: ~1.8 GiB of state per chip on 256); slices add
  # data parallelism over DCN. `python -m maskvid.aot` compiles it for a pod (docs/scale_out.md).
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.mesh.tensor = 1
  return c
