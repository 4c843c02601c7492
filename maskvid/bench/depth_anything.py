"""Cost of the Depth Anything V2 port: FLOPs, frames/s and memory at the network's input size.

Usage:
  python -m maskvid.bench.depth_anything                  # Small at 518 x 518, 4 frames a call
  python -m maskvid.bench.depth_anything --variants=vits,vitb --size=518 --frames=2 --steps=2
  python -m maskvid.bench.depth_anything --tpu=v5e-4      # + per-chip compiled memory on a TPU

Random weights (the cost does not depend on them). Per variant one table row:
  GFLOP/frame   XLA's cost analysis of the compiled forward, divided by the frames per call
  compile s     lower + compile of the jitted forward
  frames/s      timed calls after one warm-up call (network only: no resize, no cv2)
  estimator     frames/s of `DepthAnythingEstimator.estimate` on 480 x 640 uint8 frames (518 x 686
                network input: OpenCV preprocessing, the network, the resize back, the depth rule)
  compiled MB   XLA's memory analysis of the forward (arguments + outputs + temporaries + code)
  peak MB       runtime peak (`common.peak_memory`: on CPU the process's max RSS)
With --tpu=SLICE, a second table: the same forward compiled (compile-only, libtpu; nothing runs)
for that Cloud TPU slice, `--frames` frames per chip, data parallel: XLA's FLOPs and memory
analysis per chip.
"""
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from maskvid import sharding as sharding_lib
from maskvid import topology
from maskvid.bench import common
from maskvid.depth import depth_anything as da

FLAGS = flags.FLAGS
flags.DEFINE_list('variants', ['vits'], 'Variants to measure (vits, vitb, vitl).')
flags.DEFINE_integer('size', 518, 'Square network input side (a multiple of 14).')
flags.DEFINE_integer('frames', 4, 'Frames per call.')
flags.DEFINE_integer('steps', 3, 'Timed calls (after one warm-up call).')
flags.DEFINE_string('tpu', '', 'Also compile for this Cloud TPU slice (e.g. v5e-4; compile-only).')


def _timed(fn, steps: int) -> float:
  jax.block_until_ready(fn())
  t = time.perf_counter()
  for _ in range(steps):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - t) / steps


def bench(config: da.Config, size: int, frames: int, steps: int) -> dict:
  model = da.DepthAnythingV2(config)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((frames, size, size, 3)), jnp.float32)
  params = jax.jit(model.init)(jax.random.key(0), x[:1])
  t = time.perf_counter()
  compiled = jax.jit(model.apply).lower(params, x).compile()
  compile_s = time.perf_counter() - t
  call_s = _timed(lambda: compiled(params, x), steps)
  est = da.DepthAnythingEstimator(config, params, input_size=size, batch_size=frames)
  rgb = np.random.default_rng(1).integers(0, 256, (frames, 480, 640, 3), dtype=np.uint8)
  est_s = _timed(lambda: est.estimate(rgb), steps)
  flops, mem = common.xla_flops(compiled), common.compiled_memory(compiled)
  peak, peak_label = common.peak_memory(jax.local_devices())
  return dict(params=sum(v.size for v in jax.tree.leaves(params)),
              gflops=flops / frames / 1e9 if flops else float('nan'), compile_s=compile_s,
              fps=frames / call_s, est_fps=frames / est_s,
              compiled_mb=mem['total'] / 2**20 if mem else float('nan'),
              peak_mb=peak / 2**20, peak_label=peak_label)


def tpu_compiled(config: da.Config, size: int, frames: int, slice_name: str) -> dict:
  """Per-chip FLOPs and compiled memory of the forward on a TPU slice (compile-only devices)."""
  slice_ = topology.parse(slice_name)
  mesh = sharding_lib.data_parallel_mesh(topology.compile_only_devices(slice_))
  model = da.DepthAnythingV2(config)
  one = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  params = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding_lib.replicated(mesh)),
      jax.eval_shape(model.init, jax.random.key(0), one))
  x = jax.ShapeDtypeStruct((frames * slice_.chips, size, size, 3), jnp.float32,
                           sharding=sharding_lib.batch_sharding(mesh))
  t = time.perf_counter()
  compiled = jax.jit(model.apply).lower(params, x).compile()
  compile_s = time.perf_counter() - t
  flops, mem = common.xla_flops(compiled), common.compiled_memory(compiled)
  return dict(chip=slice_.chip.device_kind, chips=slice_.chips, compile_s=compile_s,
              gflops=flops / frames / 1e9 if flops else float('nan'),
              mem={k: v / 2**20 for k, v in (mem or {}).items()})


def main(argv):
  del argv
  print(f'device: {jax.devices()[0].device_kind} x {jax.local_device_count()}, input '
        f'{FLAGS.size}x{FLAGS.size}, {FLAGS.frames} frames per call, random weights')
  print(f"{'variant':<8} {'params':>12} {'GFLOP/frame':>12} {'compile s':>10} {'frames/s':>9} "
        f"{'estimator':>10} {'compiled MB':>12} {'peak MB':>8}")
  for name in FLAGS.variants:
    r = bench(da.CONFIGS[name], FLAGS.size, FLAGS.frames, FLAGS.steps)
    print(f"{name:<8} {r['params']:>12,} {r['gflops']:>12.1f} {r['compile_s']:>10.1f} "
          f"{r['fps']:>9.2f} {r['est_fps']:>10.2f} {r['compiled_mb']:>12.0f} "
          f"{r['peak_mb']:>8.0f}", flush=True)
  print(f"GFLOP/frame: XLA cost analysis of the compiled forward; peak MB: {r['peak_label']}")
  if FLAGS.tpu:
    print(f'\n{FLAGS.tpu} (compile-only), {FLAGS.frames} frames per chip, per chip:')
    print(f"{'variant':<8} {'GFLOP/frame':>12} {'compile s':>10} {'argument MB':>12} "
          f"{'temp MB':>8} {'code MB':>8} {'total MB':>9}")
    for name in FLAGS.variants:
      t = tpu_compiled(da.CONFIGS[name], FLAGS.size, FLAGS.frames, FLAGS.tpu)
      m = t['mem']
      print(f"{name:<8} {t['gflops']:>12.1f} {t['compile_s']:>10.1f} "
            f"{m.get('argument', float('nan')):>12.0f} {m.get('temp', float('nan')):>8.0f} "
            f"{m.get('code', float('nan')):>8.0f} {m.get('total', float('nan')):>9.0f}")


if __name__ == '__main__':
  app.run(main)
