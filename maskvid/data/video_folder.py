"""A folder of user videos (.mp4 and friends) as a grain random-access source.

Each video is cut into non-overlapping chunks of `num_frames` frames taken every `stride` frames
of the video (a clip spans (num_frames - 1) * stride + 1 frames: a larger stride moves the camera
more between a clip's frames, which is what multi-view learning needs). `stride` may be a mix
(a tuple): each chunk then draws its own stride from it (seeded by the file name and the chunk's
place), so training sees slow and fast apparent motion in one run (config.data.video_strides). Item i is one chunk:
{'rgb': uint8 [num_frames, R, R, 3]} (centre-cropped to square, resized to R). The chunk grid of
each video starts at a random offset (seeded by `seed` and the file name) within the frames a whole
number of chunks leaves over, so different seeds see different frames. Frame counts are read
once at construction (ffmpeg), frames are decoded on access (OpenCV). Videos shorter than one
clip are left out and counted (`short_videos`).

Bad files do not end a run (a 100k-video folder always has some): a video ffmpeg cannot open is
left out at construction, and a chunk that fails to decode (a truncated file) is replaced by the
next chunk that decodes; each is logged once and counted (`skipped_videos`, `bad_chunks`).
`strict=True` (config.data.strict_videos) raises instead, naming the file.
"""
from __future__ import annotations

import os
import zlib

from absl import logging
import cv2
import imageio_ffmpeg
import numpy as np

from maskvid.data.pipeline import resize_clip

VIDEO_EXTENSIONS = ('.mp4', '.mov', '.m4v', '.mkv', '.webm', '.avi')


def _count_frames(path: str) -> int:
  try:
    frames, _ = imageio_ffmpeg.count_frames_and_secs(path)
  except Exception as e:
    raise IOError(f'cannot read video {path!r} with ffmpeg: {e}') from e
  return int(frames)


def clip_span(num_frames: int, stride: int) -> int:
  """Video frames one clip of `num_frames` frames every `stride` frames covers."""
  if int(num_frames) < 1 or int(stride) < 1:
    raise ValueError(f'num_frames and the video stride must be positive, got {num_frames}, '
                     f'{stride}')
  return (int(num_frames) - 1) * int(stride) + 1


def list_videos(video_dir: str) -> list[str]:
  """Sorted file names of the videos in `video_dir` (by extension, VIDEO_EXTENSIONS)."""
  return sorted(f for f in os.listdir(video_dir) if f.lower().endswith(VIDEO_EXTENSIONS))


def check_strides(stride) -> tuple[int, ...]:
  """An int or a non-empty tuple of strides -> tuple of positive ints (the mix to draw from)."""
  strides = tuple(int(s) for s in np.atleast_1d(stride))
  if not strides or min(strides) < 1:
    raise ValueError(f'video strides must be positive ints, got {stride!r}')
  return strides


def draw_stride(strides: tuple[int, ...], key) -> int:
  """One stride of the mix, drawn deterministically from `key` (a list of ints)."""
  if len(strides) == 1:
    return strides[0]
  return strides[int(np.random.default_rng(list(key) + [13]).integers(len(strides)))]


def read_first_good(index: int, count: int, read, is_bad, drop):
  """read(i) for the first i of index, index + 1, ... (wrapping at count) that `is_bad(i)` does
  not name and whose read does not raise IOError; such an error goes to `drop(i, error)`, which
  records the item as bad (or re-raises: strict sources). None when no item reads.

  How a lenient video source answers item `index` when it (or what follows) is broken.
  """
  for offset in range(count):
    i = (index + offset) % count
    if is_bad(i):
      continue
    try:
      return read(i)
    except IOError as e:
      drop(i, e)
  return None


class VideoFolderSource:
  """grain RandomAccessDataSource of fixed-length chunks of the videos in `video_dir`."""

  def __init__(self, video_dir: str, num_frames: int, resolution: int, strict: bool = False,
               stride=1, seed: int = 0, files=None):
    if not os.path.isdir(video_dir):
      raise FileNotFoundError(f'video_dir {video_dir!r} is not a directory')
    if int(num_frames) < 1 or int(resolution) < 1:
      raise ValueError(f'num_frames and resolution must be positive, got {num_frames}, '
                       f'{resolution}')
    self.video_dir, self.num_frames, self.resolution = video_dir, int(num_frames), int(resolution)
    self.strides = check_strides(stride)
    self.stride = self.strides[0] if len(self.strides) == 1 else self.strides
    self.span = clip_span(num_frames, min(self.strides))   # the shortest clip of the mix
    self.strict = bool(strict)
    self.paths = sorted(os.path.join(video_dir, f) for f in list_videos(video_dir)
                        if files is None or f in set(files))   # files: a split's share
    if not self.paths:
      raise FileNotFoundError(f'no video files ({", ".join(VIDEO_EXTENSIONS)}) in {video_dir!r}')
    self.skipped_videos: list[str] = []   # unreadable at construction
    self.short_videos: list[str] = []     # fewer frames than one clip spans
    self.bad_chunks: set[int] = set()      # chunks that failed to decode (replaced on access)
    self._chunks: list[tuple[int, int, int]] = []   # (video index, first frame, stride)
    for i, path in enumerate(self.paths):
      try:
        n = _count_frames(path)
      except IOError as e:
        if self.strict:
          raise
        logging.warning('skipping unreadable video (config.data.strict_videos=False): %s', e)
        self.skipped_videos.append(path)
        continue
      if n < self.span:
        self.short_videos.append(path)
        continue
      # Keyed by the file name, not its position: adding a video moves no other video's clips.
      key = zlib.crc32(os.path.basename(path).encode())
      self._chunks += self._chunk_grid(i, n, [int(seed), key])
    if self.short_videos:
      logging.warning('%d of %d videos in %s are shorter than one clip (%d frames) and left out',
                      len(self.short_videos), len(self.paths), video_dir, self.span)
    if not self._chunks:
      raise ValueError(f'no readable video in {video_dir!r} has the {self.span} frames one clip '
                       f'spans (num_frames={num_frames}, stride={stride}; '
                       f'{len(self.skipped_videos)} unreadable, {len(self.short_videos)} short)')

  def _chunk_grid(self, video: int, n: int, key: list) -> list[tuple[int, int, int]]:
    """Back-to-back chunks of a video of n frames from a seeded offset: (video, start, stride)."""
    if len(self.strides) == 1:
      spare = (n - self.span) % self.span     # frames a whole number of chunks leaves over
      offset = int(np.random.default_rng(key).integers(0, spare + 1))
      return [(video, s, self.strides[0]) for s in range(offset, n - self.span + 1, self.span)]
    chunks, start = [], int(np.random.default_rng(key).integers(0, self.span))
    while True:
      stride = draw_stride(self.strides, key + [len(chunks)])
      if start + clip_span(self.num_frames, stride) > n:   # too long here: the shortest may fit
        stride = min(self.strides)
      span = clip_span(self.num_frames, stride)
      if start + span > n:
        return chunks
      chunks.append((video, start, stride))
      start += span

  def __len__(self) -> int:
    return len(self._chunks)

  def __repr__(self) -> str:
    return (f'VideoFolderSource({self.video_dir!r}, num_frames={self.num_frames}, '
            f'stride={self.stride}, resolution={self.resolution}, chunks={len(self)})')

  def bad_data(self) -> dict:
    """What this source had to leave out so far: {'videos': unreadable paths, 'chunks': chunk
    indices that failed to decode, 'short': paths shorter than a clip} (sorted lists)."""
    return {'videos': sorted(self.skipped_videos), 'chunks': sorted(self.bad_chunks),
            'short': sorted(self.short_videos)}

  def _decode(self, index: int) -> np.ndarray:
    # OpenCV's FFmpeg reader: seeks and decodes ~6x faster than imageio's ffmpeg pipe.
    video, start, stride = self._chunks[index]
    span = clip_span(self.num_frames, stride)
    path = self.paths[video]
    capture = cv2.VideoCapture(path)
    try:
      if not capture.isOpened() or not capture.set(cv2.CAP_PROP_POS_FRAMES, start):
        raise IOError('OpenCV cannot open or seek it')
      frames = []
      for k in range(span):
        ok, frame = capture.read()
        if not ok:
          raise IOError(f'frame {start + k} does not decode')
        if k % stride == 0:
          frames.append(frame[..., 2::-1])    # BGR -> RGB
    except IOError as e:
      raise IOError(f'cannot decode frames {start}..{start + span - 1} of video '
                    f'{path!r}: {e}') from e
    finally:
      capture.release()
    return np.stack(frames).astype(np.uint8)

  def _drop(self, index: int, error: IOError) -> None:
    if self.strict:
      raise error
    logging.warning('skipping chunk %d (config.data.strict_videos=False): %s', index, error)
    self.bad_chunks.add(index)

  def __getitem__(self, index) -> dict[str, np.ndarray]:
    rgb = read_first_good(int(index), len(self), self._decode, self.bad_chunks.__contains__,
                          self._drop)
    if rgb is None:
      raise IOError(f'no chunk of the videos in {self.video_dir!r} decodes')
    return resize_clip({'rgb': rgb}, (self.resolution, self.resolution))
