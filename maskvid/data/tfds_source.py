"""Any TFDS video dataset as a grain random-access clip source (`tfds.data_source`).

TFDS datasets prepared in a random-access format (ArrayRecord: `file_format='array_record'`)
open as `tfds.data_source(name, split=..., data_dir=...)`, a sequence of decoded examples that
grain reads like any other source; nothing is downloaded (the dataset must be prepared in
`data_dir`, as a team shares it on a bucket or disk).

Item i is one clip of example i: `num_frames` frames of `example[frames_key]` (uint8
[N, H, W, 3], or a list of frames), every `stride` frames, from a start drawn per (seed, i)
uniformly among the starts that fit; centre-cropped to square and resized to R:
{'rgb': uint8 [num_frames, R, R, 3]}. Examples shorter than one clip, or that fail to decode, are
replaced by the next example that works and counted (`bad_data()`); `strict=True` raises instead.
"""
from __future__ import annotations

from absl import logging
import numpy as np

from maskvid.data.pipeline import resize_clip
from maskvid.data.video_folder import check_strides
from maskvid.data.video_folder import clip_span
from maskvid.data.video_folder import draw_stride
from maskvid.data.video_folder import read_first_good


class _ShortClip(IOError):
  """An example with fewer frames than one clip spans."""


class TfdsVideoSource:
  """grain RandomAccessDataSource: one clip per example of a TFDS video dataset split."""

  def __init__(self, name: str, split: str, num_frames: int, resolution: int, *,
               data_dir: str | None = None, frames_key: str = 'video', stride=1,
               seed: int = 0, strict: bool = False, keep=None):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (TF: seconds)
    if not name:
      raise ValueError("config.data.source == 'tfds' needs config.data.tfds_name")
    try:
      self._examples = tfds.data_source(name, split=split, data_dir=data_dir or None)
    except Exception as e:  # pylint: disable=broad-except
      raise FileNotFoundError(
          f'cannot open TFDS dataset {name!r} split {split!r} in data_dir {data_dir!r} '
          f'(config.data.tfds_name / tfds_data_dir; it must be prepared there in ArrayRecord '
          f'format, nothing is downloaded): {e}') from e
    if int(resolution) < 1:
      raise ValueError(f'resolution must be positive, got {resolution}')
    self.name, self.split, self.frames_key = name, split, frames_key
    self.num_frames, self.resolution = int(num_frames), int(resolution)
    self.strides = check_strides(stride)   # a mix: each example draws its stride
    self.stride = self.strides[0] if len(self.strides) == 1 else self.strides
    self.span = clip_span(num_frames, min(self.strides))   # the shortest clip of the mix
    self.seed, self.strict = int(seed), bool(strict)
    self.short: set[int] = set()    # examples with fewer frames than one clip spans
    self.broken: set[int] = set()   # examples that failed to decode
    if not len(self._examples):
      raise ValueError(f'TFDS dataset {name!r} split {split!r} is empty')
    # keep: the example indices of this source (a held-out share of a split), None = all.
    self._index = np.arange(len(self._examples)) if keep is None else np.asarray(keep, np.int64)
    if not len(self._index):
      raise ValueError(f'TFDS dataset {name!r} split {split!r}: no example left in this share')

  def __len__(self) -> int:
    return len(self._index)

  def __repr__(self) -> str:
    return (f'TfdsVideoSource({self.name!r}, split={self.split!r}, frames_key='
            f'{self.frames_key!r}, num_frames={self.num_frames}, stride={self.stride}, '
            f'resolution={self.resolution}, examples={len(self)})')

  def bad_data(self) -> dict:
    """Examples left out so far: {'videos': indices that failed to decode, 'chunks': [],
    'short': indices shorter than a clip} (sorted lists)."""
    return {'videos': sorted(self.broken), 'chunks': [], 'short': sorted(self.short)}

  def _clip(self, index: int) -> np.ndarray:
    try:
      example = self._examples[int(self._index[index])]
    except Exception as e:  # pylint: disable=broad-except  (a record that does not decode)
      raise IOError(e) from e
    if self.frames_key not in example:
      raise KeyError(f'TFDS dataset {self.name!r} has no feature {self.frames_key!r} '
                     f'(config.data.tfds_frames_key); it has {sorted(example)}')
    frames = np.asarray(example[self.frames_key])
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
      raise IOError(f'TFDS feature {self.frames_key!r} must be frames [N, H, W, C], got shape '
                    f'{frames.shape}')
    if len(frames) < self.span:
      raise _ShortClip(f'{len(frames)} frames')
    stride = draw_stride(self.strides, [self.seed, index])
    if len(frames) < clip_span(self.num_frames, stride):   # too long for it: the shortest fits
      stride = min(self.strides)
    span = clip_span(self.num_frames, stride)
    start = int(np.random.default_rng([self.seed, index]).integers(0, len(frames) - span + 1))
    clip = frames[start:start + span:stride]
    if clip.shape[-1] == 1:
      clip = np.repeat(clip, 3, axis=-1)
    return clip[..., :3].astype(np.uint8)

  def _drop(self, index: int, error: IOError) -> None:
    short = isinstance(error, _ShortClip)
    if self.strict and short:
      raise ValueError(f'example {index} of TFDS {self.name!r}/{self.split} is shorter than one '
                       f'clip ({self.span} frames)') from error
    if self.strict:
      raise IOError(f'cannot decode example {index} of TFDS {self.name!r}/{self.split}: '
                    f'{error}') from error
    if short:
      logging.warning('example %d of %s is shorter than one clip (%d frames); skipped', index,
                      self.name, self.span)
      self.short.add(index)
    else:
      logging.warning('skipping example %d of %s (config.data.strict_videos=False): %s', index,
                      self.name, error)
      self.broken.add(index)

  def __getitem__(self, index) -> dict[str, np.ndarray]:
    rgb = read_first_good(int(index), len(self), self._clip,
                          lambda i: i in self.short or i in self.broken, self._drop)
    if rgb is None:
      raise IOError(f'no example of TFDS {self.name!r}/{self.split} gives a clip of {self.span} '
                    'frames')
    return resize_clip({'rgb': rgb}, (self.resolution, self.resolution))
