"""Data-parallel VAE training: 2 devices match 1, a 2-device run resumes, 2 processes agree.

XLA_FLAGS must be set before jax is imported, so the runs happen in a fresh subprocess (this
file's __main__ with --devices=N) that writes JSON back to the test.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import local_processes
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_subprocesses_import_this_checkout(tmp_path, monkeypatch):
  local_processes.assert_script_imports_this_checkout(os.path.abspath(__file__), tmp_path,
                                                     monkeypatch)


def _train(workdir: str, steps: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from maskvid.vae import testing  # pylint: disable=g-import-not-at-top
  from maskvid.vae import train  # pylint: disable=g-import-not-at-top
  c = testing.tiny_config(steps=steps)
  c.vae.train.warmup_steps = 0
  sources = {'train': testing.ProceduralClips(6, 4, 16, seed=0),
             'test': testing.ProceduralClips(2, 4, 16, seed=1)}
  result = train.train_vae_on_sources(c, workdir, sources)
  _, params = train.vae_model.load_vae(workdir)
  init = train.sharding_lib.local_copy(train.make_trainer(c)[1].init(int(c.seed)).params)
  head = lambda tree: [np.asarray(x).ravel()[:64].tolist() for x in jax.tree.leaves(tree)]
  return {'devices': jax.device_count(), 'result': result, 'params': head(params),
          'init': head(init), 'all_reduces': _all_reduces_per_step(c)}


def _all_reduces_per_step(c) -> int:
  """All-reduce ops in the compiled data-parallel train step (XLA:CPU pays a rendezvous each)."""
  from maskvid.vae import train  # pylint: disable=g-import-not-at-top
  hlo = train.make_trainer(c)[1].lower().compile().as_text()
  return len(re.findall(r' all-reduce(?:-start)?\(', hlo))


def _run(devices: int, workdir: str, steps: int) -> dict:
  flags = os.environ.get('XLA_FLAGS', '')
  env = local_processes.checkout_env(JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'{flags} --xla_force_host_platform_device_count={devices}'.strip())
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), workdir, str(steps)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_devices_match_one_and_resume(tmp_path):
  one = _run(1, str(tmp_path / 'one'), steps=4)
  two_dir = str(tmp_path / 'two')
  two = _run(2, two_dir, steps=4)
  assert (one['devices'], two['devices']) == (1, 2)
  # Gradients and metrics travel in one all-reduce (XLA would issue one per parameter leaf).
  assert (one['all_reduces'], two['all_reduces']) == (0, 1)
  assert one['result']['step'] == two['result']['step'] == 4
  # Same global batch and rng per step: only the summation order of the gradients differs.
  for a, b in zip(one['params'], two['params']):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)
  assert one['result']['test/psnr'] == pytest.approx(two['result']['test/psnr'], abs=0.05)
  # The parameters moved: the comparison is not between two untouched initialisations.
  assert max(np.abs(np.subtract(a, b)).max() for a, b in zip(one['params'], one['init'])) > 1e-3

  # A crash after step 2 of the 2-device run: a fresh process restores the replicated state.
  shutil.rmtree(os.path.join(two_dir, 'checkpoints', '4'))
  os.remove(os.path.join(two_dir, 'eval.json'))
  resumed = _run(2, two_dir, steps=4)
  assert resumed['result']['resumed_from'] == 2 and resumed['result']['step'] == 4
  for a, b in zip(two['params'], resumed['params']):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_batch_must_split_over_devices(tmp_path):
  env = local_processes.checkout_env(JAX_PLATFORMS='cpu',
             XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') +
                        ' --xla_force_host_platform_device_count=3').strip())
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), str(tmp_path / 'w'), '2'],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode != 0
  assert 'config.vae.train.batch_size=4' in proc.stderr and '3 devices' in proc.stderr


@pytest.mark.slow
def test_two_processes_train_one_replicated_model(tmp_path):
  """2 processes x 1 CPU device over jax.distributed: each loads its half of every batch, and
  both end with the same parameters (independent per-process training would diverge)."""
  port = local_processes.free_port()
  env = local_processes.checkout_env(JAX_PLATFORMS='cpu',
             XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') +
                        ' --xla_force_host_platform_device_count=1').strip())
  env.pop('MASKVID_DISTRIBUTED', None)
  workdir = str(tmp_path / 'multi')
  # Output to files, not pipes: a full pipe would block one worker while the test waits on the
  # other, and the pair would then miss jax.distributed's shutdown barrier.
  logs = [(open(tmp_path / f'out{pid}', 'w'), open(tmp_path / f'err{pid}', 'w')) for pid in (0, 1)]
  procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), workdir, '4',
                             f'127.0.0.1:{port}', str(pid)], cwd=ROOT, env=env,
                            stdout=logs[pid][0], stderr=logs[pid][1]) for pid in (0, 1)]
  local_processes.wait_all(procs, 600, [f for pair in logs for f in pair])
  outs = []
  for pid, p in enumerate(procs):
    assert p.returncode == 0, (tmp_path / f'err{pid}').read_text()[-3000:]
    outs.append(json.loads((tmp_path / f'out{pid}').read_text().strip().splitlines()[-1]))
  assert [o['devices'] for o in outs] == [2, 2]
  assert [o['all_reduces'] for o in outs] == [1, 1]
  assert outs[0]['result']['step'] == outs[1]['result']['step'] == 4
  for a, b in zip(outs[0]['params'], outs[1]['params']):
    np.testing.assert_array_equal(a, b)
  assert max(np.abs(np.subtract(a, b)).max()
             for a, b in zip(outs[0]['params'], outs[0]['init'])) > 1e-3


if __name__ == '__main__':
  if sys.argv[1] == '--which':   # the maskvid this process imports (test above)
    import maskvid  # pylint: disable=g-import-not-at-top
    print(maskvid.__file__)
    sys.exit(0)
  if len(sys.argv) > 3:  # coordinator address, process id: one of two processes
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize(sys.argv[3], 2, int(sys.argv[4]))
  out = _train(sys.argv[1], int(sys.argv[2]))
  print(json.dumps(out))
