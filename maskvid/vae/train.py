"""Training of the frame VAE: `train_vae(config, vae_dir, data_dir)` (the `vae` stage).

The VAE supplies its model and loss; the rest is what every trainer shares: `train.state`
(TrainState, `loss_step`), `train.sharded.ShardedStep` (the jitted, sharded step), `optim`
(schedule and AdamW), `train.checkpoint` (orbax), `train.loop` (progress, NaN, SIGTERM).
Beside it: `vae.pipeline` (batches), `vae.evaluate` (PSNR/SSIM, eval.json,
reconstructions.png), `vae.model.load_vae` (inference). Layout of vae_dir:
  config.json          full run config (`workdir.save_config`), read by `load_vae`
  checkpoints/<step>/  orbax checkpoints of the TrainState, written atomically
  events.out.tfevents* clu / TensorBoard scalars
  eval.json            final PSNR / SSIM per split
  reconstructions.png  originals (top row of each split) vs reconstructions (bottom row)

Determinism: the batch of step s is `pipeline.frame_dataset(...)[s]` (grain random access) and
the rng of step s is `fold_in(key(seed), s)` (folded inside the step), so a resumed run
continues exactly where it stopped without saving iterator state.

Data parallel: the VAE is small, so its parameters are replicated over a mesh with every device
of every process on 'data' (`sharding.data_parallel_mesh`), and each step's
`config.vae.train.batch_size` frames are split over it (each process loads its own share). The
partitioner all-reduces the gradients; XLA combines the per-leaf all-reduces into one (a test
counts them). One device and N devices take the same steps up to float summation order.
"""
import concurrent.futures
import functools
import os
import time
import types
from typing import Any, Mapping

from absl import logging
from clu import metric_writers
import jax
import jax.numpy as jnp

from maskvid import distributed
from maskvid import fileio
from maskvid import optim
from maskvid import sharding as sharding_lib
from maskvid import workdir
from maskvid.train import checkpoint
from maskvid.train import loop as loop_lib
from maskvid.train import sharded as sharded_lib
from maskvid.train import state as state_lib
from maskvid.vae import evaluate as evaluate_lib
from maskvid.vae import external
from maskvid.vae import losses
from maskvid.vae import model as vae_model
from maskvid.vae import pipeline

_SCHEDULE_KEYS = ('steps', 'warmup_steps', 'learning_rate', 'decay', 'end_lr_fraction',
                  'grad_clip', 'weight_decay', 'adam_b1', 'adam_b2')


def vae_loss_fn(module, kl_weight: float, reconstruction_loss: str, sample_posterior: bool):
  """`loss(params, frames [B,T,H,W,3], rng) -> (loss, metrics)`: the VAE's part of its step.

  The posterior noise is drawn for the global batch, so N devices sample what one device would.
  """
  def loss(params, frames, rng):
    b, t, h, w, _ = frames.shape
    f = module.downsample_factor
    noise = jax.random.normal(rng, (b, t, h // f, w // f, module.latent_channels), jnp.float32)
    recon, mean, logvar = module.apply(params, frames, sample_posterior=sample_posterior,
                                       noise=noise)
    return losses.vae_loss(frames, recon, mean, logvar, kl_weight=kl_weight,
                           reconstruction_loss=reconstruction_loss)
  return loss


def _compiler_options(train_config) -> tuple[tuple[str, Any], ...]:
  level = int(train_config.get('cpu_optimization_level', -1))
  if level > 3:
    raise ValueError(f'config.vae.train.cpu_optimization_level must be -1 (XLA default) or '
                     f'0..3, got {level}')
  if level < 0 or jax.default_backend() != 'cpu':
    return ()
  return (('xla_backend_optimization_level', level),)


def make_trainer(config, mesh=None) -> tuple[vae_model.AutoencoderKL, sharded_lib.ShardedStep]:
  """(module, ShardedStep) of the VAE of `config` over `mesh` (default: data parallel over all
  devices). The step's batch is frames [config.vae.train.batch_size, 1, R, R, 3] in [-1, 1].

  On CPU, `config.vae.train.cpu_optimization_level` (>= 0) sets XLA's backend optimisation level
  of the step: 1 compiles vae_tiny's step in 25 s instead of 39 s and it runs as fast.
  """
  tc = config.vae.train
  mesh = mesh if mesh is not None else sharding_lib.data_parallel_mesh()
  global_batch = int(tc.batch_size)
  if global_batch % sharding_lib.batch_divisor(mesh):
    raise ValueError(f'config.vae.train.batch_size={global_batch} frames must be a multiple of the '
                     f'{sharding_lib.batch_divisor(mesh)} devices the batch is split over')
  module = vae_model.from_config(config.vae)
  schedule = tuple((k, tc[k]) for k in _SCHEDULE_KEYS)
  loss = (float(config.vae.kl_weight), str(config.vae.reconstruction_loss),
          bool(tc.sample_posterior))
  res = int(config.data.resolution)
  return module, _sharded_step(module, schedule, loss, (global_batch, 1, res, res, 3), mesh,
                               _compiler_options(tc))


@functools.lru_cache(maxsize=4)   # one compiled step per setting: resumed runs in one process
def _sharded_step(module, schedule, loss, batch_shape, mesh, compiler_options):
  schedule_config = types.SimpleNamespace(**dict(schedule))
  tx = optim.make_optimizer(schedule_config, 'config.vae.train')

  def init_state(seed):
    # rbg keys for init: threefry-based init of every conv compiles ~5x slower on CPU.
    params = module.init(jax.random.key(seed, impl='rbg'),
                         jnp.zeros((1, 1, *batch_shape[2:]), jnp.float32))
    return state_lib.create_state(params, tx, jax.random.key(seed), ema=False)

  step = state_lib.loss_step(vae_loss_fn(module, *loss), tx,
                             schedule=optim.make_schedule(schedule_config, 'config.vae.train'))
  return sharded_lib.ShardedStep(mesh, (), init_state, step,
                                 jax.ShapeDtypeStruct(batch_shape, jnp.float32),
                                 compiler_options=dict(compiler_options))


# ----------------------------------------------------------------------------- entry points

def _resume_or_init(config, module, trainer: sharded_lib.ShardedStep, mgr):
  """(state, the step it resumed from or None): the newest readable checkpoint, else fresh (or
  config.vae.external_weights) parameters."""
  state = checkpoint.restore_latest(mgr, trainer.abstract_state)
  if state is not None:
    logging.info('VAE: resumed from checkpoint step %d in %s', int(state.step), mgr.directory)
    return state, int(state.step)
  state = trainer.init(int(config.seed))
  if config.vae.get('external_weights', ''):
    params = external.load_safetensors(config.vae.external_weights, module,
                                       int(config.data.resolution))
    logging.info('VAE: starting from external weights %s', config.vae.external_weights)
    state = jax.device_put(state.replace(params=params, opt_state=_tx(config).init(params)),
                           trainer.state_shardings)
  return state, None


def _tx(config):
  return optim.make_optimizer(config.vae.train, 'config.vae.train')


def _fit(config, trainer: sharded_lib.ShardedStep, mgr, state, train_source, writer,
         evaluate) -> tuple[Any, dict]:
  """Steps int(state.step) .. config.vae.train.steps through `train.loop.run`; returns the
  final state and the last step's metrics."""
  tc = config.vae.train
  steps, start = int(tc.steps), int(state.step)
  global_batch = int(tc.batch_size)
  dataset = pipeline.frame_dataset(train_source,
                                   batch_size=distributed.host_local_batch_size(global_batch),
                                   resolution=int(config.data.resolution),
                                   seed=int(config.data.shuffle_seed) + int(config.seed),
                                   cache_rgb=bool(tc.get('cache_frames', False)))
  logging.info('VAE: %d frames/step over %d devices, %.2fM params', global_batch,
               trainer.mesh.size, trainer.num_params / 1e6)
  final = {}   # the last step's metrics

  # Load the next batch while the current step runs.
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    pending = {start: pool.submit(dataset.__getitem__, start)}

    def step_fn(state, i):
      batch = pending.pop(i).result()
      if i + 1 < steps:
        pending[i + 1] = pool.submit(dataset.__getitem__, i + 1)
      state, metrics = trainer.step(state, batch['frames'])
      final.update(metrics)
      return state, metrics

    try:
      state, _ = loop_lib.run(
          state, step_fn, loop_lib.Checkpoints(mgr, lambda s, _, __: checkpoint.save(mgr, s)),
          name='VAE', start=start, steps=steps, params_of=lambda s: s.params,
          log_every=tc.log_every, checkpoint_every=max(1, int(tc.checkpoint_every)),
          writer=writer, log_keys=('l1', 'kl', 'learning_rate'), evaluate=evaluate,
          eval_every=tc.eval_every)
    finally:
      for future in pending.values():
        future.cancel()
  return state, jax.device_get(final)


def train_vae(config, vae_dir: str, data_dir: str) -> dict:
  """Trains (or resumes) the VAE on the rendered dataset in data_dir; returns final eval metrics.

  Returns a flat dict: {'step', '<split>/psnr', '<split>/ssim', '<split>/l1', ...}.
  """
  fileio.require_local(data_dir, 'paths.data')
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f'data_dir {data_dir!r} does not exist; run the render stage first')
  return train_vae_on_sources(config, vae_dir, pipeline.open_sources(config, data_dir))


def train_vae_on_sources(config, vae_dir: str, sources: Mapping[str, Any]) -> dict:
  """`train_vae` on explicit clip sources `{split: source}` ('train' is required)."""
  if 'train' not in sources:
    raise ValueError(f"sources must include a 'train' split, got {sorted(sources)}")
  t_begin = time.time()
  tc = config.vae.train
  steps = int(tc.steps)
  fileio.makedirs(vae_dir)
  if not (fileio.path(vae_dir) / workdir.CONFIG_FILE).exists():
    workdir.save_config(config, vae_dir)

  module, trainer = make_trainer(config)
  res = int(config.data.resolution)
  mgr = checkpoint.make_manager(vae_dir, keep=int(tc.get('keep_checkpoints', 2)), async_save=True)
  state, latest = _resume_or_init(config, module, trainer, mgr)

  eval_sets = {split: pipeline.eval_frames(src, int(tc.eval_frames), res)
               for split, src in sources.items() if len(src)}
  recon_fn = evaluate_lib.make_reconstruct_fn(module)
  eval_path = os.path.join(vae_dir, evaluate_lib.EVAL_FILE)
  start = int(state.step)
  if start >= steps:
    if latest is None:  # steps == 0: keep the initial (or external) weights as a checkpoint
      checkpoint.save(mgr, state, force=True)
      mgr.wait_until_finished()
    mgr.close()
    if fileio.path(eval_path).exists():
      saved = fileio.read_json(eval_path)
      if saved.get('step') == start:
        logging.info('VAE: training already complete (step %d); returning saved eval', start)
        print(evaluate_lib.format_table(saved['splits']))
        return saved['metrics']
    return evaluate_lib.final_eval(vae_dir, module, state, eval_sets, recon_fn, {})

  writer = metric_writers.create_default_writer(vae_dir, just_logging=jax.process_index() > 0)
  if start == 0:
    writer.write_hparams({k: v for k, v in config.vae.items() if not isinstance(v, Mapping)})

  def evaluate(state, _):
    ev = evaluate_lib.evaluate(module, sharding_lib.local_copy(state.params), eval_sets,
                               fn=recon_fn)
    return {f'eval/{s}/{k}': v for s, m in ev.items() for k, v in m.items()}

  state, final = _fit(config, trainer, mgr, state, sources['train'], writer, evaluate)
  final_loss = {f'final_train_{k}': float(v) for k, v in final.items()}
  final_loss['resumed_from'] = start
  final_loss.update(_bad_data_counts(sources['train']))
  result = evaluate_lib.final_eval(vae_dir, module, state, eval_sets, recon_fn, final_loss,
                                   train_seconds=time.time() - t_begin, writer=writer)
  writer.flush()
  return result


def _bad_data_counts(source) -> dict:
  """Unreadable / short videos and undecodable chunks a lenient video source left out (else
  nothing)."""
  if not hasattr(source, 'bad_data'):
    return {}
  bad = source.bad_data()
  counts = {'data/skipped_videos': len(bad['videos']), 'data/bad_chunks': len(bad['chunks']),
            'data/short_videos': len(bad['short'])}
  if any(counts.values()):
    logging.warning('VAE: trained past bad data in %r: %s', source, counts)
  return counts
