"""Benchmark of the masked sampler against the model's own forward pass (random-init params).

Usage:
  python -m maskvid.bench.sampler --config=configs/tiny.py
  python -m maskvid.bench.sampler --config=configs/tiny.py --batch=8 --steps=25,50 \\
      --solvers=euler,heun,ancestral --repeats=5

For the config's model and latent grid (maskvid.model.model.latent_grid), a batch of clips with
about half the tokens known, it times
  * one jitted forward pass `apply_fn(params, x_t, t)` (best of --repeats),
  * `sampler.complete` per solver and step count (best of --repeats, after compilation),
and prints one table: the sampler time, the ideal time `model calls x forward` (Heun makes
2 * steps - 1 calls; a guided call runs on a doubled batch, so its reference is the forward pass
on 2B clips; `passes` counts it twice), their ratio (the sampler's overhead: noise draws, masking,
the scan; target < 1.10), the same ratio in process CPU time (steadier on a shared host) and
clips/s. Each row times the sampler and its reference forward pass
interleaved, best of --repeats, which keeps the ratio usable on a shared, loaded CPU. No
checkpoint is needed.
"""
import time

from absl import app
from absl import flags
from ml_collections import config_flags
from maskvid.model import model as model_lib
from maskvid.sampling import masks
from maskvid.sampling import sampler

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/tiny.py', 'Run config.', lock_config=True)
flags.DEFINE_integer('batch', 0, 'Clips per sampler call (0: config.sample.preview_clips).')
flags.DEFINE_list('steps', ['25', '50'], 'Step counts to time.')
flags.DEFINE_list('solvers', ['euler', 'heun', 'ancestral'], 'Solvers to time.')
flags.DEFINE_float('guidance', 2.0, 'Also time Euler at the first step count with this guidance '
                   '(1: skip).')
flags.DEFINE_float('renoise_at', 0.5, 'Also time Euler with this renoise_at (0: skip).')
flags.DEFINE_integer('repeats', 5, 'Timed calls per row (the best is reported).')


def best_time(fn, repeats: int) -> float:
  """Seconds of the fastest of `repeats` calls (fn blocks until its result is ready)."""
  return best_times(fn, repeats)[0]


def best_times(fn, repeats: int) -> tuple[float, float]:
  """(best wall seconds, best process CPU seconds) over `repeats` calls.

  CPU time (all threads of this process) is the steadier measure of work on a shared, loaded
  CPU host, where wall time also counts other jobs; on an accelerator only wall time means much.
  """
  wall, cpu = float('inf'), float('inf')
  for _ in range(repeats):
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    wall = min(wall, time.perf_counter() - w0)
    cpu = min(cpu, time.process_time() - c0)
  return wall, cpu


def _print_table(config, shape, known_fraction, n_params, fwd, fwd_compile, rows):
  import jax  # pylint: disable=g-import-not-at-top
  batch = shape[0]
  dev = jax.devices()[0]
  print(f'\nSampler benchmark: {dev.platform} ({getattr(dev, "device_kind", "")}), '
        f'{jax.device_count()} device(s); model width={config.model.width} '
        f'depth={config.model.depth} patch={tuple(config.model.patch_size)} '
        f'dtype={config.model.dtype}, {n_params / 1e6:.2f}M params')
  print(f'latents per call [B,T,h,w,c] = {list(shape)}, ~{known_fraction:.0%} tokens known; '
        f'one forward pass (jitted, best of {FLAGS.repeats}): {fwd * 1e3:.2f} ms '
        f'(compile {fwd_compile:.1f} s)\n')
  header = (f'{"solver":<22}{"steps":>6}{"passes":>7}{"compile s":>10}{"sample ms":>11}'
            f'{"calls x fwd ms":>16}{"ratio":>7}{"cpu ratio":>10}{"ms/clip":>9}'
            f'{"clips/s":>9}')
  print(header)
  print('-' * len(header))
  for name, n, nfe, compile_s, sample, ideal, ratio, cpu_ratio, cps in rows:
    print(f'{name:<22}{n:>6}{nfe:>7}{compile_s:>10.1f}{sample * 1e3:>11.1f}{ideal * 1e3:>16.1f}'
          f'{ratio:>7.3f}{cpu_ratio:>10.3f}{sample * 1e3 / batch:>9.2f}{cps:>9.2f}')
  print('\nratio = sampler wall time / (model calls x one forward pass at that batch); '
        'cpu ratio: the same with process CPU time (steadier on a loaded host); target < 1.10.')


def main(argv):
  del argv
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top


  config = FLAGS.config
  batch = FLAGS.batch or int(config.sample.preview_clips)
  T, h, w, c = model_lib.latent_grid(config)
  shape = (batch, T, h, w, c)
  module = model_lib.build_model(config)
  apply_fn = model_lib.make_apply_fn(module)
  params = nn.unbox(jax.jit(module.init)(jax.random.key(0), jnp.zeros(shape),
                                         jnp.zeros(shape[:-1]))['params'])
  rs = np.random.RandomState(0)
  known = jnp.asarray(rs.normal(size=shape), jnp.float32)
  pt, ph, pw = config.model.patch_size
  # Half the patches known (masks are patch-aligned, as in training).
  patch_mask = rs.uniform(size=(batch, T // pt, h // ph, w // pw)) < 0.5
  mask = jnp.asarray(patch_mask.repeat(pt, 1).repeat(ph, 2).repeat(pw, 3))
  mask = masks.align_to_patches(mask, config.model.patch_size)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))

  forward = jax.jit(apply_fn)
  inputs = {}  # batch multiple -> (x_t, t): guided sampling runs the model on a doubled batch
  for mult in (1, 2):
    inputs[mult] = (jnp.concatenate([known] * mult), jnp.concatenate([jnp.where(mask, 0., .5)] *
                                                                       mult))
  t0 = time.perf_counter()
  forward(params, *inputs[1]).block_until_ready()
  fwd_compile = time.perf_counter() - t0
  fwd = best_time(lambda: forward(params, *inputs[1]).block_until_ready(), FLAGS.repeats)

  rows = []
  step_counts = [int(s) for s in FLAGS.steps]
  runs = [(solver, n, 0.0, 1.0) for n in step_counts for solver in FLAGS.solvers]
  if FLAGS.guidance != 1.0:
    runs.append(('euler', step_counts[0], 0.0, float(FLAGS.guidance)))
  if FLAGS.renoise_at > 0:  # (guidance with renoise mixes batch sizes: not timed)
    runs.append(('euler', step_counts[0], float(FLAGS.renoise_at), 1.0))
  rng = jax.random.key(1)
  for solver, n, renoise_at, guidance in runs:
    run = lambda: sampler.complete(apply_fn, params, known, mask, rng, num_steps=n,  # pylint: disable=cell-var-from-loop
                                   solver=solver, renoise_at=renoise_at,  # pylint: disable=cell-var-from-loop
                                   guidance=guidance).block_until_ready()  # pylint: disable=cell-var-from-loop
    t0 = time.perf_counter()
    run()
    compile_s = time.perf_counter() - t0
    mult = 1 if guidance == 1.0 else 2
    fwd_call = lambda: forward(params, *inputs[mult]).block_until_ready()  # pylint: disable=cell-var-from-loop
    fwd_call()
    # Interleaved best-of: the sampler and its reference forward pass see the same machine load.
    sample, fwd_ref, sample_cpu, fwd_cpu = (float('inf'),) * 4
    for _ in range(FLAGS.repeats):
      w, c = best_times(run, 1)
      sample, sample_cpu = min(sample, w), min(sample_cpu, c)
      w, c = best_times(fwd_call, 1)
      fwd_ref, fwd_cpu = min(fwd_ref, w), min(fwd_cpu, c)
    calls = sampler.num_function_evals(n, solver, 1.0, renoise_at)  # model calls per sample
    nfe = sampler.num_function_evals(n, solver, guidance, renoise_at)  # in single-batch passes
    ideal = calls * fwd_ref if mult == 1 or not renoise_at else float('nan')
    cpu_ratio = sample_cpu / (calls * fwd_cpu)
    name = solver + (f' w={guidance:g}' if guidance != 1.0 else '') + (
        f' renoise={renoise_at:g}' if renoise_at else '')
    rows.append((name, n, nfe, compile_s, sample, ideal, sample / ideal, cpu_ratio,
                 batch / sample))
    print(f'  done: {name} {n} steps ({sample:.3f} s/call)', flush=True)

  _print_table(config, shape, float(mask.mean()), n_params, fwd, fwd_compile, rows)


if __name__ == '__main__':
  app.run(main)
