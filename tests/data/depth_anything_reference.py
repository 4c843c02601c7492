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

The torch model is in depth_anything_torch.py next to this file (imported by `main` only): its
own transcription of the reference implementation (github.com/DepthAnything/Depth-Anything-V2)
at inference, with the original modules, state-dict names and torch ops.
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


def main() -> None:
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, HERE)
  import torch  # pylint: disable=g-import-not-at-top
  import depth_anything_torch as reference  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = reference.build(SMALL)
  shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
  weights = random_state_dict(shapes, seed=0)
  reference.load(model, weights)
  out, taps = reference.run_with_taps(model, random_input(SMALL_INPUT, seed=1))
  pinned = {'shapes': np.array(json.dumps(shapes)), 'output': out,
            'weight_sums': np.array([np.float64(weights[k]).sum() for k, _ in shapes])}
  for name, t in taps.items():
    for field, v in summarize(t).items():
      pinned[f'{name}/{field}'] = v
  reference.pin_resizes(pinned, INTERP_GRIDS, BILINEAR_SIZES)
  np.savez_compressed(os.path.join(HERE, 'depth_anything_small.npz'), **pinned)

  tiny = reference.build(TINY)
  shapes = [(k, list(v.shape)) for k, v in tiny.state_dict().items()]
  # float16-exact values: the .pth holds HalfStorage, the reference runs them in float32.
  weights = {k: v.astype(np.float16).astype(np.float32)
             for k, v in random_state_dict(shapes, seed=2).items()}
  reference.load(tiny, weights)
  torch.save({k: torch.from_numpy(v).half() for k, v in weights.items()},
             os.path.join(HERE, 'depth_anything_tiny.pth'))
  out, _ = reference.run_with_taps(tiny, random_input(TINY_INPUT, seed=3))
  np.savez_compressed(os.path.join(HERE, 'depth_anything_tiny.npz'), output=out)
  print('wrote', sorted(f for f in os.listdir(HERE) if f.startswith('depth_anything_')))


if __name__ == '__main__':
  main()
