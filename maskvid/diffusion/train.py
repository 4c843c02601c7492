"""`train_and_evaluate(config, workdir)`: the diffusion training loop (Flax-examples style).

Reads the normalised latent cache (train split) through grain, initialises or resumes the
TrainState from the newest checkpoint in the diffusion stage dir, trains config.train.steps
steps with clu metric writers and progress lines, checkpoints every
config.train.checkpoint_every steps and at the end, and calls the `evaluate_fn` it is given
with the EMA params (the stage passes `sampling.preview`: completions of a few test clips as
PNG + MP4 in the diffusion dir). The loop itself neither samples nor draws.

Determinism and resumption: the batch of step s is element s of a grain MapDataset (shuffled
by config.data.shuffle_seed, repeated, sharded by process), and the step's randomness is
fold_in(state.rng, s). A run killed after checkpoint k and restarted reproduces the
uninterrupted run exactly; nothing but the step has to be stored for the data.
"""
import os
from typing import Any, Callable, Iterator, Optional

from absl import logging
from clu import metric_writers
import grain
import jax
import numpy as np

from maskvid import distributed
from maskvid import fileio
from maskvid import workdir as workdir_lib
from maskvid.diffusion import trainer as trainer_lib
from maskvid.train import checkpoint as ckpt_lib
from maskvid.train import loop as loop_lib
from maskvid.vae import cache as cache_lib
from maskvid.workdir import stage_dir

# evaluate_fn(params (replicated EMA), apply_fn, step, write: bool) -> {'eval/...': float}
EvaluateFn = Callable[[Any, Callable, int, bool], dict]

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


# ------------------------------------------------------------------------------------------ loop
def train_and_evaluate(config, workdir: str,
                       evaluate_fn: Optional[EvaluateFn] = None) -> dict[str, Any]:
  """Trains the masked video diffusion transformer; returns the final metrics.

  Resumes from the newest checkpoint in the diffusion stage dir. If that checkpoint is already
  at config.train.steps and the final metrics exist, returns them without doing anything.
  `evaluate_fn` (e.g. `sampling.preview.make_evaluator`) runs every config.train.eval_every
  steps and at the end with the EMA params; its metrics are logged and returned.
  """

  diffusion_dir = stage_dir(config, workdir, 'diffusion')
  latents_dir = stage_dir(config, workdir, 'latents')
  _require_latent_cache(latents_dir)
  total_steps = int(config.train.steps)
  if total_steps < 1:
    raise ValueError(f'config.train.steps must be >= 1, got {total_steps}')

  is_chief = jax.process_index() == 0
  trainer = trainer_lib.Trainer(config)
  logging.info('mesh %s, %d params, global batch %d', dict(trainer.mesh.shape),
               trainer.num_params, trainer.global_batch_size)
  manager = ckpt_lib.make_manager(diffusion_dir, keep=int(config.train.keep_checkpoints),
                                   async_save=bool(config.train.async_checkpoints))
  # Restore before writing the config: a config that no longer fits the checkpoints stops here
  # and leaves the directory (its config.json included) as it was.
  state = ckpt_lib.restore_latest(manager, trainer.abstract_state)
  if state is None:
    state = trainer.init(int(config.seed))
  if is_chief:
    workdir_lib.save_config(config, diffusion_dir)
    # Inference needs only this dir + the VAE dir: keep the normalisation stats with the weights.
    (fileio.path(latents_dir) / 'stats.json').copy(fileio.path(diffusion_dir) / 'stats.json',
                                                   overwrite=True)
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

  def evaluate(state, step):
    return evaluate_fn(trainer.replicate(state.ema_params), trainer.apply_fn, step, is_chief)

  state, summary = loop_lib.run(
      state, lambda state, _: trainer.step(state, next(batches)),
      loop_lib.Checkpoints(manager, lambda state, _, force: ckpt_lib.save(manager, state,
                                                                               force=force)),
      name='diffusion', start=start_step, steps=total_steps, params_of=lambda s: s.params,
      log_every=config.train.log_every, checkpoint_every=config.train.checkpoint_every,
      writer=writer, evaluate=evaluate if evaluate_fn else None,
      eval_every=config.train.eval_every)
  final_step = int(jax.device_get(state.step))
  eval_metrics = {}
  if evaluate_fn is not None:
    eval_metrics = evaluate(state, final_step)
    writer.write_scalars(final_step, eval_metrics)
  writer.flush()
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


def is_finished(diffusion_dir: str) -> bool:
  """A diffusion dir whose training loop wrote its final metrics (it only does so at the end)."""
  return (fileio.path(diffusion_dir) / FINAL_METRICS).exists()
