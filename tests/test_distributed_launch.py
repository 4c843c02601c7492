"""launch/*: bash syntax, input checks, and the commands each script prints (--dry-run) or runs."""
import os
import pathlib
import re
import stat
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / 'launch'
SCRIPTS = ('tpu_pod.sh', 'slurm_gpu.sbatch', 'multinode_gpu.sh')


def _run(args, env=None, cwd=ROOT, timeout=30):
  full_env = {k: v for k, v in os.environ.items() if not k.startswith(('SLURM_', 'TPU_'))}
  full_env.update(env or {})
  return subprocess.run(['bash', *map(str, args)], cwd=cwd, env=full_env, capture_output=True,
                        text=True, timeout=timeout)


def _exe(path: pathlib.Path, body: str) -> pathlib.Path:
  path.write_text('#!/usr/bin/env bash\n' + body)
  path.chmod(path.stat().st_mode | stat.S_IXUSR)
  return path


@pytest.mark.parametrize('name', SCRIPTS)
def test_scripts_parse_and_have_help(name):
  script = LAUNCH / name
  assert subprocess.run(['bash', '-n', str(script)], capture_output=True).returncode == 0
  r = _run([script, '--help'])
  assert r.returncode == 0 and '--dry-run' in r.stdout


# ---------------------------------------------------------------- tpu_pod.sh

TPU = ['--name=mv-pod', '--zone=us-central2-b', '--workdir=gs://bucket/run1', '--skip-preflight']


@pytest.mark.parametrize('accel,workers', [('v4-32', 4), ('v5p-128', 16), ('v6e-16', 4),
                                           ('v4-8', 1), ('v5litepod-8', 1)])
def test_tpu_pod_dry_run_plan(accel, workers):
  r = _run([LAUNCH / 'tpu_pod.sh', '--dry-run', *TPU, f'--accelerator={accel}', '--',
            '--config.train.steps=10'])
  assert r.returncode == 0, r.stderr
  out = r.stdout
  assert f'({accel}, {workers} worker hosts)' in out
  cmds = [l for l in out.splitlines() if l.startswith('+ ')]
  assert cmds[0].startswith(f'+ gcloud compute tpus tpu-vm create mv-pod --zone=us-central2-b '
                            f'--accelerator-type={accel} --version=')
  assert any(c.startswith('+ git archive') for c in cmds)
  assert any('tpu-vm scp' in c and '--worker=all' in c for c in cmds)
  ssh = [c for c in cmds if 'tpu-vm ssh mv-pod' in c]
  assert len(ssh) == 3 and all('--worker=all' in c for c in ssh)
  assert 'make install' in ssh[1] and 'jax[tpu]==' in ssh[1]
  run = ssh[2]
  assert 'MASKVID_DISTRIBUTED=auto' in run
  assert '-m maskvid.main --config=configs/pretrain.py --workdir=gs://bucket/run1' in run
  assert run.rstrip("'").endswith('--config.train.steps=10')


def test_tpu_pod_clone_and_single_steps():
  r = _run([LAUNCH / 'tpu_pod.sh', '--dry-run', 'setup', 'run', *TPU, '--accelerator=v4-16',
            '--repo=https://example.com/maskvid.git', '--branch=dev', '--project=p1'])
  assert r.returncode == 0, r.stderr
  cmds = [l for l in r.stdout.splitlines() if l.startswith('+ ')]
  assert not any('tpu-vm create' in c or 'git archive' in c for c in cmds)
  assert 'git clone -q --branch dev https://example.com/maskvid.git maskvid' in cmds[0]
  assert all('--project=p1' in c for c in cmds)
  r = _run([LAUNCH / 'tpu_pod.sh', '--dry-run', 'delete', '--name=x', '--zone=z'])
  assert r.returncode == 0 and r.stdout.splitlines()[-1] == (
      '+ gcloud compute tpus tpu-vm delete x --zone=z --quiet')


@pytest.mark.parametrize('args,msg', [
    (['--zone=z', '--accelerator=v4-8', '--workdir=gs://b'], '--name'),
    (['--name=n', '--accelerator=v4-8', '--workdir=gs://b'], '--zone'),
    (['--name=n', '--zone=z', '--workdir=gs://b'], '--accelerator'),
    (['--name=n', '--zone=z', '--accelerator=v4-8'], '--workdir'),
    (['--name=n', '--zone=z', '--accelerator=v9-8', '--workdir=gs://b'], 'unknown TPU generation'),
    (['--name=n', '--zone=z', '--accelerator=v4-8', '--workdir=gs://b', '--', 'oops'],
     'overrides'),
    (['--bogus'], 'unknown argument'),
])
def test_tpu_pod_rejects_bad_input(args, msg):
  r = _run([LAUNCH / 'tpu_pod.sh', '--dry-run', *args])
  assert r.returncode == 2 and msg in r.stderr, (r.stdout, r.stderr)


def test_tpu_pod_warns_on_local_workdir_for_multihost():
  r = _run([LAUNCH / 'tpu_pod.sh', '--dry-run', 'run', '--name=n', '--zone=z',
            '--accelerator=v4-32', '--workdir=/tmp/run', '--skip-preflight'])
  assert r.returncode == 0 and 'not gs://' in r.stderr


def test_tpu_pod_preflight_verdicts_reach_the_launch(tmp_path):
  """The launcher acts on the compile job's verdict (a stand-in job: the real one is tested in
  test_aot): exit 1 stops it before any gcloud command; chosen overrides reach the run."""
  job = _exe(tmp_path / 'python', 'echo "| train | 1 | 2 | 3 | 17.00 | 106 | NO | 9 |"\n'
             'echo "maskvid.aot: does not fit: v5e-4 x 1: train needs ..." >&2; exit 1\n')
  args = [LAUNCH / 'tpu_pod.sh', '--dry-run', '--name=n', '--zone=z', '--accelerator=v5litepod-4',
          '--workdir=gs://b/r', '--config=configs/tiny.py']
  r = _run(args, env={'PREFLIGHT_PYTHON': str(job)})
  assert r.returncode == 1, (r.stdout, r.stderr)
  assert 'does not fit' in r.stdout and 'nothing created' in r.stderr and '+ gcloud' not in r.stdout
  _exe(job, 'echo "run with: --config.train.microbatches=4"; exit 0\n')
  r = _run(args, env={'PREFLIGHT_PYTHON': str(job)})
  assert r.returncode == 0, r.stderr
  run = [l for l in r.stdout.splitlines() if 'maskvid.main' in l][0]
  assert run.rstrip("'").endswith('--config.train.microbatches=4')


# ---------------------------------------------------------------- slurm_gpu.sbatch

@pytest.fixture
def fake_slurm(tmp_path):
  """PATH with a `scontrol show hostnames` that expands 'pfx[a-b]' and comma lists."""
  bindir = tmp_path / 'bin'
  bindir.mkdir()
  _exe(bindir / 'scontrol', r'''
list=$3
if [[ $list =~ ^(.*)\[([0-9]+)-([0-9]+)\]$ ]]; then
  for ((i=${BASH_REMATCH[2]}; i<=${BASH_REMATCH[3]}; i++)); do echo "${BASH_REMATCH[1]}$i"; done
else tr ',' '\n' <<<"$list"; fi
''')
  # srun: run each task locally with the SLURM per-task variables srun would set.
  _exe(bindir / 'srun', r'''
n=1; per=1
while [[ $1 == --* ]]; do
  case $1 in --ntasks=*) n=${1#*=};; --ntasks-per-node=*) per=${1#*=};; esac; shift
done
for ((r=0; r<n; r++)); do SLURM_PROCID=$r SLURM_LOCALID=$((r % per)) "$@" || exit $?; done
''')
  return {'PATH': f'{bindir}:{os.environ["PATH"]}'}


def _slurm_env(fake_slurm, nodes, ntasks, nodelist):
  return dict(fake_slurm, SLURM_JOB_NODELIST=nodelist, SLURM_NTASKS=str(ntasks),
              SLURM_NNODES=str(nodes), SLURM_JOB_ID='42')


def test_slurm_dry_run_one_process_per_gpu(fake_slurm):
  env = _slurm_env(fake_slurm, 2, 16, 'gpu[3-4]')
  r = _run([LAUNCH / 'slurm_gpu.sbatch', '--dry-run', '--workdir=/shared/run', '--port=9999',
            '--', '--config.train.steps=7'], env=env)
  assert r.returncode == 0, r.stderr
  assert '2 nodes x 8 tasks = 16 processes; coordinator gpu3:9999' in r.stdout
  assert '+ srun --ntasks=16 --ntasks-per-node=8 --kill-on-bad-exit=1' in r.stdout
  tasks = re.findall(r'task (\d+) on (\S+): .*', r.stdout)
  assert [int(t) for t, _ in tasks] == list(range(16))
  assert [h for _, h in tasks] == ['gpu3'] * 8 + ['gpu4'] * 8
  lines = [l for l in r.stdout.splitlines() if l.startswith('  task ')]
  for rank, line in enumerate(lines):
    assert '--config.distributed.coordinator_address=gpu3:9999' in line
    assert '--config.distributed.num_processes=16' in line
    assert f'--config.distributed.process_id={rank} ' in line
    assert line.endswith(f'--config.distributed.local_device_ids={rank % 8}')
    assert '--config.train.steps=7' in line


def test_slurm_real_path_through_fake_srun(fake_slurm, tmp_path):
  """Not a dry run: the per-task bash script srun starts must produce the right flags."""
  py = _exe(tmp_path / 'python', 'echo "ARGS $*"\n')
  env = _slurm_env(fake_slurm, 2, 2, 'a1,b2')
  env['PYTHON'] = str(py)
  r = _run([LAUNCH / 'slurm_gpu.sbatch', '--workdir=/w', '--config=configs/tiny.py'], env=env)
  assert r.returncode == 0, r.stderr
  args = [l[5:].split() for l in r.stdout.splitlines() if l.startswith('ARGS ')]
  assert len(args) == 2
  for rank, a in enumerate(args):
    assert a[:4] == ['-m', 'maskvid.main', '--config=configs/tiny.py', '--workdir=/w']
    assert '--config.distributed.coordinator_address=a1:8476' in a
    assert '--config.distributed.num_processes=2' in a
    assert a[-1] == f'--config.distributed.process_id={rank}'  # one task per node: all GPUs
    assert not any('local_device_ids' in x for x in a)
  # Several tasks per node, SLURM already bound one GPU per task -> local id 0.
  env = _slurm_env(fake_slurm, 1, 2, 'a1')
  env.update(PYTHON=str(py), CUDA_VISIBLE_DEVICES='5')
  r = _run([LAUNCH / 'slurm_gpu.sbatch', '--workdir=/w'], env=env)
  args = [l for l in r.stdout.splitlines() if l.startswith('ARGS ')]
  assert len(args) == 2 and all(a.endswith('local_device_ids=0') for a in args), r.stdout


@pytest.mark.parametrize('env_over,args,msg', [
    ({'SLURM_NTASKS': ''}, ['--workdir=/w'], 'SLURM_NTASKS is not set'),
    ({}, [], '--workdir'),
    ({}, ['--workdir=/w', '--config=nope.py'], 'not found'),
    ({'SLURM_NTASKS': '3'}, ['--workdir=/w'], 'not a multiple'),
    ({'SLURM_NNODES': '3'}, ['--workdir=/w'], 'expands to 2 hosts'),
    ({}, ['--workdir=/w', '--port=x'], '--port'),
])
def test_slurm_rejects_bad_input(fake_slurm, env_over, args, msg):
  env = _slurm_env(fake_slurm, 2, 4, 'n[1-2]')
  env.update(env_over)
  r = _run([LAUNCH / 'slurm_gpu.sbatch', '--dry-run', *args], env=env)
  assert r.returncode == 2 and msg in r.stderr, (r.stdout, r.stderr)


# ---------------------------------------------------------------- multinode_gpu.sh

def test_multinode_dry_run(tmp_path):
  hostfile = tmp_path / 'hosts'
  hostfile.write_text('# cluster\nnode-a\n\nnode-b  # second\nnode-c\n')
  r = _run([LAUNCH / 'multinode_gpu.sh', '--dry-run', f'--hostfile={hostfile}',
            '--procs-per-host=4', '--coordinator=10.0.0.1', '--workdir=/nfs/run', '--',
            '--config.train.steps=3'])
  assert r.returncode == 0, r.stderr
  assert '3 hosts x 4 processes = 12 processes; coordinator 10.0.0.1:8476' in r.stdout
  lines = [l for l in r.stdout.splitlines() if l.startswith('+ ')]
  assert len(lines) == 12
  for rank, line in enumerate(lines):
    host = ['node-a', 'node-b', 'node-c'][rank // 4]
    assert line.startswith(f'+ [process {rank} on {host}] ssh -o BatchMode=yes {host} ')
    assert '--config.distributed.coordinator_address=10.0.0.1:8476' in line
    assert '--config.distributed.num_processes=12' in line
    assert f'--config.distributed.process_id={rank} ' in line
    assert f'--config.distributed.local_device_ids={rank % 4} ' in line
    assert '--config.train.steps=3' in line


@pytest.mark.slow
def test_multinode_runs_local_processes_and_propagates_failure(tmp_path):
  py = _exe(tmp_path / 'python', 'echo "ARGS $*"; [[ $* == *process_id=1* ]] && exit 3; exit 0\n')
  logs = tmp_path / 'logs'
  base = [LAUNCH / 'multinode_gpu.sh', '--hosts=localhost,127.0.0.1', f'--python={py}',
          '--workdir=/w', f'--log-dir={logs}']
  r = _run(base)
  assert r.returncode == 1 and 'a process failed' in r.stderr
  assert 'process_id=0' in (logs / 'process-0.log').read_text()
  py.write_text('#!/usr/bin/env bash\necho "ARGS $*"\n')
  r = _run(base)
  assert r.returncode == 0 and 'all 2 processes finished' in r.stdout, r.stderr
  assert 'num_processes=2 --config.distributed.process_id=1' in (logs / 'process-1.log').read_text()


@pytest.mark.parametrize('args,msg', [
    (['--workdir=/w'], 'no hosts'),
    (['--hosts=a,b'], '--workdir'),
    (['--hosts=a', '--workdir=/w', '--procs-per-host=0'], '--procs-per-host'),
    (['--hosts=localhost,remote', '--workdir=/w'], 'coordinator'),
    (['--hostfile=/nonexistent', '--workdir=/w'], 'does not exist'),
])
def test_multinode_rejects_bad_input(args, msg):
  r = _run([LAUNCH / 'multinode_gpu.sh', '--dry-run', *args])
  assert r.returncode == 2 and msg in r.stderr, (r.stdout, r.stderr)


def test_tpu_pod_warns_when_array_record_dirs_would_be_on_gs():
  base = [LAUNCH / 'tpu_pod.sh', '--dry-run', 'run', '--name=n', '--zone=z', '--accelerator=v4-32',
          '--workdir=gs://b/run', '--skip-preflight']
  r = _run(base)
  assert r.returncode == 0 and '--config.paths.data=' in r.stderr, r.stderr
  assert '--config.paths.latents=' in r.stderr
  r = _run(base + ['--', '--config.paths.data=/gcs/b/data', '--config.paths.latents=/gcs/b/lat'])
  assert r.returncode == 0 and 'warning' not in r.stderr, r.stderr


def test_slurm_spooled_copy_finds_common_sh(fake_slurm, tmp_path):
  """sbatch runs a copy of the script from its spool dir: launch/common.sh comes from the submit dir."""
  spool = tmp_path / 'spool'
  spool.mkdir()
  copy = spool / 'slurm_script'
  copy.write_text((LAUNCH / 'slurm_gpu.sbatch').read_text())
  env = _slurm_env(fake_slurm, 1, 1, 'a1')
  r = _run([copy, '--dry-run', '--workdir=/w'], env=dict(env, SLURM_SUBMIT_DIR=str(ROOT)),
           cwd=tmp_path)
  assert r.returncode == 0 and 'task 0 on a1' in r.stdout, r.stderr
  r = _run([copy, '--dry-run', '--workdir=/w'], env=dict(env, SLURM_SUBMIT_DIR=str(tmp_path)),
           cwd=tmp_path)
  assert r.returncode == 2 and 'launch/common.sh not found' in r.stderr
