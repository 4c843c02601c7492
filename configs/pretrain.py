"""Pretraining on real video (TPU pods / GPU clusters): the model of configs/pretrain_synthetic.py
(256x256 frames, 8x VAE, ~457M-parameter transformer) on a folder of videos or a TFDS dataset.

Every stage in order, each resuming from what is on disk (job 'all'): VAE (or an external one),
the latent cache (sharded: every process encodes its own part), diffusion, eval ('holes' and
'interpolate': real video has no depth or cameras for 'nvs' and 'edit').

    # a folder of .mp4 files (local, or a gcsfuse mount); held-out videos in DIR/test if present
    python -m maskvid.main --config=configs/pretrain.py --workdir=RUN --config.data.video_dir=DIR
    # or a TFDS video dataset prepared (ArrayRecord) in TFDS_DIR
    python -m maskvid.main --config=configs/pretrain.py --workdir=RUN --config.data.source=tfds \
        --config.data.tfds_name=NAME --config.data.tfds_data_dir=TFDS_DIR \
        --config.data.tfds_frames_key=video
    # start from an external VAE (diffusers AutoencoderKL .safetensors) instead of training one;
    # its architecture keys (latent_channels, base_channels, channel_multipliers,
    # num_res_blocks, mid_attention) must match the file
    ... --config.vae.external_weights=vae.safetensors --config.vae.train.steps=0

Without a source it stops at once with one line naming config.data.video_dir /
config.data.tfds_name.
"""
from configs import pretrain_synthetic


def get_config():
  c = pretrain_synthetic.get_config()
  c.job = 'all'
  c.data.source = 'video_folder'
  c.data.video_dir = ''             # required (or source='tfds' with tfds_name)
  c.data.video_stride = 2           # every 2nd frame: more camera motion per clip
  c.data.clips = {'train': 1, 'test': 1}   # the splits; the source decides how many clips
  c.eval.tasks = ('interpolate', 'holes')
  c.eval.splits = ('test',)
  c.eval.methods = ('cross_fade', 'nearest_fill', 'ours')
  c.eval.num_clips = 64
  return c
