"""maskvid.bench.ladder: rung configs share the run's stages; the table and plot read the evals."""
import os

from configs import reference
from maskvid.bench import ladder


def test_rung_config_shares_data_vae_latents_and_owns_its_model(tmp_path):
  c = reference.get_config()
  wd = str(tmp_path / 'run')
  small = ladder.rung_config(c, wd, 250)
  top = ladder.rung_config(c, wd, int(c.train.steps))
  for stage in ('data', 'vae', 'latents'):
    assert small.paths[stage] == top.paths[stage] == os.path.join(wd, stage)
  assert small.paths.diffusion == os.path.join(wd, 'ladder', 'steps_250', 'diffusion')
  assert top.paths.diffusion == ''            # the run's own model is the top rung
  assert small.train.steps == 250 and top.train.steps == c.train.steps
  assert small.eval.methods == ('nearest_fill', 'cross_fade', 'no_propagation', 'ours')
  assert small.eval.num_samples == 1 and not small.eval.one_step
  assert c.train.steps == reference.get_config().train.steps     # the run's config is untouched


def _metrics(ours):
  def block(v):
    return {'psnr_hole': v, 'psnr_hole_se': 0.1}
  return {s: {t: {'ours': block(ours), 'nearest_fill': block(12.0), 'cross_fade': block(13.0)}
              for t in ('interpolate', 'holes')} for s in ('test', 'ood')}


def test_table_and_plot(tmp_path):
  points = {1000: _metrics(14.0), 250: _metrics(13.0)}
  table, cols = ladder.ladder_table(points)
  lines = table.splitlines()
  assert cols[0] == ('test', 'interpolate') and len(cols) == 4
  assert lines[2].startswith('| 250 | 13.00±0.10') and lines[3].startswith('| 1000 | 14.00')
  # Each task's own trivial answer: cross-fade for interpolate, nearest fill for holes.
  assert lines[4] == '| trivial | 13.00 | 12.00 | 13.00 | 12.00 |'
  path = str(tmp_path / 'ladder.png')
  ladder.plot(points, cols, path)
  assert os.path.getsize(path) > 1000
