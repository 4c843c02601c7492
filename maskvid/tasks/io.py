"""Edges of the task commands: reading inputs with clear errors, writing outputs atomically.

Every reader names the command-line argument it serves, so a bad input fails before any work
starts with e.g. "--start: cannot read image 'a.png': ...". Outputs (an MP4 and a PNG strip) are
written to temporary files next to the destination and renamed only once both are complete.
"""
import contextlib
import os
import tempfile
from typing import Iterator, Mapping

import cv2
import imageio.v3 as iio
import numpy as np

from maskvid import pictures


class InputError(ValueError):
  """A command-line input is missing, unreadable or inconsistent (message names the argument)."""


def _to_rgb_uint8(a: np.ndarray, what: str) -> np.ndarray:
  a = np.asarray(a)
  if a.dtype != np.uint8:
    if np.issubdtype(a.dtype, np.floating) and a.size and a.min() >= 0 and a.max() <= 1:
      a = (a * 255).round()
    elif a.dtype == np.uint16:
      a = a / 257.0
    a = np.clip(a, 0, 255).astype(np.uint8)
  if a.shape[-1:] == (4,):
    a = a[..., :3]
  elif a.shape[-1:] == (1,):
    a = np.repeat(a, 3, -1)
  elif a.shape[-1:] != (3,):  # greyscale without a channel axis
    a = np.repeat(a[..., None], 3, -1)
  return a


def read_image(path: str, arg: str) -> np.ndarray:
  """Image file -> uint8 [H, W, 3] (grey and RGBA are converted)."""
  if not path:
    raise InputError(f'{arg}: no file given')
  if not os.path.isfile(path):
    raise InputError(f'{arg}: file not found: {path!r}')
  try:
    a = iio.imread(path)
  except Exception as e:  # imageio raises many types for undecodable files
    raise InputError(f'{arg}: cannot read image {path!r}: {e}') from e
  if a.ndim not in (2, 3) or min(a.shape[:2]) < 1:
    raise InputError(f'{arg}: {path!r} is not a single image (shape {a.shape})')
  return _to_rgb_uint8(a, arg)


def read_video(path: str, arg: str) -> np.ndarray:
  """Video file (mp4, gif, ...) or .npy uint8 [T,H,W,3] -> uint8 [T, H, W, 3]."""
  if not path:
    raise InputError(f'{arg}: no file given')
  if not os.path.isfile(path):
    raise InputError(f'{arg}: file not found: {path!r}')
  try:
    a = np.load(path) if path.endswith('.npy') else iio.imread(path, index=None)
  except Exception as e:
    raise InputError(f'{arg}: cannot read video {path!r}: {e}') from e
  a = np.asarray(a)
  if a.ndim == 3 and a.shape[-1] not in (3, 4):
    a = a[..., None]
  if a.ndim != 4 or a.shape[0] < 2:
    raise InputError(f'{arg}: {path!r} must hold at least 2 frames [T, H, W, 3], got shape '
                     f'{a.shape}')
  return _to_rgb_uint8(a, arg)


def read_mask(path: str, arg: str) -> np.ndarray:
  """Mask image (non-zero = inside) or .npy -> bool [H, W]."""
  if not path:
    raise InputError(f'{arg}: no file given')
  if not os.path.isfile(path):
    raise InputError(f'{arg}: file not found: {path!r}')
  try:
    a = np.load(path) if path.endswith('.npy') else iio.imread(path)
  except Exception as e:
    raise InputError(f'{arg}: cannot read mask {path!r}: {e}') from e
  a = np.asarray(a)
  if a.ndim == 3:
    a = a[..., :3].max(-1) if a.shape[-1] >= 3 else a[..., 0]
  if a.ndim != 2:
    raise InputError(f'{arg}: {path!r} must be a 2-D mask, got shape {a.shape}')
  m = a > (127 if a.dtype == np.uint8 and a.max() > 1 else 0)
  if not m.any():
    raise InputError(f'{arg}: mask {path!r} is empty (no non-zero pixel)')
  return m


def read_depth(path: str, arg: str) -> np.ndarray:
  """.npy / .npz ('depth' entry) z-depth map -> float32 [H, W]; must be finite and > 0."""
  if not os.path.isfile(path):
    raise InputError(f'{arg}: depth file not found: {path!r}')
  try:
    a = np.load(path)
    if isinstance(a, np.lib.npyio.NpzFile):
      a = a['depth'] if 'depth' in a.files else a[a.files[0]]
  except Exception as e:
    raise InputError(f'{arg}: cannot read depth {path!r} (.npy or .npz expected): {e}') from e
  a = np.asarray(a, np.float32)
  if a.ndim != 2 or not np.all(np.isfinite(a)) or a.min() <= 0:
    raise InputError(f'{arg}: depth {path!r} must be a finite positive [H, W] array, got shape '
                     f'{a.shape}')
  return a


def require_checkpoint(workdir: str, arg: str = '--checkpoint') -> None:
  """A maskvid workdir with trained diffusion/ and vae/ stages."""
  if not workdir:
    raise InputError(f'{arg}: no directory given')
  if not os.path.isdir(workdir):
    raise InputError(f'{arg}: directory not found: {workdir!r}')
  for stage in ('diffusion', 'vae'):
    if not os.path.isdir(os.path.join(workdir, stage)):
      raise InputError(f'{arg}: {workdir!r} is not a maskvid workdir: {stage}/ is missing '
                       '(train it with `python -m maskvid.main --config=configs/demo.py '
                       '--workdir=DIR`)')


def require_output(path: str, arg: str = '--out') -> None:
  if not path or not path.lower().endswith('.mp4'):
    raise InputError(f'{arg}: must be a path ending in .mp4, got {path!r}')
  parent = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(parent):
    raise InputError(f'{arg}: output directory does not exist: {parent!r}')


def resize_frames(frames: np.ndarray, height: int, width: int, *, nearest: bool = False):
  """uint8/bool [..., H, W(, C)] -> same at (height, width) (area filter down, linear up)."""
  a = np.asarray(frames)
  if a.shape[-3:-1] == (height, width) or (a.ndim == 2 and a.shape == (height, width)):
    return a
  lead = a.shape[:-3] if a.ndim >= 3 and a.shape[-1] == 3 else a.shape[:-2]
  src_h, src_w = (a.shape[-3:-1] if a.ndim >= 3 and a.shape[-1] == 3 else a.shape[-2:])
  interp = (cv2.INTER_NEAREST if nearest else
            cv2.INTER_AREA if height < src_h else cv2.INTER_LINEAR)
  flat = a.reshape((-1,) + a.shape[len(lead):])
  is_bool = flat.dtype == bool
  out = [cv2.resize(f.astype(np.uint8) if is_bool else f, (width, height), interpolation=interp)
         for f in flat]
  out = np.stack(out).reshape(lead + out[0].shape)
  return out.astype(bool) if is_bool else out


def mask_to_rgb(mask: np.ndarray) -> np.ndarray:
  """bool [..., H, W] -> uint8 [..., H, W, 3] (white = known)."""
  return np.repeat((np.asarray(mask, np.uint8) * 255)[..., None], 3, -1)


@contextlib.contextmanager
def atomic_outputs(*paths: str) -> Iterator[list]:
  """Yields temporary paths (same directory and suffix); renames them onto `paths` on success."""
  tmps = []
  try:
    for p in paths:
      d, base = os.path.split(os.path.abspath(p))
      fd, tmp = tempfile.mkstemp(prefix=f'.{base}.', suffix=os.path.splitext(p)[1], dir=d)
      os.close(fd)
      tmps.append(tmp)
    yield tmps
    umask = os.umask(0)
    os.umask(umask)
    for tmp, p in zip(tmps, paths):
      os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual mode
      os.replace(tmp, p)
    tmps = []
  finally:
    for tmp in tmps:
      with contextlib.suppress(OSError):
        os.remove(tmp)


def write_outputs(out_mp4: str, video: np.ndarray, strip_rows: Mapping[str, np.ndarray], *,
                  fps: int = 8, min_size: int = 64) -> tuple:
  """Writes out_mp4 (the video) and <out>.png (the strip: `pictures.labelled_grid` of
  {label: uint8 [T, H, W, 3]}, upscaled to min_size pixels if tiny) atomically; returns both."""
  png = os.path.splitext(out_mp4)[0] + '.png'
  video = np.asarray(video, np.uint8)
  with atomic_outputs(out_mp4, png) as (tmp_mp4, tmp_png):
    pictures.write_mp4(tmp_mp4, video, fps=fps)
    h = next(iter(strip_rows.values())).shape[1]
    grid = pictures.labelled_grid(strip_rows, scale=max(1, -(-min_size // max(h, 1))), pad=1)
    iio.imwrite(tmp_png, grid, extension='.png')
  return out_mp4, png
