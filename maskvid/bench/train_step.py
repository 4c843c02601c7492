"""Benchmark of the sharded diffusion train step on synthetic random latents (no dataset).

Usage:
  python -m maskvid.bench.train_step --config=configs/tiny.py
  python -m maskvid.bench.train_step --config=configs/tiny.py --config.train.batch_size=16 \\
      --config.model.width=256 --steps=20
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m maskvid.bench.train_step \\
      --config=configs/tiny.py --config.mesh.fsdp=2 --config.mesh.tensor=2

Prints one table: params, tokens/step, compile time, step time, tokens/s, FLOPs/step (XLA cost
analysis of the compiled step and the analytic 6*P*N + attention count of
maskvid.model.model.flops_per_token), MFU against a stated peak, and peak memory.

Peaks: CPU 200 GFLOP/s for the whole host (f32 matmul throughput measured on the 2-core
development machine; forced host devices share it; override with --peak_tflops), NVIDIA
H100/H200 989 TFLOP/s per device (bf16 dense tensor cores; a float32 model is still rated
against it), other GPUs/TPUs: pass --peak_tflops (per device). XLA's cost analysis of an
SPMD-partitioned step counts one device's program, so it is multiplied by the device count.
"""
import statistics
import time

from absl import app
from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/tiny.py', 'Run config.', lock_config=True)
flags.DEFINE_integer('steps', 10, 'Timed steps (after warmup).')
flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
flags.DEFINE_float('peak_tflops', 0.0, 'Per-device peak TFLOP/s for MFU (0: from the table).')

from maskvid.bench.common import compiled_step, device_peak, peak_memory, xla_flops
from maskvid.model import model as model_lib


def run(config, steps: int, warmup: int, peak_tflops: float = 0.0) -> dict:
  """Compiles and times the train step; returns the table's numbers."""
  import jax  # pylint: disable=g-import-not-at-top

  trainer, state, batch, compiled, compile_s = compiled_step(config)
  for _ in range(warmup):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(state)
  times = []
  cpu0 = time.process_time()
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
  cpu_s = (time.process_time() - cpu0) / max(steps, 1)   # host CPU-seconds, all threads
  step_s = statistics.median(times)
  tokens_per_example = model_lib.num_tokens(config)
  tokens = trainer.global_batch_size * tokens_per_example
  analytic = model_lib.flops_per_token(config) * tokens
  devices = list(trainer.mesh.devices.flat)
  measured = xla_flops(compiled)
  if measured is not None:
    # The SPMD-partitioned module is one device's program: scale to the whole mesh.
    measured *= len(devices)
  peak, peak_label = device_peak(devices[0], peak_tflops)
  if devices[0].platform == 'cpu' and not peak_tflops:
    # Forced host devices (--xla_force_host_platform_device_count) share the same cores.
    total_peak, peak_label = peak, peak_label + ' for the whole host'
  else:
    total_peak = peak * len(devices) if peak else None
    peak_label = f'{peak_label} x {len(devices)} devices'

  mem, mem_label = peak_memory(devices)
  return {
      'device': f'{len(devices)} x {devices[0].platform}:{getattr(devices[0], "device_kind", "")}',
      'mesh': dict(trainer.mesh.shape),
      'params': trainer.num_params,
      'batch': trainer.global_batch_size,
      'tokens_per_example': tokens_per_example,
      'tokens_per_step': tokens,
      'compile_s': compile_s,
      'step_s': step_s,
      'step_s_min': min(times),
      'cpu_s_per_step': cpu_s,
      'tokens_per_s': tokens / step_s,
      'xla_flops_per_step': measured,
      'analytic_flops_per_step': analytic,
      'peak_flops': total_peak,
      'peak_label': peak_label,
      'mfu_analytic': analytic / step_s / total_peak if total_peak else None,
      'mfu_xla': measured / step_s / total_peak if total_peak and measured else None,
      'peak_memory_bytes': mem,
      'memory_label': mem_label,
      'final_loss': float(metrics['loss']),
  }


def format_table(r: dict) -> str:
  def pct(x):
    return 'n/a' if x is None else f'{100 * x:.2f} %'

  def flops(x):
    return 'n/a' if x is None else f'{x / 1e9:.3f} GFLOP'
  rows = [
      ('device', r['device']),
      ('mesh', ', '.join(f'{k}={v}' for k, v in r['mesh'].items())),
      ('params', f"{r['params']:,}"),
      ('batch x tokens/example', f"{r['batch']} x {r['tokens_per_example']}"),
      ('tokens/step', f"{r['tokens_per_step']:,}"),
      ('compile time', f"{r['compile_s']:.1f} s"),
      ('step time (median / min)', f"{1e3 * r['step_s']:.1f} / {1e3 * r['step_s_min']:.1f} ms"),
      ('host CPU time/step (all threads)', f"{1e3 * r['cpu_s_per_step']:.1f} ms"),
      ('tokens/s', f"{r['tokens_per_s']:,.0f}"),
      ('FLOPs/step (XLA cost analysis x devices)', flops(r['xla_flops_per_step'])),
      ('FLOPs/step (analytic 6PN + attn)', flops(r['analytic_flops_per_step'])),
      ('peak', r['peak_label']),
      ('MFU (analytic / XLA FLOPs)', f"{pct(r['mfu_analytic'])} / {pct(r['mfu_xla'])}"),
      ('peak memory', f"{r['peak_memory_bytes'] / 2**20:,.1f} MiB ({r['memory_label']})"),
      ('loss after timed steps', f"{r['final_loss']:.4f}"),
  ]
  width = max(len(k) for k, _ in rows)
  line = '-' * (width + 40)
  return '\n'.join([line] + [f'{k:<{width}}  {v}' for k, v in rows] + [line])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  print(format_table(run(FLAGS.config, FLAGS.steps, FLAGS.warmup, FLAGS.peak_tflops)))


if __name__ == '__main__':
  app.run(main)
