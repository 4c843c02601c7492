"""Sweep of sharding layouts x rematerialisation policies for the diffusion train step.

Usage:
  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \\
      python -m maskvid.bench.layouts --config=configs/tiny.py
  python -m maskvid.bench.layouts --config=configs/pretrain.py --layouts=fsdp,fsdp_tensor \\
      --remat=dots,full --config.train.batch_size=32 --peak_tflops=989     # one 8-GPU node

Layouts over the N visible devices (config.mesh is overwritten per row; rules stay config.mesh.rules):
  dp           data=N                     params replicated, grads all-reduced
  fsdp         fsdp=N                     params/optimizer split on 'embed' (ZeRO-3 style)
  fsdp_tensor  fsdp=N/T, tensor=T         plus Megatron-style split of 'mlp' and 'heads'
               (T = --tensor, default 2)
Remat policies (config.model.remat): none | full | dots (save matmul outputs, recompute the rest).

Per row: median step time over --steps timed steps (after compilation and --warmup steps),
tokens/s, MFU = analytic model FLOPs (maskvid.model.model.flops_per_token: 6*P*N + attention,
recomputation not counted) / time / (peak x devices), HFU = XLA cost-analysis FLOPs of the
compiled step (recomputation counted) / time / peak, and per-device memory from XLA's memory
analysis of the compiled step (arguments + outputs - donated aliases + temporaries: what the step
needs, independent of what earlier rows left allocated). Device peaks: CPU 200 GFLOP/s
per device (measured f32 matmul), H100/H200 and TPU v4/v5p/v5e/v6e bf16 dense, or --peak_tflops.
"""
import statistics
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/tiny.py', 'Run config.', lock_config=True)
flags.DEFINE_list('layouts', ['dp', 'fsdp', 'fsdp_tensor'], 'Layouts to sweep.')
flags.DEFINE_list('remat', ['none', 'full', 'dots'], 'config.model.remat policies to sweep.')
flags.DEFINE_integer('tensor', 2, 'Tensor-parallel degree of the fsdp_tensor layout.')
flags.DEFINE_integer('steps', 5, 'Timed steps per row.')
flags.DEFINE_integer('warmup', 1, 'Untimed steps after compilation.')
flags.DEFINE_float('peak_tflops', 0.0, 'Per-device peak TFLOP/s for MFU (0: from the table).')

LAYOUTS = ('dp', 'fsdp', 'fsdp_tensor')
REMATS = ('none', 'full', 'dots')
from maskvid.bench.common import compiled_memory, compiled_step, device_peak, xla_flops
from maskvid.model import model as model_lib


def layout_mesh(layout: str, num_devices: int, tensor: int = 2) -> tuple[int, int, int]:
  """(data, fsdp, tensor) sizes of `layout` over `num_devices` devices."""
  if layout == 'dp':
    return num_devices, 1, 1
  if layout == 'fsdp':
    return 1, num_devices, 1
  if layout == 'fsdp_tensor':
    if tensor < 1 or num_devices % tensor:
      raise ValueError(f'--tensor={tensor} must divide the device count {num_devices}')
    return 1, num_devices // tensor, tensor
  raise ValueError(f'layout must be one of {LAYOUTS}, got {layout!r}')


def run_one(config, steps: int, warmup: int, peak_tflops: float = 0.0) -> dict:
  """Compiles and times the train step for one (mesh, remat) config; returns one table row."""
  import jax  # pylint: disable=g-import-not-at-top

  trainer, state, batch, compiled, compile_s = compiled_step(config)
  with trainer.context():
    for _ in range(warmup):
      state, metrics = compiled(state, batch)
    jax.block_until_ready(state)
    times = []
    for _ in range(steps):
      t0 = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)
  tokens = trainer.global_batch_size * model_lib.num_tokens(config)
  devices = list(trainer.mesh.devices.flat)
  peak, peak_label = device_peak(devices[0], peak_tflops)
  total_peak = peak * len(devices) if peak else None
  model_flops = model_lib.flops_per_token(config) * tokens
  hw_flops = xla_flops(compiled)
  # XLA's CPU/GPU cost analysis counts the per-device (partitioned) program.
  if hw_flops is not None:
    hw_flops *= len(devices)
  # The hardware does at least the model's FLOPs, so a smaller count is XLA's cost analysis
  # missing work: on GPU it does not see cuBLAS/cuDNN custom calls and counts a scanned layer
  # stack once (measured on an H200: 0.16% "HFU" beside 35% MFU). Report n/a, not a wrong number.
  if hw_flops is not None and hw_flops < 0.9 * model_flops:
    hw_flops = None
  return {
      'mesh': tuple(int(trainer.mesh.shape[a]) for a in ('data', 'fsdp', 'tensor')),
      'remat': config.model.remat,
      'compile_s': compile_s,
      'step_s': step_s,
      'step_s_min': min(times),
      'tokens_per_s': tokens / step_s,
      'mfu': model_flops / step_s / total_peak if total_peak else None,
      'hfu': hw_flops / step_s / total_peak if total_peak and hw_flops else None,
      'memory_per_device': (compiled_memory(compiled) or {}).get('total'),
      'loss': float(metrics['loss']),
      'devices': f'{len(devices)} x {getattr(devices[0], "device_kind", devices[0].platform)}',
      'peak_label': peak_label,
      'params': trainer.num_params,
      'tokens_per_step': tokens,
  }


def sweep(config, layouts, remats, *, tensor=2, steps=5, warmup=1, peak_tflops=0.0) -> list[dict]:
  """One row per (layout, remat); a row that fails (e.g. out of memory) records the error."""
  import copy  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  for r in remats:
    if r not in REMATS:
      raise ValueError(f'--remat entries must be in {REMATS}, got {r!r}')
  rows = []
  n = jax.device_count()
  for layout in layouts:
    mesh = layout_mesh(layout, n, tensor)
    for remat in remats:
      c = copy.deepcopy(config)
      c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh
      c.model.remat = remat
      logging.info('layout %s mesh %s remat %s ...', layout, mesh, remat)
      try:
        row = run_one(c, steps, warmup, peak_tflops)
      except Exception as e:  # pylint: disable=broad-except
        row = {'mesh': mesh, 'remat': remat, 'error': f'{type(e).__name__}: {str(e)[:120]}'}
      row['layout'] = layout
      rows.append(row)
      print(f'  done: {layout:<12} remat={remat:<5} ' + (
          row['error'] if 'error' in row else
          f"{1e3 * row['step_s']:.1f} ms/step, {row['tokens_per_s']:,.0f} tokens/s"), flush=True)
  return rows


def format_table(rows: list[dict]) -> str:
  def pct(x):
    return 'n/a' if x is None else f'{100 * x:.2f}%'

  def mib(x):
    return 'n/a' if x is None else f'{x / 2**20:,.1f}'
  head = (f"{'layout':<12} {'mesh d/f/t':<11} {'remat':<6} {'compile s':>9} {'step ms':>9} "
          f"{'min ms':>8} {'tokens/s':>10} {'MFU':>7} {'HFU':>7} {'MiB/dev':>9} {'loss':>7}")
  lines = [head, '-' * len(head)]
  for r in rows:
    mesh = '/'.join(str(x) for x in r['mesh'])
    if 'error' in r:
      lines.append(f"{r['layout']:<12} {mesh:<11} {r['remat']:<6} {r['error']}")
      continue
    lines.append(
        f"{r['layout']:<12} {mesh:<11} {r['remat']:<6} {r['compile_s']:>9.1f} "
        f"{1e3 * r['step_s']:>9.1f} {1e3 * r['step_s_min']:>8.1f} {r['tokens_per_s']:>10,.0f} "
        f"{pct(r['mfu']):>7} {pct(r['hfu']):>7} {mib(r['memory_per_device']):>9} "
        f"{r['loss']:>7.4f}")
  ok = [r for r in rows if 'error' not in r]
  if ok:
    lines.append(f"devices: {ok[0]['devices']}; params {ok[0]['params']:,}; "
                 f"tokens/step {ok[0]['tokens_per_step']:,}; peak {ok[0]['peak_label']}")
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  rows = sweep(FLAGS.config, FLAGS.layouts, FLAGS.remat, tensor=FLAGS.tensor, steps=FLAGS.steps,
               warmup=FLAGS.warmup, peak_tflops=FLAGS.peak_tflops)
  print(format_table(rows))


if __name__ == '__main__':
  app.run(main)
