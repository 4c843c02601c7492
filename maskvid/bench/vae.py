"""Benchmark of the VAE train step and encode throughput on random frames (no dataset).

Usage:
  python -m maskvid.bench.vae                       # tiny (4x) and pretrain-shaped (8x) variants
  python -m maskvid.bench.vae --batch=16 --steps=5 --size=32

Prints one table: variant, params, compile seconds, train-step seconds, train frames/s, and
encode frames/s (posterior mean only, as the latent cache runs it).
"""
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from maskvid import optim
from maskvid.vae import cache
from maskvid.vae import model as vae_model
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


def bench(spec, batch: int, size: int, steps: int) -> dict:
  c = default.get_config()
  module = vae_model.AutoencoderKL(*spec)
  tx = optim.adam_direction(c.vae.train)
  state = train.init_state(module, tx, jax.random.key(0, impl='rbg'), (size, size, 3))
  step = train.make_train_step(module, tx, c.vae)
  frames = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (batch, 1, size, size, 3)),
                       jnp.float32)
  lr = jnp.float32(1e-3)
  t = time.perf_counter()
  state, m = step(state, frames, jax.random.key(0), lr)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  t = time.perf_counter()
  for i in range(steps):
    state, m = step(state, frames, jax.random.key(i), lr)
  jax.block_until_ready(m)
  step_s = (time.perf_counter() - t) / steps
  encode = cache.posterior_mean_encoder(module)
  jax.block_until_ready(encode(state.params, frames))
  t = time.perf_counter()
  for _ in range(steps):
    out = encode(state.params, frames)
  jax.block_until_ready(out)
  enc_s = (time.perf_counter() - t) / steps
  return {'params': sum(x.size for x in jax.tree.leaves(state.params)), 'compile_s': compile_s,
          'step_s': step_s, 'train_fps': batch / step_s, 'encode_fps': batch / enc_s}


def main(argv):
  del argv
  print(f'device: {jax.devices()[0].device_kind}, batch {FLAGS.batch} frames of '
        f'{FLAGS.size}x{FLAGS.size}')
  print(f"{'variant':<24} {'params':>9} {'compile s':>10} {'step s':>8} {'train fr/s':>11} "
        f"{'encode fr/s':>12}")
  for name, spec in VARIANTS.items():
    r = bench(spec, FLAGS.batch, FLAGS.size, FLAGS.steps)
    print(f"{name:<24} {r['params']:>9,} {r['compile_s']:>10.1f} {r['step_s']:>8.3f} "
          f"{r['train_fps']:>11.1f} {r['encode_fps']:>12.1f}", flush=True)


if __name__ == '__main__':
  app.run(main)
