"""The clips evaluation runs on: the first clips of a split, with GT depth and cameras.

  load_clips(config, workdir, split, num) -> (clips, origin)   rgb, depth, intrinsics, w2c
  load_edit_pairs(config, split, num) -> (pairs, origin)       + rgb_edited, object_mask

Clips come from the latent cache, else the rendered dataset, else the renderer (the same seeds,
so the same clips); edit pairs are always rendered (`maskvid.data.edits`). All are cut to the
model's clip (config.data.clip_length frames at config.data.frame_stride).
"""
from __future__ import annotations

from absl import logging
import numpy as np

from maskvid.data import edits
from maskvid.data import sources
from maskvid.data import records
from maskvid.data import synthetic
from maskvid.data import scenes
from maskvid.vae import cache
from maskvid.workdir import stage_dir

_GEOMETRY = ('rgb', 'depth', 'intrinsics', 'world_to_camera')


def _crop(clip: dict, length: int, stride: int) -> dict:
  span = (length - 1) * stride + 1
  out = dict(clip)
  for key in ('rgb', 'depth', 'world_to_camera', 'rgb_edited', 'object_mask'):
    if key in out:
      x = np.asarray(out[key])
      if x.shape[0] < span:
        raise ValueError(f'clip has {x.shape[0]} frames, need {span} (config.data.clip_length='
                         f'{length}, frame_stride={stride})')
      out[key] = x[:span:stride]
  return out


def load_clips(config, workdir: str, split: str, num_clips: int) -> tuple[list, str]:
  """First `num_clips` clips of `split`; returns (clips, where they came from).

  Synthetic data: rgb with GT geometry. Tries the latent cache (carries rgb + geometry), then the
  rendered dataset, then renders the same clips directly (`synthetic.render_clip` with
  `split_seeds`: identical to the data stage). Video sources (`sources.VIDEO_SOURCES`): rgb only,
  from the latent cache, else from the source itself.
  """
  video = config.data.source in sources.VIDEO_SOURCES
  needed = ('rgb',) if video else _GEOMETRY
  clips, origin = None, None
  attempts = []
  try:
    src = cache.LatentSource(stage_dir(config, workdir, 'latents'), split)
    attempts.append(('latent cache', src))
  except Exception as e:  # pylint: disable=broad-except
    logging.info('eval clips: no latent cache for %s (%s)', split, e)
  try:
    src = (sources.open_source(config, stage_dir(config, workdir, 'data'), split) if video
           else records.ClipSource(stage_dir(config, workdir, 'data'), split))
    attempts.append(('video source' if video else 'dataset', src))
  except Exception as e:  # pylint: disable=broad-except
    logging.info('eval clips: no %s for %s (%s)', 'video source' if video else 'rendered dataset',
                 split, e)
  for name, src in attempts:
    n = min(num_clips, len(src))
    try:
      elems = [src[i] for i in range(n)]
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('eval clips: cannot read %s for %s (%s); trying the next source', name,
                      split, e)
      continue
    if n and all(all(k in e for k in needed) for e in elems):
      clips, origin = elems, name
      break
  if clips is None:
    if video:
      raise ValueError(f'eval: no clips of split {split!r} in the latent cache or in the '
                       f'{config.data.source!r} source')
    return render_clips(config, split, num_clips), 'rendered now'
  clips = [_crop({k: np.asarray(c[k]) for k in needed}, int(config.data.clip_length),
                 int(config.data.frame_stride)) for c in clips]
  return clips, origin


def render_clips(config, split: str, num_clips: int, speed: float = 1.0) -> list:
  """The first `num_clips` clips of a synthetic split rendered now, the camera path scaled by
  `speed` (`scenes.scale_path`; 1 = the data stage's clips), cut to the model's clip."""
  res = int(config.data.resolution)
  return [_crop({k: np.asarray(v) for k, v in synthetic.render_clip(
      int(s), split, int(config.data.num_frames), res, res, speed).items() if k in _GEOMETRY},
                int(config.data.clip_length), int(config.data.frame_stride))
          for s in scenes.split_seeds(split, num_clips)]


def has_geometry(clip: dict) -> bool:
  """True for clips with GT depth and cameras (synthetic), False for real video."""
  return all(k in clip for k in _GEOMETRY)


def load_edit_pairs(config, split: str, num_clips: int) -> tuple[list, str]:
  """The first `num_clips` edit pairs of `split` (`edits.edit_pairs`), cut to the model's clip."""
  if config.data.source != 'synthetic':
    raise ValueError(f"the 'edit' eval task renders its ground truth; config.data.source="
                     f"{config.data.source!r} is not 'synthetic'")
  res = int(config.data.resolution)
  pairs = edits.edit_pairs(split, num_clips, int(config.data.num_frames), res, res)
  keys = _GEOMETRY + ('rgb_edited', 'object_mask')
  out = [_crop({k: np.asarray(p[k]) for k in keys}, int(config.data.clip_length),
               int(config.data.frame_stride)) for p in pairs]
  seeds = [p['seed'] for p in pairs]
  return out, (f'edit pairs rendered now: {len(seeds)} clips with an object on >= 2% of frame 0 '
               f'among seeds {seeds[0]}..{seeds[-1]}')
