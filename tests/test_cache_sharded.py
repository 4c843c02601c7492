"""The latent cache built by 2 `jax.distributed` processes (each encoding its own shards) holds
exactly what a 1-process build holds."""
import json
import os
import pathlib
import subprocess
import sys

import local_processes
import numpy as np

from maskvid import stages
from maskvid import workdir as workdir_lib
from maskvid.vae import cache
from maskvid.vae import testing
import pytest

pytestmark = pytest.mark.slow   # the integration tier (`make test-fast` skips it)

WORKER = pathlib.Path(__file__).with_name('cache_worker.py')
ROOT = WORKER.parents[1]


def test_two_process_cache_equals_one_process_cache(tmp_path):
  c = testing.tiny_config(steps=0)              # a VAE at its initial weights is enough here
  c.data.clips = {'train': 10, 'test': 3}       # 10 train clips: 3 shards, the processes split them
  c.data.num_shards = 3
  run = str(tmp_path / 'run')
  stages.run_vae(c, run)                         # renders the data and saves the VAE
  config_path = str(tmp_path / 'config.json')
  workdir_lib.save_config(c, str(tmp_path))
  os.replace(tmp_path / workdir_lib.CONFIG_FILE, config_path)

  multi = str(tmp_path / 'latents_multi')
  port = local_processes.free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT))
  env.pop('MASKVID_DISTRIBUTED', None)
  procs = []
  for pid in range(2):
    log = open(tmp_path / f'worker{pid}.log', 'w')
    procs.append((subprocess.Popen(
        [sys.executable, str(WORKER), f'--config={config_path}', f'--workdir={run}',
         f'--latents={multi}', f'--coordinator=127.0.0.1:{port}', '--num_processes=2',
         f'--process_id={pid}'], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log))
  single = str(tmp_path / 'latents_single')
  cache.build_latent_cache(c, os.path.join(run, 'vae'), os.path.join(run, 'data'), single)
  local_processes.wait_all([p for p, _ in procs], 300, [log for _, log in procs])
  logs = {f.name: f.read_text()[-2000:] for f in tmp_path.glob('worker*.log')}
  assert all(p.returncode == 0 for p, _ in procs), logs

  with open(os.path.join(multi, cache.COMPLETE_FILE)) as f:
    complete = json.load(f)
  assert complete['processes'] == 2 and complete['splits'] == {'train': 10, 'test': 3}
  assert not os.path.exists(multi + '.tmp')
  for split, n in (('train', 10), ('test', 3)):
    with open(os.path.join(multi, split, cache.META_FILE)) as f:
      meta = json.load(f)
    assert meta['processes'] == 2 and len(meta['clips_per_second_per_process']) == 2
    assert sum(meta['shard_sizes']) == n and len(meta['shards']) >= 2
    got, ref = cache.LatentSource(multi, split), cache.LatentSource(single, split)
    assert len(got) == len(ref) == n
    for i in range(n):
      a, b = got[i], ref[i]
      np.testing.assert_array_equal(a['rgb'], b['rgb'])
      np.testing.assert_array_equal(a['seed'], b['seed'])
      np.testing.assert_allclose(a['latents'], b['latents'], rtol=1e-5, atol=1e-5)
  for key in ('shift', 'scale'):
    np.testing.assert_allclose(cache.load_latent_stats(multi)[key],
                               cache.load_latent_stats(single)[key], rtol=1e-6, atol=1e-7)
  # Each process wrote a part of the train split (3 shards: process 0 has two, process 1 one).
  assert 'process 0: done' in logs['worker0.log'] and 'process 1: done' in logs['worker1.log']
