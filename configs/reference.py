"""Reference run: long enough for the evaluation table to mean something (not a CPU-minutes demo).

    python -m maskvid.main --config=configs/reference.py --workdir=runs/reference

job='demo' runs every stage: render 2048 + 64 + 64 clips, train the VAE, cache latents, train the
masked transformer, then `eval` trains the two baselines (conditioning, replacement) with the same
backbone and the same step budget and evaluates every method on 32 test and 32 ood clips.
Every stage resumes from what is on disk, so the run can be interrupted and restarted.

Budget (estimated from FLOP counts, not measured end to end): the transformer has ~4.1M
matmul params over 128 tokens per clip (8 frames of 8x8 latents, 2x2 patches), ~5.5e10 training
FLOPs per step at batch 16 (`maskvid.model.model.flops_per_token`). At a sustained ~30 GFLOP/s
(a few CPU cores) that is ~2 s/step, so 4000 steps are ~2 h per model and ~6-7 h for the three
models (ours + 2 baselines) plus the VAE; on one H100 the whole run takes well under an hour.
For a GPU, `--config.model.dtype=bfloat16` is fine; everything else stays the same.
"""
from configs import default


def get_config():
  c = default.get_config()
  c.job = 'demo'
  # Data: same 32x32, 8-frame synthetic clips as the demo, 8x more training scenes.
  c.data.clips = {'train': 2048, 'test': 64, 'ood': 64}
  c.data.num_shards = 8
  c.data.batch_size = 16
  # VAE: configs/vae_tiny.py's latent space (4x down, 16 channels, linear patch path; 24.8 dB
  # test PSNR after 2000 steps), wider and trained longer.
  c.vae.latent_channels = 16
  c.vae.linear_skip = True
  c.vae.base_channels = 64
  c.vae.train.steps = 3000
  c.vae.train.batch_size = 32
  c.vae.train.warmup_steps = 200
  c.vae.train.checkpoint_every = 500
  c.vae.train.log_every = 100
  # Transformer: 6 blocks of width 192 (vs 4 x 128 in the demo).
  c.model.width = 192
  c.model.depth = 6
  c.model.num_heads = 6
  c.train.steps = 4000
  c.train.batch_size = 16
  c.train.learning_rate = 3e-4
  c.train.warmup_steps = 300
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.ema_decay = 0.999
  # Sampler and evaluation.
  c.sample.num_steps = 50
  c.eval.num_clips = 32
  c.eval.batch_size = 8
  c.eval.baseline_steps = -1      # baselines get exactly train.steps
  return c
