"""DepthEstimator backed by a DepthUNet (trained here, or external weights mapped onto it)."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from maskvid import workdir
from maskvid.depth import net as depth_net
from maskvid.depth.base import DepthEstimator
from maskvid.depth.net import DepthUNet
from maskvid.train import checkpoint

OUTPUTS = ('log_depth', 'depth', 'inverse_depth')
INPUT_NORMS = ('minus_one_one', 'imagenet')
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
DEPTH_RANGE = (1e-3, 1e4)


@functools.partial(jax.jit, static_argnums=0)
def _apply(module: DepthUNet, params, x):
  # Module-level and keyed on the (hashable) module config: estimators of equal architecture
  # share one compiled function instead of compiling per instance.
  return module.apply(params, x)


class UNetDepthEstimator(DepthEstimator):
  """Runs a DepthUNet on uint8 frames and maps its raw output r to z-depth.

  output: 'log_depth' -> exp(scale * r + shift); 'depth' -> scale * r + shift;
  'inverse_depth' (MiDaS-style disparity) -> 1 / (scale * r + shift). Clipped to DEPTH_RANGE.
  input_norm: 'minus_one_one' (x / 127.5 - 1, what maskvid trains with) or 'imagenet'.
  Frames whose size is not a multiple of the net's downsampling are edge-padded, then cropped.
  """

  def __init__(self, module: DepthUNet, params, *, output: str = 'log_depth', scale: float = 1.0,
               shift: float = 0.0, input_norm: str = 'minus_one_one', batch_size: int = 32):
    if output not in OUTPUTS:
      raise ValueError(f'output must be one of {OUTPUTS}, got {output!r}')
    if input_norm not in INPUT_NORMS:
      raise ValueError(f'input_norm must be one of {INPUT_NORMS}, got {input_norm!r}')
    self.module, self.params = module, params
    self.output, self.scale, self.shift, self.input_norm = output, scale, shift, input_norm
    self.batch_size = batch_size

  def raw(self, rgb_uint8: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> raw network output float32 [N, H, W]."""
    x = rgb_uint8.astype(np.float32)
    if self.input_norm == 'minus_one_one':
      x = x / 127.5 - 1.0
    else:
      x = (x / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD
    n, h, w, _ = x.shape
    f = self.module.downsample_factor
    ph, pw = (-h) % f, (-w) % f
    x = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode='edge')
    out = [np.asarray(_apply(self.module, self.params, jnp.asarray(x[i:i + self.batch_size])))
           for i in range(0, n, self.batch_size)]
    return np.concatenate(out)[:, :h, :w]

  def _estimate(self, rgb):
    r = self.scale * self.raw(rgb).astype(np.float64) + self.shift
    if self.output == 'log_depth':
      d = np.exp(np.clip(r, -30, 30))
    elif self.output == 'depth':
      d = r
    else:
      with np.errstate(divide='ignore'):
        d = np.where(r > 0, 1.0 / np.maximum(r, 1e-12), DEPTH_RANGE[1])
    return np.clip(d, *DEPTH_RANGE).astype(np.float32)


def _resolve_depth_dir(directory: str) -> str:
  """Accepts a depth-training dir or a workdir that holds one under depth/."""
  for d in (directory, os.path.join(directory, 'depth')):
    if os.path.isfile(os.path.join(d, 'config.json')) and os.path.isdir(
        os.path.join(d, 'checkpoints')):
      return d
  raise FileNotFoundError(
      f'no trained depth network in {directory!r}: expected config.json and checkpoints/ there or '
      f'under {os.path.join(directory, "depth")!r} (train one with `python -m maskvid.main '
      '--config=configs/depth_tiny.py --workdir=DIR`)')


def load_depth_estimator(directory: str) -> UNetDepthEstimator:
  """Loads the latest checkpoint written by `maskvid.depth.train.train_depth`."""
  d = _resolve_depth_dir(directory)
  config = workdir.load_config(d, 'depth')
  module = depth_net.from_config(config.depth)
  res = int(config.depth.resolution)
  target = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, res, res, 3)))
  return UNetDepthEstimator(module, checkpoint.restore_subtree(d, 'params', target, 'depth net'),
                            output='log_depth')
