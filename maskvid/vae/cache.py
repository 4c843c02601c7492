"""Latent cache: every split encoded once by the trained VAE (posterior mean), as ArrayRecord shards.

Layout of latents_dir:
  {split}/shard-00000-of-00004.array_record  one record per clip (storage.encode_clip): latents float32
                                             [T,h,w,c] (raw, un-normalised), rgb uint8 [T,H,W,3],
                                             depth, intrinsics, world_to_camera, seed
  {split}/meta.json                          record counts per shard, latent shape
  stats.json                                 per-channel shift (mean) and scale (std) on train
  COMPLETE.json                              written last; without it the cache is not complete

The cache is built in a sibling temp dir and renamed into place, so a crash never leaves a directory
that looks complete; `LatentSource` refuses a directory without COMPLETE.json. latents_dir must be
local (or a gcsfuse mount): array_record cannot open gs:// (`fileio.require_local`).
Normalisation (applied on read): `(z - shift) / scale`, so the diffusion model sees ~unit latents.
"""
import json
import os
import shutil
import time

from absl import logging
from array_record.python import array_record_module
import jax
import numpy as np

from maskvid import fileio
from maskvid import pictures
from maskvid.data import pipeline
from maskvid.data import storage
from maskvid.vae import checkpoint

COMPLETE_FILE = 'COMPLETE.json'
STATS_FILE = 'stats.json'
META_FILE = 'meta.json'
_ENCODE_CLIPS = 8  # clips per jitted encode call


def _shard_paths(split_dir: str, num_shards: int) -> list[str]:
  return [os.path.join(split_dir, f'shard-{i:05d}-of-{num_shards:05d}.array_record')
          for i in range(num_shards)]


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


def _encode_split(source, encode, params, resolution: int, split_dir: str, num_shards: int,
                  stats: dict | None) -> dict:
  """Encodes every clip of `source` into shards in split_dir; accumulates stats when given."""
  os.makedirs(split_dir, exist_ok=True)
  n = len(source)
  num_shards = max(1, min(num_shards, n))
  bounds = np.linspace(0, n, num_shards + 1).astype(int)
  paths = _shard_paths(split_dir, num_shards)
  latent_shape = None
  t0 = time.time()
  for path, lo, hi in zip(paths, bounds[:-1], bounds[1:]):
    writer = array_record_module.ArrayRecordWriter(path, 'group_size:1')
    for start in range(lo, hi, _ENCODE_CLIPS):
      clips = [pipeline.resize_clip(dict(source[i]), (resolution, resolution))
               for i in range(start, min(start + _ENCODE_CLIPS, hi))]
      frames = pictures.to_float(np.stack([c['rgb'] for c in clips]))
      latents = np.asarray(encode(params, frames), np.float32)
      latent_shape = latents.shape[1:]
      if stats is not None:
        flat = latents.reshape(-1, latents.shape[-1]).astype(np.float64)
        stats['sum'] += flat.sum(0)
        stats['sumsq'] += np.square(flat).sum(0)
        stats['count'] += flat.shape[0]
      for clip, z in zip(clips, latents):
        writer.write(storage.encode_clip(dict(clip, latents=z)))
    writer.close()
    logging.info('latent cache %s: %d/%d clips (%.1fs)', os.path.basename(split_dir), hi, n,
                 time.time() - t0)
  meta = {'num_clips': int(n), 'shards': [os.path.basename(p) for p in paths],
          'shard_sizes': [int(b - a) for a, b in zip(bounds[:-1], bounds[1:])],
          'latent_shape': list(latent_shape) if latent_shape else None}
  with open(os.path.join(split_dir, META_FILE), 'w') as f:
    json.dump(meta, f, indent=1)
  return meta


def build_latent_cache(config, vae_dir: str, data_dir: str, latents_dir: str) -> None:
  """Encodes each split of config.data.clips with the VAE in vae_dir into latents_dir.

  Idempotent: a complete cache (COMPLETE.json present) is left as is. An incomplete one is
  rebuilt. Stats (per-channel mean/std of the posterior means) are computed on 'train' (or the
  first split when there is no train split).
  """
  fileio.require_local(latents_dir, 'paths.latents')
  fileio.require_local(data_dir, 'paths.data')
  if is_complete(latents_dir):
    logging.info('latent cache %s is complete; nothing to do', latents_dir)
    return
  module, params = checkpoint.load_vae(vae_dir)
  splits = [s for s in config.data.clips.keys() if int(config.data.clips[s]) > 0]
  if not splits:
    raise ValueError(f'config.data.clips has no non-empty split: {dict(config.data.clips)}')
  stats_split = 'train' if 'train' in splits else splits[0]
  splits = [stats_split] + [s for s in splits if s != stats_split]

  encode = jax.jit(lambda p, x: module.apply(p, x, method=module.encode)[0])
  latents_dir = os.path.normpath(latents_dir)
  tmp = f'{latents_dir}.tmp-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  c = module.latent_channels
  acc = {'sum': np.zeros(c), 'sumsq': np.zeros(c), 'count': 0}
  metas = {}
  skipped = {}
  for split in splits:
    source = storage.open_source(config, data_dir, split)
    logging.info('latent cache: encoding %s (%d clips)', split, len(source))
    metas[split] = _encode_split(source, encode, params, int(config.data.resolution),
                                 os.path.join(tmp, split), int(config.data.num_shards),
                                 acc if split == stats_split else None)
    if hasattr(source, 'skipped_videos'):   # a lenient video folder: what it had to skip
      skipped[split] = {'videos': len(source.skipped_videos), 'chunks': len(source.bad_chunks)}
  mean = acc['sum'] / acc['count']
  std = np.sqrt(np.maximum(acc['sumsq'] / acc['count'] - np.square(mean), 0.0))
  stats = {'shift': mean.tolist(), 'scale': np.maximum(std, 1e-6).tolist(),
           'split': stats_split, 'num_values_per_channel': int(acc['count'])}
  with open(os.path.join(tmp, STATS_FILE), 'w') as f:
    json.dump(stats, f, indent=1)
  with open(os.path.join(tmp, COMPLETE_FILE), 'w') as f:
    json.dump({'vae_dir': fileio.absolute(vae_dir), 'data_dir': os.path.abspath(data_dir),
               'splits': {s: m['num_clips'] for s, m in metas.items()},
               'latent_shape': metas[stats_split]['latent_shape'],
               'skipped': skipped}, f, indent=1)
  if os.path.exists(latents_dir):  # an incomplete earlier attempt: replace it
    shutil.rmtree(latents_dir)
  os.rename(tmp, latents_dir)
  logging.info('latent cache ready in %s: shift %s scale %s', latents_dir,
               np.round(mean, 3).tolist(), np.round(std, 3).tolist())


class LatentSource(storage.ClipSource):
  """grain RandomAccessDataSource over one split of a complete latent cache. Item i ->

  latents float32 [T,h,w,c] normalised with stats.json, plus the clip's rgb uint8 [T,H,W,3],
  depth float32 [T,H,W], intrinsics float32 [3,3], world_to_camera float32 [T,4,4], seed.
  The shards are read as `storage.ClipSource` reads the rendered dataset (same record format).
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
