"""Which clip source a config names, and the splits it has.

  check_source(config) -> name             synthetic | video_folder | tfds (or a clear error)
  open_source(config, data_dir, split)      the random-access source of one split
  source_splits(config) -> tuple            the splits that exist (no 'ood' for real video)
  held_out(config, data_dir) -> HeldOut     the test share of a source without a test split
"""
from __future__ import annotations

import os

from maskvid import fileio
from maskvid.data import holdout
from maskvid.data import tfds_source   # imports TensorFlow only when a TFDS source opens
from maskvid.data.records import ClipSource
from maskvid.data.video_folder import VideoFolderSource
from maskvid.data.video_folder import list_videos

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


# In paths.data: which videos a source without a test split of its own holds out.
HELD_OUT_FILE = 'held_out.json'


def open_source(config, data_dir: str, split: str):
  """The random-access clip source config.data.source names: ClipSource (rendered synthetic
  shards), VideoFolderSource or TfdsVideoSource.

  A video folder's split is `video_dir/{split}` when that subfolder exists. Without one, `train`
  and `test` share `video_dir`: the videos `held_out(config, data_dir)` names are the test split
  and never the training one (`data.holdout`). A TFDS dataset's split is
  `config.data.tfds_splits[split]` when given there, else `split`; a missing test split is a
  held-out share of the train examples by the same rule. Splits a source does not have
  (`source_splits`) raise ValueError. The `train` split draws each clip's stride from
  config.data.video_strides when that mix is set; the others keep config.data.video_stride.
  """
  source = check_source(config)
  if source == 'synthetic':
    return ClipSource(data_dir, split)
  have = source_splits(config)
  if split not in have:
    raise ValueError(f'split {split!r}: the {source!r} source has only the splits '
                     f'{have} (no video_dir/{split} folder or TFDS split)')
  d = config.data
  stride, seed, strict = int(d.video_stride), int(d.shuffle_seed), bool(d.strict_videos)
  if split == 'train' and tuple(d.get('video_strides', ())):
    stride = tuple(int(s) for s in d.video_strides)
  share = held_out(config, data_dir)
  if source == 'video_folder':
    video_dir, files = d.video_dir, None
    if os.path.isdir(os.path.join(video_dir, split)):
      video_dir = os.path.join(video_dir, split)
    elif share is not None:
      files = share.train if split == 'train' else share.test
    return VideoFolderSource(video_dir, d.num_frames, d.resolution, strict=strict, stride=stride,
                             seed=seed, files=files)
  keep = None
  tfds_split = dict(d.tfds_splits).get(split, split)
  if share is not None and split in ('train', 'test'):
    tfds_split = dict(d.tfds_splits).get('train', 'train')
    keep = [int(i) for i in (share.test if split == 'test' else share.train)]
  return tfds_source.TfdsVideoSource(
      d.tfds_name, tfds_split, d.num_frames, d.resolution,
      data_dir=d.tfds_data_dir, frames_key=d.tfds_frames_key, stride=stride, seed=seed,
      strict=strict, keep=keep)


def _tfds_splits(config) -> dict:
  """{TFDS split name: number of examples} of the configured TFDS dataset."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (TF: seconds)
  try:
    builder = tfds.builder(config.data.tfds_name, data_dir=config.data.tfds_data_dir or None)
  except Exception as e:  # pylint: disable=broad-except
    raise FileNotFoundError(f'cannot open TFDS dataset {config.data.tfds_name!r} in '
                            f'{config.data.tfds_data_dir!r}: {e}') from e
  return {name: int(info.num_examples) for name, info in builder.info.splits.items()}


def source_splits(config) -> tuple:
  """The splits the configured source has, in config.data.clips order (`train` first).

  synthetic: every split of config.data.clips with clips. A video folder: `train`, `test`
  (its own folder, else held-out videos) and any other split with a `video_dir/{split}` folder.
  TFDS: `train`, `test` (its own split, else held-out examples) and any other split that exists.
  """
  source = check_source(config)
  wanted = [s for s in config.data.clips if int(config.data.clips[s]) > 0]
  if source == 'synthetic':
    return tuple(wanted)
  if source == 'video_folder':
    extra = [s for s in wanted if s not in ('train', 'test')
             and os.path.isdir(os.path.join(config.data.video_dir, s))]
  else:
    have = _tfds_splits(config)
    extra = [s for s in wanted if s not in ('train', 'test')
             and dict(config.data.tfds_splits).get(s, s) in have]
  return ('train', 'test') + tuple(extra)


def held_out(config, data_dir: str = '') -> holdout.HeldOut | None:
  """The held-out share of a video source without a test split of its own, else None.

  Video folder without `video_dir/test`: file names; TFDS without the test split: example
  indices (as strings). The split made on first use is kept in `data_dir/held_out.json` (when
  data_dir is given) so that videos added later move nothing but themselves.
  """
  source = check_source(config)
  d = config.data
  fraction = float(d.get('heldout_fraction', 0.1))
  if source == 'video_folder':
    if os.path.isdir(os.path.join(d.video_dir, 'test')):
      return None
    if not os.path.isdir(d.video_dir):
      raise FileNotFoundError(f'config.data.video_dir {d.video_dir!r} is not a directory')
    names = [n for n in list_videos(d.video_dir)
             if not os.path.isdir(os.path.join(d.video_dir, n))]
  elif source == 'tfds':
    have = _tfds_splits(config)
    if dict(d.tfds_splits).get('test', 'test') in have:
      return None
    train = dict(d.tfds_splits).get('train', 'train')
    count = have.get(train, 0)
    test = holdout.held_out_indices(count, fraction, f'{d.tfds_name}/{train}')
    if not test:
      return holdout.HeldOut(tuple(str(i) for i in range(count)),
                             tuple(str(i) for i in range(count)), True,
                             f'{count} example: nothing can be held out')
    return holdout.HeldOut(tuple(str(i) for i in range(count) if i not in set(test)),
                           tuple(str(i) for i in test), False,
                           f'TFDS {d.tfds_name!r} has no test split: {len(test)} of {count} '
                           f'{train!r} examples held out by index hash (CRC32 < {fraction:g})')
  else:
    return None
  path = os.path.join(data_dir, HELD_OUT_FILE) if data_dir else ''
  record = fileio.read_json(path) if path and os.path.exists(path) else None
  share = holdout.split_files(names, fraction, record)
  if path and not share.scores_training and (
      record is None or sorted(record.get('test', ())) != sorted(share.test)
      or sorted(record.get('train', ())) != sorted(share.train)):
    os.makedirs(data_dir, exist_ok=True)
    fileio.write_json_atomic(path, {'video_dir': d.video_dir, 'train': list(share.train),
                                    'test': list(share.test), 'rule': share.rule})
  return share

