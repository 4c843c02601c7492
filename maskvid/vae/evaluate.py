"""The VAE's evaluation: reconstruction PSNR / SSIM on fixed frame sets, a table and a picture.

`final_eval` is what a finished (or already complete) training run writes into vae_dir:
eval.json (step, per-split metrics) and reconstructions.png (originals above reconstructions).
"""
import functools
import os
from typing import Callable, Mapping

from absl import logging
import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from maskvid import fileio
from maskvid import pictures
from maskvid import sharding
from maskvid.vae import model as vae_model

EVAL_FILE = 'eval.json'
PNG_FILE = 'reconstructions.png'


@functools.partial(jax.jit, static_argnums=0)
def _reconstruct(module, params, frames):
  return module.apply(params, frames)[0]


def make_reconstruct_fn(module: vae_model.AutoencoderKL) -> Callable:
  """Jitted `(params, frames [B,T,H,W,3]) -> reconstruction` through the posterior mean."""
  return functools.partial(_reconstruct, module)


def reconstruct(module, params, frames: np.ndarray, batch_size: int = 32,
                fn: Callable | None = None) -> np.ndarray:
  """Reconstructs `[N,T,H,W,3]` in fixed-size chunks (one compile); float32 clipped to [-1, 1]."""
  fn = fn or make_reconstruct_fn(module)
  out = []
  for i in range(0, len(frames), batch_size):
    chunk = frames[i:i + batch_size]
    pad = batch_size - len(chunk)
    padded = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    out.append(np.asarray(fn(params, padded))[:len(chunk)])
  return np.clip(np.concatenate(out), -1.0, 1.0)


def image_metrics(frames: np.ndarray, recon: np.ndarray) -> dict:
  """Mean PSNR (dB) and SSIM (dm_pix, images in [0, 1]) over frames `[N,T,H,W,3]` in [-1, 1]."""
  a = ((np.asarray(frames) + 1.0) / 2.0).reshape(-1, *frames.shape[-3:])
  b = ((np.asarray(recon) + 1.0) / 2.0).reshape(-1, *recon.shape[-3:])
  return {'psnr': float(jnp.mean(dm_pix.psnr(a, b))),
          'ssim': float(jnp.mean(dm_pix.ssim(a, b))),
          'l1': float(np.mean(np.abs(a - b)) * 2.0)}


def evaluate(module, params, eval_sets: Mapping[str, np.ndarray], fn=None) -> dict:
  """{split: {'psnr', 'ssim', 'l1'}} on fixed frame sets `{split: [N,1,H,W,3]}`."""
  fn = fn or make_reconstruct_fn(module)
  return {split: image_metrics(frames, reconstruct(module, params, frames, fn=fn))
          for split, frames in eval_sets.items()}


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
  lines = [f"{'split':<8} {'PSNR (dB)':>10} {'SSIM':>8} {'L1':>8}"]
  for split, m in results.items():
    lines.append(f"{split:<8} {m['psnr']:>10.2f} {m['ssim']:>8.4f} {m['l1']:>8.4f}")
  return '\n'.join(lines)


def save_reconstructions_png(path: str, module, params, eval_sets, num: int = 8,
                             fn=None) -> None:
  """Grid: for each split, a row of originals above a row of reconstructions."""
  rows = {}
  for split, frames in eval_sets.items():
    idx = np.linspace(0, len(frames) - 1, min(num, len(frames))).round().astype(int)
    rows[f'{split} original'] = frames[idx, 0]
    rows[f'{split} reconstruction'] = reconstruct(module, params, frames[idx], fn=fn)[:, 0]
  frames = next(iter(rows.values()))
  count = max(len(v) for v in rows.values())
  rows = {k: np.concatenate([pictures.to_uint8(v), np.full((count - len(v),) + frames.shape[1:],
                                                           255, np.uint8)]) for k, v in rows.items()}
  pictures.save_grid(path, rows, scale=max(1, 128 // max(1, frames.shape[-2])))


def final_eval(vae_dir, module, state, eval_sets, recon_fn, extra: dict,
                train_seconds: float | None = None, writer=None) -> dict:
  step = int(state.step)
  params = sharding.local_copy(state.params)
  res = evaluate(module, params, eval_sets, fn=recon_fn)
  flat = {'step': step, **extra}
  flat.update({f'{s}/{k}': v for s, m in res.items() for k, v in m.items()})
  if train_seconds is not None:
    flat['train_seconds'] = train_seconds
  if writer is not None:
    writer.write_scalars(step, {f'eval/{k}': v for k, v in flat.items()
                                if '/' in k and isinstance(v, float)})
  if jax.process_index() == 0:
    fileio.write_json_atomic(os.path.join(vae_dir, EVAL_FILE),
                             {'step': step, 'splits': res, 'metrics': flat})
    save_reconstructions_png(os.path.join(vae_dir, PNG_FILE), module, params, eval_sets,
                             fn=recon_fn)
  table = format_table(res)
  logging.info('VAE eval at step %d:\n%s', step, table)
  print(f'VAE reconstruction (step {step}):\n{table}', flush=True)
  return flat
