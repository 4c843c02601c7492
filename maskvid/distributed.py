"""Multi-process runtime: `jax.distributed` set-up, process-0 helpers, host-to-device prefetch.

One maskvid run = one Python process per host (TPU VM worker, GPU node, or GPU). Every process
runs the same program; `jax.distributed.initialize()` joins them into one global device list, the
mesh spans all of it, each process feeds its own slice of the batch (grain shards by
`jax.process_index()`), and only process 0 writes metrics, pictures and logs.

How the processes find each other (`initialize`, called by `maskvid.main` before any job):

  explicit   `config.distributed.coordinator_address` (+ `num_processes`, `process_id`, optional
             `local_device_ids`), e.g. `--config.distributed.coordinator_address=10.0.0.1:8476`.
             Used by `launch/slurm_gpu.sbatch` and `launch/multinode_gpu.sh`.
  auto       `MASKVID_DISTRIBUTED=auto`, or a detected multi-process cluster: a Cloud TPU slice with
             several workers (`TPU_WORKER_HOSTNAMES` lists >1 host, or `MEGASCALE_*` multislice),
             a SLURM step with `SLURM_NTASKS > 1`, or Open MPI `mpirun -n >1`. JAX's own cluster
             detection then fills in coordinator, process count and id. Used by `launch/tpu_pod.sh`.
  single     anything else (one process, all local devices). `MASKVID_DISTRIBUTED=off` forces it.
"""
from __future__ import annotations

import collections
import itertools
import os
from typing import Any, Iterable, Iterator, Mapping

import jax
import numpy as np
from absl import logging

ENV_VAR = 'MASKVID_DISTRIBUTED'
_MODES = ('auto', 'off', '')


def _int_env(environ: Mapping[str, str], key: str, default: int = 0) -> int:
  try:
    return int(environ.get(key, default))
  except ValueError:
    return default


def detect_cluster(environ: Mapping[str, str] | None = None) -> str | None:
  """Names the multi-process cluster this process runs in, or None for a single process.

  Only environments where JAX's `jax.distributed.initialize()` can fill in every argument by
  itself count, and only when they actually span more than one process (a one-task SLURM job or
  a single-host TPU VM needs no coordinator).

  Returns:
    'tpu' | 'slurm' | 'ompi' | None.
  """
  env = os.environ if environ is None else environ
  hosts = [h for h in env.get('TPU_WORKER_HOSTNAMES', '').split(',') if h.strip()]
  if len(hosts) > 1 or _int_env(env, 'MEGASCALE_NUM_SLICES', 1) > 1:
    return 'tpu'
  slurm_keys = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_PROCID', 'SLURM_LOCALID')
  if all(k in env for k in slurm_keys) and _int_env(env, 'SLURM_NTASKS', 1) > 1:
    return 'slurm'
  if 'OMPI_MCA_orte_hnp_uri' in env and _int_env(env, 'OMPI_COMM_WORLD_SIZE', 1) > 1:
    return 'ompi'
  return None


def resolve_mode(config, environ: Mapping[str, str] | None = None) -> str:
  """'explicit' | 'auto' | 'single': how `initialize` will set up this process (pure; no JAX calls).

  Raises:
    ValueError: on an incomplete explicit config or an unknown MASKVID_DISTRIBUTED value.
  """
  env = os.environ if environ is None else environ
  d = config.distributed
  flag = env.get(ENV_VAR, '').strip().lower()
  if flag not in _MODES:
    raise ValueError(f'{ENV_VAR} must be one of {_MODES[:2]} or unset, got {flag!r}')
  if d.coordinator_address:
    if ':' not in d.coordinator_address:
      raise ValueError('config.distributed.coordinator_address must be HOST:PORT, got '
                       f'{d.coordinator_address!r}')
    if d.num_processes < 1 or not 0 <= d.process_id < d.num_processes:
      raise ValueError(
          'with config.distributed.coordinator_address set, num_processes must be >= 1 and '
          f'0 <= process_id < num_processes; got num_processes={d.num_processes}, '
          f'process_id={d.process_id}')
    return 'explicit'
  if d.num_processes > 1 or d.process_id >= 0:
    raise ValueError('config.distributed.num_processes/process_id were set but '
                     'coordinator_address is empty; set all three (or none, for auto-detection)')
  if flag == 'off':
    return 'single'
  if flag == 'auto' or detect_cluster(env) is not None:
    return 'auto'
  return 'single'


def _parse_device_ids(spec: str) -> list[int]:
  try:
    return [int(i) for i in spec.split(',') if i.strip()]
  except ValueError:
    raise ValueError('config.distributed.local_device_ids must be comma-separated integers '
                     f'like "0,1,2,3", got {spec!r}') from None


def initialize(config) -> str:
  """Joins this process to the multi-process JAX runtime when the run spans several processes.

  Must run before any JAX computation (jax.devices() included). Idempotent: a second call, or a
  call after someone else initialised jax.distributed, does nothing.

  Returns:
    The mode used: 'explicit' | 'auto' | 'single'.
  """
  mode = resolve_mode(config)
  if mode == 'single':
    return mode
  if jax.distributed.is_initialized():
    logging.info('jax.distributed already initialised; leaving it as is')
    return mode
  if mode == 'explicit':
    d = config.distributed
    # Explicit flags win over the environment: without 'deactivate', JAX inside a SLURM/MPI task
    # would still narrow the process to GPU $SLURM_LOCALID, breaking one-process-per-node runs.
    kwargs = {'cluster_detection_method': 'deactivate'}
    if d.local_device_ids:
      kwargs['local_device_ids'] = _parse_device_ids(d.local_device_ids)
    logging.info('jax.distributed.initialize(coordinator=%s, num_processes=%d, process_id=%d)',
                 d.coordinator_address, d.num_processes, d.process_id)
    jax.distributed.initialize(d.coordinator_address, d.num_processes, d.process_id, **kwargs)
  else:
    logging.info('jax.distributed.initialize() with cluster auto-detection (detected: %s)',
                 detect_cluster() or f'{ENV_VAR}=auto')
    jax.distributed.initialize()
  logging.info('jax.distributed: process %d/%d, %d local / %d global devices (%s)',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.default_backend())
  return mode


def is_main_process() -> bool:
  """True on the one process (index 0) that writes metrics, pictures, configs and logs."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Barrier across processes (no-op with one process), e.g. before reading what process 0 wrote."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def host_local_batch_size(global_batch_size: int) -> int:
  """Examples each process loads per step: global / process_count, with a clear error if uneven."""
  n = jax.process_count()
  if global_batch_size % n:
    raise ValueError(f'global batch size {global_batch_size} must be divisible by the number of '
                     f'processes ({n})')
  return global_batch_size // n


def to_global(batch: Any, sharding: Any) -> Any:
  """Process-local numpy batch -> global jax.Arrays laid out by `sharding`.

  Args:
    batch: pytree of host arrays; leading dim is this process's share of the global batch
      (e.g. `frames [B / process_count, T, H, W, 3]`).
    sharding: one `jax.sharding.Sharding` for every leaf, or a pytree of them matching `batch`.
  Returns:
    pytree of `jax.Array` with global leading dim `B`. With one process this equals
    `jax.device_put(batch, sharding)`.
  """
  if isinstance(sharding, jax.sharding.Sharding):
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                        batch)
  return jax.tree.map(lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x)),
                      batch, sharding)


def prefetch_to_device(iterator: Iterable[Any], sharding: Any, size: int = 2) -> Iterator[Any]:
  """Keeps `size` batches in flight to the devices ahead of the train step.

  Each host batch is turned into a global sharded array (`to_global`) as soon as it is pulled;
  the transfer is asynchronous, so while step k runs, batches k+1..k+size are already being
  copied host->device. `size=2` hides the copy behind one step; more only costs device memory.

  Args:
    iterator: yields pytrees of per-process numpy arrays (the grain loader output).
    sharding: batch sharding (e.g. `NamedSharding(mesh, P(('data', 'fsdp')))`), or a pytree.
    size: batches queued on device (>= 1).
  Yields:
    pytrees of global `jax.Array`s, in the iterator's order.
  """
  if size < 1:
    raise ValueError(f'prefetch_to_device: size must be >= 1, got {size}')
  queue = collections.deque()
  it = iter(iterator)

  def enqueue(n):
    for batch in itertools.islice(it, n):
      queue.append(to_global(batch, sharding))

  enqueue(size)
  while queue:
    batch = queue.popleft()
    enqueue(1)  # refill before handing out, so `size` transfers overlap the consumer's step
    yield batch
