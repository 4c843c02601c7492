"""The evaluation tasks: what each method is given and which pixels are scored.

Every task turns one ground-truth clip (rgb [T, H, W, 3] in [-1, 1], depth [T, H, W], intrinsics
[3, 3], world_to_camera [T, 4, 4]) into a `Task`:

  known_pixels  bool [T, H, W]  pixels every generative method may use (True = known).
  known_frames  float [T, H, W, 3]  their values; unknown pixels are nearest-filled (so the VAE
                encoder sees no hard edges).
  answers       {row: float [T, H, W, 3]}  the non-learned answers of this task: its trivial
                answer, the bar a learned method must clear (TRIVIAL[name]: nearest-pixel fill
                of the known pixels for 'holes' and the disocclusions of 'nvs', a cross-fade of
                the endpoints for 'interpolate', the unedited frames for 'edit'), other simple
                answers ('edit': colour_transfer, flow_warp; 'nvs', 'interpolate', 'holes':
                temporal_nearest, each unknown pixel from the same pixel of the nearest frame
                where it is known, else nearest-filled: the answer that needs no geometry and
                is exact on a static clip) and oracles ('interpolate': warp_oracle, the
                endpoints forward-warped with GT depth and cameras; no method gets GT).
  hole          bool [T, H, W]  pixels scored by the hole metrics (the unknown pixels of the
                scored frames; 'edit': the edited object's pixels).
  frames        tuple of frame indices scored by the whole-frame and consistency metrics.
  target        float [T, H, W, 3] or None  what outputs are scored against when it is not the
                clip itself ('edit': the edited render).
  variants      {name: (known_pixels, known_frames, hint_pixels)}  other inputs every generative
                method is also run on, one sample each (row '<method> <name>'; 'edit':
                'gt-region').
  info          {name: float}  per-clip facts reported beside the table ('edit': region_iou).
  hint_pixels   bool [T, H, W] or None  pixels whose known_frames value is a guess ('edit': the
                edited frame 0 pulled along the tracked flow into the region): known for the
                token rule, never exact, never pasted back (`sampling.composite`).

Tasks (all deterministic given the clip and a seed):
* 'nvs' (single-view novel-view synthesis): frame 0 is given. Frames 1..T-1 get frame 0
  forward-warped with its GT depth along the GT camera path (`maskvid.geometry.forward_warp`,
  z-buffered, with its validity mask); known = valid warped pixels. Scored: frames 1..T-1, holes =
  pixels the warp left invalid.
* 'interpolate' (two-view interpolation): frames 0 and T-1 are given, the frames between are fully
  unknown to the generative methods. Trivial answer: the cross-fade (1 - a) x_0 + a x_{T-1},
  a = t / (T - 1). Oracle: both endpoints forward-warped into each middle frame with GT depth and
  cameras (nearer splat wins where both land), the rest nearest-filled. Scored: frames 1..T-2,
  every pixel is a hole.
* 'holes' (large irregular holes): every frame loses a random union of blobs (ellipses) and thick
  strokes covering 40-70% of it (`random_hole_mask`). Scored: all frames, holes = removed pixels.

* 'edit' (edit propagation; `maskvid.data.edits` renders the clip twice, once with one object's
  material changed): frame 0 is the edited render, frames 1..T-1 the original. As in
  `maskvid.tasks.edit`, the edited region is found from the images (frame-0 difference,
  `track.find_edit_region`) and tracked through the original frames with optical flow; frames
  1..T-1 are known outside the dilated tracked region, and inside it the edited frame 0 pulled
  along the chained flow is a hint (`track.warp_edit`; where the chain leaves the frame the
  pixels stay unknown). Scored against the edited render: frames 1..T-1, holes = the edited
  object's pixels (from the renderer); PSNR outside them measures what else changed. Answers:
  no_propagation (the original frames; the trivial one), colour_transfer (per channel, the
  frame-0 edit's change of mean and spread inside the region, applied inside the tracked region)
  and flow_warp (the hint alone over the original frames). Variant 'blank': no hint, the region
  unknown (the command's --nowarp_hint). Variant 'gt-region': the renderer's
  object mask instead of the tracked region (separates tracking errors from repainting errors).
  Info: region_iou, the IoU of the tracked region and the object mask over frames 1..T-1.

For 'nvs' every method gets the same GT-depth warp of frame 0; its trivial answer is that warp
with the disocclusions nearest-filled.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import cv2
import numpy as np

from maskvid import pictures
from maskvid.geometry import warp as warp_lib
from maskvid.sampling import fill
from maskvid.tasks import edit as edit_lib
from maskvid.tasks import interpolate as interpolate_lib
from maskvid.tasks import nvs as nvs_lib
from maskvid.tasks import track

TASKS = ('nvs', 'interpolate', 'holes', 'edit')
# Tasks that need the renderer's ground truth (GT depth and cameras, or a second render): real
# video is evaluated on the others.
RENDERER_TASKS = ('nvs', 'edit')
# The trivial answer of each task: the row a learned method must beat.
TRIVIAL = {'nvs': 'nearest_fill', 'holes': 'nearest_fill', 'interpolate': 'cross_fade',
           'edit': 'no_propagation'}


@dataclasses.dataclass
class Task:
  name: str
  known_pixels: np.ndarray   # bool [T, H, W]
  known_frames: np.ndarray   # float32 [T, H, W, 3] in [-1, 1]
  answers: dict              # row -> float32 [T, H, W, 3] in [-1, 1]
  hole: np.ndarray           # bool [T, H, W]
  frames: tuple              # scored frame indices
  target: Optional[np.ndarray] = None   # float32 [T, H, W, 3] (None: the clip's rgb)
  variants: dict = dataclasses.field(default_factory=dict)   # name -> (known, frames, hint)
  info: dict = dataclasses.field(default_factory=dict)
  hint_pixels: Optional[np.ndarray] = None   # bool [T, H, W]: known_frames there is a guess

  @property
  def hints(self) -> np.ndarray:
    """bool [T, H, W]: pixels whose known_frames value is a guess (known, never exact or pasted)."""
    return (np.zeros_like(self.known_pixels) if self.hint_pixels is None
            else self.hint_pixels)

  @property
  def trivial(self) -> np.ndarray:
    return self.answers[TRIVIAL[self.name]]


def _check_clip(clip):
  rgb = np.asarray(clip['rgb'])
  if rgb.ndim != 4 or rgb.shape[-1] != 3:
    raise ValueError(f"clip['rgb'] must be [T, H, W, 3], got shape {rgb.shape}")
  if rgb.shape[0] < 3:
    raise ValueError(f'clips need at least 3 frames for the tasks, got {rgb.shape[0]}')
  return rgb


def temporal_nearest(frames: np.ndarray, known: np.ndarray) -> np.ndarray:
  """float [T, H, W, 3]: unknown pixels from the same pixel of the nearest frame where it is
  known (blind: no agreement test), the rest nearest-filled in their own frame."""
  x = np.where(known[..., None], frames, 0.0).astype(np.float32)
  x, copied = fill.temporal_fill(x, known, max_diff=None)
  return fill.nearest_fill(x, known | copied)


def _warp(frame, depth, k, src, dst):
  res = warp_lib.forward_warp(frame, depth, k, src, dst, fill=0.0)
  return res.image, res.mask, res.depth


def nvs_task(clip) -> Task:
  """Single-view NVS from frame 0 (see module docstring). clip: dict with rgb/depth/cameras.
  The warp is the nvs command's (`tasks.nvs.nvs_conditioning`) with the clip's GT depth."""
  rgb_u8 = pictures.to_uint8(_check_clip(clip))
  T = rgb_u8.shape[0]
  warped, known, _ = nvs_lib.nvs_conditioning(rgb_u8[0], clip['depth'][0], clip['intrinsics'],
                                              clip['world_to_camera'])
  frames = np.where(known[..., None], pictures.to_float(warped), 0.0).astype(np.float32)
  filled = fill.nearest_fill(frames, known)
  hole = ~known
  hole[0] = False
  return Task('nvs', known, filled,
              {'nearest_fill': filled, 'temporal_nearest': temporal_nearest(frames, known)}, hole,
              tuple(range(1, T)))


def interpolate_task(clip) -> Task:
  """Two-view interpolation between frames 0 and T-1 (see module docstring)."""
  rgb_u8 = pictures.to_uint8(_check_clip(clip))
  rgb, T = pictures.to_float(rgb_u8), rgb_u8.shape[0]
  known = interpolate_lib.interpolation_conditioning(rgb_u8[0], rgb_u8[-1], T)[1]
  known_frames = np.where(known[..., None], rgb, 0.0).astype(np.float32)
  known_frames = fill.nearest_fill(known_frames, known)   # middle frames: no valid pixel -> 0
  alpha = (np.arange(T, dtype=np.float32) / (T - 1))[:, None, None, None]
  cross_fade = ((1 - alpha) * rgb[0] + alpha * rgb[-1]).astype(np.float32)
  hole = np.zeros_like(known)
  hole[1:-1] = True
  answers = {'cross_fade': cross_fade, 'temporal_nearest': temporal_nearest(rgb, known)}
  if 'depth' not in clip:   # real video: no geometry oracle
    return Task('interpolate', known, known_frames, answers, hole, tuple(range(1, T - 1)))
  depth, k, w2c = clip['depth'], clip['intrinsics'], clip['world_to_camera']
  warp_only = known_frames.copy()
  for t in range(1, T - 1):
    best = np.full(rgb.shape[1:3], np.inf)
    img = np.zeros(rgb.shape[1:], np.float32)
    valid = np.zeros(rgb.shape[1:3], bool)
    for src in (0, T - 1):
      w_img, w_valid, w_depth = _warp(rgb[src], depth[src], k, w2c[src], w2c[t])
      take = w_valid & (w_depth < best)
      img[take], best[take] = w_img[take], w_depth[take]
      valid |= w_valid
    warp_only[t] = fill.nearest_fill(img, valid)
  return Task('interpolate', known, known_frames, dict(answers, warp_oracle=warp_only), hole,
              tuple(range(1, T - 1)))


def random_hole_mask(rng: np.random.Generator, height: int, width: int,
                     coverage=(0.4, 0.7)) -> np.ndarray:
  """bool [H, W], True = hole: random ellipses and thick strokes until a drawn target coverage.

  The target is uniform in `coverage`; shapes are added until it is reached, so the result covers
  at least the target (and rarely much more: each shape is at most ~1/6 of the frame).
  """
  lo, hi = coverage
  if not 0.0 < lo <= hi < 1.0:
    raise ValueError(f'coverage must be (lo, hi) with 0 < lo <= hi < 1, got {coverage}')
  target = rng.uniform(lo, hi)
  mask = np.zeros((height, width), np.uint8)
  size = min(height, width)
  for _ in range(1000):
    if mask.mean() >= target:
      break
    cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
    if rng.random() < 0.5:
      axes = (int(rng.integers(max(1, size // 10), max(2, size // 4))),
              int(rng.integers(max(1, size // 10), max(2, size // 4))))
      cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
      ex = int(np.clip(cx + rng.normal(0, size / 3), 0, width - 1))
      ey = int(np.clip(cy + rng.normal(0, size / 3), 0, height - 1))
      cv2.line(mask, (cx, cy), (ex, ey), 1, int(rng.integers(max(1, size // 12), max(2, size // 6))))
  return mask.astype(bool)


def holes_task(clip, seed: int = 0, coverage=(0.4, 0.7)) -> Task:
  """Large irregular holes in every frame (see module docstring); `seed` picks the masks."""
  rgb = pictures.to_float(_check_clip(clip))
  rng = np.random.default_rng(seed)
  hole = np.stack([random_hole_mask(rng, rgb.shape[1], rgb.shape[2], coverage)
                   for _ in range(rgb.shape[0])])
  known = ~hole
  filled = fill.nearest_fill(np.where(known[..., None], rgb, 0.0).astype(np.float32), known)
  return Task('holes', known, filled,
              {'nearest_fill': filled, 'temporal_nearest': temporal_nearest(rgb, known)}, hole,
              tuple(range(rgb.shape[0])))


def colour_transfer(original: np.ndarray, edited0: np.ndarray, region: np.ndarray) -> np.ndarray:
  """The frame-0 edit's per-channel colour change carried to the tracked region of every frame.

  original float [T, H, W, 3], edited0 float [H, W, 3] (in [-1, 1]), region bool [T, H, W]
  (region[0] is where the edit is). Inside region[t], t >= 1, each channel x becomes
  (x - mean_o) * std_e / std_o + mean_e with the original's and the edit's statistics over
  region[0] (a Reinhard-style transfer); frame 0 is the edited frame; the rest is unchanged.
  """
  src, dst = original[0][region[0]], edited0[region[0]]
  gain = dst.std(0) / np.maximum(src.std(0), 1e-3)
  out = np.where(region[..., None],
                 np.clip((original - src.mean(0)) * gain + dst.mean(0), -1.0, 1.0), original)
  out[0] = edited0
  return out.astype(np.float32)


def _guessed_filled(frames_u8, known, hint):
  """-> (known, frames float [T,H,W,3] with given and hinted pixels kept, the rest nearest-filled,
  hint): the edit inputs as every generative row gets them."""
  guessed = known | hint
  return known, fill.nearest_fill(np.where(guessed[..., None], pictures.to_float(frames_u8),
                                           0.0).astype(np.float32), guessed), hint


def _edit_input(original_u8, edited0_u8, region0, dilate_radius, flows):
  """The edit command's inputs (`tasks.edit.edit_inputs`) as `_guessed_filled`, and the tracked
  region."""
  given = edit_lib.edit_inputs(original_u8, edited0_u8, region0, dilate_radius=dilate_radius,
                               flows=flows)
  return (_guessed_filled(given['frames'], given['pixel_mask'], given['hint_mask']),
          given['region'])


def _gt_region_input(original_u8, edited0_u8, region, dilate_radius, flows):
  """The edit input with the renderer's object mask [T,H,W] as the region (no tracking)."""
  return _guessed_filled(*track.edit_conditioning(original_u8, edited0_u8, region,
                                                  dilate_radius=dilate_radius, flows=flows))


def _blank_region(known, known_frames, hint):
  """The edit input without the warped hint: the region is unknown (the edit command's
  --nowarp_hint): what the model carries from frame 0 on its own."""
  frames = fill.nearest_fill(np.where(known[..., None], known_frames, 0.0).astype(np.float32),
                             known)
  return known, frames, np.zeros_like(hint)


def edit_task(clip, threshold: int = 24, dilate_radius: int = 2) -> Task:
  """Edit propagation (module docstring). clip: `maskvid.data.edits.render_edit_pair`'s dict
  (rgb, rgb_edited uint8 [T, H, W, 3], object_mask bool [T, H, W])."""
  original = np.asarray(_check_clip(clip))
  for key in ('rgb_edited', 'object_mask'):
    if key not in clip:
      raise ValueError(f"the 'edit' task needs clip['{key}'] (maskvid.data.edits.render_edit_pair)")
  edited, obj = np.asarray(clip['rgb_edited']), np.asarray(clip['object_mask'], bool)
  if edited.shape != original.shape or obj.shape != original.shape[:3]:
    raise ValueError(f"clip['rgb_edited'] {edited.shape} and clip['object_mask'] {obj.shape} must "
                     f"match clip['rgb'] {original.shape} ([T, H, W, 3] and [T, H, W])")
  T = original.shape[0]
  flows = track.consecutive_flows(original)
  region0 = track.find_edit_region(original[0], edited[0], threshold=threshold)
  (known, known_frames, hint), region = _edit_input(original, edited[0], region0, dilate_radius,
                                                    flows)
  no_propagation = pictures.to_float(original)
  no_propagation[0] = pictures.to_float(edited[0])
  colour = colour_transfer(pictures.to_float(original), pictures.to_float(edited[0]), region)
  flow_warp = np.where(hint[..., None], known_frames, no_propagation)
  hole = obj.copy()
  hole[0] = False
  iou = float(np.mean([track.iou(region[t], obj[t]) for t in range(1, T)]))
  return Task('edit', known, known_frames,
              {'no_propagation': no_propagation, 'colour_transfer': colour,
               'flow_warp': flow_warp}, hole,
              tuple(range(1, T)), target=pictures.to_float(edited),
              variants={'gt-region': _gt_region_input(original, edited[0], obj, dilate_radius,
                                                      flows),
                        'blank': _blank_region(known, known_frames, hint)},
              info={'region_iou': iou}, hint_pixels=hint)


def make_task(name: str, clip, seed: int = 0, coverage=(0.4, 0.7), edit_threshold: int = 24,
              edit_dilate: int = 2) -> Task:
  """Builds task `name` (one of TASKS) for one clip; seed/coverage only matter for 'holes', the
  edit options for 'edit' (whose clip is an edit pair, `maskvid.data.edits`)."""
  if name == 'edit':
    return edit_task(clip, edit_threshold, edit_dilate)
  if name == 'nvs':
    return nvs_task(clip)
  if name == 'interpolate':
    return interpolate_task(clip)
  if name == 'holes':
    return holes_task(clip, seed, coverage)
  raise ValueError(f'task must be one of {TASKS}, got {name!r}')


def check_tasks(tasks: Sequence[str]) -> tuple:
  bad = [t for t in tasks if t not in TASKS]
  if bad:
    raise ValueError(f'config.eval.tasks has unknown tasks {bad}; known: {TASKS}')
  return tuple(tasks)
