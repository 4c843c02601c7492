"""Scaling ladder: `ours` at several training budgets, same config otherwise, hole PSNR vs steps.

    python -m maskvid.bench.ladder --config=configs/reference.py --workdir=runs/reference \
        --steps=250,1000,4000

Every rung shares the run's data, VAE and latent cache (run the config's `cache` job first) and
trains its own masked model in {workdir}/ladder/steps_<N>/diffusion; a rung whose N equals the
config's train.steps reuses the run's own diffusion dir. Each rung is then evaluated with the
trivial rows and `ours` (one sample, the headline). Writes {workdir}/ladder/ladder.md, ladder.json
and ladder.png (hole PSNR of every split/task against steps, log-x, trivial answers dashed).
Finished rungs are not retrained (the trainer resumes), so a re-run only redraws.
"""
import copy
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from maskvid import fileio
from maskvid.eval import report
from maskvid.eval import protocol
from maskvid.eval import run as eval_run
from maskvid.workdir import stage_dir
from maskvid.diffusion import train as diffusion_train
from maskvid.vae import cache as cache_lib

FLAGS = flags.FLAGS
ROWS = ('nearest_fill', 'cross_fade', 'no_propagation', 'ours')


def rung_config(config, workdir: str, steps: int):
  """Config of one rung: the run's data/VAE/latents, its own diffusion and eval dirs."""
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    for stage in ('data', 'vae', 'latents'):
      cfg.paths[stage] = fileio.absolute(stage_dir(config, workdir, stage))
    rung = os.path.join(workdir, 'ladder', f'steps_{steps}')
    cfg.paths.eval = fileio.absolute(os.path.join(rung, 'eval'))
    if steps != int(config.train.steps):
      cfg.paths.diffusion = fileio.absolute(os.path.join(rung, 'diffusion'))
    cfg.train.steps = int(steps)
    cfg.train.eval_every = 0
    cfg.eval.methods = ROWS
    cfg.eval.num_samples = 1
    cfg.eval.one_step = False
  return cfg


def trivial_row(task: str) -> str:
  """The row holding `task`'s trivial answer (`eval.protocol.TRIVIAL`)."""
  return protocol.TRIVIAL[task]


def ladder_table(points: dict) -> tuple[str, list]:
  """points[steps] = results['metrics'] -> (markdown, [(split, task)] columns)."""
  first = next(iter(points.values()))
  cols = [(s, t) for s in first for t in first[s]]
  header = ['steps'] + [f'{s}/{t}' for s, t in cols]
  rows = []
  for steps, metrics in sorted(points.items()):
    row = [str(steps)]
    for s, t in cols:
      m = metrics[s][t]['ours']
      row.append(f"{m['psnr_hole']:.2f}±{m['psnr_hole_se']:.2f}")
    rows.append(row)
  trivial = ['trivial']
  for s, t in cols:
    trivial.append(f"{first[s][t][trivial_row(t)]['psnr_hole']:.2f}")
  rows.append(trivial)
  return report.markdown_table(header, rows), cols


def plot(points: dict, cols: list, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  steps = sorted(points)
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, (s, t) in enumerate(cols):
    color = f'C{i}'
    y = [points[n][s][t]['ours']['psnr_hole'] for n in steps]
    se = [points[n][s][t]['ours']['psnr_hole_se'] for n in steps]
    ax.errorbar(steps, y, yerr=se, marker='o', color=color, label=f'ours {s}/{t}', capsize=3)
    ax.axhline(points[steps[0]][s][t][trivial_row(t)]['psnr_hole'], color=color, ls='--', lw=1)
  ax.set_xscale('log')
  ax.set_xlabel('training steps')
  ax.set_ylabel('hole PSNR (dB), one sample')
  ax.set_title('maskvid scaling ladder (dashed: trivial answer of each task)')
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  config, workdir = FLAGS.config, FLAGS.workdir
  if not workdir:
    raise app.UsageError('--workdir is required')
  budgets = sorted(int(s) for s in (FLAGS.steps or []))
  if len(budgets) < 2 or budgets[0] < 1:
    raise app.UsageError(f'--steps needs two or more positive budgets, got {FLAGS.steps}')
  latents_dir = stage_dir(config, workdir, 'latents')
  try:
    cache_lib.require_complete(latents_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise app.UsageError(f'--workdir: no finished latent cache in {latents_dir} ({e}); run '
                         f'--config.job=cache with the same config first') from e
  points = {}
  for steps in budgets:
    cfg = rung_config(config, workdir, steps)
    logging.info('ladder rung %d steps: %s', steps, cfg.paths.diffusion or 'run dir')
    diffusion_train.train_and_evaluate(cfg, workdir)
    points[steps] = eval_run.evaluate(cfg, workdir)['metrics']
  out = os.path.join(workdir, 'ladder')
  fileio.makedirs(out)
  table, cols = ladder_table(points)
  fileio.write_text_atomic(os.path.join(out, 'ladder.md'),
                           '# Hole PSNR of ours (one sample) against training steps\n\n'
                           + table + '\n')
  as_json = report._json_safe(  # pylint: disable=protected-access
      {str(k): v for k, v in points.items()})
  fileio.write_json_atomic(os.path.join(out, 'ladder.json'), as_json)
  plot(points, cols, os.path.join(out, 'ladder.png'))
  print(table, flush=True)


if __name__ == '__main__':
  # Flags are defined here, not at import, so tests can import this module beside maskvid.main.
  config_flags.DEFINE_config_file('config', None, 'Run config (e.g. configs/reference.py).')
  flags.DEFINE_string('workdir', None, 'The run\'s workdir (data, vae, latents).')
  flags.DEFINE_list('steps', None, 'Training budgets, e.g. 250,1000,4000 (each 4x the last).')
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
