"""The largest transformer whose train step fits a TPU slice at one clip per chip.

    python -m maskvid.bench.largest_model --config=configs/pretrain.py --topology=v5e-256 \
        [--num_slices=1] [--hbm_budget=0.85] [--out=FILE.json]

A ladder of shapes (width, depth; head dim 64), each the config's model with those sizes and
`config.train.batch_size` = chips (one clip per chip), is searched with the compile job
(`maskvid.aot.compile_for`, train step only, no gradient accumulation): the largest rung whose
step the TPU compiler fits within the budget. The search starts at the rung a rough memory
estimate (`estimate_bytes`) picks and walks up or down one rung per compile, so a pod costs two
or three compiles. Prints a table of the rungs tried.
"""
import json
import sys

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

from maskvid import aot
from maskvid import topology as topology_lib

# (width, depth): wider and deeper together, as model families scale.
LADDER = ((1024, 24), (1536, 28), (2048, 32), (3072, 40), (4096, 48), (5120, 56), (6144, 64),
          (8192, 72), (12288, 80))

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Run config (a configs/*.py file).',
                                lock_config=False)
flags.DEFINE_string('topology', None, 'Cloud TPU accelerator type, e.g. v5e-256.')
flags.DEFINE_integer('num_slices', 1, 'Slices joined over DCN.')
flags.DEFINE_float('hbm_budget', 0.85, 'Fits = train step within this fraction of HBM.')
flags.DEFINE_string('out', '', 'Write the rungs tried as JSON here.')
flags.mark_flags_as_required(['config', 'topology'])


def rung_config(config, width: int, depth: int, chips: int) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(config.to_dict())
  c.model.width, c.model.depth, c.model.num_heads = width, depth, width // 64
  c.train.batch_size = chips
  c.train.microbatches = 1
  return c


def try_rung(config, topology: str, num_slices: int, width: int, depth: int,
             budget: float) -> dict:
  chips = topology_lib.parse(topology).chips * num_slices
  c = rung_config(config, width, depth, chips)
  try:
    report = aot.compile_for(c, topology, num_slices, ('train',), budget, fit=False)
  except aot.DoesNotFit as e:
    report = getattr(e, 'report', None)
    if report is None:
      return dict(width=width, depth=depth, fits=False, error=str(e))
  train = report['programs']['train']
  return dict(width=width, depth=depth, params=report['params'], fits=train['fits'],
              gib_per_chip=train['bytes_per_chip'] / aot.GiB,
              hbm_fraction=train['hbm_fraction'], est_step_s=train['est_step_s'],
              est_mfu=train['est_mfu'], mesh=report['mesh'], compile_s=train['compile_s'])


def estimate_bytes(config, width: int, depth: int, chips: int) -> float:
  """Rough per-chip bytes of the train step at one clip per chip (only to pick the first rung):
  the sharded state (20 bytes/param), per block the saved residual (f32) and, with remat=dots,
  the bf16 matmul outputs (15 widths per token), one block's gathered weights and gradients
  (f32) and its transient activations."""
  c = rung_config(config, width, depth, chips)
  from maskvid.model import model as model_lib  # pylint: disable=import-outside-toplevel
  params = model_lib.matmul_params(c)
  tokens = model_lib.num_tokens(c)
  saved = tokens * width * (4 + (30 if c.model.remat == 'dots' else 0))
  if c.model.remat == 'none':
    saved = tokens * width * 60
  layer_weights = 18 * width * width * 4 * 2
  transient = tokens * width * 4 * 12
  return 20 * params / chips + depth * saved + layer_weights + transient


def largest(config, topology: str, num_slices: int = 1, budget: float = 0.85) -> tuple:
  """(largest fitting rung or None, every rung tried): a walk over LADDER from the estimate."""
  slice_ = topology_lib.parse(topology)
  chips = slice_.chips * num_slices
  limit = budget * slice_.chip.hbm_bytes
  i = max([0] + [k for k, (w, d) in enumerate(LADDER)
                 if estimate_bytes(config, w, d, chips) <= limit])
  results = {}

  def fits(k):
    if k not in results:
      results[k] = try_rung(config, topology, num_slices, *LADDER[k], budget)
      r = results[k]
      print(f"  {r['width']} x {r['depth']}: {r.get('gib_per_chip', float('nan')):.2f} GiB/chip, "
            f"fits {r['fits']}", flush=True)
    return results[k]['fits']

  if fits(i):
    while i + 1 < len(LADDER) and fits(i + 1):
      i += 1
    best = results[i]
  else:
    while i > 0 and not fits(i - 1):
      i -= 1
    best = results[i - 1] if i > 0 else None
  return best, list(results.values())


def main(argv):
  del argv
  best, tried = largest(FLAGS.config, FLAGS.topology, FLAGS.num_slices, FLAGS.hbm_budget)
  print('| width x depth | params | GiB/chip | % HBM | fits | est step s | est MFU |')
  print('|---|---|---|---|---|---|---|')
  for r in sorted(tried, key=lambda r: r['width']):
    if 'params' not in r:
      print(f"| {r['width']} x {r['depth']} | - | - | - | no | - | - |")
      continue
    print(f"| {r['width']} x {r['depth']} | {r['params'] / 1e9:.2f}B | {r['gib_per_chip']:.2f} | "
          f"{100 * r['hbm_fraction']:.0f} | {'yes' if r['fits'] else 'no'} | "
          f"{r['est_step_s']:.2f} | {100 * r['est_mfu']:.0f}% |")
  print(f"largest on {FLAGS.topology} x {FLAGS.num_slices} at one clip per chip: "
        + (f"{best['width']} x {best['depth']} ({best['params'] / 1e9:.2f}B)" if best else 'none'))
  if FLAGS.out:
    with open(FLAGS.out, 'w') as f:
      json.dump(dict(topology=FLAGS.topology, num_slices=FLAGS.num_slices, largest=best,
                     tried=tried), f, indent=1, default=float)
  sys.exit(0 if best else 1)


if __name__ == '__main__':
  app.run(main)
