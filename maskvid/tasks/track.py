"""Finding and tracking an edited region (for `tasks.edit`), with OpenCV.

`find_edit_region`: pixels where the edited frame differs from the original (max over channels
above a threshold), cleaned by a morphological opening (drops speckle from compression noise),
closed (fills pinholes inside the edit) and dilated (covers the edit's soft border).
`edit_conditioning`: what the Completer is given: the edited frame 0, and in later frames every
pixel outside the (dilated) tracked region, plus (with flows) the hint inside it.
`track_region`: dense Farneback optical flow between consecutive original frames; the region mask
of frame t is pulled into frame t+1 along the backward flow (t+1 -> t) with cv2.remap, so every
pixel of frame t+1 looks up where it came from (no holes, unlike pushing pixels forward).
`frame0_coordinates`: the same backward flows chained, i.e. for every pixel of frame t where it
sits in frame 0; `warp_edit` pulls the edited frame 0 along them into the tracked region of every
frame: a guess of the edited content (a *hint*: given to the model as known but unreliable, so
stochastic conditioning may repair it, and never pasted into the output as if it were given).
"""
from typing import Optional

import cv2
import numpy as np

FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=9, iterations=5, poly_n=5, poly_sigma=1.1,
                 flags=0)


def _kernel(radius: int) -> np.ndarray:
  return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def find_edit_region(original: np.ndarray, edited: np.ndarray, *, threshold: int = 24,
                     open_radius: int = 1, close_radius: int = 2,
                     dilate_radius: int = 1) -> np.ndarray:
  """uint8 [H, W, 3] original and edited frames -> bool [H, W] edited region."""
  original, edited = np.asarray(original), np.asarray(edited)
  if original.shape != edited.shape or original.ndim != 3:
    raise ValueError(f'original and edited frames must be [H, W, 3] of the same size, got '
                     f'{original.shape} and {edited.shape}')
  diff = np.abs(original.astype(np.int16) - edited.astype(np.int16)).max(-1)
  m = (diff > threshold).astype(np.uint8)
  if open_radius > 0:
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _kernel(open_radius))
  if close_radius > 0:
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _kernel(close_radius))
  if dilate_radius > 0:
    m = cv2.dilate(m, _kernel(dilate_radius))
  return m.astype(bool)


def _gray(frame: np.ndarray) -> np.ndarray:
  return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def backward_flow(frame_from: np.ndarray, frame_to: np.ndarray) -> np.ndarray:
  """Flow [H, W, 2] (dx, dy) such that frame_to(p) ~ frame_from(p + flow(p)). uint8 RGB inputs."""
  return cv2.calcOpticalFlowFarneback(_gray(frame_to), _gray(frame_from), None, **FARNEBACK)


def consecutive_flows(frames: np.ndarray) -> np.ndarray:
  """uint8 [T, H, W, 3] -> float32 [T - 1, H, W, 2]: entry t - 1 is backward_flow(t - 1, t)."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f'frames must be [T, H, W, 3], got shape {frames.shape}')
  flows = [backward_flow(frames[t - 1], frames[t]) for t in range(1, frames.shape[0])]
  return np.stack(flows) if flows else np.zeros((0, *frames.shape[1:3], 2), np.float32)


def _grid(h: int, w: int):
  gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
  return gx, gy


def track_region(frames: np.ndarray, mask0: np.ndarray, flows=None) -> np.ndarray:
  """uint8 [T, H, W, 3] frames, bool [H, W] region in frame 0 -> bool [T, H, W] region per frame.

  flows: `consecutive_flows(frames)` when already computed."""
  frames, mask0 = np.asarray(frames), np.asarray(mask0, bool)
  if frames.ndim != 4 or frames.shape[1:3] != mask0.shape:
    raise ValueError(f'frames must be [T, H, W, 3] and mask0 [H, W] of the same size, got '
                     f'{frames.shape} and {mask0.shape}')
  flows = consecutive_flows(frames) if flows is None else flows
  gx, gy = _grid(*mask0.shape)
  soft = mask0.astype(np.float32)
  out = [mask0]
  for flow in flows:
    soft = cv2.remap(soft, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    # Re-binarise each step so interpolation blur does not accumulate into a halo.
    soft = (soft >= 0.5).astype(np.float32)
    out.append(soft.astype(bool))
  return np.stack(out)


def frame0_coordinates(flows: np.ndarray):
  """Chained backward flows [T - 1, H, W, 2] -> (coords float32 [T, H, W, 2], valid bool [T, H, W]).

  coords[t, y, x] = (x0, y0): where pixel (x, y) of frame t came from in frame 0 (frame 0 maps
  to itself); valid is False where the chain left the frame."""
  flows = np.asarray(flows, np.float32)
  h, w = flows.shape[1:3]
  gx, gy = _grid(h, w)
  cx, cy, inside = gx, gy, np.ones((h, w), np.float32)
  coords, valid = [np.stack([gx, gy], -1)], [inside > 0]
  for flow in flows:
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    cx, cy = (cv2.remap(a, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
              for a in (cx, cy))
    inside = cv2.remap(inside, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=0.0)
    # Nearer the frame than half a pixel counts as inside (coordinates replicate at the border).
    inside = (inside >= 0.5).astype(np.float32)
    coords.append(np.stack([cx, cy], -1))
    valid.append(inside > 0)
  return np.stack(coords), np.stack(valid)


def warp_edit(edited_frame: np.ndarray, region: np.ndarray, flows: np.ndarray):
  """The edited frame 0 pulled along the chained flows into the region of every frame.

  edited_frame uint8 [H, W, 3], region bool [T, H, W], flows `consecutive_flows` of the original
  video [T - 1, H, W, 2] -> (hint uint8 [T, H, W, 3], hint_mask bool [T, H, W]); hint_mask is
  region & where the chain stayed inside the frame, False in frame 0 (which is the edit itself).
  """
  edited_frame, region = np.asarray(edited_frame), np.asarray(region, bool)
  if region.ndim != 3 or edited_frame.shape != (*region.shape[1:], 3):
    raise ValueError(f'edited_frame [H, W, 3] and region [T, H, W] must agree, got '
                     f'{edited_frame.shape} and {region.shape}')
  want = (region.shape[0] - 1, *region.shape[1:], 2)
  if np.shape(flows) != want:
    raise ValueError(f'flows must be [T - 1, H, W, 2] = {want}, got {np.shape(flows)}')
  coords, valid = frame0_coordinates(flows)
  hint = np.stack([cv2.remap(edited_frame, c[..., 0], c[..., 1], cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE) for c in coords])
  hint_mask = region & valid
  hint_mask[0] = False
  hint[~hint_mask] = 0
  return hint, hint_mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  union = (a | b).sum()
  return float((a & b).sum() / union) if union else 1.0


def edit_conditioning(video: np.ndarray, edited_frame: np.ndarray, region: np.ndarray, *,
                      dilate_radius: int = 2, flows: Optional[np.ndarray] = None):
  """video uint8 [T,H,W,3], edited frame 0 [H,W,3], tracked region bool [T,H,W] ->
  (frames uint8 [T,H,W,3], pixel_mask bool [T,H,W], hint_mask bool [T,H,W]).

  The region (dilated) is unknown for t > 0. With `flows` (`consecutive_flows(video)`) the
  edited frame 0 is warped into it (`warp_edit`) and those pixels are hints: their values are in
  `frames`, pixel_mask is False there and hint_mask True. Without flows hint_mask is all False."""
  video, edited_frame, region = np.asarray(video), np.asarray(edited_frame), np.asarray(region)
  if edited_frame.shape != video.shape[1:] or region.shape != video.shape[:3]:
    raise ValueError(f'video [T,H,W,3], edited_frame [H,W,3] and region [T,H,W] must agree; got '
                     f'{video.shape}, {edited_frame.shape}, {region.shape}')
  grown = np.stack([cv2.dilate(r.astype(np.uint8), _kernel(dilate_radius)).astype(bool)
                    if dilate_radius else r for r in region])
  frames = video.copy()
  frames[0] = edited_frame
  mask = ~grown
  mask[0] = True
  frames[~mask] = 0
  hint_mask = np.zeros_like(mask)
  if flows is not None:
    hint, hint_mask = warp_edit(edited_frame, grown, flows)
    hint_mask &= ~mask
    frames[hint_mask] = hint[hint_mask]
  return frames, mask, hint_mask
