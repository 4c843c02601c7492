"""The clip record format and a rendered split's reader.

  encode_clip(clip) -> bytes, decode_clip(bytes) -> clip      one ArrayRecord record per clip
  ClipSource(data_dir, split)                                  grain random-access source

Layout of a split: `{split}/shard-*.array_record` + `{split}/meta.json` (written last).
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from array_record.python import array_record_module

from maskvid import fileio

FORMAT_VERSION = 2
_KEYS = ('rgb', 'depth', 'intrinsics', 'world_to_camera', 'seed')


_MAGIC = b'MVCLIP1\n'


def encode_clip(clip: dict[str, Any]) -> bytes:
  """Clip dict of arrays -> bytes: MAGIC, uint32 header length, JSON header, raw array bytes.

  The header maps each key to (dtype, shape, offset, nbytes). Decoding is zero-copy
  (np.frombuffer), which is ~50x cheaper than parsing an np.savez zip per record.
  """
  header, chunks, offset = {}, [], 0
  for key, value in clip.items():
    a = np.asarray(value, order='C')   # (ascontiguousarray would make 0-d arrays 1-d)
    if a.dtype == object:
      raise TypeError(f'clip[{key!r}] has dtype object; only numeric arrays can be stored')
    header[key] = (a.dtype.str, list(a.shape), offset, a.nbytes)
    chunks.append(a.tobytes())
    offset += a.nbytes
  head = json.dumps(header).encode()
  return b''.join([_MAGIC, len(head).to_bytes(4, 'little'), head] + chunks)


def decode_clip(data: bytes) -> dict[str, np.ndarray]:
  """Inverse of encode_clip: writable arrays sharing one copy of `data`."""
  if data.startswith(b'PK'):   # format 1 (np.savez zip), still written by older caches
    import io
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  if not data.startswith(_MAGIC):
    raise ValueError('record does not start with the maskvid clip header (corrupt record or '
                     'another format)')
  n = int.from_bytes(data[len(_MAGIC):len(_MAGIC) + 4], 'little')
  start = len(_MAGIC) + 4 + n
  header = json.loads(data[len(_MAGIC) + 4:start])
  buf = bytearray(data)   # one copy; arrays over it are writable (consumers may edit in place)
  out = {}
  for key, (dtype, shape, offset, nbytes) in header.items():
    if start + offset + nbytes > len(data):
      raise ValueError(f'record is truncated (array {key!r} runs past its end)')
    out[key] = np.frombuffer(buf, dtype=np.dtype(dtype), count=int(np.prod(shape)),
                             offset=start + offset).reshape(shape)
  return out


def shard_paths(split_dir: str, num_shards: int) -> list[str]:
  return [os.path.join(split_dir, f'shard-{i:05d}-of-{num_shards:05d}.array_record')
          for i in range(num_shards)]


def _read_meta(split_dir: str) -> dict | None:
  path = os.path.join(split_dir, 'meta.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


class ClipSource:
  """grain RandomAccessDataSource over a rendered split: item i -> dict of

  rgb uint8 [T,H,W,3], depth float32 [T,H,W], intrinsics float32 [3,3],
  world_to_camera float32 [T,4,4], seed int64 [].
  """

  # What a missing split means, for the error message (subclasses over other stores say theirs).
  MISSING_HINT = 'render it with maskvid.data.storage.ensure_dataset(config, data_dir)'
  PATH_ARG = 'paths.data'

  def __init__(self, data_dir: str, split: str):
    fileio.require_local(data_dir, self.PATH_ARG)
    self.data_dir, self.split = data_dir, split
    split_dir = os.path.join(data_dir, split)
    meta = _read_meta(split_dir)
    if meta is None:
      raise FileNotFoundError(
          f'no complete split {split!r} in {data_dir!r} ({os.path.join(split_dir, "meta.json")} '
          f'is missing); {self.MISSING_HINT}')
    self.meta = meta
    self._paths = [os.path.join(split_dir, name) for name in meta['shards']]
    for path in self._paths:
      if not os.path.exists(path):
        raise FileNotFoundError(f'shard file {path!r} listed in meta.json is missing')
    self._offsets = np.cumsum([0] + list(meta['shard_sizes']))
    self._readers: list[Any] = [None] * len(self._paths)

  def __len__(self) -> int:
    return int(self._offsets[-1])

  def __repr__(self) -> str:
    return (f'{type(self).__name__}({self.data_dir!r}, {self.split!r}, '
            f'num_clips={len(self)})')

  def _reader(self, shard: int):
    if self._readers[shard] is None:
      path = self._paths[shard]
      try:
        reader = array_record_module.ArrayRecordReader(path, 'readahead_buffer_size:0')
        n = reader.num_records()
      except Exception as e:  # array_record raises plain RuntimeError/ValueError without the path
        raise IOError(f'cannot open ArrayRecord shard {path!r}: {e}') from e
      if n != self.meta['shard_sizes'][shard]:
        raise IOError(f'shard {path!r} holds {n} records, meta.json says '
                      f'{self.meta["shard_sizes"][shard]}: the file is truncated or corrupt')
      self._readers[shard] = reader
    return self._readers[shard]

  def __getitem__(self, index) -> dict[str, np.ndarray]:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f'index {index} out of range for {self!r}')
    shard = int(np.searchsorted(self._offsets, index, side='right') - 1)
    position = index - int(self._offsets[shard])
    try:
      data = self._reader(shard).read([position])[0]
      return decode_clip(data)
    except IOError:
      raise
    except Exception as e:
      raise IOError(f'cannot read record {position} of shard {self._paths[shard]!r}: {e}') from e

  def __getstate__(self):   # readers hold file handles: reopen lazily in grain worker processes
    state = dict(self.__dict__)
    state['_readers'] = [None] * len(self._paths)
    return state


# ----------------------------------------------------------------------------------------------
# Preview
# ----------------------------------------------------------------------------------------------
