"""The DPT head of Depth Anything V2 (Flax Linen): ViT tokens -> relative inverse depth.

Parameter names follow the original `.pth` (`depth_head.scratch.refinenet4.resConfUnit1.conv1`
-> `scratch/refinenet4/resConfUnit1/conv1`). With patch grid h x w (input H = 14 h, W = 14 w):
  reassemble k = 0..3   1x1 conv to out_channels[k], then resize to 4x, 2x, 1x, 1/2x the grid
                        (4x4 / 2x2 stride-k transposed convs, identity, 3x3 stride-2 conv)
  layer{k+1}_rn         3x3 conv (no bias) to `features` channels
  refinenet4 .. 1       fusion: + residual unit of the skip, residual unit, bilinear
                        align_corners=True resize to the next level (2x for the last), 1x1 conv
  output_conv1          3x3 conv to features / 2, bilinear align_corners=True to H x W,
  output_conv2          3x3 conv to 32, ReLU, 1x1 conv to 1, ReLU.
The class token is not used (the released models have use_clstoken False) and there is no
batch norm (use_bn False). Output: relative inverse depth (disparity) [N, H, W], >= 0.
"""
from __future__ import annotations

from typing import Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from maskvid.depth.dinov2 import bilinear_align_corners_matrix, resize_separable

_PAD1 = ((1, 1), (1, 1))


def _conv(features: int, kernel: int, name: str, stride: int = 1, bias: bool = True) -> nn.Conv:
  pad = _PAD1 if kernel == 3 else 'VALID'
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=pad,
                 use_bias=bias, name=name)


def resize_bilinear_align_corners(x: jax.Array, size: tuple) -> jax.Array:
  """[N, H, W, C] -> [N, h, w, C], torch's bilinear with align_corners=True."""
  return resize_separable(x, bilinear_align_corners_matrix(x.shape[1], size[0]),
                          bilinear_align_corners_matrix(x.shape[2], size[1]))


class PatchUpsample(nn.Module):
  """Transposed conv with stride == kernel (non-overlapping): [N, h, w, C] -> [N, kh, kw, out].

  Written as one einsum: each input pixel paints its own k x k output block, so torch's
  `ConvTranspose2d(k, stride=k, padding=0)` needs no kernel flip. kernel: [k, k, in, out].
  """
  features: int
  factor: int

  @nn.compact
  def __call__(self, x):
    k = self.factor
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    y = jnp.einsum('nhwc,abco->nhawbo', x, kernel)
    return einops.rearrange(y, 'n h a w b o -> n (h a) (w b) o') + bias


class ResidualConvUnit(nn.Module):
  """x + conv2(relu(conv1(relu(x)))). [N, H, W, F] -> [N, H, W, F]."""

  @nn.compact
  def __call__(self, x):
    f = x.shape[-1]
    y = _conv(f, 3, 'conv1')(nn.relu(x))
    return x + _conv(f, 3, 'conv2')(nn.relu(y))


class FusionBlock(nn.Module):
  """(x [N, H, W, F], skip [N, H, W, F] or None) -> [N, size..., F] (size None: 2x)."""

  @nn.compact
  def __call__(self, x, skip=None, size=None):
    if skip is not None:
      x = x + ResidualConvUnit(name='resConfUnit1')(skip)
    else:
      # Unused without a skip, but the released weights hold it (kept so every tensor maps).
      ResidualConvUnit(name='resConfUnit1')(x)
    x = ResidualConvUnit(name='resConfUnit2')(x)
    size = (2 * x.shape[1], 2 * x.shape[2]) if size is None else size
    x = resize_bilinear_align_corners(x, size)
    return _conv(x.shape[-1], 1, 'out_conv')(x)


class Scratch(nn.Module):
  """Projects the four reassembled maps to `features` and fuses them coarse to fine."""
  features: int

  @nn.compact
  def __call__(self, layers, out_hw: tuple):
    rn = [_conv(self.features, 3, f'layer{k + 1}_rn', bias=False)(x)
          for k, x in enumerate(layers)]
    for k, x in enumerate(rn):
      self.sow('intermediates', f'layer{k + 1}_rn_out', x)
    path = FusionBlock(name='refinenet4')(rn[3], size=rn[2].shape[1:3])
    self.sow('intermediates', 'refinenet4_out', path)
    for k in (3, 2, 1):
      size = rn[k - 2].shape[1:3] if k > 1 else None
      path = FusionBlock(name=f'refinenet{k}')(path, rn[k - 1], size=size)
      self.sow('intermediates', f'refinenet{k}_out', path)
    out = _conv(self.features // 2, 3, 'output_conv1')(path)
    self.sow('intermediates', 'output_conv1_out', out)
    out = resize_bilinear_align_corners(out, out_hw)
    out = nn.relu(_conv(32, 3, 'output_conv2_0')(out))
    return nn.relu(_conv(1, 1, 'output_conv2_2')(out))[..., 0]


class DPTHead(nn.Module):
  """tokens: 4 x [N, h * w, D] (normalised, no class token) -> disparity [N, 14 h, 14 w]."""
  features: int
  out_channels: Sequence[int]
  patch_size: int = 14

  @nn.compact
  def __call__(self, tokens, grid: tuple):
    h, w = grid
    layers = []
    for k, x in enumerate(tokens):
      x = einops.rearrange(x, 'n (h w) d -> n h w d', h=h, w=w)
      c = self.out_channels[k]
      x = _conv(c, 1, f'projects_{k}')(x)
      if k in (0, 1):
        x = PatchUpsample(c, 4 if k == 0 else 2, name=f'resize_layers_{k}')(x)
      elif k == 3:
        x = _conv(c, 3, 'resize_layers_3', stride=2)(x)
      self.sow('intermediates', f'reassemble_{k}', x)
      layers.append(x)
    return Scratch(self.features, name='scratch')(layers, (h * self.patch_size,
                                                           w * self.patch_size))
