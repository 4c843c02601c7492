"""Latent cache: every split encoded once by the trained VAE (posterior mean), as ArrayRecord shards.

Layout of latents_dir:
  {split}/shard-00000-of-00004.array_record  one record per clip (records.encode_clip): latents float32
                                             [T,h,w,c] (raw, un-normalised), rgb uint8 [T,H,W,3],
                                             depth, intrinsics, world_to_camera, seed
  {split}/meta.json                          record counts per shard, latent shape
  stats.json                                 per-channel shift (mean) and scale (std) on train
  COMPLETE.json                              written last; without it the cache is not complete

The cache is built in a sibling temp dir ({latents_dir}.tmp) and renamed into place, so a crash
never leaves a directory that looks complete; with several processes each encodes its own shards
(`build_latent_cache`); `LatentSource` refuses a directory without COMPLETE.json. latents_dir must be
local (or a gcsfuse mount): array_record cannot open gs:// (`fileio.require_local`).
Normalisation (applied on read): `(z - shift) / scale`, so the diffusion model sees ~unit latents.
"""
import os
import shutil
import time

from absl import logging
from array_record.python import array_record_module
import jax
import numpy as np

from maskvid import distributed
from maskvid import fileio
from maskvid import pictures
from maskvid.data import pipeline
from maskvid.data import records
from maskvid.data import sources
from maskvid.vae import model as vae_model

COMPLETE_FILE = 'COMPLETE.json'
STATS_FILE = 'stats.json'
META_FILE = 'meta.json'
ENCODE_CLIPS = 8  # clips per jitted encode call (maskvid.aot compiles this batch)


def is_complete(latents_dir: str) -> bool:
  return (fileio.path(latents_dir) / COMPLETE_FILE).exists()


def require_complete(latents_dir: str) -> None:
  """Raises FileNotFoundError, saying how to build it, unless the cache is complete."""
  if not is_complete(latents_dir):
    state = 'is incomplete' if fileio.path(latents_dir).is_dir() else 'does not exist'
    raise FileNotFoundError(
        f'latent cache {latents_dir!r} {state} (no {COMPLETE_FILE}); build it with the cache '
        'stage (maskvid.vae.cache.build_latent_cache): `python -m maskvid.main --config=<config> '
        '--workdir=<workdir> --config.job=cache` (needs a trained VAE: --config.job=vae), or run '
        'every stage with --config.job=demo.')


def load_latent_stats(latents_dir: str) -> dict:
  """{'shift': float32 [c], 'scale': float32 [c]} of a complete cache."""
  require_complete(latents_dir)
  stats = fileio.read_json(fileio.path(latents_dir) / STATS_FILE)
  return {'shift': np.asarray(stats['shift'], np.float32),
          'scale': np.asarray(stats['scale'], np.float32)}


def posterior_mean_encoder(module):
  """jit(params, frames [B, T, H, W, 3] in [-1, 1]) -> raw posterior-mean latents [B, T, h, w, c]
  (what the cache stores, before the shift/scale normalisation)."""
  return jax.jit(lambda p, x: module.apply(p, x, method=module.encode)[0])


def _shard_bounds(num_clips: int, num_shards: int, num_processes: int) -> np.ndarray:
  """Clip index bounds of each shard: at least one shard per process (while there are clips)."""
  shards = max(1, min(max(int(num_shards), num_processes), num_clips))
  return np.linspace(0, num_clips, shards + 1).astype(int)


def _encode_shards(source, encode, params, resolution: int, split_dir: str, bounds: np.ndarray,
                   shard_ids, with_stats: bool) -> dict:
  """Encodes the clips of shards `shard_ids` (of the split's `bounds`) into their files.

  Returns this part's record: latent shape, per-channel sum / sum of squares / count (when
  with_stats) and what the source had to leave out (`bad_data()`).
  """
  num_shards = len(bounds) - 1
  paths = records.shard_paths(split_dir, num_shards)
  part = {'shards': [int(s) for s in shard_ids], 'latent_shape': None}
  acc = None
  t0, done = time.time(), 0
  total = int(sum(bounds[s + 1] - bounds[s] for s in shard_ids))
  for s in shard_ids:
    lo, hi = int(bounds[s]), int(bounds[s + 1])
    writer = array_record_module.ArrayRecordWriter(paths[s], 'group_size:1')
    for start in range(lo, hi, ENCODE_CLIPS):
      clips = [pipeline.resize_clip(dict(source[i]), (resolution, resolution))
               for i in range(start, min(start + ENCODE_CLIPS, hi))]
      frames = pictures.to_float(np.stack([c['rgb'] for c in clips]))
      latents = np.asarray(encode(params, frames), np.float32)
      part['latent_shape'] = list(latents.shape[1:])
      if with_stats:
        flat = latents.reshape(-1, latents.shape[-1]).astype(np.float64)
        if acc is None:
          acc = {'sum': np.zeros(flat.shape[1]), 'sumsq': np.zeros(flat.shape[1]), 'count': 0}
        acc['sum'] += flat.sum(0)
        acc['sumsq'] += np.square(flat).sum(0)
        acc['count'] += flat.shape[0]
      for clip, z in zip(clips, latents):
        writer.write(records.encode_clip(dict(clip, latents=z)))
    writer.close()
    done += hi - lo
    logging.info('latent cache %s: %d/%d clips of this process (%.1f clips/s)',
                 os.path.basename(split_dir), done, total, done / max(time.time() - t0, 1e-9))
  if acc is not None:
    part.update(sum=acc['sum'].tolist(), sumsq=acc['sumsq'].tolist(), count=int(acc['count']))
  part['bad'] = source.bad_data() if hasattr(source, 'bad_data') else {}
  part['seconds'] = time.time() - t0
  return part


def _part_path(split_dir: str, process: int) -> str:
  return os.path.join(split_dir, f'part-{process:05d}.json')


def _merge_parts(split_dir: str, num_processes: int, bounds: np.ndarray) -> tuple[dict, dict]:
  """(meta.json of the split, merged part record) from every process's part file."""
  parts = [fileio.read_json(_part_path(split_dir, p)) for p in range(num_processes)]
  written = sorted(s for part in parts for s in part['shards'])
  if written != list(range(len(bounds) - 1)):
    raise RuntimeError(f'latent cache {split_dir}: shards {written} written, expected '
                       f'0..{len(bounds) - 2}')
  shapes = [part['latent_shape'] for part in parts if part['latent_shape']]
  merged = {'bad': {}}
  for part in parts:
    for key, ids in part['bad'].items():
      merged['bad'][key] = sorted(set(merged['bad'].get(key, [])) | {str(i) for i in ids})
  if any('count' in part for part in parts):
    merged['sum'] = np.sum([part['sum'] for part in parts if 'sum' in part], axis=0)
    merged['sumsq'] = np.sum([part['sumsq'] for part in parts if 'sumsq' in part], axis=0)
    merged['count'] = int(sum(part.get('count', 0) for part in parts))
  meta = {'num_clips': int(bounds[-1]),
          'shards': [os.path.basename(p) for p in records.shard_paths(split_dir, len(bounds) - 1)],
          'shard_sizes': [int(b - a) for a, b in zip(bounds[:-1], bounds[1:])],
          'latent_shape': shapes[0] if shapes else None,
          'processes': num_processes,
          'clips_per_second_per_process': [
              round(sum(int(bounds[s + 1] - bounds[s]) for s in part['shards'])
                    / max(part['seconds'], 1e-9), 2) for part in parts]}
  for p in range(num_processes):
    os.remove(_part_path(split_dir, p))
  return meta, merged


def build_latent_cache(config, vae_dir: str, data_dir: str, latents_dir: str) -> None:
  """Encodes each split of config.data.clips that the source has (`sources.source_splits`) with
  the VAE in vae_dir into latents_dir.

  Idempotent: a complete cache (COMPLETE.json present) is left as is. An incomplete one is
  rebuilt. Stats (per-channel mean/std of the posterior means) are computed on 'train' (or the
  first split when there is no train split).

  Sharded over processes (`jax.distributed`, one per host): every process opens the source,
  encodes the shards s with s % process_count == process_index on its own device and writes
  them, plus a part file (its stats sums, what it skipped) into `{latents_dir}.tmp`, which must
  be on a filesystem all hosts share. After a barrier, process 0 merges the parts into
  meta.json, stats.json and COMPLETE.json and renames the directory into place; the others wait
  for it at a second barrier. The shards are the same files whatever the process count (with at
  least one shard per process).
  """
  fileio.require_local(latents_dir, 'paths.latents')
  fileio.require_local(data_dir, 'paths.data')
  if is_complete(latents_dir):
    logging.info('latent cache %s is complete; nothing to do', latents_dir)
    return
  module, params = vae_model.load_vae(vae_dir)
  splits = list(sources.source_splits(config))   # a video source: no split it does not have
  if not splits:
    raise ValueError(f'config.data.clips has no non-empty split: {dict(config.data.clips)}')
  stats_split = 'train' if 'train' in splits else splits[0]
  splits = [stats_split] + [s for s in splits if s != stats_split]
  num_processes, process = jax.process_count(), jax.process_index()

  encode = posterior_mean_encoder(module)
  latents_dir = os.path.normpath(latents_dir)
  tmp = f'{latents_dir}.tmp'
  if process == 0:
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
  distributed.sync('maskvid-cache-start')
  bounds = {}
  for split in splits:
    source = sources.open_source(config, data_dir, split)
    bounds[split] = _shard_bounds(len(source), int(config.data.num_shards), num_processes)
    mine = [s for s in range(len(bounds[split]) - 1) if s % num_processes == process]
    logging.info('latent cache: encoding %s (%d clips, shards %s of %d on process %d/%d)',
                 split, len(source), mine, len(bounds[split]) - 1, process, num_processes)
    split_dir = os.path.join(tmp, split)
    os.makedirs(split_dir, exist_ok=True)
    part = _encode_shards(source, encode, params, int(config.data.resolution), split_dir,
                          bounds[split], mine, split == stats_split)
    fileio.write_json_atomic(_part_path(split_dir, process), part)
  distributed.sync('maskvid-cache-encoded')
  if process == 0:
    _finish(tmp, latents_dir, splits, stats_split, bounds, num_processes, vae_dir, data_dir)
  distributed.sync('maskvid-cache-done')


def _finish(tmp, latents_dir, splits, stats_split, bounds, num_processes, vae_dir, data_dir):
  """Process 0: merge the parts, write meta/stats/COMPLETE.json, rename into place."""
  metas, skipped, acc = {}, {}, None
  for split in splits:
    split_dir = os.path.join(tmp, split)
    metas[split], merged = _merge_parts(split_dir, num_processes, bounds[split])
    fileio.write_json_atomic(os.path.join(split_dir, META_FILE), metas[split])
    if merged['bad']:
      skipped[split] = {k: len(v) for k, v in merged['bad'].items()}
    if split == stats_split:
      acc = merged
  if not acc or not acc.get('count'):
    raise ValueError(f'latent cache: split {stats_split!r} encoded no clip; cannot compute stats')
  mean = acc['sum'] / acc['count']
  std = np.sqrt(np.maximum(acc['sumsq'] / acc['count'] - np.square(mean), 0.0))
  stats = {'shift': mean.tolist(), 'scale': np.maximum(std, 1e-6).tolist(),
           'split': stats_split, 'num_values_per_channel': int(acc['count'])}
  fileio.write_json_atomic(os.path.join(tmp, STATS_FILE), stats)
  fileio.write_json_atomic(os.path.join(tmp, COMPLETE_FILE), {
      'vae_dir': fileio.absolute(vae_dir), 'data_dir': os.path.abspath(data_dir),
      'splits': {s: m['num_clips'] for s, m in metas.items()},
      'latent_shape': metas[stats_split]['latent_shape'],
      'processes': num_processes, 'skipped': skipped})
  if os.path.exists(latents_dir):  # an incomplete earlier attempt: replace it
    shutil.rmtree(latents_dir)
  os.rename(tmp, latents_dir)
  logging.info('latent cache ready in %s: shift %s scale %s', latents_dir,
               np.round(mean, 3).tolist(), np.round(std, 3).tolist())


class LatentSource(records.ClipSource):
  """grain RandomAccessDataSource over one split of a complete latent cache. Item i ->

  latents float32 [T,h,w,c] normalised with stats.json, plus the clip's rgb uint8 [T,H,W,3],
  depth float32 [T,H,W], intrinsics float32 [3,3], world_to_camera float32 [T,4,4], seed.
  The shards are read as `records.ClipSource` reads the rendered dataset (same record format).
  """
  MISSING_HINT = 'the cache was built without it (config.data.clips)'
  PATH_ARG = 'paths.latents'

  def __init__(self, latents_dir: str, split: str):
    fileio.require_local(latents_dir, self.PATH_ARG)
    require_complete(latents_dir)
    super().__init__(latents_dir, split)
    stats = load_latent_stats(latents_dir)
    self.shift, self.scale = stats['shift'], stats['scale']

  def __getitem__(self, index) -> dict:
    record = super().__getitem__(index)
    record['latents'] = ((record['latents'] - self.shift) / self.scale).astype(np.float32)
    return record
