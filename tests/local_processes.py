"""Helpers for tests that run several local processes joined by jax.distributed on 127.0.0.1."""
import socket


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
