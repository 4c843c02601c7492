"""Finding and tracking an edited region (for `tasks.edit`), with OpenCV.

`find_edit_region`: pixels where the edited frame differs from the original (max over channels
above a threshold), cleaned by a morphological opening (drops speckle from compression noise),
closed (fills pinholes inside the edit) and dilated (covers the edit's soft border).
`edit_conditioning`: what the Completer is given: the edited frame 0, and in later frames every
pixel outside the (dilated) tracked region.
`track_region`: dense Farneback optical flow between consecutive original frames; the region mask
of frame t is pulled into frame t+1 along the backward flow (t+1 -> t) with cv2.remap, so every
pixel of frame t+1 looks up where it came from (no holes, unlike pushing pixels forward).
"""
import cv2
import numpy as np

# Token rule for repainting an edit (`masks.pixel_to_token_masks` min_valid): a model patch is
# known only when every pixel of it is. A partly known patch would be nearest-filled from the
# surroundings, i.e. painted with the old background over the object being edited.
EDIT_MIN_VALID = 1.0

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


def track_region(frames: np.ndarray, mask0: np.ndarray) -> np.ndarray:
  """uint8 [T, H, W, 3] frames, bool [H, W] region in frame 0 -> bool [T, H, W] region per frame."""
  frames, mask0 = np.asarray(frames), np.asarray(mask0, bool)
  if frames.ndim != 4 or frames.shape[1:3] != mask0.shape:
    raise ValueError(f'frames must be [T, H, W, 3] and mask0 [H, W] of the same size, got '
                     f'{frames.shape} and {mask0.shape}')
  h, w = mask0.shape
  gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
  soft = mask0.astype(np.float32)
  out = [mask0]
  for t in range(1, frames.shape[0]):
    flow = backward_flow(frames[t - 1], frames[t])
    soft = cv2.remap(soft, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    # Re-binarise each step so interpolation blur does not accumulate into a halo.
    soft = (soft >= 0.5).astype(np.float32)
    out.append(soft.astype(bool))
  return np.stack(out)


def iou(a: np.ndarray, b: np.ndarray) -> float:
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  union = (a | b).sum()
  return float((a & b).sum() / union) if union else 1.0


def edit_conditioning(video: np.ndarray, edited_frame: np.ndarray, region: np.ndarray, *,
                      dilate_radius: int = 2):
  """video uint8 [T,H,W,3], edited frame 0 [H,W,3], tracked region bool [T,H,W] ->
  (frames uint8 [T,H,W,3], pixel_mask bool [T,H,W]); the region (dilated) is unknown for t > 0."""
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
  return frames, mask
