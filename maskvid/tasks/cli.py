"""Flags and plumbing shared by the task commands (nvs, interpolate, edit)."""
from absl import app
from absl import flags
from absl import logging

from maskvid.tasks import io
from maskvid.sampling import completer as completer_lib


def define_common_flags() -> None:
  flags.DEFINE_string('checkpoint', None, 'maskvid workdir holding trained diffusion/ and vae/.')
  flags.DEFINE_string('out', None, 'Output .mp4 path; a PNG strip is written next to it.')
  flags.DEFINE_integer('num_steps', None, 'Sampler steps (default: the run config).')
  flags.DEFINE_enum('solver', None, ['euler', 'heun', 'ancestral'], 'Sampler (default: config).')
  flags.DEFINE_float('renoise_at', None, 'Stochastic conditioning threshold t in (0, 1); 0: off '
                     '(default: the run config\'s sample.renoise_at, what the eval\'s ours row '
                     'uses).')
  flags.DEFINE_float('guidance', None, 'Mask-dropout guidance weight (default: config).')
  flags.DEFINE_integer('seed', 0, 'Sampling seed.')
  flags.DEFINE_bool('paste_known', True, 'Copy the known input pixels over the decoded output '
                    '(--nopaste_known shows the raw decode).')
  flags.DEFINE_float('min_valid', None, 'Fraction of a model patch\'s pixels that must be known '
                     'for it to be known (default: the run config\'s sample.min_valid).')
  flags.DEFINE_integer('fps', 8, 'Frames per second of the MP4.')
  flags.DEFINE_enum('long_strategy', None, ['anchors', 'sliding'], 'Videos longer than the '
                    'model\'s clip: anchors (keyframes over the whole video first, then the '
                    'frames between) or sliding (windows in time order); sampling.long_video. '
                    'Default: sliding for nvs, anchors for interpolate and edit (measured).')
  flags.DEFINE_integer('context_frames', 2, 'Long videos: finished frames each window sees.')
  flags.DEFINE_bool('guide_context', False, 'Long videos with guidance: guide over the context '
                    'frames only (the window\'s own given pixels in both passes).')
  flags.mark_flags_as_required(['checkpoint', 'out'])


def sample_options(values) -> dict:
  """Sampler keyword arguments from parsed flags (None = the completer's default).

  Every default is the run config's `sample` section (`sampling.options`), the options the eval's
  `ours` row reports; `--renoise_at=0` turns stochastic conditioning off.
  """
  return dict(num_steps=values.num_steps, solver=values.solver, guidance=values.guidance,
              renoise_at=values.renoise_at, paste_known=bool(values.paste_known),
              long_strategy=values.long_strategy, context_frames=values.context_frames,
              guide_context=bool(values.guide_context))


def load_completer(workdir: str, min_valid=None):
  """Completer of a maskvid workdir (validated first so errors name --checkpoint)."""
  io.require_checkpoint(workdir)
  if min_valid is not None and not 0.0 < min_valid <= 1.0:
    raise io.InputError(f'--min_valid: must be in (0, 1], got {min_valid}')
  kwargs = {} if min_valid is None else {'min_valid': float(min_valid)}
  logging.info('loading model from %s', workdir)
  try:
    return completer_lib.Completer.from_workdir(workdir, **kwargs)
  except FileNotFoundError as e:
    raise io.InputError(f'--checkpoint: {e}') from e


def run_main(argv, fn):
  """The body of every task command's absl `main`: runs fn() and prints the paths it wrote.

  An InputError becomes a one-line message and exit status 1 (nothing written).
  """
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  try:
    paths = fn()
  except io.InputError as e:
    logging.error('%s', e)
    raise SystemExit(f'error: {e}') from None
  print('wrote', *paths)
  return paths
