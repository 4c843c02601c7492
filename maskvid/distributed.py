"""jax.distributed wiring: auto-detected on Cloud TPU / SLURM, explicit flags elsewhere."""
import os

import jax
from absl import logging


def initialize(config) -> None:
  """Calls jax.distributed.initialize() when this run spans several processes.

  Explicit: config.distributed.coordinator_address + num_processes + process_id.
  Automatic: Cloud TPU pods and SLURM (JAX's own cluster detection) when
  MASKVID_DISTRIBUTED=auto is set by the launch scripts. Otherwise single process.
  """
  d = config.distributed
  if d.coordinator_address:
    if d.num_processes < 1 or d.process_id < 0:
      raise ValueError('config.distributed.num_processes and process_id must be set with '
                       f'coordinator_address={d.coordinator_address!r}')
    kwargs = {}
    if d.local_device_ids:
      kwargs['local_device_ids'] = [int(i) for i in d.local_device_ids.split(',')]
    jax.distributed.initialize(d.coordinator_address, d.num_processes, d.process_id, **kwargs)
  elif os.environ.get('MASKVID_DISTRIBUTED') == 'auto':
    jax.distributed.initialize()
  else:
    return
  logging.info('jax.distributed: process %d/%d, %d local / %d global devices',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
