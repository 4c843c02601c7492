"""Soak test of preemption safety: train while being killed, end bit-equal to an unkilled run.

  python -m maskvid.bench.soak [--steps=200] [--kills=6] [--seed=0] [--soak_dir=DIR]

Trains the diffusion stage of a tiny config (random latent cache, `vae.testing`) for --steps
steps, checkpoints every 20 (asynchronously, so some kills land during a write), once without
interruption and once killed --kills times at random moments after training has started
(SIGKILL or SIGTERM, drawn at random), each time restarted with the same command. Prints a table:
kills by signal, kills while a checkpoint was being written, steps lost per kill (SIGTERM should
lose 0, SIGKILL what it did since the last checkpoint), and whether the final EMA parameters are
bit-equal to the uninterrupted run's. Results: docs/scale_out.md ("Preemption soak").
"""
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_integer('steps', 200, 'Training steps of each run.')
flags.DEFINE_integer('kills', 6, 'How many times the soaked run is killed.')
flags.DEFINE_integer('seed', 0, 'Seed of the kill schedule (signals and moments).')
flags.DEFINE_string('soak_dir', '', 'Where the two runs go (default: a temp dir).')
flags.DEFINE_bool('worker', False, 'Internal: run the training itself (one attempt).')

CHECKPOINT_EVERY = 20


def _config(steps: int):
  from configs import tiny  # pylint: disable=g-import-not-at-top  (configs/ is not the package)
  c = tiny.get_config()
  c.model.width, c.model.depth, c.model.num_heads = 32, 1, 2
  c.data.clip_length, c.data.num_frames, c.data.resolution = 4, 6, 32   # latents [6, 8, 8, 4]
  c.train.batch_size, c.train.warmup_steps, c.train.steps = 4, 0, steps
  c.train.checkpoint_every, c.train.log_every, c.train.keep_checkpoints = CHECKPOINT_EVERY, 1, 3
  c.train.async_checkpoints = True
  c.sample.num_steps, c.sample.preview_clips = 2, 1
  return c


def _worker(workdir: str, steps: int) -> int:
  from maskvid import main  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.INFO)
  return main.run(_config(steps), workdir)


def _prepare(workdir: str) -> None:
  from maskvid.vae import testing  # pylint: disable=g-import-not-at-top
  latents = os.path.join(workdir, 'latents')
  if not os.path.exists(latents):
    testing.write_latent_cache(latents, seed=0)


def _command(workdir: str, steps: int) -> list:
  return [sys.executable, '-m', 'maskvid.bench.soak', '--worker', f'--soak_dir={workdir}',
          f'--steps={steps}']


def _writing(diffusion_dir: str) -> bool:
  """A checkpoint write in flight: orbax's temporary step directory exists."""
  d = os.path.join(diffusion_dir, 'checkpoints')
  return os.path.isdir(d) and any('tmp' in name for name in os.listdir(d))


def _saved_steps(diffusion_dir: str) -> list:
  d = os.path.join(diffusion_dir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _ema(diffusion_dir: str) -> list:
  from maskvid.model import model  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in jax.tree.leaves(model.load_for_inference(diffusion_dir)[2])]


def soak(root: str, steps: int, kills: int, seed: int) -> dict:
  rng = random.Random(seed)
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  ref, run = os.path.join(root, 'uninterrupted'), os.path.join(root, 'soaked')
  for d in (ref, run):
    _prepare(d)
  t0 = time.time()
  done = subprocess.run(_command(ref, steps), env=env, capture_output=True, text=True)
  if done.returncode:
    raise RuntimeError(f'uninterrupted run failed:\n{done.stderr[-3000:]}')
  ref_seconds = time.time() - t0
  rows, attempts = [], 0
  diffusion = os.path.join(run, 'diffusion')
  # Kill moments: k distinct steps spread over the run, each plus 0-0.3 s of jitter.
  targets = sorted(rng.sample(range(2, steps - 1), kills))
  while True:
    attempts += 1
    proc = subprocess.Popen(_command(run, steps), env=env, stderr=subprocess.PIPE, text=True)
    killed_at = None
    for line in proc.stderr:
      m = re.search(rf'step (\d+)/{steps} ', line)
      if m and len(rows) < kills and int(m.group(1)) >= targets[len(rows)]:
        time.sleep(rng.uniform(0.0, 0.3))
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        killed_at = (sig, int(m.group(1)), _writing(diffusion))
        proc.send_signal(sig)
        break
    proc.stderr.read()
    rc = proc.wait()
    if killed_at is None:
      if rc != 0:
        raise RuntimeError(f'start {attempts} ended with status {rc} without being killed')
      break   # trained to the end
    sig, step, during_write = killed_at
    saved = _saved_steps(diffusion)
    resume_from = max(saved) if saved else 0
    # SIGTERM: the run saved the step it stopped at, so it resumes there (0 lost). SIGKILL: it
    # lost at least the steps between its last checkpoint and the last step the log showed.
    rows.append(dict(signal=signal.Signals(sig).name, at_step=step, during_write=during_write,
                     status=rc, resume_from=resume_from,
                     lost=('0' if sig == signal.SIGTERM and rc == 143 else
                           f'>= {max(step - resume_from, 0)}')))
  equal = all(np.array_equal(a, b) for a, b in zip(_ema(os.path.join(ref, 'diffusion')),
                                                    _ema(diffusion)))
  return dict(rows=rows, attempts=attempts, equal=equal, steps=steps,
              ref_seconds=ref_seconds, seconds=time.time() - t0)


def _print(result: dict) -> None:
  rows = result['rows']
  print(f"\nsoak: {result['steps']} steps, {len(rows)} kills, {result['attempts']} starts, "
        f"{result['seconds']:.0f} s (uninterrupted run {result['ref_seconds']:.0f} s)")
  print('| # | signal | sent after step | a checkpoint write in flight | exit status | '
        'resumed from | steps lost |')
  print('|---|---|---|---|---|---|---|')
  for i, r in enumerate(rows, 1):
    print(f"| {i} | {r['signal']} | {r['at_step']} | {'yes' if r['during_write'] else 'no'} | "
          f"{r['status']} | {r['resume_from']} | {r['lost']} |")
  print(f"\nfinal EMA parameters bit-equal to the uninterrupted run: "
        f"{'yes' if result['equal'] else 'NO'}")


def main(argv):
  del argv
  if FLAGS.worker:
    sys.exit(_worker(FLAGS.soak_dir, FLAGS.steps))
  root = FLAGS.soak_dir or tempfile.mkdtemp(prefix='maskvid-soak-')
  result = soak(root, FLAGS.steps, FLAGS.kills, FLAGS.seed)
  _print(result)
  if not result['equal']:
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
