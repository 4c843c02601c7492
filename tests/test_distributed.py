"""maskvid.distributed: mode resolution, cluster detection, prefetch; real multi-process training."""
import jax
import numpy as np
import pytest

from configs import default
from maskvid import distributed


def _config(**dist):
  c = default.get_config()
  for k, v in dist.items():
    c.distributed[k] = v
  return c


@pytest.mark.parametrize('env,expected', [
    ({}, None),
    ({'TPU_WORKER_HOSTNAMES': 'w-0'}, None),                       # single-host TPU VM
    ({'TPU_WORKER_HOSTNAMES': 'w-0,w-1,w-2,w-3'}, 'tpu'),
    ({'MEGASCALE_NUM_SLICES': '2'}, 'tpu'),
    ({'SLURM_JOB_ID': '1', 'SLURM_STEP_NODELIST': 'n1', 'SLURM_PROCID': '0', 'SLURM_LOCALID': '0',
      'SLURM_NTASKS': '1'}, None),                                  # one task: nothing to join
    ({'SLURM_JOB_ID': '1', 'SLURM_STEP_NODELIST': 'n[1-2]', 'SLURM_PROCID': '3',
      'SLURM_LOCALID': '1', 'SLURM_NTASKS': '4'}, 'slurm'),
    ({'SLURM_JOB_ID': '1', 'SLURM_NTASKS': '4'}, None),             # sbatch script, not a step
    ({'OMPI_MCA_orte_hnp_uri': 'x', 'OMPI_COMM_WORLD_SIZE': '2'}, 'ompi'),
    ({'OMPI_MCA_orte_hnp_uri': 'x', 'OMPI_COMM_WORLD_SIZE': '1'}, None),
])
def test_detect_cluster(env, expected):
  assert distributed.detect_cluster(env) == expected


def test_resolve_mode():
  assert distributed.resolve_mode(_config(), {}) == 'single'
  assert distributed.resolve_mode(_config(), {'MASKVID_DISTRIBUTED': 'auto'}) == 'auto'
  tpu = {'TPU_WORKER_HOSTNAMES': 'a,b'}
  assert distributed.resolve_mode(_config(), tpu) == 'auto'
  assert distributed.resolve_mode(_config(), dict(tpu, MASKVID_DISTRIBUTED='off')) == 'single'
  explicit = _config(coordinator_address='10.0.0.1:1234', num_processes=4, process_id=3)
  # Explicit flags win over the environment.
  assert distributed.resolve_mode(explicit, dict(tpu, MASKVID_DISTRIBUTED='off')) == 'explicit'


@pytest.mark.parametrize('dist,env,msg', [
    ({'coordinator_address': 'host:1', 'num_processes': 2}, {}, 'process_id'),
    ({'coordinator_address': 'host:1', 'num_processes': 2, 'process_id': 2}, {}, 'process_id'),
    ({'coordinator_address': 'host', 'num_processes': 2, 'process_id': 0}, {}, 'HOST:PORT'),
    ({'num_processes': 2, 'process_id': 0}, {}, 'coordinator_address is empty'),
    ({}, {'MASKVID_DISTRIBUTED': 'yes'}, 'MASKVID_DISTRIBUTED'),
])
def test_resolve_mode_rejects_bad_config(dist, env, msg):
  with pytest.raises(ValueError, match=msg):
    distributed.resolve_mode(_config(**dist), env)


def test_single_process_helpers(monkeypatch):
  monkeypatch.delenv('MASKVID_DISTRIBUTED', raising=False)
  for k in ('TPU_WORKER_HOSTNAMES', 'MEGASCALE_NUM_SLICES', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    monkeypatch.delenv(k, raising=False)
  assert distributed.initialize(_config()) == 'single'
  assert distributed.is_main_process()
  assert distributed.host_local_batch_size(8) == 8
  distributed.sync('noop')  # one process: returns at once


def test_prefetch_to_device_keeps_order_and_sharding():
  n = jax.device_count()
  mesh = jax.make_mesh((n,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.P('data'))
  batches = [{'frames': np.full((2 * n, 3), i, np.float32), 'idx': np.arange(2 * n) + i}
             for i in range(5)]
  pulled = []

  def source():
    for b in batches:
      pulled.append(1)
      yield b

  it = distributed.prefetch_to_device(source(), sharding, size=2)
  first = next(it)
  assert len(pulled) == 3  # the one handed out + two in flight
  out = [first, *it]
  assert len(out) == 5
  for i, b in enumerate(out):
    assert isinstance(b['frames'], jax.Array) and b['frames'].sharding == sharding
    np.testing.assert_array_equal(np.asarray(b['frames']), batches[i]['frames'])
    np.testing.assert_array_equal(np.asarray(b['idx']), batches[i]['idx'])
  with pytest.raises(ValueError, match='size'):
    next(distributed.prefetch_to_device(iter(batches), sharding, size=0))
