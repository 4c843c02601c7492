"""The render job: synthetic splits written as ArrayRecord shards of clip records, plus a preview.

Layout of `data_dir`:
  {split}/shard-00000-of-00004.array_record   one record per clip (`records.encode_clip`: JSON
                                              header + raw array bytes)
  {split}/meta.json                           written last; its presence marks the split complete
  preview.png                                 a few clips: frames across time, colourised depth
                                              below (`data.contact_sheet`)

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

import numpy as np
from absl import logging
from array_record.python import array_record_module

from maskvid import fileio
from maskvid.data import contact_sheet
from maskvid.data import scenes
from maskvid.data import synthetic
from maskvid.data.records import FORMAT_VERSION, ClipSource, encode_clip
from maskvid.data.records import _read_meta, shard_paths
from maskvid.data.sources import VIDEO_SOURCES, check_source, held_out, open_source

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
    scenes.clip_speed(0, speeds)   # validates the mix before anything renders
    spec['camera_speeds'] = list(speeds)
  return spec


def _render_shard(job: tuple) -> int:
  """Renders clips `seeds` of `split` into one ArrayRecord file; returns the clip count."""
  path, split, seeds, num_frames, height, width, speeds, progress = job
  writer = array_record_module.ArrayRecordWriter(path, 'group_size:1')
  for seed in seeds:
    speed = scenes.clip_speed(int(seed), speeds) if speeds else 1.0
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
  seeds = scenes.split_seeds(split, spec['num_clips'])
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
    share = held_out(config, data_dir)
    if share is not None:
      logging.log(logging.WARNING if share.scores_training else logging.INFO,
                  'test split: %s%s', share.rule,
                  '' if share.scores_training else ': ' + ', '.join(share.test))
    src = open_source(config, data_dir, 'train')
    if not os.path.exists(preview):
      contact_sheet.write_png([src[i] for i in range(min(4, len(src)))], preview)
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
    contact_sheet.write_preview([ClipSource(data_dir, s) for s in config.data.clips
                               if config.data.clips[s] > 0], preview)


