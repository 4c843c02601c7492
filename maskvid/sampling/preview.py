"""Training-time preview: complete a few test clips with the current EMA weights, write pictures.

`make_evaluator(config, workdir)` returns the `evaluate_fn(params, apply_fn, step, write)` that
the diffusion stage hands to `train.loop.train_and_evaluate`: it fills config.sample.num_clips
test clips of the latent cache under masks from the training mixture (a fixed key, so successive
previews see the same clips and holes), scores latent MSE (holes / known) and pixel PSNR, and
writes samples_<step>.png (rows gt | known | completion per clip) and samples_<step>.mp4 into
the diffusion dir. Without a VAE it shows the first latent channels as colours.
"""
import functools
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from maskvid import fileio
from maskvid import pictures
from maskvid.diffusion import masks as masks_lib
from maskvid.sampling import options
from maskvid.sampling import sampler
from maskvid.vae import cache as cache_lib
from maskvid.vae import codec as codec_lib
from maskvid.workdir import stage_dir


def complete_latents(apply_fn, params, known, known_mask, rng, config) -> jax.Array:
  """Masked completion [B,T,h,w,c] with the library sampler and config.sample's settings."""
  return sampler.complete(apply_fn, params, known, known_mask, rng,
                          **options.sampler_options(config.sample))


def _load_decoder(vae_dir: str, latents_dir: str):
  """latents (normalised) [B,T,h,w,c] -> frames [B,T,H,W,3] in [-1, 1], or None without a VAE."""
  try:
    return codec_lib.LatentCodec.load(vae_dir, latents_dir).decode
  except FileNotFoundError as e:
    logging.warning('no VAE decoder for eval pictures (%s); showing latent channels instead', e)
    return None


def _latents_as_rgb(z: np.ndarray) -> np.ndarray:
  """[B,T,h,w,c] normalised latents -> pseudo-colour frames in [-1, 1] (first 3 channels)."""
  rgb = z[..., :3] if z.shape[-1] >= 3 else np.repeat(z[..., :1], 3, axis=-1)
  return np.clip(rgb / 2.0, -1.0, 1.0)


def evaluate(config, params, apply_fn, latents_dir: str, out_dir: str, step: int,
             decoder=None, write: bool = True) -> dict:
  """Completes config.sample.num_clips test clips with `params`; writes PNG grid + MP4.

  The masks come from the training mask mixture with a fixed key, so successive evaluations
  see the same clips and the same holes. Every process must call this (params may be
  sharded); only `write=True` touches disk. Returns eval/* scalar metrics.
  """
  source = cache_lib.LatentSource(latents_dir, 'test')
  n = min(int(config.sample.num_clips), len(source))
  if n == 0:
    logging.warning('test split of %s is empty: skipping evaluation', latents_dir)
    return {}
  clip_len = int(config.data.clip_length)
  elements = [source[i] for i in range(n)]
  gt = np.stack([np.asarray(e['latents'], np.float32)[:clip_len] for e in elements])
  b, t, h, w, _ = gt.shape
  key = jax.random.key(int(config.seed) + 12345)
  mask_key, sample_key = jax.random.split(key)
  known_mask = masks_lib.sample_known_mask(mask_key, b, (t, h, w), tuple(config.model.patch_size),
                                           config.diffusion)
  if config.diffusion.get('objective', 'masked') == 'conditioning':
    # The conditioning baseline reads the known latents as input channels.
    cond_apply, cond = apply_fn, (jnp.asarray(gt), known_mask)
    apply_fn = lambda p, x, t: cond_apply(p, x, t, *cond)  # pylint: disable=unnecessary-lambda-assignment
  completion = complete_latents(apply_fn, params, jnp.asarray(gt), known_mask, sample_key, config)
  completion, known_mask = np.asarray(completion), np.asarray(known_mask)
  holes = ~known_mask
  err = (completion - gt) ** 2
  metrics = {
      'eval/latent_mse_holes': float(err[holes].mean()) if holes.any() else 0.0,
      'eval/latent_mse_known': float(err[known_mask].mean()) if known_mask.any() else 0.0,
  }
  # Pixels: decoded completions vs the rendered frames (or the decoded ground-truth latents).
  if decoder is not None:
    pred = np.asarray(decoder(jnp.asarray(completion)))
    if all('rgb' in e for e in elements):
      truth = np.stack([np.asarray(e['rgb'])[:clip_len] for e in elements])
      truth = pictures.to_float(truth)
    else:
      truth = np.asarray(decoder(jnp.asarray(gt)))
    mse = np.mean((pred - truth) ** 2, axis=(1, 2, 3, 4))
    metrics['eval/psnr'] = float(np.mean(10 * np.log10(4.0 / np.maximum(mse, 1e-10))))
  else:
    pred, truth = _latents_as_rgb(completion), _latents_as_rgb(gt)
  factor = truth.shape[2] // h
  pixel_known = known_mask.repeat(factor, axis=2).repeat(factor, axis=3)[..., None]
  shown_known = np.where(pixel_known, truth, 0.0)  # 0.0 is mid-grey in [-1, 1]
  if not write:
    return metrics
  gt8, known8, pred8 = (pictures.upscale(pictures.to_uint8(v)) for v in (truth, shown_known, pred))
  fileio.makedirs(out_dir)
  png = pictures.save_grid(os.path.join(out_dir, f'samples_{step:07d}.png'), {
      f'{row} {i}': video[i] for i in range(b)
      for row, video in (('truth', gt8), ('known', known8), ('completion', pred8))}, scale=1)
  # Video: each clip's (gt | known | completion) side by side, clips stacked vertically.
  side = np.concatenate([gt8, known8, pred8], axis=3)       # [B,T,H,3W,3]
  video = np.concatenate(list(side), axis=1)                 # [T,B*H,3W,3]
  mp4 = os.path.join(out_dir, f'samples_{step:07d}.mp4')
  try:
    with fileio.local_output(mp4) as local_mp4:   # ffmpeg writes local files only
      pictures.write_mp4(local_mp4, video, fps=4)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('could not write %s (%s); the PNG grid is still there', mp4, e)
  logging.info('eval at step %d: %s -> %s', step, metrics, png)
  return metrics


def make_evaluator(config, workdir: str):
  """`evaluate_fn(params, apply_fn, step, write) -> metrics` for `train.loop.train_and_evaluate`."""
  latents_dir = stage_dir(config, workdir, 'latents')
  diffusion_dir = stage_dir(config, workdir, 'diffusion')
  decoder = _load_decoder(stage_dir(config, workdir, 'vae'), latents_dir)
  return functools.partial(_evaluate_at, config, latents_dir, diffusion_dir, decoder)


def _evaluate_at(config, latents_dir, out_dir, decoder, params, apply_fn, step, write):
  return evaluate(config, params, apply_fn, latents_dir, out_dir, step, decoder, write)
