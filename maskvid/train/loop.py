"""The one training loop of every trainer (diffusion transformer, VAE, depth net).

  run(state, step_fn, checkpoints, *, name, start, steps, params_of, log_every,
      checkpoint_every, writer, log_keys=(), evaluate=None, eval_every=0) -> (state, summary)

A trainer supplies its state, its step (`step_fn(state, i) -> (state, metrics)` for update i,
0-based, so `i + 1` updates are done after it; `metrics['loss']` is required) and how it saves
(`Checkpoints`); the loop owns what every long run needs, written once:
  - progress: clu's ReportProgress (steps/s, ETA in the work-unit notes) and a log line every
    `log_every` updates with the interval's mean loss (+ `log_keys`), steps/s and ETA;
  - metrics: the interval means written to `writer` as `train/<key>`;
  - NaN/inf: `recovery.check_finite` at every log line and before every save, so no
    non-finite loss or parameter is ever written;
  - checkpoints every `checkpoint_every` updates and at the end (orbax, atomic);
  - preemption: SIGTERM (any process, `recovery.Guard`) saves the step it stopped at and raises
    `recovery.Preempted`; a SIGTERM during the final save waits for it, then raises;
  - a periodic `evaluate(state, done) -> {name: float}` every `eval_every` updates (not at the
    end: the trainer's own final eval follows the loop).
The manager is waited on and closed however `run` ends (return, Preempted, NonFiniteLoss). Returns the final state and
the last interval's means (`train/<key>`).
"""
import contextlib
import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

from absl import logging
from clu import periodic_actions
import jax
import numpy as np

from maskvid import recovery

StepFn = Callable[[Any, int], tuple[Any, dict]]


@dataclasses.dataclass(frozen=True)
class Checkpoints:
  """How a trainer saves: `save(state, done, force)` into the orbax `manager`."""
  manager: Any
  save: Callable[[Any, int, bool], Any]

  def last_good(self) -> str:
    last = self.manager.latest_step()
    return f'step {last} in {self.manager.directory}' if last is not None else 'none'

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _interval_means(history: list[dict]) -> dict:
  fetched = jax.device_get(history)
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def run(state, step_fn: StepFn, checkpoints: Checkpoints, *, name: str, start: int, steps: int,
        params_of: Callable[[Any], Any], log_every: int, checkpoint_every: int, writer,
        log_keys: Sequence[str] = (), evaluate: Optional[Callable[[Any, int], dict]] = None,
        eval_every: int = 0) -> tuple[Any, dict]:
  """Updates start+1 .. steps of `step_fn` (module docstring); returns (state, summary)."""
  log_every = max(1, int(log_every))
  checkpoint_every, eval_every = int(checkpoint_every), int(eval_every)
  report = periodic_actions.ReportProgress(num_train_steps=steps, writer=writer,
                                           every_steps=log_every)
  history, summary = [], {}
  unchecked = []   # losses not yet checked for NaN/inf (checked at log lines and before saves)
  t0, s0 = time.time(), start

  def check(done):
    recovery.check_finite(unchecked, params_of(state), done, checkpoints.last_good())
    unchecked.clear()

  def stop(done):
    writer.flush()
    raise recovery.Preempted(done, str(checkpoints.manager.directory))

  logging.info('%s: training steps %d -> %d', name, start, steps)
  with _closing(checkpoints), recovery.Guard() as guard:
    for done in range(start + 1, steps + 1):
      with jax.profiler.StepTraceAnnotation(name, step_num=done):
        state, metrics = step_fn(state, done - 1)
      history.append(metrics)
      unchecked.append(metrics['loss'])
      report(done)
      if done % log_every == 0 or done == steps:
        check(done)
        means = _interval_means(history)
        history = []
        summary = {f'train/{k}': v for k, v in means.items()}
        writer.write_scalars(done, summary)
        now = time.time()   # rate over this interval (the first one includes compilation)
        rate = (done - s0) / max(now - t0, 1e-9)
        t0, s0 = now, done
        extra = ''.join(f'  {k} {means[k]:.4g}' for k in log_keys if k in means)
        logging.info('%s step %d/%d  loss %.4f%s  %.2f steps/s  ETA %s', name, done, steps,
                     means['loss'], extra, rate,
                     time.strftime('%H:%M:%S', time.gmtime((steps - done) / max(rate, 1e-9))))
      preempted = guard.should_stop(done) and done != steps
      if preempted or done == steps or (checkpoint_every > 0 and done % checkpoint_every == 0):
        check(done)
        checkpoints.save(state, done, preempted or done == steps)
      if preempted:
        stop(done)
      if evaluate is not None and eval_every > 0 and done % eval_every == 0 and done != steps:
        with report.timed('eval'):
          writer.write_scalars(done, evaluate(state, done))
    # Still guarded: a SIGTERM during the final save waits for it instead of losing the steps
    # since the last periodic checkpoint.
    checkpoints.manager.wait_until_finished()
    if guard.should_stop(steps, force=True):
      stop(steps)
  return state, summary


@contextlib.contextmanager
def _closing(checkpoints: Checkpoints):
  # Pending saves finish and the manager closes however the loop ends (NaN, SIGTERM, an error),
  # so its background threads never outlive the run.
  try:
    yield
  finally:
    checkpoints.close()
