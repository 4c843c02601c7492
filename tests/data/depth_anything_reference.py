"""Pins the PyTorch Depth Anything V2 outputs that tests/test_depth_anything.py checks the port on.

Run (a throwaway venv; nothing here is needed at test time, and the tests never import torch):
  python3.11 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl numpy
  /tmp/torchvenv/bin/python tests/data/depth_anything_reference.py
Writes next to this file:
  depth_anything_small.npz  the Small (vits) architecture at its real shapes on a 2 x 98 x 126
                            input: per tensor (each of the 12 blocks, the 4 normalised features,
                            the 4 reassembled maps, layer1..4_rn, refinenet4..1, output_conv1) a
                            512-element strided sample, mean/std/max|x|/L2 and 4 projections on
                            random unit vectors; the full output; the state-dict key order and
                            shapes; the torch bicubic / bilinear resizes the port re-implements.
  depth_anything_tiny.pth   a tiny variant's state dict written by `torch.save` (float16
                            storages), and depth_anything_tiny.npz its full output.
Weights are not stored for Small: `random_state_dict` (numpy only, imported by the test too)
regenerates them from the key list and a seed.

The torch model below is this file's own transcription of the reference implementation
(github.com/DepthAnything/Depth-Anything-V2 `depth_anything_v2/dpt.py`, `dinov2.py`,
`dinov2_layers/`, `util/blocks.py`) at inference: same modules, state-dict names and torch ops
(F.interpolate bicubic with the scale factor and the 0.1 offset, bilinear align_corners=True,
nn.GELU, LayerNorm eps 1e-6, the attention written out as the reference's non-xFormers path).
"""
from __future__ import annotations

import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SMALL = dict(embed_dim=384, depth=12, num_heads=6, features=64, out_channels=(48, 96, 192, 384),
             layers=(2, 5, 8, 11), img_size=518)
TINY = dict(embed_dim=32, depth=4, num_heads=2, features=8, out_channels=(4, 8, 16, 16),
            layers=(0, 1, 2, 3), img_size=112)
SMALL_INPUT = (2, 98, 126)   # N, H, W: a 7 x 9 patch grid, the pos-embed resampled from 37 x 37
TINY_INPUT = (1, 42, 56)     # 3 x 4 grid from 8 x 8
SAMPLES = 512
PROJECTIONS = 4
INTERP_GRIDS = ((7, 9), (3, 4), (50, 20), (37, 74))
BILINEAR_SIZES = ((14, 9), (3, 3), (10, 14))


def _std(key: str, shape: tuple) -> tuple:
  """(mean, std) of a random tensor: activations stay O(1) through 12 blocks, ReLUs half open."""
  if key.endswith('gamma'):
    return 0.3, 0.1
  if key.endswith('norm1.weight') or key.endswith('norm2.weight') or key.endswith('norm.weight'):
    return 1.0, 0.1
  if key.endswith('pos_embed') or key.endswith('cls_token'):
    return 0.0, 0.5
  if key.endswith('mask_token'):
    return 0.0, 1.0
  if key.endswith('bias'):
    return (3.0 if 'output_conv2.2' in key else 0.0), 0.1
  fan_in = shape[0] if 'resize_layers.0' in key or 'resize_layers.1' in key else int(
      np.prod(shape[1:]))
  return 0.0, 1.0 / np.sqrt(fan_in)


def random_state_dict(shapes: list, seed: int) -> dict:
  """[(key, shape), ...] in order -> {key: float32 array}; the same in any numpy >= 1.17."""
  rng = np.random.default_rng(seed)
  out = {}
  for key, shape in shapes:
    mean, std = _std(key, tuple(shape))
    out[key] = (mean + std * rng.standard_normal(tuple(shape))).astype(np.float32)
  return out


def random_input(shape: tuple, seed: int) -> np.ndarray:
  """(N, H, W) -> an ImageNet-normalised-like input float32 [N, 3, H, W]."""
  n, h, w = shape
  return np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32)


def _projections(size: int) -> np.ndarray:
  w = np.random.default_rng(size).standard_normal((PROJECTIONS, size))
  return w / np.linalg.norm(w, axis=1, keepdims=True)


def summarize(x: np.ndarray) -> dict:
  """Summary of a tensor (channels-last): sample, stats [mean, std, max|x|, L2], projections."""
  x = np.asarray(x, np.float64).ravel()
  idx = np.linspace(0, x.size - 1, SAMPLES).astype(np.int64)
  return dict(sample=x[idx], stats=np.array([x.mean(), x.std(), np.abs(x).max(),
                                             np.linalg.norm(x)]),
              proj=_projections(x.size) @ x)


def relative_error(x: np.ndarray, summary: dict) -> float:
  """Largest error of x's summary against a pinned one, relative to the pinned tensor's scale:
  sample, mean, std and max|x| over max|x|; projections (unit vectors) over the L2 norm."""
  s = summarize(x)
  absmax, l2 = summary['stats'][2], summary['stats'][3]
  errs = [np.abs(s['sample'] - summary['sample']).max() / absmax,
          np.abs(s['stats'][:3] - summary['stats'][:3]).max() / absmax,
          np.abs(s['proj'] - summary['proj']).max() / l2]
  return float(max(errs))


# ----------------------------------------------------------------------------------------------
# The torch reference (only this part needs torch)


def build_torch_model(cfg: dict):  # pylint: disable=too-many-statements
  """A torch Depth Anything V2 with the original state-dict names (see the module docstring)."""
  import math  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
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

  return DepthAnythingV2(cfg).eval()


def _run_with_taps(model, x):
  """(output [N, H, W], {name: channels-last intermediate}) of the torch model."""
  import torch  # pylint: disable=g-import-not-at-top
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


def _pin_resizes(out: dict) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  F = torch.nn.functional
  grid = np.random.default_rng(5).standard_normal((1, 4, 37, 37)).astype(np.float32)
  out['interp/input'] = grid
  for h, w in INTERP_GRIDS:
    y = F.interpolate(torch.from_numpy(grid), scale_factor=((h + 0.1) / 37, (w + 0.1) / 37),
                      mode='bicubic', antialias=False)
    out[f'interp/{h}x{w}'] = y.numpy()
  small = np.random.default_rng(6).standard_normal((1, 2, 5, 7)).astype(np.float32)
  out['bilinear/input'] = small
  for h, w in BILINEAR_SIZES:
    y = F.interpolate(torch.from_numpy(small), size=(h, w), mode='bilinear', align_corners=True)
    out[f'bilinear/{h}x{w}'] = y.numpy()


def _load(model, weights: dict) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)


def main() -> None:
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = build_torch_model(SMALL)
  shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
  weights = random_state_dict(shapes, seed=0)
  _load(model, weights)
  out, taps = _run_with_taps(model, random_input(SMALL_INPUT, seed=1))
  pinned = {'shapes': np.array(json.dumps(shapes)), 'output': out,
            'weight_sums': np.array([np.float64(weights[k]).sum() for k, _ in shapes])}
  for name, t in taps.items():
    for field, v in summarize(t).items():
      pinned[f'{name}/{field}'] = v
  _pin_resizes(pinned)
  np.savez_compressed(os.path.join(HERE, 'depth_anything_small.npz'), **pinned)

  tiny = build_torch_model(TINY)
  shapes = [(k, list(v.shape)) for k, v in tiny.state_dict().items()]
  # float16-exact values: the .pth holds HalfStorage, the reference runs them in float32.
  weights = {k: v.astype(np.float16).astype(np.float32)
             for k, v in random_state_dict(shapes, seed=2).items()}
  _load(tiny, weights)
  torch.save({k: torch.from_numpy(v).half() for k, v in weights.items()},
             os.path.join(HERE, 'depth_anything_tiny.pth'))
  out, _ = _run_with_taps(tiny, random_input(TINY_INPUT, seed=3))
  np.savez_compressed(os.path.join(HERE, 'depth_anything_tiny.npz'), output=out)
  print('wrote', sorted(f for f in os.listdir(HERE) if f.startswith('depth_anything_')))


if __name__ == '__main__':
  main()
