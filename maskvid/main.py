"""Entry point: `python -m maskvid.main --config=configs/X.py --workdir=DIR`.

The config's `job` picks the stage; `demo` runs every stage in order, each skipping work
that is already done (rendered shards, finished checkpoints, a complete latent cache).
"""
import logging as std_logging
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Run config (a configs/*.py file).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for data, checkpoints, metrics and pictures.')
flags.mark_flags_as_required(['config', 'workdir'])

JOBS = ('render', 'vae', 'cache', 'diffusion', 'baselines', 'eval', 'eval_posed', 'depth', 'all',
        'demo')
# Jobs that read config.data's source: its keys are checked before anything starts.
SOURCE_JOBS = ('render', 'vae', 'cache', 'all', 'demo')


def run_job(config, workdir: str) -> None:
  """Runs `config.job` in `workdir`. Side effects only at this edge."""
  job = config.job
  if job not in JOBS:
    raise ValueError(f'config.job must be one of {JOBS}, got {job!r}')
  if job in SOURCE_JOBS:
    from maskvid.data import sources  # pylint: disable=g-import-not-at-top
    sources.check_source(config)
  from maskvid import stages  # pylint: disable=g-import-not-at-top
  # 'demo' (configs/demo.py) is the whole pipeline, as 'all' (configs/pretrain.py) is.
  stage = {'all': 'run_all', 'demo': 'run_all'}.get(job, f'run_{job}')
  getattr(stages, stage)(config, workdir)


def configure_cpu_devices(config) -> None:
  """Applies config.cpu_devices (> 0) before any JAX backend starts."""
  n = int(config.get('cpu_devices', 0))
  if n < 0:
    raise ValueError(f'config.cpu_devices must be >= 0 (0: JAX default), got {n}')
  if n:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_num_cpu_devices', n)


class _QuietLibraries(std_logging.Filter):
  """Drops INFO chatter from orbax/grain so the training progress lines stay readable."""

  NOISY = ('/orbax/', '/grain/', '/tensorstore/')

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or not any(
        part in record.pathname for part in self.NOISY)


def run(config, workdir: str) -> int:
  """Runs the job and returns the process exit status: 0, or `recovery.EXIT_CODE` after a
  preemption (its checkpoint is saved: a restart resumes from it), or 1 after a non-finite loss.
  Both stops, and a config.data that names no usable source (exit 2), print one line to stderr;
  every other error propagates with its traceback."""
  from maskvid import recovery  # pylint: disable=g-import-not-at-top
  from maskvid.data import sources  # pylint: disable=g-import-not-at-top
  try:
    run_job(config, workdir)
  except sources.SourceConfigError as e:
    print(f'maskvid: {e}', file=sys.stderr, flush=True)
    return 2
  except recovery.Preempted as e:
    print(f'maskvid: {e}', file=sys.stderr, flush=True)
    return recovery.EXIT_CODE
  except recovery.NonFiniteLoss as e:
    print(f'maskvid: {e}', file=sys.stderr, flush=True)
    return 1
  return 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  std_logging.getLogger('absl').addFilter(_QuietLibraries())
  logging.get_absl_handler().addFilter(_QuietLibraries())
  configure_cpu_devices(FLAGS.config)
  # Imported here, after the flags: `--help` and flag errors answer without loading JAX and TF.
  from maskvid import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize(FLAGS.config)
  sys.exit(run(FLAGS.config, FLAGS.workdir))


def parse_flags(argv):
  """absl's flag parsing, with a bad `--config.<key>` override as one line instead of a traceback.

  ml_collections raises while applying an override that names no key (`--config.train.stepz=5`:
  AttributeError, with its "Did you mean" hint) or gives a value of the wrong type.
  """
  try:
    return FLAGS(argv)
  except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
    text = str(e)
    if isinstance(e, AttributeError) and text[:1] == text[-1:] == "'":
      # ml_collections re-raises a KeyError as AttributeError(repr(KeyError text)).
      text = 'no such key ' + text[1:-1].encode().decode('unicode_escape')
    message = '; '.join(line.strip() for line in text.splitlines() if line.strip())
    bad = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')
           and a.split('=')[0].rsplit('.', 1)[-1] in message]
    where = f' {bad[0]}' if bad and not isinstance(e, flags.Error) else ''
    print(f'maskvid: bad command-line flag{where}: {message}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
