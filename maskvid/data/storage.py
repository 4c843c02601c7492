"""Rendered splits on disk: ArrayRecord shards of clip records, plus a preview picture.

Layout of `data_dir`:
  {split}/shard-00000-of-00004.array_record   one record per clip (`encode_clip`: JSON header +
                                              raw array bytes)
  {split}/meta.json                           written last; its presence marks the split complete
  preview.png                                 a few clips: frames across time, colourised depth below

A split is rendered into `data_dir/.tmp-{split}-{pid}` and renamed into place only when every
shard and meta.json are written, so an interrupted render is never mistaken for a finished one.
`data_dir` must be local (or a gcsfuse mount): array_record cannot open gs:// paths.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from typing import Any

import numpy as np
from absl import logging
from array_record.python import array_record_module

from maskvid import fileio
from maskvid.data import synthetic
from maskvid.data import tfds_source   # imports TensorFlow only when a TFDS source opens
from maskvid.data.video_folder import VideoFolderSource

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


def _split_spec(config, split: str) -> dict:
  """What a rendered split is made of; a split on disk with another spec is re-rendered.

  Only `train` takes the camera-speed mix (config.data.camera_speeds): the held-out splits keep
  the sampled paths so their tables stay comparable across recipes.
  """
  speeds = tuple(float(s) for s in config.data.get('camera_speeds', (1.0,)))
  spec = dict(format_version=FORMAT_VERSION, split=split, num_clips=int(config.data.clips[split]),
              num_frames=int(config.data.num_frames), height=int(config.data.resolution),
              width=int(config.data.resolution),
              num_shards=max(1, min(int(config.data.num_shards), int(config.data.clips[split]))))
  if split == 'train' and speeds != (1.0,):
    synthetic.clip_speed(0, speeds)   # validates the mix before anything renders
    spec['camera_speeds'] = list(speeds)
  return spec


def _read_meta(split_dir: str) -> dict | None:
  path = os.path.join(split_dir, 'meta.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _render_shard(job: tuple) -> int:
  """Renders clips `seeds` of `split` into one ArrayRecord file; returns the clip count."""
  path, split, seeds, num_frames, height, width, speeds, progress = job
  writer = array_record_module.ArrayRecordWriter(path, 'group_size:1')
  for seed in seeds:
    speed = synthetic.clip_speed(int(seed), speeds) if speeds else 1.0
    clip = synthetic.render_clip(int(seed), split, num_frames, height, width, speed)
    clip['seed'] = np.int64(seed)
    clip['speed'] = np.float32(speed)
    writer.write(encode_clip(clip))
    if progress is not None:
      progress()
  writer.close()
  return len(seeds)


def _render_worker_init() -> None:
  # Worker processes render on the CPU: several processes must not fight over one accelerator.
  import jax
  jax.config.update('jax_platforms', 'cpu')


def render_split(spec: dict, out_dir: str, processes: int = 0) -> None:
  """Renders `spec['num_clips']` clips into ArrayRecord shards in `out_dir` (then meta.json).

  processes > 1 renders shards in that many spawned CPU processes (each compiles the ray caster
  once); otherwise everything runs in this process (on its default JAX device).
  """
  os.makedirs(out_dir, exist_ok=True)
  split = spec['split']
  seeds = synthetic.split_seeds(split, spec['num_clips'])
  paths = shard_paths(out_dir, spec['num_shards'])
  # Contiguous blocks of seeds per shard: record key i of the split is seeds[i].
  bounds = np.linspace(0, len(seeds), spec['num_shards'] + 1).astype(int)
  start, done = time.time(), [0]

  def report(n=1, every=50):
    done[0] += n
    if done[0] % every < n or done[0] == len(seeds):
      logging.info('render %s: %d/%d clips (%.1f clips/s)', split, done[0], len(seeds),
                   done[0] / max(time.time() - start, 1e-9))

  speeds = tuple(spec.get('camera_speeds', ()))
  jobs = [(path, split, seeds[lo:hi], spec['num_frames'], spec['height'], spec['width'], speeds)
          for path, lo, hi in zip(paths, bounds[:-1], bounds[1:])]
  if processes > 1 and len(jobs) > 1:
    import multiprocessing
    ctx = multiprocessing.get_context('spawn')   # fork is unsafe once JAX has started threads
    with ctx.Pool(min(processes, len(jobs)), initializer=_render_worker_init) as pool:
      for n in pool.imap_unordered(_render_shard, [job + (None,) for job in jobs]):
        report(n, every=1)
  else:
    for job in jobs:
      _render_shard(job + (report,))
  with open(os.path.join(out_dir, 'meta.json'), 'w') as f:
    json.dump(dict(spec, seeds=[int(seeds[0]), int(seeds[-1])] if len(seeds) else [],
                   shards=[os.path.basename(p) for p in paths],
                   shard_sizes=[int(b - a) for a, b in zip(bounds[:-1], bounds[1:])]), f, indent=1)


def _is_done(split_dir: str, spec: dict) -> bool:
  meta = _read_meta(split_dir)
  return meta is not None and all(meta.get(k) == v for k, v in spec.items())


def ensure_dataset(config, data_dir: str) -> None:
  """Renders every split of `config.data.clips` that is missing (or stale) and writes preview.png.

  Idempotent: a split whose meta.json matches the config is kept. A split directory without
  meta.json (interrupted elsewhere) or with different settings is re-rendered and replaced.
  Safe when several processes (hosts sharing a filesystem) call it at once: each renders into its
  own temp dir and the first complete rename wins. With a video source ('video_folder', 'tfds')
  nothing is rendered: the source is checked and previewed. `config.data.worker_count` > 1 renders
  shards in that many CPU processes (the same knob sizes grain's worker pool).
  """
  source = check_source(config)
  fileio.require_local(data_dir, 'paths.data')
  os.makedirs(data_dir, exist_ok=True)
  preview = os.path.join(data_dir, 'preview.png')
  if source in VIDEO_SOURCES:
    src = open_source(config, data_dir, 'train')
    if not os.path.exists(preview):
      _write_preview_png([src[i] for i in range(min(4, len(src)))], preview)
    logging.info('%r: %d clips of %d frames', src, len(src), config.data.num_frames)
    return
  rendered = False
  token = f'{socket.gethostname()}-{os.getpid()}'
  for split in config.data.clips:
    spec = _split_spec(config, split)
    final = os.path.join(data_dir, split)
    if _is_done(final, spec):
      continue
    if os.path.exists(final):
      logging.warning('data split %s is incomplete or was rendered with other settings; '
                      're-rendering it', final)
    tmp = os.path.join(data_dir, f'.tmp-{split}-{token}')
    shutil.rmtree(tmp, ignore_errors=True)
    logging.info('rendering split %s: %d clips of %dx%dx%d into %s', split, spec['num_clips'],
                 spec['num_frames'], spec['height'], spec['width'], final)
    render_split(spec, tmp, processes=int(config.data.get('worker_count', 0)))
    if os.path.exists(final):
      trash = os.path.join(data_dir, f'.old-{split}-{token}')
      try:
        os.rename(final, trash)
      except OSError:
        pass   # another process moved it first
      shutil.rmtree(trash, ignore_errors=True)
    try:
      os.rename(tmp, final)
    except OSError:
      # Another process renamed its complete copy into place between our check and rename.
      if not _is_done(final, spec):
        raise
      shutil.rmtree(tmp, ignore_errors=True)
    rendered = True
  if rendered or not os.path.exists(preview):
    write_preview(data_dir, [s for s in config.data.clips if config.data.clips[s] > 0], preview)


SOURCES = ('synthetic', 'video_folder', 'tfds')
VIDEO_SOURCES = ('video_folder', 'tfds')   # real video: no depth or cameras


class SourceConfigError(ValueError):
  """config.data does not name a usable source; the message names the key to set."""


def check_source(config) -> str:
  """config.data.source, after checking the keys it needs are set (SourceConfigError if not)."""
  data = config.data
  source = data.get('source', 'synthetic')
  if source not in SOURCES:
    raise SourceConfigError(f'config.data.source must be one of {SOURCES}, got {source!r}')
  if source == 'video_folder' and not data.get('video_dir', ''):
    raise SourceConfigError(
        "config.data.source='video_folder' needs config.data.video_dir (a folder of .mp4 files; "
        "or --config.data.source=tfds --config.data.tfds_name=NAME)")
  if source == 'tfds' and not data.get('tfds_name', ''):
    raise SourceConfigError(
        "config.data.source='tfds' needs config.data.tfds_name (a TFDS video dataset prepared in "
        "config.data.tfds_data_dir; or --config.data.source=video_folder "
        "--config.data.video_dir=DIR)")
  return source


def open_source(config, data_dir: str, split: str):
  """The random-access clip source config.data.source names: ClipSource (rendered synthetic
  shards), VideoFolderSource or TfdsVideoSource.

  A video folder has no splits of its own: `video_dir/{split}` is used when that subfolder exists,
  else `video_dir` itself for every split. A TFDS dataset's split is
  `config.data.tfds_splits[split]` when given there, else `split`. The `train` split draws each
  clip's stride from config.data.video_strides when that mix is set; the others keep
  config.data.video_stride (comparable tables).
  """
  source = check_source(config)
  if source == 'synthetic':
    return ClipSource(data_dir, split)
  d = config.data
  stride, seed, strict = int(d.video_stride), int(d.shuffle_seed), bool(d.strict_videos)
  if split == 'train' and tuple(d.get('video_strides', ())):
    stride = tuple(int(s) for s in d.video_strides)
  if source == 'video_folder':
    video_dir = d.video_dir
    if os.path.isdir(os.path.join(video_dir, split)):
      video_dir = os.path.join(video_dir, split)
    return VideoFolderSource(video_dir, d.num_frames, d.resolution, strict=strict, stride=stride,
                             seed=seed)
  return tfds_source.TfdsVideoSource(
      d.tfds_name, dict(d.tfds_splits).get(split, split), d.num_frames, d.resolution,
      data_dir=d.tfds_data_dir, frames_key=d.tfds_frames_key, stride=stride, seed=seed,
      strict=strict)


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

def colorize_depth(depth: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
  """depth float [..., H, W] -> uint8 [..., H, W, 3] (turbo colormap; near = red, far = blue)."""
  import cv2
  lo = float(np.min(depth)) if lo is None else lo
  hi = float(np.max(depth)) if hi is None else hi
  inv = 1.0 - (depth - lo) / max(hi - lo, 1e-6)
  gray = np.clip(inv * 255, 0, 255).astype(np.uint8)
  flat = gray.reshape(-1, gray.shape[-1])
  rgb = cv2.applyColorMap(flat, cv2.COLORMAP_TURBO)[..., ::-1]
  return rgb.reshape(depth.shape + (3,))


def preview_grid(clips: list[dict], max_frames: int = 8, scale: int = 2,
                 labels: list[str] | None = None) -> np.ndarray:
  """uint8 [rows, cols, 3]: per clip an optional label line, a row of frames (time runs left to
  right) and below it the colourised depth (turbo colormap scaled per clip: red near, blue far).
  """
  import cv2
  blocks = []
  for i, clip in enumerate(clips):
    t = clip['rgb'].shape[0]
    idx = np.unique(np.linspace(0, t - 1, min(max_frames, t)).round().astype(int))
    rows = [np.concatenate(list(clip['rgb'][idx]), axis=1)]
    if 'depth' in clip:   # video folders have none
      rows.append(np.concatenate(list(colorize_depth(clip['depth'][idx])), axis=1))
    block = np.concatenate(rows, axis=0)
    block = np.repeat(np.repeat(block, scale, 0), scale, 1)
    if labels is not None:
      band = np.full((14, block.shape[1], 3), 255, np.uint8)
      cv2.putText(band, labels[i], (2, 11), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1,
                  cv2.LINE_AA)
      block = np.concatenate([band, block], axis=0)
    blocks += [block, np.full((4,) + block.shape[1:], 255, np.uint8)]
  width = max(b.shape[1] for b in blocks)
  blocks = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255)
            for b in blocks]
  return np.concatenate(blocks, axis=0)


def write_preview(data_dir: str, splits, path: str, clips_per_split: int = 2) -> None:
  """Writes a labelled preview PNG of the first clips of each split (see preview_grid)."""
  clips, labels = [], []
  for split in splits:
    source = ClipSource(data_dir, split)
    for i in range(min(clips_per_split, len(source))):
      clip = source[i]
      scene = synthetic.sample_scene(int(clip['seed']), split, clip['rgb'].shape[0])
      speed = f" x{float(clip['speed']):g}" if 'speed' in clip else ''
      clips.append(clip)
      labels.append(f"{split} seed {int(clip['seed'])}: {scene['trajectory']}{speed}, "
                    f"{'/'.join(scene['shape_families'])}")
  _write_preview_png(clips, path, labels)


def _write_preview_png(clips: list[dict], path: str, labels: list[str] | None = None) -> None:
  import imageio.v3 as iio
  if not clips:
    return
  tmp = path + '.tmp.png'
  iio.imwrite(tmp, preview_grid(clips, labels=labels))
  os.replace(tmp, path)
  logging.info('wrote %s', path)
