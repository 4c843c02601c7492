"""The jobs `maskvid.main` can run. Each is an edge: it reads config, touches disk, calls the core.

Orchestration lives here and nowhere below: which stage feeds which, the trained baselines
(same backbone and budget as ours, own diffusion dirs), and what the diffusion trainer previews.
Every job skips work already on disk, so `demo` (all stages in order) resumes after a stop.
"""
import copy
import json

from absl import logging

from maskvid import fileio
from maskvid import workdir as workdir_lib
from maskvid.data import storage
from maskvid.depth import train as depth_train
from maskvid.eval import posed as eval_posed
from maskvid.eval import run as eval_run
from maskvid.sampling import preview
from maskvid.diffusion import train as diffusion_train
from maskvid.vae import cache
from maskvid.vae import train as vae_train
from maskvid.workdir import stage_dir

# The trained baselines of the eval table: diffusion objective and input channels of each.
TRAINED_BASELINES = {'conditioning': dict(objective='conditioning', input_conditioning=True),
                     'replacement': dict(objective='unconditional', input_conditioning=False)}


def run_render(config, workdir: str) -> None:
  data_dir = stage_dir(config, workdir, 'data')
  storage.ensure_dataset(config, data_dir)
  logging.info('dataset ready in %s', data_dir)


def run_vae(config, workdir: str) -> dict:
  run_render(config, workdir)
  vae_dir = stage_dir(config, workdir, 'vae')
  workdir_lib.save_config(config, vae_dir)
  return vae_train.train_vae(config, vae_dir, stage_dir(config, workdir, 'data'))


def run_cache(config, workdir: str) -> None:
  cache.build_latent_cache(config, stage_dir(config, workdir, 'vae'),
                           stage_dir(config, workdir, 'data'),
                           stage_dir(config, workdir, 'latents'))


def run_diffusion(config, workdir: str) -> dict:
  return diffusion_train.train_and_evaluate(config, workdir, preview.make_evaluator(config, workdir))


def baseline_config(config, workdir: str, name: str):
  """Config copy for trained baseline `name`: own diffusion dir, the run's data/VAE/latents."""
  if name not in TRAINED_BASELINES:
    raise ValueError(f'trained baseline must be one of {sorted(TRAINED_BASELINES)}, got {name!r}')
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    for stage in ('data', 'vae', 'latents'):
      cfg.paths[stage] = fileio.absolute(stage_dir(config, workdir, stage))
    cfg.paths.diffusion = fileio.absolute(workdir_lib.baseline_dir(workdir, name))
    cfg.paths.eval = fileio.absolute(stage_dir(config, workdir, 'eval'))
    cfg.diffusion.objective = TRAINED_BASELINES[name]['objective']
    cfg.model.input_conditioning = TRAINED_BASELINES[name]['input_conditioning']
    steps = int(config.eval.baseline_steps)
    if steps > 0:
      cfg.train.steps = steps
    cfg.job = 'diffusion'
  return cfg


def ensure_baseline(config, workdir: str, name: str) -> str:
  """Trains baseline `name` unless its run finished; returns its diffusion dir."""
  cfg = baseline_config(config, workdir, name)
  d = cfg.paths.diffusion
  if diffusion_train.is_finished(d):
    logging.info('baseline %s: finished run in %s, not retraining', name, d)
    return d
  logging.info('baseline %s: training %d steps in %s', name, int(cfg.train.steps), d)
  run_diffusion(cfg, workdir)
  return d


def run_baselines(config, workdir: str) -> list:
  """Trains the trained baselines named in config.eval.methods (finished ones are skipped).

  `eval` runs this first; as its own job it lets the baselines train as separate processes or
  cluster jobs beside the main `diffusion` job, e.g. one per baseline with
  `--config.eval.methods="('conditioning',)"`.
  """
  names = [b for b in config.eval.methods if b in TRAINED_BASELINES]
  if not names:
    raise ValueError(f'config.eval.methods={tuple(config.eval.methods)} names no trained '
                     f'baseline; trained ones are {sorted(TRAINED_BASELINES)}')
  return [ensure_baseline(config, workdir, name) for name in names]


def run_eval(config, workdir: str) -> dict:
  if any(b in TRAINED_BASELINES for b in config.eval.methods):
    run_baselines(config, workdir)
  return eval_run.evaluate(config, workdir)


def run_eval_posed(config, workdir: str) -> dict:
  """The posed benchmarks (configs/eval_posed.py): scores a trained run, never trains."""
  return eval_posed.evaluate_posed(config, workdir)


def run_depth(config, workdir: str) -> dict:
  return depth_train.train_depth(config, workdir)


def run_all(config, workdir: str) -> None:
  """All stages in order; each one skips what is already on disk, so a re-run resumes."""
  run_vae(config, workdir)
  run_cache(config, workdir)
  run_diffusion(config, workdir)
  results = run_eval(config, workdir)
  print(json.dumps(results.get('summary', {}), indent=2) if isinstance(results, dict) else results)

