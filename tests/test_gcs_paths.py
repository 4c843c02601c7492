"""gs:// workdirs: the stages' small files go through etils.epath and land where expected.

No bucket is reachable here, so `fake_gcs` stands one in with etils' own test hook
(`epath.testing.mock_epath`): every epath call on a `gs://bucket/...` path is served from a local
directory, and recorded. The process runs in an empty working directory, so a write that skipped
epath (os / open() on the literal 'gs://...' string) would create `./gs:` there: the fixture fails
the test if that appears. Orbax checkpoints, tensorstore and TensorBoard files are not covered:
they need a real bucket (docs/scale_out.md says what was and was not verified).
"""
import json
import os

import numpy as np
import pytest
from etils import epath
from etils.epath import gpath
from etils.epath import testing as epath_testing

from maskvid import workdir as workdir_lib
from maskvid.train import state as state_lib
from maskvid.vae import evaluate as vae_eval
from maskvid import pictures
from maskvid import fileio

_OPS = ('copy', 'exists', 'glob', 'isdir', 'listdir', 'makedirs', 'mkdir', 'open', 'remove',
        'rename', 'replace', 'rmtree', 'stat', 'walk')


class FakeGcs:
  """gs://X/... <-> {root}/X/...; `calls` lists (op, gs path) of every epath call on a URI."""

  def __init__(self, root):
    self.root = root
    self.calls = []

  def local(self, p):
    p = os.fspath(p)
    return os.path.join(self.root, p[len('gs://'):]) if p.startswith('gs://') else p

  def mock(self, op):
    def fn(original, path, *args, **kwargs):
      # copy / rename / replace take a destination as the second argument.
      uris = [str(a) for a in (path, *args) if str(a).startswith('gs://')]
      if uris:
        self.calls.append((op, *uris))
      args = tuple(self.local(a) if isinstance(a, str) else a for a in args)
      return original(self.local(path), *args, **kwargs)
    return fn

  def files(self):
    """Relative paths of everything in the fake bucket (temp names included)."""
    out = []
    for d, _, names in os.walk(self.root):
      out += [os.path.relpath(os.path.join(d, n), self.root) for n in names]
    return sorted(out)


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
  root = tmp_path / 'gcs'
  root.mkdir()
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  # With TensorFlow installed, epath sends gs:// to tf.io.gfile, bypassing the mockable table.
  monkeypatch.setattr(gpath, '_is_tf_installed', lambda: False)
  gcs = FakeGcs(str(root))
  with epath_testing.mock_epath(**{op: gcs.mock(op) for op in _OPS}):
    yield gcs
  assert not os.listdir(cwd), f'something wrote around epath: {os.listdir(cwd)}'


def _config():
  from configs import tiny  # pylint: disable=g-import-not-at-top
  return tiny.get_config()


# ------------------------------------------------------------------------------ fileio itself

def test_fileio_writes_and_reads_through_epath(fake_gcs):
  d = 'gs://bucket/run/x'
  fileio.makedirs(d)
  fileio.write_json_atomic(f'{d}/a.json', {'k': [1, 2]})
  fileio.write_text_atomic(f'{d}/b.md', 'hello')
  image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
  fileio.write_image(f'{d}/c.png', image)
  with fileio.local_output(f'{d}/d.bin') as tmp:
    assert not fileio.is_uri(tmp) and os.path.isabs(tmp)
    with open(tmp, 'wb') as f:
      f.write(b'video bytes')
  assert fileio.read_json(f'{d}/a.json') == {'k': [1, 2]}
  assert epath.Path(f'{d}/b.md').read_text() == 'hello'
  assert fake_gcs.files() == ['bucket/run/x/a.json', 'bucket/run/x/b.md', 'bucket/run/x/c.png',
                              'bucket/run/x/d.bin']
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  np.testing.assert_array_equal(iio.imread(os.path.join(fake_gcs.root, 'bucket/run/x/c.png')),
                                image)
  with open(os.path.join(fake_gcs.root, 'bucket/run/x/d.bin'), 'rb') as f:
    assert f.read() == b'video bytes'
  assert ('open', f'{d}/c.png') in fake_gcs.calls


def test_fileio_local_paths_are_atomic_and_leave_no_temp_files(tmp_path):
  d = tmp_path / 'run'
  fileio.makedirs(d)
  fileio.write_json_atomic(d / 'a.json', {'step': 3})
  fileio.write_json_atomic(d / 'a.json', {'step': 4})      # replaces
  with pytest.raises(RuntimeError):
    with fileio.local_output(d / 'v.mp4') as tmp:
      assert os.path.dirname(tmp) == str(d)   # same filesystem: os.replace is atomic
      raise RuntimeError('encoder failed')
  assert sorted(os.listdir(d)) == ['a.json']
  assert json.loads((d / 'a.json').read_text()) == {'step': 4}


def test_absolute_and_stage_dir_keep_uris():
  from maskvid.workdir import stage_dir  # pylint: disable=g-import-not-at-top
  assert fileio.absolute('gs://b/run/vae') == 'gs://b/run/vae'
  assert fileio.absolute('run/vae') == os.path.abspath('run/vae')
  assert stage_dir(_config(), 'gs://b/run', 'vae') == 'gs://b/run/vae'


# ------------------------------------------------------------------------------ stage files

def test_save_and_load_config(fake_gcs):
  from maskvid.model import model  # pylint: disable=g-import-not-at-top
  from maskvid.train import checkpoint  # pylint: disable=g-import-not-at-top
  config = _config()
  workdir_lib.save_config(config, 'gs://bucket/run/vae')
  with open(os.path.join(fake_gcs.root, 'bucket/run/vae/config.json')) as f:
    assert f.read() == config.to_json_best_effort(indent=2)
  assert workdir_lib.load_config('gs://bucket/run/vae').model.width == config.model.width
  back = workdir_lib.read_config('gs://bucket/run/vae/config.json')
  assert back.model.patch_size == tuple(config.model.patch_size)
  assert checkpoint.checkpoint_dir('gs://bucket/run/diffusion') == (
      'gs://bucket/run/diffusion/checkpoints')
  # Inference from a gs:// dir without checkpoints: the usual error, naming the URI.
  workdir_lib.save_config(config, 'gs://bucket/run/diffusion')
  with pytest.raises(FileNotFoundError, match='gs://bucket/run/diffusion/checkpoints'):
    model.load_for_inference('gs://bucket/run/diffusion')
  with pytest.raises(FileNotFoundError, match='no config.json'):
    workdir_lib.load_config('gs://bucket/run/nothing', 'VAE')


def test_eval_report_and_grid(fake_gcs):
  from maskvid.eval import report  # pylint: disable=g-import-not-at-top
  results = {'methods': ['ours'], 'reference_rows': [], 'notes': ['n'], 'info': {},
             'metrics': {'test': {'nvs': {'ours': {'psnr_hole': 20.0, 'ssim_hole': float('nan')}}}}}
  paths = report.write_report(results, 'gs://bucket/run/eval')
  assert paths == {'markdown': 'gs://bucket/run/eval/results.md',
                   'json': 'gs://bucket/run/eval/results.json'}
  assert fileio.read_json(paths['json'])['metrics']['test']['nvs']['ours'] == {
      'psnr_hole': 20.0, 'ssim_hole': None}
  assert 'ours' in epath.Path(paths['markdown']).read_text()
  frames = np.zeros((3, 8, 8, 3), np.float32)
  png = pictures.save_grid('gs://bucket/run/eval/test_nvs.png', {'a': frames, 'b': frames})
  assert png == 'gs://bucket/run/eval/test_nvs.png'
  assert fake_gcs.files() == ['bucket/run/eval/results.json', 'bucket/run/eval/results.md',
                              'bucket/run/eval/test_nvs.png']


def test_vae_final_eval_writes_json_and_png(fake_gcs, monkeypatch):
  """The VAE's eval.json / reconstructions.png (compute stubbed out: only the I/O is tested)."""
  split_metrics = {'psnr': 21.0, 'ssim': 0.5, 'l1': 0.1}
  monkeypatch.setattr(vae_eval, 'evaluate', lambda *a, **k: {'test': dict(split_metrics)})
  monkeypatch.setattr(vae_eval, 'reconstruct', lambda module, params, x, fn=None: x)
  state = state_lib.TrainState(step=np.int32(7), params={}, opt_state=(), ema_params=None,
                               rng=None)
  eval_sets = {'test': np.zeros((4, 1, 16, 16, 3), np.float32)}
  fileio.makedirs('gs://bucket/run/vae')   # train_vae does this first
  flat = vae_eval.final_eval('gs://bucket/run/vae', None, state, eval_sets, None, {})
  assert flat == {'step': 7, 'test/psnr': 21.0, 'test/ssim': 0.5, 'test/l1': 0.1}
  saved = fileio.read_json('gs://bucket/run/vae/' + vae_eval.EVAL_FILE)
  assert saved['step'] == 7 and saved['splits'] == {'test': split_metrics}
  assert fake_gcs.files() == ['bucket/run/vae/eval.json', 'bucket/run/vae/reconstructions.png']


def test_diffusion_eval_pictures(fake_gcs, tmp_path):
  """The training preview's PNG grid and MP4 land in a gs:// diffusion dir (model: v = 0)."""
  import test_train_loop  # pylint: disable=g-import-not-at-top  (pytest puts tests/ on sys.path)
  from maskvid.sampling import preview  # pylint: disable=g-import-not-at-top
  latents_dir = str(tmp_path / 'latents')
  test_train_loop.make_latent_cache(latents_dir)
  config = test_train_loop.tiny_config()
  config.sample.num_steps = 1
  metrics = preview.evaluate(config, {}, lambda p, x, t: x * 0.0, latents_dir,
                             'gs://bucket/run/diffusion', 5)
  assert 'eval/latent_mse_holes' in metrics
  files = fake_gcs.files()
  assert 'bucket/run/diffusion/samples_0000005.png' in files
  assert files == ['bucket/run/diffusion/samples_0000005.mp4',
                   'bucket/run/diffusion/samples_0000005.png'], files
  # A latent cache on gs:// is refused up front, naming the config key.
  with pytest.raises(ValueError, match='paths.latents'):
    from maskvid.diffusion import train as loop  # pylint: disable=g-import-not-at-top
    loop._require_latent_cache('gs://bucket/run/latents')  # pylint: disable=protected-access


def test_cache_markers_read_through_epath(fake_gcs):
  from maskvid.vae import cache  # pylint: disable=g-import-not-at-top
  d = 'gs://bucket/run/latents'
  assert not cache.is_complete(d)
  fileio.makedirs(d)
  fileio.write_json_atomic(f'{d}/{cache.STATS_FILE}', {'shift': [0.5, 1.0], 'scale': [2.0, 1.0]})
  fileio.write_json_atomic(f'{d}/{cache.COMPLETE_FILE}', {})
  assert cache.is_complete(d)
  np.testing.assert_array_equal(cache.load_latent_stats(d)['scale'], [2.0, 1.0])


# ------------------------------------------------------------------------------ ArrayRecord dirs

def test_array_record_dirs_on_gs_are_refused_with_the_config_key():
  from maskvid.data import storage  # pylint: disable=g-import-not-at-top
  from maskvid.data import records
  from maskvid.vae import cache  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r'paths\.data.*local disk or a gcsfuse mount'):
    records.ClipSource('gs://bucket/run/data', 'train')
  with pytest.raises(ValueError, match=r'paths\.data'):
    storage.ensure_dataset(_config(), 'gs://bucket/run/data')
  with pytest.raises(ValueError, match=r'paths\.latents'):
    cache.LatentSource('gs://bucket/run/latents', 'train')
  with pytest.raises(ValueError, match=r'paths\.latents'):
    cache.build_latent_cache(_config(), 'gs://bucket/run/vae', '/local/data',
                             'gs://bucket/run/latents')
  from maskvid.eval import run  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r'paths\.latents'):
    run.evaluate(_config(), 'gs://bucket/run')


def test_baseline_config_keeps_gs_paths():
  from maskvid import stages  # pylint: disable=g-import-not-at-top
  config = _config()
  with config.unlocked():
    config.paths.data, config.paths.latents = '/mnt/disk/data', '/mnt/disk/latents'
  cfg = stages.baseline_config(config, 'gs://bucket/run', 'replacement')
  assert cfg.paths.vae == 'gs://bucket/run/vae'
  assert cfg.paths.diffusion == 'gs://bucket/run/baselines/replacement'
  assert cfg.paths.eval == 'gs://bucket/run/eval'
  assert (cfg.paths.data, cfg.paths.latents) == ('/mnt/disk/data', '/mnt/disk/latents')
