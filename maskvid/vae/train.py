"""Training, evaluation and loading of the frame VAE.

Entry: `train_vae(config, vae_dir, data_dir)` (called by `stages.run_vae`). Layout of vae_dir:
  config.json          full run config (stages.save_config), used by `load_vae`
  checkpoints/<step>/  orbax checkpoints (items `params`, `opt_state`), written atomically
  events.out.tfevents* clu / TensorBoard scalars
  eval.json            final PSNR / SSIM per split
  done.json            final step of a finished run (a time-budget stop ends a run early)
  reconstructions.png  originals (top row of each split) vs reconstructions (bottom row)

Determinism: the batch of step s is `frame_dataset(...)[s]` (grain random access) and the rng of
step s is `fold_in(key(seed), s)` (folded inside the step), so a resumed run continues exactly
where it stopped without saving iterator state.

Data parallel: the VAE is small, so its parameters are replicated over the project's mesh
(`maskvid.train.sharding`) with every device of every process on the 'data' axis, and each
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
import dm_pix
import flax
import grain
import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from maskvid import distributed
from maskvid import fileio
from maskvid.train import sharding as sharding_lib
from maskvid.vae import losses
from maskvid.vae import model as vae_model

CHECKPOINT_SUBDIR = 'checkpoints'
EVAL_FILE = 'eval.json'
PNG_FILE = 'reconstructions.png'
DONE_FILE = 'done.json'  # final step of a finished run (needed when a time budget stopped it)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


# ----------------------------------------------------------------------------- data

def to_float_frames(rgb: np.ndarray) -> np.ndarray:
  """uint8 [..., 3] in [0, 255] -> float32 in [-1, 1]."""
  if rgb.dtype != np.uint8:
    raise ValueError(f'rgb must be uint8, got {rgb.dtype}')
  return rgb.astype(np.float32) / 127.5 - 1.0


def _frames_per_clip(source) -> int:
  if len(source) == 0:
    raise ValueError(f'source {source!r} is empty')
  rgb = source[0]['rgb']
  if rgb.ndim != 4 or rgb.shape[-1] != 3:
    raise ValueError(f"source records need 'rgb' uint8 [T,H,W,3], got shape {rgb.shape}")
  return rgb.shape[0]


class RandomHorizontalFlip(grain.transforms.RandomMap):
  """Mirrors each frame of a batch `{'frames': [B,T,H,W,3]}` left-right with probability 1/2.

  Left-right mirroring keeps frames in distribution for scenes with no preferred handedness
  (the synthetic rooms; most video), so it doubles the distinct frames a frame VAE sees.
  """

  def random_map(self, batch: dict, rng: np.random.Generator) -> dict:
    frames = batch['frames']
    flip = rng.random(frames.shape[0]) < 0.5
    return dict(batch, frames=np.where(flip[:, None, None, None, None],
                                       frames[:, :, :, ::-1], frames))


def frame_dataset(source, *, batch_size: int, resolution: int, seed: int,
                  shuffle: bool = True, hflip: bool = False,
                  cache_rgb: bool = False) -> grain.MapDataset:
  """Infinite grain MapDataset whose element s is the step-s batch `{'frames': [B,1,H,W,3]}`.

  `source` is any random-access source of clip dicts with 'rgb' uint8 [T,H,W,3] (e.g.
  `maskvid.data.storage.ClipSource`). Built on `maskvid.data.pipeline.make_dataset` with
  one-frame windows (a random frame of a shuffled clip; per-process sharding included).
  `hflip` mirrors each frame left-right with probability 1/2 (`RandomHorizontalFlip`).
  `cache_rgb` keeps every clip's frames in memory after its first read (`pipeline.RgbCache`):
  the same batches, without re-reading and decoding records in later epochs.
  """
  from maskvid.data import pipeline  # pylint: disable=g-import-not-at-top
  if cache_rgb:
    source = pipeline.RgbCache(source)
  ds = pipeline.make_dataset(source, batch_size=batch_size, clip_length=1,
                             resolution=resolution, seed=seed, shuffle=shuffle)
  return ds.random_map(RandomHorizontalFlip()) if hflip else ds


def eval_frames(source, num_frames: int, resolution: int | None = None) -> np.ndarray:
  """A fixed, evenly spread selection of frames of a split: float32 [N,1,H,W,3] in [-1, 1]."""
  from maskvid.data import pipeline  # pylint: disable=g-import-not-at-top
  t = _frames_per_clip(source)
  total = len(source) * t
  idx = np.unique(np.linspace(0, total - 1, min(num_frames, total)).round().astype(int))
  clips = {}
  frames = []
  for i in idx:
    c = i // t
    if c not in clips:
      clips[c] = np.asarray(source[int(c)]['rgb'])
      if resolution is not None:
        clips[c] = pipeline.resize_clip({'rgb': clips[c]}, (resolution, resolution))['rgb']
    frames.append(clips[c][i % t])
  return to_float_frames(np.stack(frames))[:, None]


# ----------------------------------------------------------------------------- core

DECAYS = ('cosine', 'linear')


def make_schedule(train_config) -> optax.Schedule:
  """Learning rate per step: linear warmup, then decay to `end_lr_fraction` of the peak at `steps`.

  `decay`: 'cosine' or 'linear' (a straight line to the end value).
  """
  steps = int(train_config.steps)
  warmup = min(int(train_config.warmup_steps), max(steps - 1, 0))
  peak = float(train_config.learning_rate)
  end = float(train_config.get('end_lr_fraction', 0.01)) * peak
  decay = str(train_config.get('decay', 'cosine'))
  if decay not in DECAYS:
    raise ValueError(f'config.vae.train.decay must be one of {DECAYS}, got {decay!r}')
  if decay == 'cosine':
    return optax.warmup_cosine_decay_schedule(init_value=0.0, peak_value=peak,
                                              warmup_steps=warmup,
                                              decay_steps=max(steps, warmup + 1), end_value=end)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup),
       optax.linear_schedule(peak, end, max(steps - warmup, 1))], [warmup])


def make_optimizer(train_config) -> optax.GradientTransformation:
  """AdamW *direction* (clip, Adam, decoupled weight decay); the step multiplies by -lr.

  The learning rate is applied in the train step (an argument), so the schedule can follow
  either the step count or, with `max_train_seconds`, the wall-clock budget (see train_vae).
  """
  return _make_optimizer(float(train_config.get('grad_clip', 1.0)),
                         float(train_config.get('weight_decay', 0.0)),
                         float(train_config.get('adam_b1', 0.9)),
                         float(train_config.get('adam_b2', 0.99)))


@functools.lru_cache(maxsize=16)  # same settings -> same object -> jit cache hits across runs
def _make_optimizer(grad_clip, weight_decay, b1, b2):
  # Same chain as optax.adamw, minus the final scale_by_learning_rate.
  return optax.chain(optax.clip_by_global_norm(grad_clip),
                     optax.scale_by_adam(b1=b1, b2=b2),
                     optax.add_decayed_weights(weight_decay))


@functools.partial(jax.jit, static_argnums=0)
def _init_params(module, rng, dummy):
  return module.init(rng, dummy)


def data_parallel_mesh(devices=None) -> Mesh:
  """The project's ('data', 'fsdp', 'tensor') mesh with every device (default: all) on 'data'."""
  return sharding_lib.make_mesh(ml_collections.ConfigDict({'data': -1, 'fsdp': 1, 'tensor': 1}),
                                devices)


def replicate(tree, mesh: Mesh):
  """Same value on every device of `mesh` (each process passes its identical local copy)."""
  return jax.tree.map(lambda x: sharding_lib.put_batch(x, sharding_lib.replicated(mesh)), tree)


def local_copy(tree):
  """A replicated tree as arrays on this process's first device (for eval and pictures)."""
  return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)


def init_state(module: vae_model.AutoencoderKL, tx, rng, frame_shape) -> TrainState:
  """Fresh parameters and optimizer state for frames of shape (H, W, 3)."""
  params = _init_params(module, rng, jnp.zeros((1, 1, *frame_shape), jnp.float32))
  return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params))


def _local_grads(module, kl_weight, perceptual_weight, reconstruction_loss, sample_posterior,
                 params, frames, noise):
  """Gradients and metrics of the loss on frames `[b,T,H,W,3]` (noise `[b,T,h,w,c]`) of a shard."""
  def loss_fn(params):
    recon, mean, logvar = module.apply(params, frames, sample_posterior=sample_posterior,
                                       noise=noise)
    return losses.vae_loss(frames, recon, mean, logvar, kl_weight=kl_weight,
                           perceptual_weight=perceptual_weight,
                           reconstruction_loss=reconstruction_loss)
  return jax.grad(loss_fn, has_aux=True)(params)


def _mean_over_batch_shards(tree, axes):
  """pmean of a pytree as ONE all-reduce of its raveled leaves.

  XLA:CPU issues one all-reduce per gradient leaf, and each costs a rendezvous between the
  devices (~1.7 ms across processes over gloo), so ~80 leaves would cost more than the step.
  """
  flat, unravel = jax.flatten_util.ravel_pytree(tree)
  return unravel(jax.lax.pmean(flat, axes))


def _train_step(module, tx, kl_weight, perceptual_weight, reconstruction_loss, sample_posterior,
                mesh, state: TrainState, frames, rng, lr):
  b, t, h, w, _ = frames.shape
  f = module.downsample_factor
  # Folded here rather than by the caller: the training loop then issues no JAX work of its own
  # between steps (on XLA:CPU that waited for the previous step to finish).
  rng = jax.random.fold_in(rng, state.step)
  # Drawn for the global batch, so N devices sample what one device would.
  noise = jax.random.normal(rng, (b, t, h // f, w // f, module.latent_channels), jnp.float32)
  grads_fn = functools.partial(_local_grads, module, kl_weight, perceptual_weight,
                               reconstruction_loss, sample_posterior)
  if mesh is None or sharding_lib.batch_divisor(mesh) == 1:
    grads, metrics = grads_fn(state.params, frames, noise)
  else:
    # Each device: grads of its frames' mean loss; the mean over equal shards is the global
    # batch's gradient (the 'psnr' loss weights frames by the shard's mean MSE instead).
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
  return jax.jit(_train_step, static_argnums=(0, 1, 2, 3, 4, 5, 6),
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
                           float(vae_config.get('perceptual_weight', 0.0)),
                           str(vae_config.get('reconstruction_loss', 'l1')),
                           bool(vae_config.train.get('sample_posterior', True)), mesh)


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
  rows = []
  for frames in eval_sets.values():
    idx = np.linspace(0, len(frames) - 1, min(num, len(frames))).round().astype(int)
    orig = frames[idx]
    recon = reconstruct(module, params, orig, fn=fn)
    for x in (orig, recon):
      x = ((x[:, 0] + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
      x = np.pad(x, ((0, num - len(x)), (1, 1), (1, 1), (0, 0)), constant_values=255)
      rows.append(np.concatenate(list(x), axis=1))
  grid = np.concatenate(rows, axis=0)
  scale = max(1, 256 // max(1, eval_sets[next(iter(eval_sets))].shape[-2]))
  grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)  # tiny frames: enlarge
  fileio.write_image(path, grid)


# ----------------------------------------------------------------------------- checkpoints

def _checkpoint_manager(vae_dir: str, keep: int = 2) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=True)
  return ocp.CheckpointManager(os.path.join(fileio.absolute(vae_dir), CHECKPOINT_SUBDIR),
                               options=options)


def _abstract(tree, sharding=None):
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _save(mgr: ocp.CheckpointManager, state: TrainState) -> None:
  mgr.save(int(state.step), args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      opt_state=ocp.args.StandardSave(state.opt_state)), force=True)


def _restore(mgr: ocp.CheckpointManager, step: int, target: TrainState,
             mesh: Mesh) -> TrainState:
  sharding = sharding_lib.replicated(mesh)
  restored = mgr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(_abstract(target.params, sharding)),
      opt_state=ocp.args.StandardRestore(_abstract(target.opt_state, sharding))))
  return TrainState(step=replicate(np.int32(step), mesh), params=restored['params'],
                    opt_state=restored['opt_state'])


# ----------------------------------------------------------------------------- entry points

def open_sources(config, data_dir: str) -> dict:
  """{split: ClipSource} for every split in config.data.clips."""
  from maskvid.data import storage  # pylint: disable=g-import-not-at-top
  return {split: storage.ClipSource(data_dir, split) for split in config.data.clips.keys()}


def train_vae(config, vae_dir: str, data_dir: str) -> dict:
  """Trains (or resumes) the VAE on the rendered dataset in data_dir; returns final eval metrics.

  Returns a flat dict: {'step', '<split>/psnr', '<split>/ssim', '<split>/l1', ...}.
  """
  fileio.require_local(data_dir, 'paths.data')
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f'data_dir {data_dir!r} does not exist; run the render stage first')
  return train_vae_on_sources(config, vae_dir, open_sources(config, data_dir))


def train_vae_on_sources(config, vae_dir: str, sources: Mapping[str, Any]) -> dict:
  """`train_vae` on explicit clip sources `{split: source}` ('train' is required)."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  from clu import periodic_actions  # pylint: disable=g-import-not-at-top
  if 'train' not in sources:
    raise ValueError(f"sources must include a 'train' split, got {sorted(sources)}")
  t_begin = time.time()
  tc = config.vae.train
  steps = int(tc.steps)
  max_seconds = float(tc.get('max_train_seconds', 0.0))
  fileio.makedirs(vae_dir)
  if not (fileio.path(vae_dir) / 'config.json').exists():
    from maskvid import stages  # pylint: disable=g-import-not-at-top
    stages.save_config(config, vae_dir)

  module = vae_model.from_config(config.vae)
  tx = make_optimizer(tc)
  mesh = data_parallel_mesh()
  global_batch = int(tc.batch_size)
  if global_batch % sharding_lib.batch_divisor(mesh):
    raise ValueError(f'config.vae.train.batch_size={global_batch} frames must be a multiple of the '
                     f'{sharding_lib.batch_divisor(mesh)} devices the batch is split over')
  res = int(config.data.resolution)
  frame_shape = (res, res, 3)
  rng = jax.random.key(int(config.seed))
  # rbg keys for init: threefry-based init of every conv compiles ~5x slower on CPU.
  state = init_state(module, tx, jax.random.key(int(config.seed), impl='rbg'), frame_shape)
  mgr = _checkpoint_manager(vae_dir, int(tc.get('keep_checkpoints', 2)))
  latest = mgr.latest_step()
  if latest is not None:
    logging.info('VAE: resuming from checkpoint step %d in %s', latest, vae_dir)
    state = _restore(mgr, latest, state, mesh)
  else:
    if config.vae.get('external_weights', ''):
      from maskvid.vae import external  # pylint: disable=g-import-not-at-top
      params = external.load_safetensors(config.vae.external_weights, module, frame_shape[0])
      logging.info('VAE: starting from external weights %s', config.vae.external_weights)
      state = TrainState(step=state.step, params=params, opt_state=tx.init(params))
    state = replicate(state, mesh)

  eval_sets = {split: eval_frames(src, int(tc.eval_frames), res)
               for split, src in sources.items() if len(src)}
  recon_fn = make_reconstruct_fn(module)
  eval_path = os.path.join(vae_dir, EVAL_FILE)
  start = int(state.step)
  finished = _read_json(os.path.join(vae_dir, DONE_FILE))
  # A run the time budget stopped is complete; one that ran all its steps resumes when asked for
  # more (e.g. --config.vae.train.steps raised).
  if (finished and latest is not None and finished['step'] == latest
      and finished.get('time_budget_stop', True)):
    steps = start  # stopped by the time budget earlier: that run is complete
  if start >= steps:
    if latest is None:  # steps == 0: keep the initial (or external) weights as a checkpoint
      _save(mgr, state)
      mgr.wait_until_finished()
    mgr.close()
    if fileio.path(eval_path).exists():
      saved = fileio.read_json(eval_path)
      if saved.get('step') == start:
        logging.info('VAE: training already complete (step %d); returning saved eval', start)
        print(format_table(saved['splits']))
        return saved['metrics']
    return _final_eval(vae_dir, module, state, eval_sets, recon_fn, {})

  dataset = frame_dataset(sources['train'],
                          batch_size=distributed.host_local_batch_size(global_batch),
                          resolution=res,
                          seed=int(config.data.get('shuffle_seed', 0)) + int(config.seed),
                          hflip=bool(tc.get('hflip', False)),
                          cache_rgb=bool(tc.get('cache_frames', False)))
  train_step = make_train_step(module, tx, config.vae, mesh)
  frame_sharding = sharding_lib.batch_sharding(mesh)
  writer = metric_writers.create_default_writer(vae_dir, just_logging=jax.process_index() > 0)
  if start == 0:
    writer.write_hparams({k: v for k, v in config.vae.items() if not isinstance(v, Mapping)})
  report = periodic_actions.ReportProgress(num_train_steps=steps, writer=writer,
                                           every_steps=int(tc.log_every))
  log_every = max(1, int(tc.log_every))
  ckpt_every = max(1, int(tc.checkpoint_every))
  eval_every = int(tc.get('eval_every', 0))
  logging.info('VAE: training steps %d -> %d, %d frames/step over %d devices, %.2fM params%s',
               start, steps, global_batch, mesh.size,
               sum(x.size for x in jax.tree.leaves(state.params)) / 1e6,
               f', time budget {max_seconds:.0f}s' if max_seconds > 0 else '')
  # The schedule as a host table (np.interp at the float position below): evaluating the optax
  # schedule each step is a JAX computation the loop would wait on before dispatching the step.
  lr_grid = np.arange(steps + 1)
  lr_table = np.asarray(jax.vmap(make_schedule(tc))(jnp.asarray(lr_grid)), np.float64)
  t0 = time.time()
  acc = []
  metrics = {}
  stopped_by_budget = False
  t_first, seconds_left = None, max_seconds
  # Load the next batch while the current step runs.
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    pending = pool.submit(dataset.__getitem__, start)
    for step in range(start, steps):
      batch = pending.result()
      if step + 1 < steps:
        pending = pool.submit(dataset.__getitem__, step + 1)
      # Schedule position: the step, or (with a time budget) the elapsed share of the budget if
      # that is further along, so warmup+cosine always completes by the deadline.
      # The budget left after compilation (timed at the first step) is spread over the steps.
      position = step
      if max_seconds > 0 and step > start:
        if t_first is None:
          t_first = time.time()
          seconds_left = max(max_seconds - (t_first - t_begin), 1e-9)
        position = max(step, start + 1 + (time.time() - t_first) / seconds_left
                       * (steps - start - 1))
        stopped_by_budget = position >= steps
      lr = float(np.interp(min(position, steps), lr_grid, lr_table))
      state, metrics = train_step(state, sharding_lib.put_batch(batch['frames'], frame_sharding),
                                  rng, np.float32(lr))
      acc.append(metrics)
      done = step + 1
      if stopped_by_budget:
        logging.warning('VAE: time budget of %.0fs used up at step %d of %d; stopping here',
                        max_seconds, done, steps)
        steps = done
      report(done)
      if done % log_every == 0 or done == steps:
        mean = {k: float(np.mean([m[k] for m in acc])) for k in acc[0]}
        acc = []
        writer.write_scalars(done, {f'train/{k}': v for k, v in mean.items()})
        logging.info('VAE step %d/%d  loss %.4f  l1 %.4f  kl %.1f  lr %.2e  (%.1fs)', done,
                     int(tc.steps), mean['loss'], mean['l1'], mean['kl'], lr, time.time() - t0)
      if done % ckpt_every == 0 or done == steps:
        _save(mgr, state)
      if eval_every > 0 and done % eval_every == 0 and done < steps:
        ev = evaluate(module, local_copy(state.params), eval_sets, fn=recon_fn)
        writer.write_scalars(done, {f'eval/{s}/{k}': v for s, m in ev.items()
                                    for k, v in m.items()})
      if stopped_by_budget:
        break
  mgr.wait_until_finished()
  mgr.close()
  if jax.process_index() == 0:
    fileio.write_json_atomic(os.path.join(vae_dir, DONE_FILE),
                             {'step': int(state.step), 'time_budget_stop': stopped_by_budget},
                             indent=None)
  final_loss = {f'final_train_{k}': float(v) for k, v in metrics.items()}
  final_loss['resumed_from'] = start
  final_loss['stopped_by_time_budget'] = stopped_by_budget
  result = _final_eval(vae_dir, module, state, eval_sets, recon_fn, final_loss,
                       train_seconds=time.time() - t_begin, writer=writer)
  writer.flush()
  return result


def _final_eval(vae_dir, module, state, eval_sets, recon_fn, extra: dict,
                train_seconds: float | None = None, writer=None) -> dict:
  step = int(state.step)
  params = local_copy(state.params)
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


def _read_json(path: str):
  if not fileio.path(path).exists():
    return None
  return fileio.read_json(path)


def load_config(directory: str) -> ml_collections.ConfigDict:
  path = os.path.join(directory, 'config.json')
  if not fileio.path(path).exists():
    raise FileNotFoundError(f'no config.json in {directory!r}: not a trained VAE directory '
                            '(run the vae stage first)')
  return ml_collections.ConfigDict(fileio.read_json(path))


def load_vae(vae_dir: str, step: int | None = None):
  """Rebuilds `(module, params)` from vae_dir/config.json and its latest (or given) checkpoint."""
  if not fileio.path(vae_dir).is_dir():
    raise FileNotFoundError(f'VAE directory {vae_dir!r} does not exist (run the vae stage first)')
  config = load_config(vae_dir)
  ckpt_dir = os.path.join(fileio.absolute(vae_dir), CHECKPOINT_SUBDIR)
  if not fileio.path(ckpt_dir).is_dir():
    raise FileNotFoundError(f'no checkpoints in {ckpt_dir!r} (run the vae stage first)')
  module = vae_model.from_config(config.vae)
  mgr = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(read_only=True))
  step = mgr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no finished checkpoint in {ckpt_dir!r} (run the vae stage first)')
  res = int(config.data.resolution)
  target = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 1, res, res, 3)))
  restored = mgr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(_abstract(target))))
  mgr.close()
  return module, restored['params']
