"""Helpers for tests that run subprocesses: several local processes joined by jax.distributed on
127.0.0.1, and an environment in which a subprocess imports the checkout under test."""
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def checkout_env(**overrides) -> dict:
  """The subprocesses' environment: this checkout first on PYTHONPATH, so they import the
  maskvid under test, not an editable install of another checkout (which a `sys.path` insert
  in the script comes too late for once anything has imported maskvid)."""
  path = os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH', '')) if p)
  return dict(os.environ, PYTHONPATH=path, **overrides)


def assert_script_imports_this_checkout(script: str, tmp_path, monkeypatch) -> None:
  """`script --which` (which prints `maskvid.__file__`) imports this checkout's maskvid even
  with another maskvid already on PYTHONPATH."""
  other = tmp_path / 'other_checkout'
  (other / 'maskvid').mkdir(parents=True)
  (other / 'maskvid' / '__init__.py').write_text('')
  monkeypatch.setenv('PYTHONPATH', str(other))
  proc = subprocess.run([sys.executable, script, '--which'], env=checkout_env(),
                        cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1] == os.path.join(ROOT, 'maskvid', '__init__.py')


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now (for the coordinator)."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def wait_all(procs, timeout: float, files=()) -> None:
  """Waits for every `subprocess.Popen` in procs (each up to `timeout` s); whatever happens,
  kills those still running and closes `files` (their log files)."""
  try:
    for p in procs:
      p.wait(timeout=timeout)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
    for f in files:
      f.close()
