"""RealEstate10K camera files with a folder of frames named by timestamp.

File conventions (google.github.io/realestate10k/download.html):
  * line 1: the video URL; then one line per frame:
    `timestamp fx fy cx cy k1 k2 p00 p01 p02 p03 p10 ... p23` (19 fields, k1 k2 = 0), where the
    3x4 row-major P is world-to-camera with OpenCV axes (ours: no axis flip);
  * intrinsics are normalised by the image size: fx_px = fx * W, cx_px = cx * W, fy_px = fy * H,
    cy_px = cy * H, with pixel centres at +0.5 (cx = 0.5 is the image centre), so
    cx_ours = cx * W - 0.5;
  * frames: `<frames_dir>/<timestamp>.png` (or .jpg), frames_dir defaulting to the camera file's
    path without `.txt` (`train/abc.txt` -> `train/abc/`). The image size comes from the first
    frame; `load_frames` checks the others.
  * splits: RE10K files have none; an evaluation index JSON as pixelSplat ships
    ({scene: {"context": [i, j], "target": [...]}}, indices into the file's frames, scene = the
    camera file's stem) supplies them; `evaluation_index.json` beside the camera file is used
    when no index is named.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np
from absl import logging

from maskvid import fileio
from maskvid.posed import scene as scene_lib
from maskvid.posed.scene import PosedFormatError, PosedScene

PIXEL_OFFSET = 0.5
FIELDS = 19
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')
INDEX_JSON = 'evaluation_index.json'


def parse_line(line: str, path: str, no: int) -> tuple:
  """One camera line -> (timestamp int, normalised (fx, fy, cx, cy), world_to_camera [4, 4])."""
  tok = line.split()
  if len(tok) != FIELDS:
    raise PosedFormatError(f'{path}:{no}: expected {FIELDS} fields (timestamp fx fy cx cy 0 0 and '
                           f'a 3x4 world-to-camera), got {len(tok)}: {line.strip()!r}')
  try:
    ts, values = int(tok[0]), np.array([float(t) for t in tok[1:]])
  except ValueError as e:
    raise PosedFormatError(f'{path}:{no}: not a number ({e})') from e
  if not np.isfinite(values).all():
    raise PosedFormatError(f'{path}:{no}: non-finite value')
  w2c = np.eye(4)
  w2c[:3] = values[6:].reshape(3, 4)
  return ts, values[:4], w2c


def _find_frame(frames_dir: str, ts: int) -> Optional[str]:
  for suffix in IMAGE_SUFFIXES:
    p = os.path.join(frames_dir, f'{ts}{suffix}')
    if os.path.isfile(p):
      return p
  return None


def read_re10k(path: str, frames_dir: Optional[str] = None,
               index_json: Optional[str] = None) -> PosedScene:
  """A RealEstate10K camera file -> PosedScene (frames not loaded)."""
  if not os.path.isfile(path):
    raise PosedFormatError(f'{path}: file does not exist')
  with open(path) as f:
    lines = f.read().splitlines()
  if not lines or '://' not in lines[0]:
    raise PosedFormatError(f'{path}:1: expected the video URL on the first line')
  frames_dir = frames_dir or os.path.splitext(path)[0]
  rows = [parse_line(ln, path, no) for no, ln in enumerate(lines[1:], 2) if ln.strip()]
  if not rows:
    raise PosedFormatError(f'{path}: no camera lines after the URL')
  paths = []
  for (ts, _, _), no in zip(rows, [no for no, ln in enumerate(lines[1:], 2) if ln.strip()]):
    p = _find_frame(frames_dir, ts)
    if p is None:
      raise PosedFormatError(f'{path}:{no}: frame {ts} has no image {frames_dir}/{ts}'
                             f'{{{",".join(IMAGE_SUFFIXES)}}}')
    paths.append(p)
  extra = _count_images(frames_dir) - len(paths)
  if extra > 0:
    logging.warning('%s: %d images in %s have no camera line', path, extra, frames_dir)
  h, w = scene_lib.image_size_of(paths[0])
  k = np.stack([denormalise(n, h, w) for _, n, _ in rows])
  if index_json is None and os.path.isfile(os.path.join(os.path.dirname(path), INDEX_JSON)):
    index_json = os.path.join(os.path.dirname(path), INDEX_JSON)
  context, target = _split(index_json, os.path.splitext(os.path.basename(path))[0])
  return scene_lib.make_scene(k, np.stack([p for _, _, p in rows]), (h, w),
                              [str(ts) for ts, _, _ in rows], frame_paths=paths,
                              context_ids=context, target_ids=target, source=path,
                              meta=dict(format='re10k', url=lines[0].strip()))


def _count_images(frames_dir: str) -> int:
  return sum(os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES for n in os.listdir(frames_dir))


def denormalise(normalised, height: int, width: int) -> np.ndarray:
  """(fx, fy, cx, cy) / image size -> K [3, 3] in pixels, our pixel-centre convention."""
  fx, fy, cx, cy = normalised
  k = np.array([[fx * width, 0, cx * width], [0, fy * height, cy * height], [0, 0, 1.0]])
  return scene_lib.shift_principal_point(k, -PIXEL_OFFSET)


def normalise(k: np.ndarray, height: int, width: int) -> tuple:
  """denormalise's inverse: K [3, 3] ours -> (fx, fy, cx, cy)."""
  k = scene_lib.shift_principal_point(k, PIXEL_OFFSET)
  return k[0, 0] / width, k[1, 1] / height, k[0, 2] / width, k[1, 2] / height


def _split(index_json: Optional[str], key: str) -> tuple:
  if index_json is None:
    return None, None
  try:
    with open(index_json) as f:
      entry = json.load(f).get(key)
  except (OSError, json.JSONDecodeError) as e:
    raise PosedFormatError(f'{index_json}: cannot read the evaluation index ({e})') from e
  if entry is None:
    return None, None
  if not isinstance(entry, dict) or not {'context', 'target'} <= set(entry):
    raise PosedFormatError(f'{index_json}: entry {key!r} needs "context" and "target" lists')
  return entry['context'], entry['target']


def write_re10k(scene: PosedScene, out_dir: str, name: str = 'scene', url: str = '',
                timestamps=None) -> str:
  """Writes out_dir/<name>.txt and out_dir/<name>/<timestamp>.png; returns the camera file path.

  timestamps: [N] ints (microseconds, as RE10K); defaults to 30 fps. scene.frames must be loaded.
  """
  if scene.frames is None:
    raise ValueError('write_re10k needs scene.frames: call scene.load_frames first')
  h, w = scene.image_size
  ts = (np.arange(len(scene)) * 33333 if timestamps is None else np.asarray(timestamps))
  lines = [url or f'https://maskvid.invalid/{name}']
  for t, k, pose in zip(ts.tolist(), scene.intrinsics, scene.world_to_camera):
    values = list(normalise(k, h, w)) + [0.0, 0.0] + pose[:3].reshape(-1).tolist()
    lines.append(' '.join([str(int(t))] + [repr(float(v)) for v in values]))
  path = os.path.join(out_dir, f'{name}.txt')
  fileio.makedirs(out_dir)
  fileio.write_text_atomic(path, '\n'.join(lines) + '\n')
  scene_lib.write_frames(scene.frames, [os.path.join(out_dir, name, f'{int(t)}.png')
                                        for t in ts.tolist()])
  if scene.context_ids is not None and scene.target_ids is not None:
    index_path = os.path.join(out_dir, INDEX_JSON)
    index = scene_lib.load_json(index_path) if os.path.isfile(index_path) else {}
    index[name] = dict(context=list(scene.context_ids), target=list(scene.target_ids))
    fileio.write_json_atomic(index_path, index)
  return path
