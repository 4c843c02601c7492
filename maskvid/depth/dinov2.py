"""DINOv2 ViT encoder (Flax Linen) as Depth Anything V2 uses it, plus torch-exact resampling.

Parameter names follow the original `.pth` layout with `.N.` spelled `_N/` (e.g.
`blocks_3/attn/qkv/kernel` <-> `pretrained.blocks.3.attn.qkv.weight`); the key mapping lives in
`maskvid/depth/depth_anything.py`. Shapes: images `[N, H, W, 3]` (ImageNet-normalised, H and W
multiples of 14), tokens `[N, 1 + h * w, D]` (class token first), h, w = H / 14, W / 14.

Deliberate matches to the reference (each differs from a Flax default or an easy shortcut):
  * LayerNorm eps 1e-6 with the two-pass variance (torch's), not Flax's fast E[x^2] - E[x]^2;
  * exact (erf) GELU; LayerScale (`ls1`, `ls2`: a per-channel gamma on each residual branch);
  * the position embedding (a 37 x 37 grid for the released weights) is resampled to the input's
    patch grid with torch's bicubic (a = -0.75, align_corners=False) at scale factor
    (h + 0.1) / 37, (w + 0.1) / 37 (DINOv2's `interpolate_offset`), and left as is when the grid
    already matches (the reference skips the resampling then; the offset would move it);
  * the final `norm` is applied to every intermediate layer handed to the DPT head.
"""
from __future__ import annotations

import math
from typing import Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INTERPOLATE_OFFSET = 0.1


def _cubic_coefficients(t: np.ndarray, a: float = -0.75) -> list:
  """torch's `get_cubic_upsample_coefficients` (Keys' kernel with a = -0.75) at fraction t."""
  def near(x):   # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + 1
  def far(x):    # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def torch_bicubic_matrix(n_in: int, n_out: int, scale: float | None = None) -> np.ndarray:
  """[n_out, n_in] float32 weights of torch's 1-D bicubic resize (align_corners=False).

  scale: the `scale_factor` passed to `F.interpolate` (its inverse maps output to input
  coordinates, as torch does when a scale factor is given); None: n_out / n_in (`size=`).
  Border taps are clamped to the edge, and the index and fraction guarded, as in ATen.
  """
  ratio = np.float32(n_in / n_out if scale is None else 1.0 / scale)
  src = ratio * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
  idx = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
  t = np.clip(src - idx.astype(np.float32), 0, 1).astype(np.float32)
  m = np.zeros((n_out, n_in), np.float32)
  for k, w in enumerate(_cubic_coefficients(t)):
    np.add.at(m, (np.arange(n_out), np.clip(idx - 1 + k, 0, n_in - 1)), w.astype(np.float32))
  return m


def bilinear_align_corners_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] float32 weights of torch's bilinear resize with align_corners=True."""
  ratio = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
  src = np.float32(ratio) * np.arange(n_out, dtype=np.float32)
  i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  t = (src - i0).astype(np.float32)
  m = np.zeros((n_out, n_in), np.float32)
  np.add.at(m, (np.arange(n_out), i0), 1 - t)
  np.add.at(m, (np.arange(n_out), i1), t)
  return m


def resize_separable(x: jax.Array, mh: np.ndarray, mw: np.ndarray) -> jax.Array:
  """[N, H, W, C] -> [N, h, w, C] with row/column weight matrices mh [h, H], mw [w, W]."""
  hp = jax.lax.Precision.HIGHEST
  x = jnp.einsum('oh,nhwc->nowc', jnp.asarray(mh, x.dtype), x, precision=hp)
  return jnp.einsum('pw,nowc->nopc', jnp.asarray(mw, x.dtype), x, precision=hp)


def interpolate_pos_embed(pos: jax.Array, grid: tuple) -> jax.Array:
  """[1, 1 + G * G, D] -> [1, 1 + h * w, D] as DINOv2's `interpolate_pos_encoding` (see top)."""
  n = pos.shape[1] - 1
  side = int(math.isqrt(n))
  h, w = grid
  if (h, w) == (side, side):
    return pos
  patch = einops.rearrange(pos[:, 1:], '1 (a b) d -> 1 a b d', a=side)
  mh = torch_bicubic_matrix(side, h, (h + INTERPOLATE_OFFSET) / math.sqrt(n))
  mw = torch_bicubic_matrix(side, w, (w + INTERPOLATE_OFFSET) / math.sqrt(n))
  patch = einops.rearrange(resize_separable(patch, mh, mw), '1 h w d -> 1 (h w) d')
  return jnp.concatenate([pos[:, :1], patch], axis=1)


def _layer_norm(name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=1e-6, use_fast_variance=False, name=name)


class LayerScale(nn.Module):
  """x * gamma: the learned per-channel scale on each residual branch. [..., D] -> [..., D]."""

  @nn.compact
  def __call__(self, x):
    return x * self.param('gamma', nn.initializers.constant(1.0), (x.shape[-1],))


class Attention(nn.Module):
  """Multi-head self-attention with a fused qkv projection. [N, L, D] -> [N, L, D]."""
  num_heads: int

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    qkv = nn.Dense(3 * d, name='qkv')(x)
    q, k, v = einops.rearrange(qkv, 'n l (three h k) -> three n h l k', three=3,
                               h=self.num_heads)
    logits = jnp.einsum('nhqk,nhsk->nhqs', q * (d // self.num_heads) ** -0.5, k)
    out = jnp.einsum('nhqs,nhsk->nhqk', jax.nn.softmax(logits, axis=-1), v)
    return nn.Dense(d, name='proj')(einops.rearrange(out, 'n h l k -> n l (h k)'))


class Mlp(nn.Module):
  """fc1 -> exact GELU -> fc2. [N, L, D] -> [N, L, D]."""
  hidden: int

  @nn.compact
  def __call__(self, x):
    h = jax.nn.gelu(nn.Dense(self.hidden, name='fc1')(x), approximate=False)
    return nn.Dense(x.shape[-1], name='fc2')(h)


class Block(nn.Module):
  """Pre-norm transformer block with LayerScale. [N, L, D] -> [N, L, D]."""
  num_heads: int
  mlp_ratio: float = 4.0

  @nn.compact
  def __call__(self, x):
    x = x + LayerScale(name='ls1')(Attention(self.num_heads, name='attn')(_layer_norm('norm1')(x)))
    hidden = int(x.shape[-1] * self.mlp_ratio)
    return x + LayerScale(name='ls2')(Mlp(hidden, name='mlp')(_layer_norm('norm2')(x)))


class PatchEmbed(nn.Module):
  """Non-overlapping p x p patches -> D channels. [N, H, W, 3] -> [N, H / p, W / p, D]."""
  embed_dim: int
  patch_size: int

  @nn.compact
  def __call__(self, x):
    p = self.patch_size
    return nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding='VALID', name='proj')(x)


class DinoV2(nn.Module):
  """images [N, H, W, 3] -> the normalised patch tokens of `layers`, each [N, h * w, D].

  Sown in 'intermediates' (`apply(..., mutable=['intermediates'])`) for the block-by-block
  comparison with the reference: every block's raw output `block_{i}` [N, 1 + h * w, D] and the
  normalised features `feature_{k}` that are returned.
  """
  embed_dim: int
  depth: int
  num_heads: int
  patch_size: int = 14
  pos_grid: int = 37     # the released weights were trained at 518 = 37 * 14
  mlp_ratio: float = 4.0

  @nn.compact
  def __call__(self, images, layers: Sequence[int]):
    n, hh, ww, _ = images.shape
    p = self.patch_size
    if hh % p or ww % p:
      raise ValueError(f'DinoV2 input H, W must be multiples of {p}, got {hh}x{ww}')
    grid = (hh // p, ww // p)
    x = PatchEmbed(self.embed_dim, p, name='patch_embed')(images)
    x = einops.rearrange(x, 'n h w d -> n (h w) d')
    d = self.embed_dim
    cls = self.param('cls_token', nn.initializers.normal(1e-6), (1, 1, d))
    pos = self.param('pos_embed', nn.initializers.normal(0.02), (1, 1 + self.pos_grid ** 2, d))
    # Only for training with masked tokens; kept so that every released tensor has a home.
    self.param('mask_token', nn.initializers.zeros_init(), (1, d))
    x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, d)).astype(x.dtype), x], axis=1)
    x = x + interpolate_pos_embed(pos, grid).astype(x.dtype)
    norm = _layer_norm('norm')
    outputs = []
    for i in range(self.depth):
      x = Block(self.num_heads, self.mlp_ratio, name=f'blocks_{i}')(x)
      self.sow('intermediates', f'block_{i}', x)
      if i in layers:
        outputs.append(norm(x)[:, 1:])   # the DPT head drops the class token (use_clstoken off)
        self.sow('intermediates', f'feature_{len(outputs) - 1}', outputs[-1])
    if len(outputs) != len(layers):
      raise ValueError(f'layers {tuple(layers)} not all in 0..{self.depth - 1}')
    return outputs
