"""What lets a long run survive: preemption, an unreadable checkpoint, a non-finite loss.

Preemption -- SIGTERM becomes "checkpoint at the next step boundary, then stop".

A preempted Spot/TPU VM gets SIGTERM and ~30 s. Every trainer wraps its loop in `Guard()` and asks
`guard.should_stop(step)` after each step; when it says so the trainer saves the state of that
step (atomically, orbax) and raises `Preempted`, which `maskvid.main` turns into a one-line
message and exit status `EXIT_CODE`. The next start resumes from that checkpoint bit-exactly.

A Python SIGTERM handler sets a flag. With several processes (`jax.distributed`) the hosts
all-gather their flags every `sync_every` steps (and at the end), so all of them stop at the same
step even when only one was signalled. Not every step: the all-gather is a device collective whose
result the host must read, so a per-step check makes the host wait for the accelerators at every
step and the step loop never runs ahead of them. At a few seconds per pod step, 10 steps is within
the ~30 s a preempted VM gets. (JAX's own preemption sync service,
`multihost_utils.reached_preemption_sync_point`, needs a C++ SIGTERM handler that a Python handler
would replace, so it is not used.) The only side effect is the handler, installed on entry and
restored on exit (main thread only).

Unreadable checkpoints -- `restore_newest_readable` tries the steps newest first; one that fails
to restore is logged (step, error) and the next older one is tried. Once one restores, the failed
newer ones are moved aside to `<checkpoints>_unreadable/<step>` (never deleted: kept for a
post-mortem, and their steps can be written again). When none restores nothing is moved: that is
a changed config, not corruption, and the run stops naming it.

Non-finite loss -- `check_finite` is called before every save and at every log line: a NaN/inf
loss or parameter stops the run with `NonFiniteLoss` naming the step and the last good
checkpoint, so no NaN is ever written into a checkpoint.
"""
import os
import signal
import threading
from typing import Any, Callable, Optional, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from maskvid import fileio

EXIT_CODE = 143   # 128 + SIGTERM, what schedulers expect of a process stopped by SIGTERM


class Preempted(RuntimeError):
  """Raised by a trainer after it saved the checkpoint of the step it stopped at."""

  def __init__(self, step: int, where: str):
    super().__init__(f'preempted (SIGTERM): saved step {step} in {where}; start the same command '
                     'again to resume')
    self.step, self.where = int(step), where


class Guard:
  """Context manager; `should_stop(step)` is True once a preemption has been noticed."""

  def __init__(self, sync_every: int = 10):
    self._flag = threading.Event()
    self._previous = None
    self.sync_every = max(1, int(sync_every))

  def _handle(self, signum, frame):
    del signum, frame
    if not self._flag.is_set():
      logging.warning('SIGTERM received: saving a checkpoint at the next step boundary')
    self._flag.set()

  def __enter__(self) -> 'Guard':
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def request(self) -> None:
    """Asks for a stop as SIGTERM would (tests, and callers with their own notice)."""
    self._flag.set()

  def should_stop(self, step: int, force: bool = False) -> bool:
    """True once any process has been asked to stop (the same answer on every process).

    With several processes the answer changes only at steps that are multiples of `sync_every`
    (or when `force`): every process calls this with the same steps, so the calls line up.
    """
    if jax.process_count() == 1:
      return self._flag.is_set()
    if not force and step % self.sync_every:
      return False
    # One tiny all-gather of the flags, so every host stops at the same step (a collective
    # checkpoint save on some hosts only would hang the others).
    flags = multihost_utils.process_allgather(np.int32(self._flag.is_set()))
    return bool(np.asarray(flags).any())


# ----------------------------------------------------------------------------- checkpoints
UNREADABLE_SUFFIX = '_unreadable'


def restore_newest_readable(manager, restore: Callable[[int], Any],
                            move_aside: bool = True) -> Optional[Any]:
  """`restore(step)` for the newest step that restores; None when there is no checkpoint.

  Newer steps that failed are logged and, once an older one has restored (so the failure is the
  checkpoint's, not a config that no longer matches the run), moved aside when `move_aside`
  (process 0 moves, every process waits) and the manager reloaded so it no longer lists them.
  When no step restores, nothing is moved and the newest step's error is raised, naming it: that
  is a run whose config changed (or a directory that is all bad), for a person to look at.
  """
  failed = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      result = restore(step)
    except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore raise many types)
      text = str(e).splitlines()[0][:300] if str(e) else ''
      logging.warning('checkpoint step %d (%s) cannot be restored: %s: %s; trying the previous '
                      'one.', step, _step_dir(manager, step), type(e).__name__, text)
      failed.append((step, e))
      continue
    if failed and move_aside:
      for bad, _ in failed:
        _move_aside(manager, bad)
      manager.reload()
    return result
  if failed:
    step, e = failed[0]
    raise RuntimeError(f'no checkpoint in {manager.directory} restores (newest: step {step}, '
                       f'{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ""}). '
                       'If the config changed since they were written, use the old config or a '
                       'new workdir; nothing was moved or deleted.') from e
  return None


def _move_aside(manager, step: int) -> None:
  where = _step_dir(manager, step)
  aside = os.path.join(str(manager.directory) + UNREADABLE_SUFFIX, str(step))
  logging.warning('moving unreadable checkpoint step %d to %s (kept, not deleted)', step, aside)
  if jax.process_index() == 0:
    fileio.makedirs(os.path.dirname(aside))
    target = fileio.path(aside)
    if target.exists():   # the same step failed before: keep both
      target = fileio.path(f'{aside}-{len(list(target.parent.iterdir()))}')
    fileio.path(where).rename(target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'maskvid-quarantine-{step}')


def _step_dir(manager, step: int) -> str:
  return os.path.join(str(manager.directory), str(step))


# ----------------------------------------------------------------------------- non-finite
class NonFiniteLoss(FloatingPointError):
  """The loss (or the parameters) stopped being finite; nothing was saved after it."""


@jax.jit
def _tree_all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def check_finite(losses: Sequence[Any], params, last_step: int, last_good: str) -> None:
  """Raises NonFiniteLoss unless every loss and every parameter is finite.

  losses: the per-step losses since the last check, for steps last_step - len + 1 .. last_step.
  last_good: where the last good checkpoint is (for the message).
  """
  values = np.asarray(jax.device_get(list(losses)), np.float64).reshape(-1)
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    at = last_step - len(values) + 1 + int(bad[0])
    what = f'loss {values[bad[0]]} at step {at}'
  elif not bool(jax.device_get(_tree_all_finite(params))):
    what = f'non-finite parameters after step {last_step}'
  else:
    return
  raise NonFiniteLoss(f'{what}: stopping without saving it; last good checkpoint: {last_good}. '
                      'Lower the learning rate or check the data, then start again (the run '
                      'resumes from that checkpoint).')
