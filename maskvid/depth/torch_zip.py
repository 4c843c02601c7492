"""Reads a zip-format torch state dict (`torch.save`, torch >= 1.6) into numpy, without torch.

Layout: a zip whose entries share one top folder (`archive/`, or the saved file's stem):
`data.pkl` (the pickled object; tensors are persistent ids naming a storage key, and
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` builds a view of it),
`data/<key>` (each storage's raw bytes), `byteorder` ('little' when present). The unpickler here
resolves only the handful of torch names a state dict uses and refuses any other global, so a
file cannot run code. The legacy (pre-zip) format is read by `maskvid.eval.dists`.
"""
from __future__ import annotations

import collections
import pickle
import zipfile

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_}


class _Storage:
  def __init__(self, key: str, dtype):
    self.key, self.dtype = key, np.dtype(dtype)


class _Tensor:
  """Stands in for `_rebuild_tensor_v2`: the view is built once the storages are read."""
  def __init__(self, storage, offset, size, stride, *unused):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


class _Unpickler(pickle.Unpickler):
  """Resolves only the names a torch state dict pickles; any other global is refused."""

  def find_class(self, module, name):
    if module == 'torch' and name in _STORAGE_DTYPES:
      return name   # a name: persistent_load maps it to a dtype
    if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
      return _Tensor
    if (module, name) == ('torch._utils', '_rebuild_parameter'):
      return lambda data, *unused: data
    if (module, name) == ('collections', 'OrderedDict'):
      return collections.OrderedDict
    raise pickle.UnpicklingError(f'refusing global {module}.{name}')

  def persistent_load(self, pid):
    # ('storage', storage_type, key, location, numel)
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'
            and pid[1] in _STORAGE_DTYPES):
      raise pickle.UnpicklingError(f'unsupported persistent id {pid!r}')
    return _Storage(str(pid[2]), _STORAGE_DTYPES[pid[1]])


def _view(t: _Tensor, raw: bytes, name: str) -> np.ndarray:
  dtype = t.storage.dtype.newbyteorder('<')
  if len(raw) % dtype.itemsize:
    raise ValueError(f'storage {t.storage.key} of tensor {name!r} is truncated')
  buf = np.frombuffer(raw, dtype)
  count = 1 + sum((n - 1) * s for n, s in zip(t.size, t.stride)) if all(t.size) else 0
  if min(t.stride + t.size + (t.offset,), default=0) < 0 or t.offset + count > buf.size:
    raise ValueError(f'tensor {name!r} {t.size} does not fit its storage {t.storage.key} '
                     f'({buf.size} elements)')
  strides = tuple(s * dtype.itemsize for s in t.stride)
  view = np.lib.stride_tricks.as_strided(buf[t.offset:], t.size, strides)
  return np.array(view, t.storage.dtype)   # a native-order copy, detached from the zip bytes


def _flatten(node, prefix: str, out: dict) -> dict:
  for k, v in node.items():
    if isinstance(v, dict):
      _flatten(v, f'{prefix}{k}.', out)
    elif isinstance(v, _Tensor):
      out[f'{prefix}{k}'] = v
  return out


def read_torch_zip(path: str) -> dict[str, np.ndarray]:
  """{name: array} of a zip-format torch file holding a (nested) dict of tensors.

  Nested dicts (e.g. {'model': state_dict}) are flattened with '.'-joined names; non-tensor
  entries are dropped. Raises ValueError naming the file on anything else: not a zip, a
  truncated one, a big-endian file, an unknown pickle global.
  """
  try:
    with zipfile.ZipFile(path) as z:
      pkls = [n for n in z.namelist() if n.endswith('/data.pkl') and n.count('/') == 1]
      if len(pkls) != 1:
        raise ValueError(f'expected one <folder>/data.pkl entry, found {len(pkls)}')
      root = pkls[0][:-len('data.pkl')]
      if f'{root}byteorder' in z.namelist() and z.read(f'{root}byteorder') != b'little':
        raise ValueError('big-endian file')
      with z.open(pkls[0]) as f:
        obj = _Unpickler(f).load()
      if not isinstance(obj, dict):
        raise ValueError(f'expected a dict of tensors, got {type(obj).__name__}')
      tensors, raws = _flatten(obj, '', {}), {}
      for name, t in tensors.items():
        if t.storage.key not in raws:
          raws[t.storage.key] = z.read(f'{root}data/{t.storage.key}')
      return {name: _view(t, raws[t.storage.key], name) for name, t in tensors.items()}
  except FileNotFoundError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (zip, pickle or layout: one message)
    raise ValueError(f'{path}: not a readable zip-format torch state dict '
                     f'({type(e).__name__}: {e})') from e
