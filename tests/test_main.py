"""The entry point rejects configs it does not understand, with errors that name the problem."""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, timeout=60):
  return subprocess.run([sys.executable, '-m', 'maskvid.main', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def test_unknown_config_key_is_named(tmp_path):
  proc = run_main('--config=configs/tiny.py', f'--workdir={tmp_path}', '--config.train.stepz=3')
  assert proc.returncode != 0
  assert 'stepz' in proc.stderr and 'steps' in proc.stderr
  assert not any(tmp_path.iterdir()), 'a rejected run must write nothing'
  # One line naming the flag, no traceback.
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  line = [l for l in proc.stderr.splitlines() if l.startswith('maskvid:')]
  assert line == ["maskvid: bad command-line flag --config.train.stepz: no such key 'stepz'; "
                  'Did you mean "steps" instead of "stepz"?'], proc.stderr
  bad_type = run_main('--config=configs/tiny.py', f'--workdir={tmp_path}',
                      '--config.train.steps=abc')
  assert bad_type.returncode == 2 and 'Traceback' not in bad_type.stderr
  assert 'config.train.steps' in bad_type.stderr


def test_unknown_job_is_named(tmp_path):
  proc = run_main('--config=configs/tiny.py', f'--workdir={tmp_path}', '--config.job=bogus')
  assert proc.returncode != 0
  assert "config.job must be one of" in proc.stderr and 'bogus' in proc.stderr


def test_pretrain_without_a_video_source_stops_at_once(tmp_path):
  """configs/pretrain.py trains on real video: without one, one line naming the key, exit 2."""
  proc = run_main('--config=configs/pretrain.py', f'--workdir={tmp_path}')
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
  line = [l for l in proc.stderr.splitlines() if l.startswith('maskvid:')]
  assert len(line) == 1 and 'config.data.video_dir' in line[0] and 'tfds_name' in line[0]
  tfds = run_main('--config=configs/pretrain.py', f'--workdir={tmp_path}',
                  '--config.data.source=tfds')
  assert tfds.returncode == 2 and 'needs config.data.tfds_name' in tfds.stderr
  assert not any(tmp_path.iterdir()), 'a rejected run must write nothing'


def test_missing_config_file_is_named(tmp_path):
  proc = run_main('--config=configs/does_not_exist.py', f'--workdir={tmp_path}')
  assert proc.returncode != 0
  assert 'does_not_exist.py' in proc.stderr


@pytest.mark.parametrize('name', sorted(p.stem for p in pathlib.Path(ROOT, 'configs').glob('*.py')
                                         if p.stem != '__init__'))
def test_configs_load_and_lock(name):
  import importlib
  sys.path.insert(0, ROOT)
  config = importlib.import_module(f'configs.{name}').get_config()
  config.lock()
  with pytest.raises(AttributeError):
    config.train.not_a_key = 1
  from maskvid.main import JOBS
  assert config.job in JOBS


def test_stage_dir_override(tmp_path):
  sys.path.insert(0, ROOT)
  from configs import default
  from maskvid.workdir import stage_dir
  config = default.get_config()
  assert stage_dir(config, str(tmp_path), 'vae') == os.path.join(str(tmp_path), 'vae')
  config.paths.vae = '/elsewhere/vae'
  assert stage_dir(config, str(tmp_path), 'vae') == '/elsewhere/vae'
  with pytest.raises(ValueError, match='stage must be one of'):
    stage_dir(config, str(tmp_path), 'nope')


@pytest.mark.parametrize('n,expected', [(0, 1), (3, 3)])
def test_cpu_devices_splits_the_host(n, expected):
  code = ('import jax, sys; sys.path.insert(0, "."); from configs import default; '
          'from maskvid import main; c = default.get_config(); '
          f'c.cpu_devices = {n}; main.configure_cpu_devices(c); print(jax.device_count())')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = ' '.join(f for f in env.get('XLA_FLAGS', '').split()
                              if 'host_platform_device_count' not in f)
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1] == str(expected)


def test_negative_cpu_devices_is_named(tmp_path):
  proc = run_main('--config=configs/tiny.py', f'--workdir={tmp_path}', '--config.cpu_devices=-2')
  assert proc.returncode != 0 and 'config.cpu_devices' in proc.stderr
