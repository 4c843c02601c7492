"""Stand-in data for tests and benchmarks: procedural clips in memory, a random latent cache.

No renderer and no trained VAE needed.
"""
import json
import os

from array_record.python import array_record_module
import numpy as np

from maskvid.data import records
from maskvid.vae import cache


class ProceduralClips:
  """Random-access source of `{'rgb': uint8 [T,H,W,3]}`: a colour gradient with moving discs.

  Same record layout as `maskvid.data.records.ClipSource` (rgb only), deterministic per index.
  """

  def __init__(self, num_clips: int, num_frames: int = 4, size: int = 16, seed: int = 0):
    if num_clips < 1 or num_frames < 1 or size < 4:
      raise ValueError(f'need num_clips >= 1, num_frames >= 1, size >= 4; got '
                       f'{num_clips}, {num_frames}, {size}')
    self.num_clips, self.num_frames, self.size, self.seed = num_clips, num_frames, size, seed

  def __len__(self) -> int:
    return self.num_clips

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self.num_clips:
      raise IndexError(index)
    rng = np.random.default_rng([self.seed, index])
    s, t = self.size, self.num_frames
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / (s - 1)
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    bg = c0 + (c1 - c0) * (0.5 * (xx + yy))[..., None]
    frames = []
    discs = [(rng.uniform(0.2, 0.8, 2), rng.uniform(-0.1, 0.1, 2), rng.uniform(0.1, 0.3),
              rng.uniform(0, 1, 3)) for _ in range(2)]
    for k in range(t):
      img = bg.copy()
      for centre, vel, radius, colour in discs:
        cy, cx = centre + k * vel
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
        img[inside] = colour
      frames.append(img)
    return {'rgb': (np.stack(frames) * 255).round().clip(0, 255).astype(np.uint8)}


def tiny_config(steps: int = 4):
  """A full config with a VAE small enough for unit tests on 16x16 frames (2x down)."""
  from configs import default  # pylint: disable=g-import-not-at-top
  c = default.get_config()
  c.data.resolution = 16
  c.vae.latent_channels = 4
  c.vae.base_channels = 8
  c.vae.channel_multipliers = (1, 2)
  c.vae.norm_groups = 4
  c.vae.train.steps = steps
  c.vae.train.batch_size = 4
  c.vae.train.learning_rate = 3e-3
  c.vae.train.warmup_steps = 2
  c.vae.train.log_every = 2
  c.vae.train.checkpoint_every = 2
  c.vae.train.keep_checkpoints = 5
  c.vae.train.eval_frames = 8
  return c


def write_latent_cache(latents_dir: str, seed: int = 0) -> None:
  """A tiny complete cache in maskvid.vae.cache's layout: train (10 clips), test (3 clips).

  Raw latents [6, 8, 8, 4] with per-channel offsets/scales, so the normalisation matters.
  """
  rng = np.random.default_rng(seed)
  shift, scale = np.array([0.5, -1.0, 2.0, 0.0]), np.array([2.0, 0.5, 1.0, 3.0])
  for split, n in (('train', 10), ('test', 3)):
    split_dir = os.path.join(latents_dir, split)
    os.makedirs(split_dir)
    sizes = [n // 2, n - n // 2]
    names = [f'shard-{i:05d}-of-00002.array_record' for i in range(2)]
    k = 0
    for name, size in zip(names, sizes):
      writer = array_record_module.ArrayRecordWriter(os.path.join(split_dir, name), 'group_size:1')
      for _ in range(size):
        z = rng.normal(size=(6, 8, 8, 4)) * scale + shift
        writer.write(records.encode_clip({'latents': z.astype(np.float32), 'seed': k}))
        k += 1
      writer.close()
    with open(os.path.join(split_dir, cache.META_FILE), 'w') as f:
      json.dump({'num_clips': n, 'shards': names, 'shard_sizes': sizes,
                 'latent_shape': [6, 8, 8, 4]}, f)
  with open(os.path.join(latents_dir, cache.STATS_FILE), 'w') as f:
    json.dump({'shift': shift.tolist(), 'scale': scale.tolist()}, f)
  with open(os.path.join(latents_dir, cache.COMPLETE_FILE), 'w') as f:
    json.dump({'splits': {'train': 10, 'test': 3}, 'latent_shape': [6, 8, 8, 4]}, f)
