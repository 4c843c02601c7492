"""The depth-estimator interface and the ground-truth estimator for synthetic clips."""
import abc

import numpy as np
from maskvid.data import synthetic


def _check_rgb(rgb) -> np.ndarray:
  rgb = np.asarray(rgb)
  if rgb.dtype != np.uint8 or rgb.ndim not in (3, 4) or rgb.shape[-1] != 3:
    raise ValueError(f'rgb must be uint8 [H, W, 3] or [T, H, W, 3], got {rgb.dtype} {rgb.shape}')
  return rgb


class DepthEstimator(abc.ABC):
  """estimate(rgb uint8 [H, W, 3] or [T, H, W, 3]) -> z-depth float32 [H, W] or [T, H, W]."""

  def estimate(self, rgb) -> np.ndarray:
    rgb = _check_rgb(rgb)
    single = rgb.ndim == 3
    depth = np.asarray(self._estimate(rgb[None] if single else rgb), np.float32)
    expected = (1 if single else rgb.shape[0],) + rgb.shape[-3:-1]
    if depth.shape != expected:
      raise RuntimeError(f'{type(self).__name__} returned shape {depth.shape}, expected {expected}')
    return depth[0] if single else depth

  @abc.abstractmethod
  def _estimate(self, rgb: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, H, W]."""


class GroundTruthDepth(DepthEstimator):
  """Returns the stored depth of frames it knows (matched by exact pixel equality).

  Built from a rendered clip (`from_synthetic`) or any (rgb, depth) pairs; asking for a frame it
  does not hold is an error rather than a guess.
  """

  def __init__(self, rgb, depth):
    rgb = _check_rgb(rgb)
    rgb = rgb[None] if rgb.ndim == 3 else rgb
    depth = np.asarray(depth, np.float32)
    depth = depth[None] if depth.ndim == 2 else depth
    if depth.shape != rgb.shape[:3]:
      raise ValueError(f'depth shape {depth.shape} does not match rgb shape {rgb.shape}')
    self._table = {f.tobytes(): d for f, d in zip(rgb, depth)}

  @classmethod
  def from_synthetic(cls, seed: int, split: str, num_frames: int, height: int,
                     width: int) -> 'GroundTruthDepth':
    clip = synthetic.render_clip(seed, split, num_frames, height, width)
    return cls(clip['rgb'], clip['depth'])

  def _estimate(self, rgb):
    out = []
    for i, frame in enumerate(rgb):
      d = self._table.get(frame.tobytes())
      if d is None:
        raise KeyError(f'GroundTruthDepth has no depth for frame {i}: it only knows the '
                       f'{len(self._table)} frames it was built from')
      out.append(d)
    return np.stack(out)
