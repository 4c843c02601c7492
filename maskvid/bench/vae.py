"""Benchmark of the VAE train step and encode throughput on random frames (no dataset).

Usage:
  python -m maskvid.bench.vae                       # tiny (4x) and pretrain-shaped (8x) variants
  python -m maskvid.bench.vae --batch=16 --steps=5 --size=32

Prints one table: variant, params, compile seconds, train-step seconds, train frames/s, encode
frames/s (posterior mean only, as the latent cache runs it) and the step's compiled memory per
device (`bench.common.compiled_memory`).
"""
import time

from absl import app
from absl import flags
import jax
import numpy as np

from configs import default
from maskvid.bench import common
from maskvid.vae import cache
from maskvid.vae import train

FLAGS = flags.FLAGS
flags.DEFINE_integer('batch', 16, 'Frames per train step.')
flags.DEFINE_integer('size', 32, 'Frame height and width.')
flags.DEFINE_integer('steps', 5, 'Timed steps (after one warmup step).')

# name -> AutoencoderKL(latent_channels, base_channels, channel_multipliers, num_res_blocks,
#                       norm_groups, mid_attention, linear_skip)
VARIANTS = {
    '4x c16 (vae_tiny)': (16, 16, (1, 2, 4), 1, 8, False, True),
    '4x c4 (demo)': (4, 16, (1, 2, 4), 1, 8, False, True),
    '4x c8': (8, 32, (1, 2, 2), 1, 8, False, True),
    '4x c8 base16': (8, 16, (1, 2, 2), 1, 8, False, True),
    '8x c16 +attn': (16, 32, (1, 2, 2, 2), 1, 8, True, False),
}


def _config(spec, batch: int, size: int):
  c = default.get_config()
  (c.vae.latent_channels, c.vae.base_channels, c.vae.channel_multipliers, c.vae.num_res_blocks,
   c.vae.norm_groups, c.vae.mid_attention, c.vae.linear_skip) = spec
  c.data.resolution, c.vae.train.batch_size = size, batch
  return c


def bench(spec, batch: int, size: int, steps: int) -> dict:
  """The VAE stage's own sharded step (`vae.train.make_trainer`) and the cache's encoder."""
  module, trainer = train.make_trainer(_config(spec, batch, size))
  state = trainer.init(0)
  frames = np.random.default_rng(0).uniform(-1, 1, (batch, 1, size, size, 3)).astype(np.float32)
  frames = trainer.put_batch(frames)
  t = time.perf_counter()
  state, m = trainer.step(state, frames)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  t = time.perf_counter()
  for _ in range(steps):
    state, m = trainer.step(state, frames)
  jax.block_until_ready(m)
  step_s = (time.perf_counter() - t) / steps
  encode = cache.posterior_mean_encoder(module)
  jax.block_until_ready(encode(state.params, frames))
  t = time.perf_counter()
  for _ in range(steps):
    out = encode(state.params, frames)
  jax.block_until_ready(out)
  enc_s = (time.perf_counter() - t) / steps
  memory = common.compiled_memory(trainer.lower().compile()) or {'total': float('nan')}
  return {'params': trainer.num_params, 'compile_s': compile_s, 'step_s': step_s,
          'train_fps': batch / step_s, 'encode_fps': batch / enc_s,
          'step_mib': memory['total'] / 2 ** 20}


def main(argv):
  del argv
  print(f'device: {jax.devices()[0].device_kind}, batch {FLAGS.batch} frames of '
        f'{FLAGS.size}x{FLAGS.size}')
  print(f"{'variant':<24} {'params':>9} {'compile s':>10} {'step s':>8} {'train fr/s':>11} "
        f"{'encode fr/s':>12} {'step MiB/dev':>13}")
  for name, spec in VARIANTS.items():
    r = bench(spec, FLAGS.batch, FLAGS.size, FLAGS.steps)
    print(f"{name:<24} {r['params']:>9,} {r['compile_s']:>10.1f} {r['step_s']:>8.3f} "
          f"{r['train_fps']:>11.1f} {r['encode_fps']:>12.1f} {r['step_mib']:>13.1f}", flush=True)


if __name__ == '__main__':
  app.run(main)
