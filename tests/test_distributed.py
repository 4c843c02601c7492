"""maskvid.distributed: mode resolution, cluster detection, prefetch; real multi-process training."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import local_processes
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


# ------------------------------------------------------------------ real multi-process training

WORKER = pathlib.Path(__file__).with_name('distributed_worker.py')
ROOT = WORKER.parents[1]
# Compile time of the train step dominates; LLVM -O0 cuts it ~3x and changes no semantics
# (both layouts below use the same flags).
_XLA = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'


def _spawn(out, workdir, devices, *extra):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} {_XLA}',
             PYTHONPATH=str(ROOT))
  env.pop('MASKVID_DISTRIBUTED', None)
  name = extra[-1].lstrip('-').replace('=', '') if extra else 'reference'
  log = open(pathlib.Path(out).parent / f'{pathlib.Path(out).name}-{name}.log', 'w')
  return subprocess.Popen([sys.executable, str(WORKER), '--eval', f'--out={out}',
                           f'--workdir={workdir}', *extra], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  """2 processes x 4 CPU devices (jax.distributed over 127.0.0.1, gloo collectives) train,
  checkpoint, restore and sample (the train loop's eval path) exactly like 1 process x 8
  devices on the same (2, 2, 2) mesh."""
  port = local_processes.free_port()
  multi, single = tmp_path / 'multi', tmp_path / 'single'
  coord = [f'--coordinator=127.0.0.1:{port}', '--num_processes=2']
  # All three at once: the reference compiles while the pair compiles.
  procs = [_spawn(single, tmp_path / 'ckpt_single', 8),
           _spawn(multi, tmp_path / 'ckpt_multi', 4, *coord, '--process_id=0'),
           _spawn(multi, tmp_path / 'ckpt_multi', 4, *coord, '--process_id=1')]
  local_processes.wait_all([p for p, _ in procs], 600, [log for _, log in procs])
  logs = {f.name: f.read_text()[-3000:] for f in tmp_path.glob('*.log')}
  assert all(p.returncode == 0 for p, _ in procs), logs

  ref = json.loads((single / 'result_0.json').read_text())
  results = [json.loads((multi / f'result_{i}.json').read_text()) for i in range(2)]
  assert ref['mode'] == 'single' and ref['global_devices'] == 8
  for i, r in enumerate(results):
    assert r['mode'] == 'explicit'
    assert (r['process_index'], r['process_count']) == (i, 2)
    assert (r['local_devices'], r['global_devices']) == (4, 8)
    assert r['is_main'] == (i == 0)
    assert r['mesh'] == {'data': 2, 'fsdp': 2, 'tensor': 2}
    assert r['restored_step'] == 3 and r['restored_equal'] and r['shardings_kept']
    assert r['sharded_param_leaves'] > 0          # params really are split across processes
    assert len(r['losses']) == 4                   # 3 steps, save/restore, 1 more step
    np.testing.assert_allclose(r['losses'], ref['losses'], rtol=1e-5, atol=1e-6)
  assert len(set(ref['losses'])) == 4               # the steps did change the model
  # Only process 0 writes files.
  assert (multi / 'params.npz').exists()
  ref_params, got = np.load(single / 'params.npz'), np.load(multi / 'params.npz')
  assert sorted(ref_params.files) == sorted(got.files) and len(got.files) > 10
  for k in ref_params.files:
    np.testing.assert_allclose(got[k], ref_params[k], rtol=1e-5, atol=1e-6, err_msg=k)
  # The eval completion (replicated EMA params, host inputs) reads back on every process.
  ref_completion = np.load(single / 'completion_0.npy')
  assert np.abs(ref_completion).mean() > 0.1
  for i in range(2):
    np.testing.assert_allclose(np.load(multi / f'completion_{i}.npy'), ref_completion,
                               rtol=1e-5, atol=1e-5)
