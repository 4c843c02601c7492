"""Training-time preview: complete a few test clips with the current EMA weights, write pictures.

`make_evaluator(config, workdir)` returns the `evaluate_fn(params, apply_fn, step, write)` that
the diffusion stage hands to `diffusion.train.train_and_evaluate`: it fills config.sample.preview_clips
test clips of the latent cache under masks from the training mixture (a fixed key, so successive
previews see the same clips and holes), scores latent MSE (holes / known) and pixel PSNR, and
writes samples_<step>.png (rows truth | known | completion per clip) and samples_<step>.mp4 into
the diffusion dir. With a VAE the clips go the users' way: pixels + the mask's pixels through
`sampling.inputs` (context fill, encode, token rule), the sampler with config.sample's options,
decode and composite, as the Completer and the eval's `ours` row. Without one (a latent-only
run) the known latents are sampled around directly and the first latent channels shown as
colours.
"""
import functools
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from maskvid import fileio
from maskvid import pictures
from maskvid.diffusion import mask_mixture as masks_lib
from maskvid.sampling import objectives
from maskvid.sampling import inputs as inputs_lib
from maskvid.sampling import noise
from maskvid.sampling import options
from maskvid.vae import cache as cache_lib
from maskvid.vae import codec as codec_lib
from maskvid.workdir import stage_dir


PREVIEW_SEED = 12345   # config.seed + this: the preview's masks and its clips' sampling keys


def complete_clips(config, params, apply_fn, gt, known_mask, seed: int, codec=None, truth=None):
  """(completion latents [B,T,h,w,c], composited frames [B,T,H,W,3] or None).

  gt: cached latents [B,T,h,w,c]; known_mask: bool [B,T,h,w] token mask. With a codec, the
  pixels `truth` [B,T,H,W,3] and the mask's pixels go the Completer's way (`sampling.inputs`,
  config.sample's options, clip b sampled with key(seed + b)): the preview shows what a user's
  `Completer.complete_video(truth, pixel_mask, seed=seed)` returns. Without one (a latent-only
  run) the cached latents are the known tokens, every one exact.
  """
  # Each objective's own sampler (the eval's table): a baseline is never sampled the masked way.
  def sample(known_latents, known, exact):
    return objectives.complete(
        config.diffusion.get('objective', 'masked'), apply_fn, params,
        jnp.asarray(known_latents, jnp.float32), jnp.asarray(known),
        noise.clip_keys(seed, gt.shape[0]), exact_mask=jnp.asarray(exact),
        **options.sampler_options(config.sample))

  if codec is None:
    known_latents = np.where(known_mask[..., None], gt, 0.0)
    return np.asarray(sample(known_latents, known_mask, known_mask)), None
  f = truth.shape[2] // gt.shape[2]
  given = inputs_lib.prepare(
      truth, known_mask.repeat(f, axis=2).repeat(f, axis=3), np.zeros(truth.shape[:-1], bool),
      encode=codec.encode, decode=codec.decode, factor=codec.factor,
      patch_size=tuple(config.model.patch_size), fill_options=options.fill_options(config.sample),
      token_rule=options.token_rule(config.sample))
  return inputs_lib.complete(given, sample, lambda z: codec.decode(jnp.asarray(z)))


def _load_codec(vae_dir: str, latents_dir: str):
  """The run's `LatentCodec` (frames <-> normalised latents), or None without a VAE."""
  try:
    return codec_lib.LatentCodec.load(vae_dir, latents_dir)
  except FileNotFoundError as e:
    logging.warning('no VAE decoder for eval pictures (%s); showing latent channels instead', e)
    return None


def _latents_as_rgb(z: np.ndarray) -> np.ndarray:
  """[B,T,h,w,c] normalised latents -> pseudo-colour frames in [-1, 1] (first 3 channels)."""
  rgb = z[..., :3] if z.shape[-1] >= 3 else np.repeat(z[..., :1], 3, axis=-1)
  return np.clip(rgb / 2.0, -1.0, 1.0)


def evaluate(config, params, apply_fn, latents_dir: str, out_dir: str, step: int,
             codec=None, write: bool = True) -> dict:
  """Completes config.sample.preview_clips test clips with `params`; writes PNG grid + MP4.

  The masks come from the training mask mixture with a fixed key, so successive evaluations
  see the same clips and the same holes. Every process must call this (params may be
  sharded); only `write=True` touches disk. Returns eval/* scalar metrics.
  """
  source = cache_lib.LatentSource(latents_dir, 'test')
  n = min(int(config.sample.preview_clips), len(source))
  if n == 0:
    logging.warning('test split of %s is empty: skipping evaluation', latents_dir)
    return {}
  clip_len = int(config.data.clip_length)
  elements = [source[i] for i in range(n)]
  gt = np.stack([np.asarray(e['latents'], np.float32)[:clip_len] for e in elements])
  b, t, h, w, _ = gt.shape
  seed = int(config.seed) + PREVIEW_SEED
  known_mask = np.asarray(masks_lib.sample_known_mask(
      jax.random.key(seed), b, (t, h, w), tuple(config.model.patch_size), config.diffusion))
  truth = None
  if codec is not None:
    truth = (pictures.to_float(np.stack([np.asarray(e['rgb'])[:clip_len] for e in elements]))
             if all('rgb' in e for e in elements) else np.asarray(codec.decode(jnp.asarray(gt))))
  completion, pred = complete_clips(config, params, apply_fn, gt, known_mask, seed, codec, truth)
  holes = ~known_mask
  err = (completion - gt) ** 2
  metrics = {
      'eval/latent_mse_holes': float(err[holes].mean()) if holes.any() else 0.0,
      'eval/latent_mse_known': float(err[known_mask].mean()) if known_mask.any() else 0.0,
  }
  if codec is not None:
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
  """`evaluate_fn(params, apply_fn, step, write) -> metrics` for `diffusion.train.train_and_evaluate`."""
  latents_dir = stage_dir(config, workdir, 'latents')
  diffusion_dir = stage_dir(config, workdir, 'diffusion')
  codec = _load_codec(stage_dir(config, workdir, 'vae'), latents_dir)
  return functools.partial(_evaluate_at, config, latents_dir, diffusion_dir, codec)


def _evaluate_at(config, latents_dir, out_dir, codec, params, apply_fn, step, write):
  return evaluate(config, params, apply_fn, latents_dir, out_dir, step, codec, write)
