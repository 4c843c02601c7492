"""Posed real scenes: the field's camera formats read into, and written from, one `PosedScene`.

`read_scene(path)` detects the format; `maskvid.posed.export` writes rendered synthetic clips in
any of them; `maskvid.posed.align` fits monocular depth to a scene's poses. docs/posed.md has the
conventions and the exact matrices.
"""
from __future__ import annotations

import glob
import os
from typing import Optional

from maskvid.posed.colmap import find_model_dir, read_colmap, write_colmap
from maskvid.posed.nerfstudio import read_nerfstudio, write_nerfstudio
from maskvid.posed.re10k import read_re10k, write_re10k
from maskvid.posed.scene import PosedFormatError, PosedScene, load_frames, make_scene, validate

FORMATS = ('nerfstudio', 're10k', 'colmap')
READERS = dict(nerfstudio=read_nerfstudio, re10k=read_re10k, colmap=read_colmap)
WRITERS = dict(nerfstudio=write_nerfstudio, re10k=write_re10k, colmap=write_colmap)


def _is_re10k_file(path: str) -> bool:
  try:
    with open(path) as f:
      return '://' in f.readline()
  except (OSError, UnicodeDecodeError):
    return False


def detect_format(path: str) -> tuple:
  """(format, the path its reader takes) for a file or folder; raises naming what was looked for."""
  base = os.path.basename(path)
  if os.path.isfile(path):
    if base == 'transforms.json':
      return 'nerfstudio', path
    if base in ('cameras.txt', 'images.txt', 'points3D.txt'):
      return 'colmap', os.path.dirname(path) or '.'
    if path.endswith('.txt') and _is_re10k_file(path):
      return 're10k', path
  elif os.path.isdir(path):
    if os.path.isfile(os.path.join(path, 'transforms.json')):
      return 'nerfstudio', os.path.join(path, 'transforms.json')
    try:
      return 'colmap', find_model_dir(path)
    except PosedFormatError:
      pass
    cams = [p for p in sorted(glob.glob(os.path.join(path, '*.txt'))) if _is_re10k_file(p)]
    if len(cams) == 1:
      return 're10k', cams[0]
  else:
    raise PosedFormatError(f'{path}: does not exist')
  raise PosedFormatError(
      f'{path}: format not recognised: looked for transforms.json (nerfstudio), cameras.txt in the '
      'folder, sparse/0 or sparse (colmap), or one .txt whose first line is a URL (re10k)')


def read_scene(path: str, format: Optional[str] = None,  # pylint: disable=redefined-builtin
               **kwargs) -> PosedScene:
  """Reads a posed scene; `format` in FORMATS or None (detected). kwargs go to the reader."""
  if format is None:
    format, path = detect_format(path)
  elif format not in READERS:
    raise ValueError(f'format must be one of {FORMATS}, got {format!r}')
  return READERS[format](path, **kwargs)
