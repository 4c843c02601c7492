"""The VAE's input: random frames of shuffled clips as grain batches, and fixed eval frame sets.

`frame_dataset(...)[s]` is the step-s batch `{'frames': [B, 1, H, W, 3]}` float32 in [-1, 1]
(random access, so a resumed run reads exactly what the uninterrupted run read); `eval_frames` a
fixed, evenly spread selection of a split's frames, float32 [N, 1, H, W, 3] in [-1, 1].
`open_sources` opens the clips config.data.source names (rendered shards or a video folder).
"""
import grain
import numpy as np

from maskvid import pictures
from maskvid.data import pipeline
from maskvid.data import sources


def _frames_per_clip(source) -> int:
  if len(source) == 0:
    raise ValueError(f'source {source!r} is empty')
  rgb = source[0]['rgb']
  if rgb.ndim != 4 or rgb.shape[-1] != 3:
    raise ValueError(f"source records need 'rgb' uint8 [T,H,W,3], got shape {rgb.shape}")
  return rgb.shape[0]


def frame_dataset(source, *, batch_size: int, resolution: int, seed: int,
                  shuffle: bool = True, cache_rgb: bool = False) -> grain.MapDataset:
  """Infinite grain MapDataset whose element s is the step-s batch `{'frames': [B,1,H,W,3]}`.

  `source` is any random-access source of clip dicts with 'rgb' uint8 [T,H,W,3] (e.g.
  `maskvid.data.records.ClipSource`). Built on `maskvid.data.pipeline.make_dataset` with
  one-frame windows (a random frame of a shuffled clip; per-process sharding included).
  `cache_rgb` keeps every clip's frames in memory after its first read (`pipeline.RgbCache`):
  the same batches, without re-reading and decoding records in later epochs.
  """
  if cache_rgb:
    source = pipeline.RgbCache(source)
  ds = pipeline.make_dataset(source, batch_size=batch_size, clip_length=1,
                             resolution=resolution, seed=seed, shuffle=shuffle)
  return ds


def eval_frames(source, num_frames: int, resolution: int | None = None) -> np.ndarray:
  """A fixed, evenly spread selection of frames of a split: float32 [N,1,H,W,3] in [-1, 1]."""
  t = _frames_per_clip(source)
  total = len(source) * t
  idx = np.unique(np.linspace(0, total - 1, min(num_frames, total)).round().astype(int))
  clips = {}
  frames = []
  for i in idx:
    c = i // t
    if c not in clips:
      clips[c] = np.asarray(source[int(c)]['rgb'])
      if resolution is not None:
        clips[c] = pipeline.resize_clip({'rgb': clips[c]}, (resolution, resolution))['rgb']
    frames.append(clips[c][i % t])
  return pictures.to_float(np.stack(frames))[:, None]


def open_sources(config, data_dir: str) -> dict:
  """{split: clip source} for every split of config.data.clips the source has
  (`sources.source_splits`, `sources.open_source`)."""
  return {split: sources.open_source(config, data_dir, split)
          for split in sources.source_splits(config)}
