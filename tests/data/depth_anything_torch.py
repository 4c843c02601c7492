"""The PyTorch Depth Anything V2 that tests/data/depth_anything_reference.py pins (needs torch).

This file's own transcription of the reference implementation
(github.com/DepthAnything/Depth-Anything-V2 `depth_anything_v2/dpt.py`, `dinov2.py`,
`dinov2_layers/`, `util/blocks.py`) at inference: the same modules, state-dict names and torch
ops (F.interpolate bicubic with the scale factor and the 0.1 offset, bilinear align_corners=True,
nn.GELU, LayerNorm eps 1e-6, the attention written out as the reference's non-xFormers path).
"""
import math

import numpy as np
import torch
from torch import nn

F = nn.functional


class Attention(nn.Module):
  def __init__(self, dim, heads):
    super().__init__()
    self.heads, self.scale = heads, (dim // heads) ** -0.5
    self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

  def forward(self, x):
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
    attn = (qkv[0] * self.scale @ qkv[1].transpose(-2, -1)).softmax(dim=-1)
    return self.proj((attn @ qkv[2]).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
  def __init__(self, dim, hidden):
    super().__init__()
    self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
  def __init__(self, dim):
    super().__init__()
    self.gamma = nn.Parameter(torch.ones(dim))

  def forward(self, x):
    return x * self.gamma


class Block(nn.Module):
  def __init__(self, dim, heads):
    super().__init__()
    self.norm1, self.attn, self.ls1 = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads), \
        LayerScale(dim)
    self.norm2, self.mlp, self.ls2 = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, 4 * dim), \
        LayerScale(dim)

  def forward(self, x):
    x = x + self.ls1(self.attn(self.norm1(x)))
    return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
  def __init__(self, dim):
    super().__init__()
    self.proj = nn.Conv2d(3, dim, kernel_size=14, stride=14)

  def forward(self, x):
    return self.proj(x).flatten(2).transpose(1, 2)


class DinoV2(nn.Module):
  def __init__(self, dim, depth, heads, img_size):
    super().__init__()
    self.patch_size, num_patches = 14, (img_size // 14) ** 2
    self.patch_embed = PatchEmbed(dim)
    self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
    self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
    self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
    self.norm = nn.LayerNorm(dim, eps=1e-6)
    self.mask_token = nn.Parameter(torch.zeros(1, dim))

  def interpolate_pos_encoding(self, x, w, h):   # the reference's names: w is H, h is W
    npatch, n = x.shape[1] - 1, self.pos_embed.shape[1] - 1
    if npatch == n and w == h:
      return self.pos_embed
    dim = x.shape[-1]
    w0, h0 = w // self.patch_size + 0.1, h // self.patch_size + 0.1
    sqrt_n = math.sqrt(n)
    patch = F.interpolate(
        self.pos_embed[:, 1:].reshape(1, int(sqrt_n), int(sqrt_n), dim).permute(0, 3, 1, 2),
        scale_factor=(float(w0) / sqrt_n, float(h0) / sqrt_n), mode='bicubic',
        antialias=False)
    assert (int(w0), int(h0)) == tuple(patch.shape[-2:])
    patch = patch.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((self.pos_embed[:, :1], patch), dim=1)

  def get_intermediate_layers(self, x, layers):
    _, _, w, h = x.shape
    x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), self.patch_embed(x)), dim=1)
    x = x + self.interpolate_pos_encoding(x, w, h)
    out = []
    for i, blk in enumerate(self.blocks):
      x = blk(x)
      if i in layers:
        out.append(x)
    return [self.norm(o)[:, 1:] for o in out]


class ResidualConvUnit(nn.Module):
  def __init__(self, f):
    super().__init__()
    self.conv1 = nn.Conv2d(f, f, 3, padding=1)
    self.conv2 = nn.Conv2d(f, f, 3, padding=1)

  def forward(self, x):
    return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class FeatureFusionBlock(nn.Module):
  def __init__(self, f):
    super().__init__()
    self.out_conv = nn.Conv2d(f, f, 1)
    self.resConfUnit1, self.resConfUnit2 = ResidualConvUnit(f), ResidualConvUnit(f)

  def forward(self, *xs, size=None):
    out = xs[0]
    if len(xs) == 2:
      out = out + self.resConfUnit1(xs[1])
    out = self.resConfUnit2(out)
    mod = {'scale_factor': 2} if size is None else {'size': size}
    return self.out_conv(F.interpolate(out, **mod, mode='bilinear', align_corners=True))


class DPTHead(nn.Module):
  def __init__(self, dim, features, out_channels):
    super().__init__()
    oc = out_channels
    self.projects = nn.ModuleList([nn.Conv2d(dim, c, 1) for c in oc])
    self.resize_layers = nn.ModuleList([
        nn.ConvTranspose2d(oc[0], oc[0], 4, stride=4), nn.ConvTranspose2d(oc[1], oc[1], 2, 2),
        nn.Identity(), nn.Conv2d(oc[3], oc[3], 3, stride=2, padding=1)])
    self.scratch = nn.Module()
    for k in range(4):
      setattr(self.scratch, f'layer{k + 1}_rn', nn.Conv2d(oc[k], features, 3, padding=1,
                                                            bias=False))
    for k in range(1, 5):
      setattr(self.scratch, f'refinenet{k}', FeatureFusionBlock(features))
    self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
    self.scratch.output_conv2 = nn.Sequential(
        nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(True), nn.Conv2d(32, 1, 1),
        nn.ReLU(True), nn.Identity())

  def forward(self, feats, ph, pw):
    layers = []
    for k, x in enumerate(feats):
      x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], ph, pw)
      layers.append(self.resize_layers[k](self.projects[k](x)))
    s = self.scratch
    rn = [getattr(s, f'layer{k + 1}_rn')(x) for k, x in enumerate(layers)]
    path = s.refinenet4(rn[3], size=rn[2].shape[2:])
    path = s.refinenet3(path, rn[2], size=rn[1].shape[2:])
    path = s.refinenet2(path, rn[1], size=rn[0].shape[2:])
    path = s.refinenet1(path, rn[0])
    out = F.interpolate(s.output_conv1(path), (ph * 14, pw * 14), mode='bilinear',
                        align_corners=True)
    return s.output_conv2(out)


class DepthAnythingV2(nn.Module):
  def __init__(self, c):
    super().__init__()
    self.layers = list(c['layers'])
    self.pretrained = DinoV2(c['embed_dim'], c['depth'], c['num_heads'], c['img_size'])
    self.depth_head = DPTHead(c['embed_dim'], c['features'], c['out_channels'])

  def forward(self, x):
    ph, pw = x.shape[-2] // 14, x.shape[-1] // 14
    feats = self.pretrained.get_intermediate_layers(x, self.layers)
    return F.relu(self.depth_head(feats, ph, pw)).squeeze(1)


def build(cfg: dict):
  """A torch Depth Anything V2 with the original state-dict names, in eval mode."""
  return DepthAnythingV2(cfg).eval()


def run_with_taps(model, x):
  """(output [N, H, W], {name: channels-last intermediate}) of the torch model."""
  taps, hooks = {}, []

  def tap(name, fn=lambda o: o):
    return lambda mod, inp, out: taps.__setitem__(name, fn(out).detach().numpy())

  nchw = lambda o: o.permute(0, 2, 3, 1)
  pre = model.pretrained
  for i, blk in enumerate(pre.blocks):
    hooks.append(blk.register_forward_hook(tap(f'block_{i}')))
  norm_calls = []
  hooks.append(pre.norm.register_forward_hook(
      lambda mod, inp, out: norm_calls.append(out[:, 1:].detach().numpy())))
  head = model.depth_head
  for k in range(4):
    hooks.append(head.resize_layers[k].register_forward_hook(tap(f'reassemble_{k}', nchw)))
    hooks.append(getattr(head.scratch, f'layer{k + 1}_rn').register_forward_hook(
        tap(f'layer{k + 1}_rn', nchw)))
    hooks.append(getattr(head.scratch, f'refinenet{k + 1}').register_forward_hook(
        tap(f'refinenet{k + 1}', nchw)))
  hooks.append(head.scratch.output_conv1.register_forward_hook(tap('output_conv1', nchw)))
  with torch.no_grad():
    out = model(torch.from_numpy(x)).numpy()
  for h in hooks:
    h.remove()
  taps.update({f'feature_{k}': f for k, f in enumerate(norm_calls)})
  return out, taps


def pin_resizes(out: dict, interp_grids, bilinear_sizes) -> None:
  """The torch resizes the port re-implements, on small random inputs, into `out`."""
  grid = np.random.default_rng(5).standard_normal((1, 4, 37, 37)).astype(np.float32)
  out['interp/input'] = grid
  for h, w in interp_grids:
    y = F.interpolate(torch.from_numpy(grid), scale_factor=((h + 0.1) / 37, (w + 0.1) / 37),
                      mode='bicubic', antialias=False)
    out[f'interp/{h}x{w}'] = y.numpy()
  small = np.random.default_rng(6).standard_normal((1, 2, 5, 7)).astype(np.float32)
  out['bilinear/input'] = small
  for h, w in bilinear_sizes:
    y = F.interpolate(torch.from_numpy(small), size=(h, w), mode='bilinear', align_corners=True)
    out[f'bilinear/{h}x{w}'] = y.numpy()


def load(model, weights: dict) -> None:
  """Strict: every key of the numpy state dict must be the model's, and every one present."""
  model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
