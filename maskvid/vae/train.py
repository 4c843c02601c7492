"""Training of the frame VAE: `train_vae(config, vae_dir, data_dir)` (the `vae` stage).

The pieces live beside it: `vae.pipeline` (batches), `vae.checkpoint` (state, save/restore,
`load_vae`), `vae.evaluate` (PSNR/SSIM, eval.json, reconstructions.png), `maskvid.optim` (the
schedule and AdamW every trainer shares), `maskvid.sharding` (the mesh). Layout of vae_dir:
  config.json          full run config (`workdir.save_config`), read by `checkpoint.load_vae`
  checkpoints/<step>/  orbax checkpoints (items `params`, `opt_state`), written atomically
  events.out.tfevents* clu / TensorBoard scalars
  eval.json            final PSNR / SSIM per split
  reconstructions.png  originals (top row of each split) vs reconstructions (bottom row)

Determinism: the batch of step s is `pipeline.frame_dataset(...)[s]` (grain random access) and
the rng of step s is `fold_in(key(seed), s)` (folded inside the step), so a resumed run
continues exactly where it stopped without saving iterator state.

Data parallel: the VAE is small, so its parameters are replicated over the project's mesh with
every device of every process on the 'data' axis (`sharding.data_parallel_mesh`), and each
step's `config.vae.train.batch_size` frames are split over it (each process loads its own share;
each device's gradients are averaged in one all-reduce of the raveled tree, see `_train_step`).
One device and N devices take the same steps up to float summation order.
"""
import concurrent.futures
import functools
import os
import time
from typing import Any, Callable, Mapping

from absl import logging
from clu import metric_writers
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from maskvid import distributed
from maskvid import fileio
from maskvid import optim
from maskvid import recovery
from maskvid import training_loop
from maskvid import sharding as sharding_lib
from maskvid import workdir
from maskvid.vae import checkpoint
from maskvid.vae import evaluate as evaluate_lib
from maskvid.vae import external
from maskvid.vae import losses
from maskvid.vae import model as vae_model
from maskvid.vae import pipeline
from maskvid.vae.checkpoint import TrainState

@functools.partial(jax.jit, static_argnums=0)
def _init_params(module, rng, dummy):
  return module.init(rng, dummy)


def init_state(module: vae_model.AutoencoderKL, tx, rng, frame_shape) -> TrainState:
  """Fresh parameters and optimizer state for frames of shape (H, W, 3)."""
  params = _init_params(module, rng, jnp.zeros((1, 1, *frame_shape), jnp.float32))
  return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params))


def _local_grads(module, kl_weight, reconstruction_loss, sample_posterior,
                 params, frames, noise):
  """Gradients and metrics of the loss on frames `[b,T,H,W,3]` (noise `[b,T,h,w,c]`) of a shard."""
  def loss_fn(params):
    recon, mean, logvar = module.apply(params, frames, sample_posterior=sample_posterior,
                                       noise=noise)
    return losses.vae_loss(frames, recon, mean, logvar, kl_weight=kl_weight,
                           reconstruction_loss=reconstruction_loss)
  return jax.grad(loss_fn, has_aux=True)(params)


def _mean_over_batch_shards(tree, axes):
  """pmean of a pytree as ONE all-reduce of its raveled leaves.

  XLA:CPU issues one all-reduce per gradient leaf, and each costs a rendezvous between the
  devices (~1.7 ms across processes over gloo), so ~80 leaves would cost more than the step.
  """
  flat, unravel = jax.flatten_util.ravel_pytree(tree)
  return unravel(jax.lax.pmean(flat, axes))


def _train_step(module, tx, kl_weight, reconstruction_loss, sample_posterior,
                mesh, state: TrainState, frames, rng, lr):
  b, t, h, w, _ = frames.shape
  f = module.downsample_factor
  # Folded here rather than by the caller: the training loop then issues no JAX work of its own
  # between steps (on XLA:CPU that waited for the previous step to finish).
  rng = jax.random.fold_in(rng, state.step)
  # Drawn for the global batch, so N devices sample what one device would.
  noise = jax.random.normal(rng, (b, t, h // f, w // f, module.latent_channels), jnp.float32)
  grads_fn = functools.partial(_local_grads, module, kl_weight, reconstruction_loss,
                               sample_posterior)
  if mesh is None or sharding_lib.batch_divisor(mesh) == 1:
    grads, metrics = grads_fn(state.params, frames, noise)
  else:
    # Each device: grads of its frames' mean loss; the mean over equal shards is the global
    # batch's gradient.
    axes = sharding_lib.BATCH_AXES
    batch_spec = jax.sharding.PartitionSpec(axes)
    grads, metrics = jax.shard_map(
        lambda p, x, n: _mean_over_batch_shards(grads_fn(p, x, n), axes), mesh=mesh,
        in_specs=(jax.sharding.PartitionSpec(), batch_spec, batch_spec),
        out_specs=jax.sharding.PartitionSpec(), check_vma=False)(state.params, frames, noise)
  direction, opt_state = tx.update(grads, state.opt_state, state.params)
  params = jax.tree.map(lambda p, d: p - lr * d, state.params, direction)
  metrics['grad_norm'] = optax.global_norm(grads)
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


@functools.lru_cache(maxsize=8)  # one jit object per option set: repeated steps hit its cache
def _jit_train_step(compiler_options: tuple[tuple[str, Any], ...]) -> Callable:
  return jax.jit(_train_step, static_argnums=(0, 1, 2, 3, 4, 5),
                 compiler_options=dict(compiler_options) or None)


def _compiler_options(train_config) -> tuple[tuple[str, Any], ...]:
  level = int(train_config.get('cpu_optimization_level', -1))
  if level > 3:
    raise ValueError(f'config.vae.train.cpu_optimization_level must be -1 (XLA default) or '
                     f'0..3, got {level}')
  if level < 0 or jax.default_backend() != 'cpu':
    return ()
  return (('xla_backend_optimization_level', level),)


def make_train_step(module: vae_model.AutoencoderKL, tx, vae_config,
                    mesh: Mesh | None = None) -> Callable:
  """Returns jitted `step(state, frames [B,T,H,W,3], rng, lr) -> (state, metrics)`.

  The step's randomness is `fold_in(rng, state.step)`: pass the run's base key every step.

  With a `mesh` whose batch axes span several devices, frames are split over them and the
  gradients averaged in one all-reduce; without one, the step runs where its inputs live.
  On CPU, `vae_config.train.cpu_optimization_level` (>= 0) sets XLA's backend optimisation level
  for this step: 1 compiles vae_tiny's step in 25 s instead of 39 s and it runs as fast.
  """
  step = _jit_train_step(_compiler_options(vae_config.train))
  return functools.partial(step, module, tx, float(vae_config.kl_weight),
                           str(vae_config.reconstruction_loss),
                           bool(vae_config.train.sample_posterior), mesh)


# ----------------------------------------------------------------------------- checkpoints

# ----------------------------------------------------------------------------- entry points

def _resume_or_init(config, module, tx, mesh, mgr, frame_shape) -> tuple[TrainState, int | None]:
  """(state replicated over `mesh`, the step it resumed from or None): the newest readable
  checkpoint, else fresh (or config.vae.external_weights) parameters."""
  # rbg keys for init: threefry-based init of every conv compiles ~5x slower on CPU.
  fresh = init_state(module, tx, jax.random.key(int(config.seed), impl='rbg'), frame_shape)
  state = recovery.restore_newest_readable(
      mgr, lambda step: checkpoint.restore(mgr, step, fresh, mesh))
  if state is not None:
    logging.info('VAE: resumed from checkpoint step %d in %s', int(state.step), mgr.directory)
    return state, int(state.step)
  state = fresh
  if config.vae.get('external_weights', ''):
    params = external.load_safetensors(config.vae.external_weights, module, frame_shape[0])
    logging.info('VAE: starting from external weights %s', config.vae.external_weights)
    state = TrainState(step=state.step, params=params, opt_state=tx.init(params))
  return sharding_lib.replicate(state, mesh), None


def _fit(config, module, tx, mesh, mgr, state: TrainState, train_source, writer,
         evaluate) -> tuple[TrainState, dict]:
  """Steps int(state.step) .. config.vae.train.steps through `training_loop.run`; returns the
  final state and the last step's metrics."""
  tc = config.vae.train
  steps, start = int(tc.steps), int(state.step)
  global_batch = int(tc.batch_size)
  dataset = pipeline.frame_dataset(train_source,
                                   batch_size=distributed.host_local_batch_size(global_batch),
                                   resolution=int(config.data.resolution),
                                   seed=int(config.data.shuffle_seed) + int(config.seed),
                                   cache_rgb=bool(tc.get('cache_frames', False)))
  rng = jax.random.key(int(config.seed))
  train_step = make_train_step(module, tx, config.vae, mesh)
  frame_sharding = sharding_lib.batch_sharding(mesh)
  logging.info('VAE: %d frames/step over %d devices, %.2fM params', global_batch, mesh.size,
               sum(x.size for x in jax.tree.leaves(state.params)) / 1e6)
  # The schedule as a host table: evaluating the optax schedule each step is a JAX computation
  # the loop would wait on before dispatching the step.
  schedule = optim.make_schedule(tc, 'config.vae.train')
  lr_table = np.asarray(jax.vmap(schedule)(jnp.arange(steps + 1)), np.float32)
  final = {}   # the last step's metrics

  # Load the next batch while the current step runs.
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    pending = {start: pool.submit(dataset.__getitem__, start)}

    def step_fn(state, i):
      batch = pending.pop(i).result()
      if i + 1 < steps:
        pending[i + 1] = pool.submit(dataset.__getitem__, i + 1)
      state, metrics = train_step(state, sharding_lib.put_batch(batch['frames'], frame_sharding),
                                  rng, lr_table[i])
      final.update(metrics)
      return state, {**metrics, 'lr': lr_table[i]}

    try:
      state, _ = training_loop.run(
          state, step_fn, training_loop.Checkpoints(mgr, lambda s, _, __: checkpoint.save(mgr, s)),
          name='VAE', start=start, steps=steps, params_of=lambda s: s.params,
          log_every=tc.log_every, checkpoint_every=max(1, int(tc.checkpoint_every)),
          writer=writer, log_keys=('l1', 'kl', 'lr'), evaluate=evaluate,
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

  module = vae_model.from_config(config.vae)
  tx = optim.adam_direction(tc)
  mesh = sharding_lib.data_parallel_mesh()
  global_batch = int(tc.batch_size)
  if global_batch % sharding_lib.batch_divisor(mesh):
    raise ValueError(f'config.vae.train.batch_size={global_batch} frames must be a multiple of the '
                     f'{sharding_lib.batch_divisor(mesh)} devices the batch is split over')
  res = int(config.data.resolution)
  frame_shape = (res, res, 3)
  mgr = checkpoint.make_manager(vae_dir, int(tc.get('keep_checkpoints', 2)))
  state, latest = _resume_or_init(config, module, tx, mesh, mgr, frame_shape)

  eval_sets = {split: pipeline.eval_frames(src, int(tc.eval_frames), res)
               for split, src in sources.items() if len(src)}
  recon_fn = evaluate_lib.make_reconstruct_fn(module)
  eval_path = os.path.join(vae_dir, evaluate_lib.EVAL_FILE)
  start = int(state.step)
  if start >= steps:
    if latest is None:  # steps == 0: keep the initial (or external) weights as a checkpoint
      checkpoint.save(mgr, state)
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

  state, final = _fit(config, module, tx, mesh, mgr, state, sources['train'], writer, evaluate)
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
