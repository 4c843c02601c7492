"""Which VAE architecture wins a fixed CPU wall-clock budget? Replay each candidate's CPU step
count on an accelerator, where the whole sweep takes minutes instead of hours.

Each variant trains for the number of steps it reaches in the 18-minute CPU budget of
`configs/vae_tiny.py` (its CPU steps/s, measured beforehand, x the budget), with the same loss
(L2 + 1e-6 KL, posterior sampled), AdamW direction (clip 1, b2 0.99), warmup + cosine to 1% and
batch; then reports held-out PSNR on the same 128 evenly spread test/ood frames the trainer
evaluates. Only `maskvid.vae.model`, `maskvid.vae.losses`, optax and jax are needed (the device
image has no grain/clu/TensorFlow).

  python benchmarks/vae_arch_sweep.py export --data=runs/vae2/data --out=vae_frames.npz   # here
  python benchmarks/vae_arch_sweep.py run --frames=vae_frames.npz                          # device
"""
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from maskvid.vae import losses
from maskvid.vae import model as vae_model

# name -> (AutoencoderKL kwargs beyond latent_channels=16 / linear_skip, batch, lr, CPU steps in 18 min)
# CPU steps: the old vae_tiny run (10,118), else 180-s screening runs on the idle machine x 6.36.
S4 = dict(channel_multipliers=(1,), space_to_depth=4)
VARIANTS = {
    'base 16x(1,2,4) nrb1': (dict(base_channels=16, channel_multipliers=(1, 2, 4)), 8, 2e-3, 10118),
    's2d4 64 nrb2': (dict(base_channels=64, num_res_blocks=2, **S4), 8, 2e-3, 19540),
    's2d4 96 nrb2': (dict(base_channels=96, num_res_blocks=2, **S4), 8, 2e-3, 12430),
    's2d4 64 nrb4': (dict(base_channels=64, num_res_blocks=4, **S4), 8, 2e-3, 13900),
    's2d4 64 nrb2 lr4e-3': (dict(base_channels=64, num_res_blocks=2, **S4), 8, 4e-3, 19540),
    's2d2 32x(1,2) nrb1': (dict(base_channels=32, channel_multipliers=(1, 2), space_to_depth=2), 8, 2e-3, 15000),
    's2d4 128 nrb2': (dict(base_channels=128, num_res_blocks=2, **S4), 8, 2e-3, 7000),
    's2d4 64 nrb2 bs16': (dict(base_channels=64, num_res_blocks=2, **S4), 16, 2e-3, 10800),
}
B = dict(base_channels=16, channel_multipliers=(1, 2, 4))
# Second sweep: the winning (old) architecture, how PSNR scales with steps, lr and batch.
TUNING = {
    'base 15k steps': (B, 8, 2e-3, 15000),
    'base 20k steps': (B, 8, 2e-3, 20000),
    'base lr 3e-3': (B, 8, 3e-3, 10100),
    'base lr 1e-3': (B, 8, 1e-3, 10100),
    'base bs4 16k steps': (B, 4, 2e-3, 16000),
}


def export(data_dir: str, out: str, frames_per_clip: int = 8):
  from maskvid.data import storage  # pylint: disable=g-import-not-at-top
  from maskvid.vae import pipeline as vae_pipeline  # pylint: disable=g-import-not-at-top
  src = storage.ClipSource(data_dir, 'train')
  t = np.asarray(src[0]['rgb']).shape[0]
  pick = np.linspace(0, t - 1, frames_per_clip).round().astype(int)
  tr = np.stack([np.asarray(src[i]['rgb'])[pick] for i in range(len(src))]).reshape(-1, 32, 32, 3)
  ev = {s: ((vae_pipeline.eval_frames(storage.ClipSource(data_dir, s), 128)[:, 0] + 1) * 127.5).round()
        .astype(np.uint8) for s in ('test', 'ood')}
  np.savez_compressed(out, train=tr, **ev)
  print('exported', tr.shape, {k: v.shape for k, v in ev.items()})


def psnr(a, b):
  a, b = (a + 1) / 2, (jnp.clip(b, -1, 1) + 1) / 2
  return float(jnp.mean(-10 * jnp.log10(jnp.mean((a - b) ** 2, axis=(1, 2, 3, 4)))))


def run_variant(kw, batch, lr, steps, data, seed=0):
  module = vae_model.AutoencoderKL(latent_channels=16, linear_skip=True, **kw)
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(b1=0.9, b2=0.99))
  sched = optax.warmup_cosine_decay_schedule(0.0, lr, 50, steps, 0.01 * lr)
  train = jnp.asarray(data['train'])
  params = module.init(jax.random.key(seed), jnp.zeros((1, 1, 32, 32, 3)))
  opt = tx.init(params)

  def step(params, opt, i, key):
    k1, k2 = jax.random.split(jax.random.fold_in(key, i))
    idx = jax.random.randint(k1, (batch,), 0, train.shape[0])
    x = (train[idx].astype(jnp.float32) / 127.5 - 1.0)[:, None]

    def loss_fn(p):
      recon, mean, logvar = module.apply(p, x, sample_posterior=True, rngs={'sample': k2})
      return losses.vae_loss(x, recon, mean, logvar, kl_weight=1e-6, reconstruction_loss='l2')[0]
    loss, g = jax.value_and_grad(loss_fn)(params)
    d, opt = tx.update(g, opt, params)
    return jax.tree.map(lambda p, u: p - sched(i) * u, params, d), opt, loss

  chunk = 100  # steps per dispatch: a tiny conv step is launch-bound on a GPU

  @jax.jit
  def steps_from(params, opt, i0, key):
    def body(j, carry):
      p, o, _ = carry
      return step(p, o, i0 + j, key)
    return jax.lax.fori_loop(0, chunk, body, (params, opt, jnp.float32(0)))

  key = jax.random.key(seed + 1)
  t0 = time.perf_counter()
  for i0 in range(0, steps, chunk):
    params, opt, loss = steps_from(params, opt, i0, key)
  loss = float(loss)
  secs = time.perf_counter() - t0
  rec = jax.jit(lambda p, x: module.apply(p, x)[0])
  out = {}
  for s in ('test', 'ood'):
    x = jnp.asarray(data[s]).astype(jnp.float32)[:, None] / 127.5 - 1.0
    out[s] = psnr(x, rec(params, x))
  n = sum(v.size for v in jax.tree.leaves(params))
  return dict(params=n, loss=loss, secs=secs, **out)


def main(argv):
  kv = dict(a.lstrip('-').split('=', 1) for a in argv[2:])
  if argv[1] == 'export':
    return export(kv['data'], kv['out'])
  data = dict(np.load(kv['frames']))
  only = kv.get('only', '')
  print(f"{jax.devices()[0].device_kind}; train frames {data['train'].shape}", flush=True)
  print(f"{'variant':<28} {'params':>8} {'batch':>5} {'lr':>7} {'steps':>6} {'secs':>6} "
        f"{'loss':>8} {'test dB':>8} {'ood dB':>7}", flush=True)
  table = TUNING if kv.get('set') == 'tuning' else VARIANTS
  for name, (kw, batch, lr, steps) in table.items():
    if only and only not in name:
      continue
    steps = max(100, int(steps * float(kv.get('scale', 1.0))) // 100 * 100)
    r = run_variant(kw, batch, lr, steps, data)
    print(f"{name:<28} {r['params']:>8,} {batch:>5} {lr:>7.0e} {steps:>6} {r['secs']:>6.1f} "
          f"{r['loss']:>8.5f} {r['test']:>8.2f} {r['ood']:>7.2f}", flush=True)


if __name__ == '__main__':
  main(sys.argv)
