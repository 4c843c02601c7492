"""The jobs `maskvid.main` can run. Each is an edge: it reads config, touches disk, calls the core."""
import json

from absl import logging

from maskvid import fileio
from maskvid.paths import stage_dir


def save_config(config, directory: str) -> None:
  """Writes directory/config.json (local path or gs:// URI), creating the directory."""
  fileio.makedirs(directory)
  fileio.write_text_atomic(fileio.path(directory) / 'config.json',
                           config.to_json_best_effort(indent=2))


def run_render(config, workdir: str) -> None:
  from maskvid.data import storage
  data_dir = stage_dir(config, workdir, 'data')
  storage.ensure_dataset(config, data_dir)
  logging.info('dataset ready in %s', data_dir)


def run_vae(config, workdir: str) -> dict:
  from maskvid.vae import train as vae_train
  run_render(config, workdir)
  vae_dir = stage_dir(config, workdir, 'vae')
  save_config(config, vae_dir)
  return vae_train.train_vae(config, vae_dir, stage_dir(config, workdir, 'data'))


def run_cache(config, workdir: str) -> None:
  from maskvid.vae import cache
  cache.build_latent_cache(config, stage_dir(config, workdir, 'vae'),
                           stage_dir(config, workdir, 'data'),
                           stage_dir(config, workdir, 'latents'))


def run_diffusion(config, workdir: str) -> dict:
  from maskvid.train import loop
  return loop.train_and_evaluate(config, workdir)


def run_baselines(config, workdir: str) -> list:
  """Trains the trained baselines named in config.eval.baselines (finished ones are skipped).

  `eval` trains them on demand too; this job lets them train as separate processes or cluster
  jobs beside the main `diffusion` job, e.g. one per baseline with
  `--config.eval.baselines="('conditioning',)"`.
  """
  from maskvid.eval import run as eval_run
  names = [b for b in config.eval.baselines if b in eval_run.TRAINED_BASELINES]
  if not names:
    raise ValueError(f'config.eval.baselines={tuple(config.eval.baselines)} names no trained '
                     f'baseline; trained ones are {sorted(eval_run.TRAINED_BASELINES)}')
  return [eval_run.ensure_baseline(config, workdir, name) for name in names]


def run_eval(config, workdir: str) -> dict:
  from maskvid.eval import run as eval_run
  return eval_run.evaluate(config, workdir)


def run_depth(config, workdir: str) -> dict:
  from maskvid.depth import train as depth_train
  return depth_train.train_depth(config, workdir)


def run_demo(config, workdir: str) -> None:
  """All stages in order; each one skips what is already on disk, so a re-run resumes."""
  run_vae(config, workdir)
  run_cache(config, workdir)
  run_diffusion(config, workdir)
  results = run_eval(config, workdir)
  print(json.dumps(results.get('summary', {}), indent=2) if isinstance(results, dict) else results)
