"""A run's workdir: where each stage lives, and the config written beside its outputs.

The bottom of the package: every stage and trainer imports it, it imports nothing of maskvid
but `fileio`.
"""
import os

import ml_collections

from maskvid import fileio

STAGES = ('data', 'vae', 'latents', 'diffusion', 'eval', 'depth')
CONFIG_FILE = 'config.json'
BASELINES_DIR = 'baselines'


def stage_dir(config, workdir: str, stage: str) -> str:
  """Directory of `stage` for this run: config.paths.<stage> or {workdir}/<stage>."""
  if stage not in STAGES:
    raise ValueError(f'stage must be one of {STAGES}, got {stage!r}')
  override = config.paths.get(stage, '')
  # posixpath.join only concatenates, so a gs://bucket/run workdir stays a valid URI.
  return override if override else os.path.join(workdir, stage)


def baseline_dir(workdir: str, name: str) -> str:
  """Diffusion dir of the trained baseline `name`: {workdir}/baselines/<name>."""
  return os.path.join(workdir, BASELINES_DIR, name)


def save_config(config, directory: str) -> None:
  """Writes directory/config.json (local path or gs:// URI), creating the directory."""
  fileio.makedirs(directory)
  fileio.write_text_atomic(fileio.path(directory) / CONFIG_FILE,
                           config.to_json_best_effort(indent=2))


def _tuples(value):
  # JSON turns tuples into lists; configs use tuples (patch_size, mesh rules, ...).
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def read_config(path: str) -> ml_collections.ConfigDict:
  """Rebuilds a run config from the config.json `save_config` wrote (tuples restored)."""
  return ml_collections.ConfigDict(_tuples(fileio.read_json(path)))


def load_config(directory: str, what: str = 'stage') -> ml_collections.ConfigDict:
  """The config.json a stage wrote into `directory`; FileNotFoundError naming it if absent."""
  path = os.path.join(directory, CONFIG_FILE)
  if not fileio.path(path).exists():
    raise FileNotFoundError(f'no {CONFIG_FILE} in {directory!r}: not a trained {what} directory '
                            f'(run the {what} stage first)')
  return read_config(path)
