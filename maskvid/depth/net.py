"""A small monocular depth network: a conv U-Net (Flax Linen) predicting log z-depth.

Layout (parameter names, used by the external-weights adapter in `external.py`):
  stem                      Conv 3x3, 3 -> C
  down_{i}/conv_{0,1}, down_{i}/norm_{0,1}   two (Conv 3x3 -> GroupNorm -> SiLU) at level i,
                            C * channel_multipliers[i] channels
  downsample_{i}            Conv 3x3 stride 2 (levels 0 .. L-2)
  up_{i}/conv_{0,1}, up_{i}/norm_{0,1}       after 2x nearest upsampling + skip concat
                                             (i = L-2 .. 0)
  head                      Conv 3x3, C -> 1 (log depth)
Input [N, H, W, 3] in [-1, 1] with H and W divisible by 2 ** (L - 1); output [N, H, W].
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class ConvBlock(nn.Module):
  """Two (Conv 3x3 -> GroupNorm -> SiLU). [N, H, W, Cin] -> [N, H, W, channels]."""
  channels: int
  norm_groups: int

  @nn.compact
  def __call__(self, x):
    for j in range(2):
      x = nn.Conv(self.channels, (3, 3), padding=1, name=f'conv_{j}')(x)
      x = nn.silu(nn.GroupNorm(num_groups=min(self.norm_groups, self.channels),
                               name=f'norm_{j}')(x))
    return x


class DepthUNet(nn.Module):
  """rgb [N, H, W, 3] in [-1, 1] -> log z-depth [N, H, W]."""
  base_channels: int = 16
  channel_multipliers: Sequence[int] = (1, 2, 4)
  norm_groups: int = 8

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.channel_multipliers) - 1)

  @nn.compact
  def __call__(self, rgb):
    n, h, w, _ = rgb.shape
    f = self.downsample_factor
    if h % f or w % f:
      raise ValueError(f'DepthUNet input H, W must be multiples of {f}, got {h}x{w}')
    widths = [self.base_channels * m for m in self.channel_multipliers]
    x = nn.Conv(self.base_channels, (3, 3), padding=1, name='stem')(rgb)
    skips = []
    for i, c in enumerate(widths):
      x = ConvBlock(c, self.norm_groups, name=f'down_{i}')(x)
      if i < len(widths) - 1:
        skips.append(x)
        x = nn.Conv(c, (3, 3), strides=(2, 2), padding=1, name=f'downsample_{i}')(x)
    for i in reversed(range(len(widths) - 1)):
      s = skips[i]
      x = jax.image.resize(x, (n, s.shape[1], s.shape[2], x.shape[-1]), 'nearest')
      x = ConvBlock(widths[i], self.norm_groups, name=f'up_{i}')(jnp.concatenate([x, s], -1))
    # Bias starts near log(3): synthetic rooms are a few units deep, so early losses are sane.
    out = nn.Conv(1, (3, 3), padding=1, name='head',
                  bias_init=nn.initializers.constant(1.0))(x)
    return out[..., 0]


def from_config(depth_config) -> DepthUNet:
  """DepthUNet from a `config.depth` ConfigDict (or any object with the same fields)."""
  return DepthUNet(base_channels=int(depth_config.base_channels),
                   channel_multipliers=tuple(int(m) for m in depth_config.channel_multipliers),
                   norm_groups=int(depth_config.norm_groups))


def si_log_loss(pred_log_depth, depth, si_lambda: float = 0.5, valid=None):
  """Scale-invariant log loss (Eigen et al.): mean(d^2) - lambda * mean(d)^2, d = pred - log(gt).

  pred_log_depth, depth: [N, H, W]; valid: optional bool [N, H, W]. Per-image means, then
  averaged over the batch. lambda = 1 is fully scale invariant; 0.5 keeps some absolute scale.
  """
  d = pred_log_depth - jnp.log(jnp.maximum(depth, 1e-6))
  if valid is None:
    valid = jnp.ones_like(d, dtype=bool)
  v = valid.astype(d.dtype)
  cnt = jnp.maximum(v.sum((1, 2)), 1.0)
  m1 = (d * v).sum((1, 2)) / cnt
  m2 = (d * d * v).sum((1, 2)) / cnt
  return jnp.mean(m2 - si_lambda * m1 ** 2)
