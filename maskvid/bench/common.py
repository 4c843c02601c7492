"""What every benchmark table needs: peak FLOP/s per device (for MFU), XLA's FLOP count, and the
compiled train step on random latents."""
import time

from maskvid.train import step as step_lib

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


def compiled_step(config):
  """-> (trainer, state, batch of random latents, the compiled train step, compile seconds)."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  trainer = step_lib.Trainer(config)
  state = trainer.init(int(config.seed))
  batch = np.random.default_rng(0).standard_normal(
      (trainer.local_batch_size, *trainer.latent_shape), dtype=np.float32)
  batch = trainer.put_batch(batch)
  t0 = time.perf_counter()
  compiled = trainer.lower_step(state, batch).compile()
  return trainer, state, batch, compiled, time.perf_counter() - t0
