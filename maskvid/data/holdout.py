"""Held-out videos for a source without a test split of its own (a folder of videos, a TFDS set
with only `train`).

  split_files(names, fraction, record=None) -> HeldOut    which files are the test split
  held_out_indices(count, fraction, key) -> list[int]      the same rule for TFDS examples

Rule: a file is held out when the CRC32 of its name, as a fraction of 2^32, is below
`fraction` (config.data.heldout_fraction); if no file is and there are at least two, the one
with the smallest hash is. A `record` (the held-out names of an earlier run, kept in
DIR/data/held_out.json) is honoured: the files it names keep their side and new files are judged
by the hash alone, so adding a file moves no other file. With a single file nothing can be held
out: the test split is then the training file and `scores_training` says so.
"""
from __future__ import annotations

import dataclasses
import zlib


@dataclasses.dataclass(frozen=True)
class HeldOut:
  train: tuple          # names
  test: tuple           # names (the training names when scores_training)
  scores_training: bool
  rule: str             # one line: how the split was made


def _score(name: str) -> float:
  return zlib.crc32(name.encode()) / 2.0 ** 32


def _check_fraction(fraction: float) -> float:
  fraction = float(fraction)
  if not 0.0 < fraction < 1.0:
    raise ValueError(f'config.data.heldout_fraction must be in (0, 1), got {fraction}')
  return fraction


def split_files(names, fraction: float, record=None) -> HeldOut:
  """Splits file names (basenames) into train and held-out test by the module's rule."""
  names = sorted(set(names))
  fraction = _check_fraction(fraction)
  if len(names) < 2:
    return HeldOut(tuple(names), tuple(names), True,
                   f'{len(names)} video: nothing can be held out, the test split is the '
                   'training video')
  if record is not None:
    kept = set(record.get('test', ())) & set(names)
    new = [n for n in names if n not in set(record.get('train', ())) | set(record.get('test', ()))]
    test = sorted(kept | {n for n in new if _score(n) < fraction})
  else:
    test = [n for n in names if _score(n) < fraction]
  if not test:
    test = [min(names, key=_score)]
  if len(test) == len(names):   # keep something to train on
    test = test[:-1]
  rule = (f'held out by file-name hash (CRC32 < {fraction:g} of 2^32, at least one; '
          f'config.data.heldout_fraction): {len(test)} of {len(names)} videos')
  return HeldOut(tuple(n for n in names if n not in test), tuple(test), False, rule)


def held_out_indices(count: int, fraction: float, key: str) -> list[int]:
  """Indices in [0, count) held out of a TFDS split without a test split (same rule, by index)."""
  names = [f'{key}:{i}' for i in range(int(count))]
  split = split_files(names, fraction)
  if split.scores_training:
    return []
  held = set(split.test)
  return [i for i, n in enumerate(names) if n in held]
