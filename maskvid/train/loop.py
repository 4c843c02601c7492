"""`train_and_evaluate(config, workdir)`: the diffusion training loop (Flax-examples style).

Reads the normalised latent cache (train split) through grain, initialises or resumes the
TrainState from the newest checkpoint in the diffusion stage dir, trains config.train.steps
steps with clu metric writers and progress lines, checkpoints every
config.train.checkpoint_every steps and at the end, and evaluates by completing a few test
clips with the EMA params (PNG grid + MP4 + latent/pixel errors in the diffusion dir).

Determinism and resumption: the batch of step s is element s of a grain MapDataset (shuffled
by config.data.shuffle_seed, repeated, sharded by process), and the step's randomness is
fold_in(state.rng, s). A run killed after checkpoint k and restarted reproduces the
uninterrupted run exactly; nothing but the step has to be stored for the data.
"""
import os
import time
from typing import Any, Iterator

import grain
import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from maskvid import distributed
from maskvid import fileio
from maskvid.diffusion import masks as masks_lib
from maskvid.paths import stage_dir
from maskvid.sampling import sampler
from maskvid.train import checkpoint as ckpt_lib
from maskvid.train import step as step_lib
from maskvid.vae import cache as cache_lib
from maskvid.vae import train as vae_train

FINAL_METRICS = 'final_metrics.json'


# ------------------------------------------------------------------------------------------ data
class _ClipLatents(grain.transforms.RandomMap):
  """{'latents': [T_cache, h, w, c], ...} -> float32 [clip_length, h, w, c] (random start)."""

  def __init__(self, clip_length: int, stride: int):
    self.clip_length, self.stride = int(clip_length), int(stride)

  def random_map(self, element, rng: np.random.Generator):
    z = np.asarray(element['latents'], np.float32)
    span = (self.clip_length - 1) * self.stride + 1
    if z.ndim != 4 or z.shape[0] < span:
      raise ValueError(f'latent clip has shape {z.shape}; need [T >= {span}, h, w, c] for '
                       f'config.data.clip_length={self.clip_length}, frame_stride={self.stride}')
    start = int(rng.integers(0, z.shape[0] - span + 1))
    return z[start:start + span:self.stride]


def train_dataset(source, config, batch_size: int) -> grain.MapDataset:
  """Random-access dataset whose element s is this process's batch for step s.

  [batch_size, clip_length, h, w, c] float32. Shuffled per epoch (config.data.shuffle_seed),
  repeated forever, and split across processes (each sees every process_count-th clip).
  """
  ds = grain.MapDataset.source(source).seed(int(config.data.shuffle_seed)).shuffle().repeat()
  if jax.process_count() > 1:
    ds = ds[jax.process_index()::jax.process_count()]
  ds = ds.random_map(_ClipLatents(config.data.clip_length, config.data.frame_stride))
  return ds.batch(batch_size, drop_remainder=True)


def train_batches(source, config, batch_size: int, start_step: int) -> Iterator[np.ndarray]:
  """Iterator of batches for steps start_step, start_step + 1, ... (prefetched by grain)."""
  ds = train_dataset(source, config, batch_size)[int(start_step):]
  read = grain.ReadOptions(num_threads=max(1, int(config.data.worker_count) or 2),
                           prefetch_buffer_size=4)
  return iter(ds.to_iter_dataset(read))


def _require_latent_cache(latents_dir: str) -> None:
  fileio.require_local(latents_dir, 'paths.latents')
  cache_lib.require_complete(latents_dir)


# ------------------------------------------------------------------------------------ evaluation
def complete_latents(apply_fn, params, known, known_mask, rng, config) -> jax.Array:
  """Masked completion [B,T,h,w,c] with the library sampler and config.sample's settings."""
  renoise = float(config.sample.renoise_at)
  return sampler.complete(apply_fn, params, known, known_mask, rng,
                          num_steps=int(config.sample.num_steps), solver=config.sample.solver,
                          renoise_at=renoise if renoise > 0 else None,
                          guidance=float(config.sample.guidance))


def _load_decoder(vae_dir: str, latents_dir: str):
  """latents (normalised) [B,T,h,w,c] -> frames [B,T,H,W,3] in [-1, 1], or None without a VAE."""
  try:
    module, params = vae_train.load_vae(vae_dir)
    stats = cache_lib.load_latent_stats(latents_dir)
  except FileNotFoundError as e:
    logging.warning('no VAE decoder for eval pictures (%s); showing latent channels instead', e)
    return None
  shift = jnp.asarray(stats['shift'], jnp.float32)
  scale = jnp.asarray(stats['scale'], jnp.float32)

  # load_vae returns the full variables dict ({'params': ...}); accept bare params too.
  variables = params if isinstance(params, dict) and 'params' in params else {'params': params}

  @jax.jit
  def decode(z):
    frames = module.apply(variables, z * scale + shift, method=module.decode)
    return jnp.clip(frames, -1.0, 1.0)
  return decode


def _latents_as_rgb(z: np.ndarray) -> np.ndarray:
  """[B,T,h,w,c] normalised latents -> pseudo-colour frames in [-1, 1] (first 3 channels)."""
  rgb = z[..., :3] if z.shape[-1] >= 3 else np.repeat(z[..., :1], 3, axis=-1)
  return np.clip(rgb / 2.0, -1.0, 1.0)


def _to_uint8(frames: np.ndarray) -> np.ndarray:
  return np.clip(np.round((np.asarray(frames) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _upscale(frames: np.ndarray, min_size: int = 64) -> np.ndarray:
  """Nearest-neighbour upscale of [..., H, W, 3] so tiny frames stay visible."""
  k = max(1, -(-min_size // frames.shape[-2]))
  return frames.repeat(k, axis=-3).repeat(k, axis=-2)


def make_grid(gt: np.ndarray, known: np.ndarray, completion: np.ndarray, pad: int = 2) -> np.ndarray:
  """uint8 [B,T,H,W,3] x3 -> one image: per clip rows (gt, known, completion), columns frames."""
  b, t, h, w, _ = gt.shape
  rows = []
  for i in range(b):
    for video in (gt, known, completion):
      row = np.full((h + pad, t * (w + pad), 3), 255, np.uint8)
      for j in range(t):
        row[:h, j * (w + pad):j * (w + pad) + w] = video[i, j]
      rows.append(row)
  return np.concatenate(rows, axis=0)


def _write_video(path: str, frames: np.ndarray, fps: int = 4) -> None:
  """uint8 [T,H,W,3] -> MP4 (even sizes for yuv420p)."""
  h, w = frames.shape[1:3]
  frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode='edge')
  imageio.mimwrite(path, list(frames), fps=fps, macro_block_size=1)


def evaluate(config, params, apply_fn, latents_dir: str, vae_dir: str, out_dir: str, step: int,
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
      truth = truth.astype(np.float32) / 127.5 - 1.0 if truth.dtype == np.uint8 else truth
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
  gt8, known8, pred8 = (_upscale(_to_uint8(v)) for v in (truth, shown_known, pred))
  fileio.makedirs(out_dir)
  png = os.path.join(out_dir, f'samples_{step:07d}.png')
  fileio.write_image(png, make_grid(gt8, known8, pred8))
  # Video: each clip's (gt | known | completion) side by side, clips stacked vertically.
  side = np.concatenate([gt8, known8, pred8], axis=3)       # [B,T,H,3W,3]
  video = np.concatenate(list(side), axis=1)                 # [T,B*H,3W,3]
  mp4 = os.path.join(out_dir, f'samples_{step:07d}.mp4')
  try:
    with fileio.local_output(mp4) as local_mp4:   # ffmpeg writes local files only
      _write_video(local_mp4, video)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('could not write %s (%s); the PNG grid is still there', mp4, e)
  logging.info('eval at step %d: %s -> %s', step, metrics, png)
  return metrics


# ------------------------------------------------------------------------------------------ loop
def _mean_metrics(history: list[dict]) -> dict:
  fetched = jax.device_get(history)
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains the masked video diffusion transformer; returns the final metrics.

  Resumes from the newest checkpoint in the diffusion stage dir. If that checkpoint is already
  at config.train.steps and the final metrics exist, returns them without doing anything.
  """
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  from clu import periodic_actions  # pylint: disable=g-import-not-at-top
  from maskvid import stages  # pylint: disable=g-import-not-at-top

  diffusion_dir = stage_dir(config, workdir, 'diffusion')
  latents_dir = stage_dir(config, workdir, 'latents')
  vae_dir = stage_dir(config, workdir, 'vae')
  _require_latent_cache(latents_dir)
  total_steps = int(config.train.steps)
  if total_steps < 1:
    raise ValueError(f'config.train.steps must be >= 1, got {total_steps}')

  is_chief = jax.process_index() == 0
  if is_chief:
    stages.save_config(config, diffusion_dir)
    # Inference needs only this dir + the VAE dir: keep the normalisation stats with the weights.
    (fileio.path(latents_dir) / 'stats.json').copy(fileio.path(diffusion_dir) / 'stats.json',
                                                   overwrite=True)

  trainer = step_lib.Trainer(config)
  logging.info('mesh %s, %d params, global batch %d', dict(trainer.mesh.shape),
               trainer.num_params, trainer.global_batch_size)
  manager = ckpt_lib.make_manager(diffusion_dir, config)
  state = ckpt_lib.restore_latest(manager, trainer.abstract_state)
  if state is None:
    state = trainer.init(int(config.seed))
  start_step = int(jax.device_get(state.step))
  final_path = os.path.join(diffusion_dir, FINAL_METRICS)
  if start_step >= total_steps and fileio.path(final_path).exists():
    manager.close()
    logging.info('diffusion already trained to step %d in %s', start_step, diffusion_dir)
    return fileio.read_json(final_path)

  source = cache_lib.LatentSource(latents_dir, 'train')
  if len(source) == 0:
    raise ValueError(f'the train split of the latent cache {latents_dir!r} is empty')
  # Host->device copies of the next batches overlap the current step.
  batches = distributed.prefetch_to_device(
      train_batches(source, config, trainer.local_batch_size, start_step),
      trainer.batch_sharding, size=2)

  writer = metric_writers.create_default_writer(diffusion_dir, just_logging=not is_chief)
  if start_step == 0:
    writer.write_hparams({k: v for k, v in _flat(config.to_dict()).items()})
  report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                           every_steps=max(1, int(config.train.log_every)))
  decoder = _load_decoder(vae_dir, latents_dir)
  log_every = max(1, int(config.train.log_every))
  ckpt_every = int(config.train.checkpoint_every)
  eval_every = int(config.train.eval_every)
  history, summary = [], {}
  t0, s0 = time.time(), start_step
  logging.info('training steps %d -> %d', start_step, total_steps)
  for step in range(start_step + 1, total_steps + 1):   # `step` = updates done after this one
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      batch = next(batches)
      state, metrics = trainer.step(state, batch)
    history.append(metrics)
    report(step)
    if step % log_every == 0 or step == total_steps:
      summary = {f'train/{k}': v for k, v in _mean_metrics(history).items()}
      history = []
      writer.write_scalars(step, summary)
      now = time.time()   # rate over this interval (the first one includes compilation)
      rate = (step - s0) / max(now - t0, 1e-9)
      t0, s0 = now, step
      logging.info('step %d/%d  loss %.4f  %.2f steps/s  ETA %s', step, total_steps,
                   summary['train/loss'], rate,
                   time.strftime('%H:%M:%S', time.gmtime((total_steps - step) / max(rate, 1e-9))))
    if ckpt_every > 0 and step % ckpt_every == 0 and step != total_steps:
      ckpt_lib.save(manager, state)
    if eval_every > 0 and step % eval_every == 0 and step != total_steps:
      with report.timed('eval'):
        writer.write_scalars(step, evaluate(config, trainer.replicate(state.ema_params),
                                            trainer.apply_fn, latents_dir, vae_dir,
                                            diffusion_dir, step, decoder, write=is_chief))
  ckpt_lib.save(manager, state, force=True)
  final_step = int(jax.device_get(state.step))
  eval_metrics = evaluate(config, trainer.replicate(state.ema_params), trainer.apply_fn,
                          latents_dir, vae_dir, diffusion_dir, final_step, decoder,
                          write=is_chief)
  writer.write_scalars(final_step, eval_metrics)
  writer.flush()
  manager.wait_until_finished()
  manager.close()
  result = {'step': final_step, **summary, **eval_metrics}
  if is_chief:
    fileio.write_json_atomic(final_path, result)
  return result


def _flat(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(_flat(v, key + '.'))
    else:
      out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
  return out
