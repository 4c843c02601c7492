"""What every benchmark table (and the pod compile job) measures, written once: peak FLOP/s per
device (for MFU), XLA's FLOP count, a compiled program's bytes per device, the runtime peak per
device, and the compiled train step on random latents."""
import resource
import time

from maskvid.diffusion import trainer as trainer_lib

CPU_PEAK = 200e9                                  # f32 matmul, measured on the dev machine (2 cores)
ACCEL_PEAKS = {'H100': 989e12, 'H200': 989e12,    # bf16 dense
               'TPU v4': 275e12, 'TPU v5p': 459e12, 'TPU v5 lite': 197e12, 'TPU v6': 918e12}


def device_peak(device, override_tflops: float = 0.0) -> tuple[float | None, str]:
  """Per-device peak FLOP/s and a label saying where the number came from."""
  if override_tflops > 0:
    return override_tflops * 1e12, f'{override_tflops:g} TFLOP/s (--peak_tflops)'
  if device.platform == 'cpu':
    return CPU_PEAK, '200 GFLOP/s per CPU device (f32 matmul, measured)'
  kind = getattr(device, 'device_kind', '')
  for name, peak in ACCEL_PEAKS.items():
    if name in kind:
      return peak, f'{peak / 1e12:g} TFLOP/s ({name} bf16 dense)'
  return None, f'unknown for {kind!r}: pass --peak_tflops'


def xla_flops(compiled) -> float | None:
  """FLOPs of one call of the (per-device) compiled program from XLA's cost analysis."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or 'flops' not in cost:
    return None
  return float(cost['flops'])


def compiled_memory(compiled) -> dict | None:
  """Bytes per device of a compiled program (XLA `memory_analysis`): argument, output, alias,
  temp, code and `total` (donated inputs counted once, code included); None if unavailable."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  out = dict(argument=int(m.argument_size_in_bytes), output=int(m.output_size_in_bytes),
             alias=int(m.alias_size_in_bytes), temp=int(m.temp_size_in_bytes),
             code=int(m.generated_code_size_in_bytes))
  out['total'] = out['argument'] + out['output'] - out['alias'] + out['temp'] + out['code']
  return out


def peak_memory(devices) -> tuple[float, str]:
  """Runtime peak bytes per device: the allocator's peak_bytes_in_use (max over `devices`) where
  the backend keeps one; on CPU, which does not, this process's max RSS divided by the number of
  local devices (all of them share the process)."""
  stats = [d.memory_stats() for d in devices]
  if all(s and 'peak_bytes_in_use' in s for s in stats):
    return float(max(s['peak_bytes_in_use'] for s in stats)), 'device peak_bytes_in_use (max)'
  rss = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
  return rss / max(len(devices), 1), f'process max RSS / {len(devices)} devices'


def compiled_step(config):
  """-> (trainer, state, batch of random latents, the compiled train step, compile seconds)."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  trainer = trainer_lib.Trainer(config)
  state = trainer.init(int(config.seed))
  batch = np.random.default_rng(0).standard_normal(
      (trainer.local_batch_size, *trainer.latent_shape), dtype=np.float32)
  batch = trainer.put_batch(batch)
  t0 = time.perf_counter()
  compiled = trainer.lower_step(state, batch).compile()
  return trainer, state, batch, compiled, time.perf_counter() - t0
