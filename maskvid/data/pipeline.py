"""grain loaders: per-process shard -> shuffle -> repeat -> clip sampling + resize -> batch.

Any random-access source of clip dicts works (`records.ClipSource`,
`video_folder.VideoFolderSource`, `vae.cache.LatentSource` style sources with an `rgb` key).
"""
from __future__ import annotations

from typing import Any, Iterator

import grain
import numpy as np

_GEOMETRY_KEYS = ('depth', 'intrinsics', 'world_to_camera')


def _as_hw(resolution) -> tuple[int, int]:
  if isinstance(resolution, (int, np.integer)):
    hw = (int(resolution), int(resolution))
  else:
    hw = tuple(int(r) for r in resolution)
  if len(hw) != 2 or min(hw) < 1:
    raise ValueError(f'resolution must be an int or (height, width) of positive ints, got '
                     f'{resolution!r}')
  return hw


def temporal_window(num_frames: int, clip_length: int, frame_stride: int,
                    rng: np.random.Generator | None) -> np.ndarray:
  """Frame indices [clip_length] of a window (random start when rng is given, else start 0)."""
  span = (clip_length - 1) * frame_stride + 1
  if span > num_frames:
    raise ValueError(f'clip_length={clip_length} with frame_stride={frame_stride} needs {span} '
                     f'frames, but the clip has only {num_frames}')
  start = 0 if rng is None else int(rng.integers(0, num_frames - span + 1))
  return start + frame_stride * np.arange(clip_length)


def resize_clip(example: dict[str, np.ndarray], hw: tuple[int, int]) -> dict[str, np.ndarray]:
  """Resizes rgb [T,H,W,3] (area / linear) and depth [T,H,W] (nearest) to hw; scales intrinsics.

  A different aspect ratio is centre-cropped first, so pixels stay square.
  """
  import cv2
  rgb = example['rgb']
  h, w = rgb.shape[1:3]
  th, tw = hw
  if (h, w) == (th, tw):
    return example
  # Centre crop to the target aspect ratio.
  if h * tw > w * th:
    ch, cw = max(1, round(w * th / tw)), w
  else:
    ch, cw = h, max(1, round(h * tw / th))
  y0, x0 = (h - ch) // 2, (w - cw) // 2
  out = dict(example)
  interp = cv2.INTER_AREA if ch >= th else cv2.INTER_LINEAR
  out['rgb'] = np.stack([cv2.resize(f[y0:y0 + ch, x0:x0 + cw], (tw, th), interpolation=interp)
                         for f in rgb])
  if 'depth' in example:
    # Nearest keeps depth values on real surfaces (no mixing of fore- and background).
    out['depth'] = np.stack([cv2.resize(d[y0:y0 + ch, x0:x0 + cw], (tw, th),
                                        interpolation=cv2.INTER_NEAREST) for d in example['depth']])
  if 'intrinsics' in example:
    k = np.array(example['intrinsics'], np.float64)
    sx, sy = tw / cw, th / ch
    k[0, 2] -= x0
    k[1, 2] -= y0
    # Pixel centres at integer coordinates: u' + 0.5 = s (u + 0.5).
    k[0, :] = [k[0, 0] * sx, k[0, 1] * sx, (k[0, 2] + 0.5) * sx - 0.5]
    k[1, :] = [k[1, 0] * sy, k[1, 1] * sy, (k[1, 2] + 0.5) * sy - 0.5]
    out['intrinsics'] = k.astype(np.float32)
  return out


class _ToExample(grain.transforms.RandomMap):
  """Clip dict -> {'frames': float32 [T,H,W,3] in [-1, 1]} (+ geometry)."""

  def __init__(self, clip_length, frame_stride, hw, keep_geometry, random_window):
    self.clip_length, self.frame_stride, self.hw = clip_length, frame_stride, hw
    self.keep_geometry, self.random_window = keep_geometry, random_window

  def random_map(self, clip: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    if 'rgb' not in clip:
      raise KeyError(f'source items need an "rgb" key (uint8 [T,H,W,3]); got keys {sorted(clip)}')
    rgb = np.asarray(clip['rgb'])
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
      raise ValueError(f'source "rgb" must be uint8 [T,H,W,3], got {rgb.dtype} {rgb.shape}')
    idx = temporal_window(rgb.shape[0], self.clip_length, self.frame_stride,
                          rng if self.random_window else None)
    ex = {'rgb': rgb[idx]}
    if self.keep_geometry:
      missing = [k for k in _GEOMETRY_KEYS if k not in clip]
      if missing:
        raise KeyError(f'keep_geometry=True but the source has no {missing} (synthetic '
                       'ClipSource carries geometry; video folders do not)')
      ex['depth'] = np.asarray(clip['depth'])[idx]
      ex['world_to_camera'] = np.asarray(clip['world_to_camera'])[idx]
      ex['intrinsics'] = np.asarray(clip['intrinsics'])
    ex = resize_clip(ex, self.hw)
    out = {'frames': ex.pop('rgb').astype(np.float32) * (2.0 / 255.0) - 1.0}
    if self.keep_geometry:
      out.update(ex)
      if 'seed' in clip:
        out['seed'] = np.asarray(clip['seed'])
    return out


class RgbCache:
  """Random-access source that keeps each item's 'rgb' in memory after its first read.

  Other keys are dropped, so use it for frame-only training (the VAE), where decoding a whole
  clip record per frame was ~6 ms of every 8-frame batch on the CPU the step runs on. Items are
  filled lazily (the first epoch reads as before), so the memory is the rgb of the items this
  process actually reads: uint8 [T,H,W,3] each, ~200 MB for 8192 clips of 8 32x32 frames.
  """

  def __init__(self, source):
    self.source = source
    self._rgb: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    return len(self.source)

  def __repr__(self) -> str:
    return f'RgbCache({self.source!r}, cached={len(self._rgb)})'

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    rgb = self._rgb.get(index)
    if rgb is None:
      item = self.source[index]
      if 'rgb' not in item:
        raise KeyError(f'source items need an "rgb" key (uint8 [T,H,W,3]); got keys '
                       f'{sorted(item)}')
      rgb = self._rgb[index] = np.asarray(item['rgb'])
    return {'rgb': rgb}


def shard_indices(num_items: int, shard_index: int, shard_count: int) -> range:
  """Record indices of one process's shard: contiguous, disjoint, covering [0, num_items)."""
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index must be in [0, shard_count={shard_count}), got {shard_index}')
  lo = num_items * shard_index // shard_count
  hi = num_items * (shard_index + 1) // shard_count
  return range(lo, hi)


def make_dataset(source, *, batch_size: int, clip_length: int, resolution, seed: int,
                 shuffle: bool = True, num_epochs: int | None = None, keep_geometry: bool = False,
                 shard_index: int | None = None, shard_count: int | None = None,
                 frame_stride: int = 1) -> grain.MapDataset:
  """The grain MapDataset behind `make_loader` (batched; see there)."""
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  if clip_length < 1 or frame_stride < 1:
    raise ValueError(f'clip_length and frame_stride must be >= 1, got {clip_length}, {frame_stride}')
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f'num_epochs must be None (forever) or >= 1, got {num_epochs}')
  hw = _as_hw(resolution)
  if shard_index is None or shard_count is None:
    import jax
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if len(source) == 0:
    raise ValueError(f'source {source!r} is empty')
  indices = shard_indices(len(source), int(shard_index), int(shard_count))
  if len(indices) == 0:
    raise ValueError(f'shard {shard_index}/{shard_count} of {source!r} is empty (more processes '
                     'than clips)')
  ds = grain.MapDataset.source(source)[indices.start:indices.stop]
  # Different streams per shard, reproducible per (seed, shard).
  ds = ds.seed(int(seed) * 1000003 + int(shard_index))
  if shuffle:
    ds = ds.shuffle()   # reshuffled every epoch by grain
  ds = ds.repeat(num_epochs)
  ds = ds.random_map(_ToExample(clip_length, frame_stride, hw, keep_geometry,
                                random_window=shuffle))
  # Training (forever) needs static shapes; a finite pass keeps the last partial batch.
  return ds.batch(batch_size, drop_remainder=num_epochs is None)


def make_loader(source, *, batch_size: int, clip_length: int, resolution, seed: int,
                shuffle: bool = True, num_epochs: int | None = None, keep_geometry: bool = False,
                shard_index: int | None = None, shard_count: int | None = None,
                worker_count: int = 0, frame_stride: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Iterator of batches {'frames': float32 [B,T,H,W,3] in [-1, 1]}.

  With keep_geometry (evaluation only) batches also hold depth float32 [B,T,H,W], intrinsics
  float32 [B,3,3] (for the resized frames), world_to_camera float32 [B,T,4,4] and seed int64 [B].
  Clips are windows of `clip_length` frames `frame_stride` apart: a random start when shuffle is
  True, the first window otherwise. Sharding defaults to (jax.process_index(),
  jax.process_count()): each process reads a disjoint, contiguous block of records. num_epochs None
  repeats forever and drops a partial last batch; a finite num_epochs keeps it.
  `frame_stride` is an extension of docs/interfaces.md (config.data.frame_stride).
  """
  ds = make_dataset(source, batch_size=batch_size, clip_length=clip_length, resolution=resolution,
                    seed=seed, shuffle=shuffle, num_epochs=num_epochs, keep_geometry=keep_geometry,
                    shard_index=shard_index, shard_count=shard_count, frame_stride=frame_stride)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4 * batch_size))
  if worker_count > 0:
    from absl import flags
    if not flags.FLAGS.is_parsed():   # grain's workers read absl flags; outside an absl app
      flags.FLAGS.mark_as_parsed()    # (tests, notebooks) use their defaults
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(worker_count)))
  return iter(it)

