"""Ground-truth edited videos: one clip rendered twice, once with one object's material changed.

The renderer has fixed world lighting, no shadows and no reflections, so the two renders differ
only on the pixels that see the edited object, and the renderer says which pixels those are
(`synthetic.render_scene`'s object_id). That makes edit propagation measurable exactly: given the
edited frame 0 and the original frames, the answer for frames 1..T-1 is the edited render.

  render_edit_pair(seed, split, T, H, W) -> dict or None (no object covers min_fraction of frame 0)
  edit_pairs(split, num, T, H, W) -> the first `num` pairs of the split's clip seeds

The edit (deterministic per seed): the object with the largest area in frame 0 gets a new
texture family (another one of its split's families) and colours whose hue is turned by a third
to two thirds of the circle, at the same saturation and value ranges as `scenes`.
"""
from __future__ import annotations

import colorsys
import copy

import numpy as np

from maskvid.data import scenes
from maskvid.data import synthetic

_EDIT_STREAM = 11   # rng stream of the edit, apart from the scene's own draws


def _turn_hue(rgb: np.ndarray, turn: float) -> np.ndarray:
  h, s, v = colorsys.rgb_to_hsv(*np.asarray(rgb, np.float64))
  return np.array(colorsys.hsv_to_rgb((h + turn) % 1.0, max(s, 0.55), max(v, 0.5)))


def edit_material(material: dict, split: str, rng: np.random.Generator) -> dict:
  """A new object material: another texture family of `split`, colours turned in hue."""
  families = [f for f in scenes.family_set(split)['textures']
              if scenes.TEXTURES.index(f) != int(material['family'])]
  new = scenes.sample_material(rng, str(rng.choice(families)), is_plane=False)
  turn = rng.uniform(1 / 3, 2 / 3)
  new['color_a'] = _turn_hue(material['color_a'], turn)
  new['color_b'] = _turn_hue(material['color_b'], turn)
  return new


def render_edit_pair(seed: int, split: str, num_frames: int, height: int, width: int,
                     min_fraction: float = 0.02):
  """The clip `seed` of `split`, original and edited (module docstring).

  Returns None when no object covers `min_fraction` of frame 0, else `synthetic.render_clip`'s
  dict (rgb uint8 [T,H,W,3] the original, depth, intrinsics, world_to_camera) plus
  rgb_edited uint8 [T,H,W,3], object_mask bool [T,H,W] (pixels that see the edited object) and
  edited_object (its index in the scene's objects).
  """
  scene = scenes.sample_scene(seed, split, num_frames)
  clip = synthetic.render_scene(scene, height, width)
  ids = clip.pop('object_id')
  if not scene['objects']:
    return None
  area = np.array([(ids[0] == i).mean() for i in range(len(scene['objects']))])
  target = int(np.argmax(area))
  if area[target] < min_fraction:
    return None
  rng = np.random.default_rng([int(seed), scenes.SPLIT_CODE[split], _EDIT_STREAM])
  edited = copy.deepcopy(scene)
  edited['objects'][target]['material'] = edit_material(
      scene['objects'][target]['material'], split, rng)
  clip['rgb_edited'] = synthetic.render_scene(edited, height, width)['rgb']
  clip['object_mask'] = ids == target
  clip['edited_object'] = target
  return clip


def edit_pairs(split: str, num: int, num_frames: int, height: int, width: int,
               min_fraction: float = 0.02, max_seeds: int | None = None) -> list:
  """The first `num` edit pairs over the split's seeds in order (clips without a large enough
  object in frame 0 are passed over); each dict also holds its `seed`."""
  max_seeds = max_seeds or 4 * num + 16
  out = []
  for seed in scenes.split_seeds(split, max_seeds):
    pair = render_edit_pair(int(seed), split, num_frames, height, width, min_fraction)
    if pair is not None:
      pair['seed'] = int(seed)
      out.append(pair)
      if len(out) == num:
        return out
  raise ValueError(f'only {len(out)} of the first {max_seeds} {split} clips show an object on '
                   f'{min_fraction:.0%} of frame 0; need {num}')
