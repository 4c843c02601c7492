"""Trains the monocular DepthUNet on synthetic frames with ground-truth depth.

`python -m maskvid.main --config=configs/depth_tiny.py --workdir=DIR` (job 'depth') writes DIR/depth
(or config.paths.depth): config.json, checkpoints/ (orbax; params + optimizer state), clu
scalars, metrics.json. The net supplies its model and loss; state, sharded step, optimizer,
checkpoints and loop are the ones every trainer shares (`maskvid.train`, `maskvid.optim`).
Re-running resumes from the latest checkpoint and returns at once when `config.depth.steps` are
done. Load the result with `maskvid.depth.load_depth_estimator(DIR)`.
"""
import os
from typing import Optional

from absl import logging
from clu import metric_writers
import jax
import jax.numpy as jnp
import numpy as np

from maskvid import fileio
from maskvid import optim
from maskvid import sharding as sharding_lib
from maskvid.workdir import save_config, stage_dir
from maskvid.data import synthetic
from maskvid.data import scenes
from maskvid.depth import net as depth_net
from maskvid.depth.estimator import UNetDepthEstimator
from maskvid.train import checkpoint
from maskvid.train import loop as loop_lib
from maskvid.train import sharded as sharded_lib
from maskvid.train import state as state_lib


def render_frames(split: str, num_clips: int, frames_per_clip: int, resolution: int) -> dict:
  """Renders synthetic clips -> dict(rgb uint8 [N, H, W, 3], depth float32 [N, H, W])."""
  rgb, depth = [], []
  seeds = scenes.split_seeds(split, num_clips)
  for i, seed in enumerate(seeds):
    clip = synthetic.render_clip(int(seed), split, frames_per_clip, resolution, resolution)
    rgb.append(clip['rgb'])
    depth.append(clip['depth'])
    if (i + 1) % 10 == 0 or i + 1 == len(seeds):
      logging.info('depth data: rendered %d/%d %s clips', i + 1, len(seeds), split)
  return dict(rgb=np.concatenate(rgb), depth=np.concatenate(depth))


def _to_input(rgb_uint8):
  return rgb_uint8.astype(jnp.float32) / 127.5 - 1.0


def make_trainer(config, mesh=None) -> tuple[depth_net.DepthUNet, sharded_lib.ShardedStep]:
  """(module, ShardedStep) of the depth net over `mesh` (default: data parallel over all
  devices). The step's batch is {'rgb': uint8 [B, R, R, 3], 'depth': float32 [B, R, R]}."""
  dc = config.depth
  mesh = mesh if mesh is not None else sharding_lib.data_parallel_mesh()
  batch, res = int(dc.batch_size), int(dc.resolution)
  if batch % sharding_lib.batch_divisor(mesh):
    raise ValueError(f'config.depth.batch_size={batch} must be a multiple of the '
                     f'{sharding_lib.batch_divisor(mesh)} devices the batch is split over')
  module = depth_net.from_config(dc)
  tx = optim.make_optimizer(dc, 'config.depth')

  def init_state(seed):
    # rbg keys: threefry's init graph takes many seconds to compile on a busy CPU; rbg is cheap.
    params = module.init(jax.random.key(seed, impl='rbg'), jnp.zeros((1, res, res, 3)))
    return state_lib.create_state(params, tx, jax.random.key(seed), ema=False)

  def loss(params, batch, _):
    return depth_net.si_log_loss(module.apply(params, _to_input(batch['rgb'])), batch['depth'],
                                 float(dc.si_lambda)), {}

  step = state_lib.loss_step(loss, tx, schedule=optim.make_schedule(dc, 'config.depth'))
  shapes = {'rgb': jax.ShapeDtypeStruct((batch, res, res, 3), jnp.uint8),
            'depth': jax.ShapeDtypeStruct((batch, res, res), jnp.float32)}
  return module, sharded_lib.ShardedStep(mesh, (), init_state, step, shapes)


def depth_metrics(pred: np.ndarray, gt: np.ndarray, si_lambda: float) -> dict:
  """pred, gt: z-depth [N, H, W] -> si_log, abs_rel (raw / per-image median-scaled), delta1."""
  pred = np.maximum(pred.astype(np.float64), 1e-6)
  gt = gt.astype(np.float64)
  d = np.log(pred) - np.log(gt)
  si = np.mean(np.mean(d ** 2, (1, 2)) - si_lambda * np.mean(d, (1, 2)) ** 2)
  scaled = pred * (np.median(gt, (1, 2)) / np.median(pred, (1, 2)))[:, None, None]
  ratio = np.maximum(pred / gt, gt / pred)
  return dict(si_log=float(si), abs_rel=float(np.mean(np.abs(pred - gt) / gt)),
              abs_rel_median_scaled=float(np.mean(np.abs(scaled - gt) / gt)),
              delta1=float(np.mean(ratio < 1.25)))


def train_depth(config, workdir: str, *, train_data: Optional[dict] = None,
                eval_data: Optional[dict] = None) -> dict:
  """Trains (or resumes) the depth net into workdir/depth (config.paths.depth); returns metrics.

  train_data / eval_data: optional dict(rgb uint8 [N,H,W,3], depth [N,H,W]); by default
  `config.depth.train_clips` train and `eval_clips` test clips are rendered.
  Metrics: train losses at the first and last step, eval si_log / abs_rel / delta1.
  """
  dc = config.depth
  depth_dir = stage_dir(config, workdir, 'depth')
  fileio.makedirs(depth_dir)
  save_config(config, depth_dir)
  module, trainer = make_trainer(config)
  mngr = checkpoint.make_manager(depth_dir)
  state = checkpoint.restore_latest(mngr, trainer.abstract_state)
  if state is None:
    state = trainer.init(int(config.seed))
  else:
    logging.info('depth: resumed from step %d', int(state.step))
  start, steps = int(state.step), int(dc.steps)
  losses = []
  if start < steps:
    if train_data is None:
      train_data = render_frames('train', int(dc.train_clips), int(dc.frames_per_clip),
                                 int(dc.resolution))
    n = train_data['rgb'].shape[0]
    if n == 0:
      raise ValueError('depth training data is empty')

    def step_fn(state, i):
      rng = np.random.default_rng([int(config.seed), i])   # per step: resumes bit-exactly
      idx = rng.integers(0, n, int(dc.batch_size))
      rgb, depth = train_data['rgb'][idx], train_data['depth'][idx]
      if rng.uniform() < 0.5:  # horizontal flips keep depth valid and double the views
        rgb, depth = rgb[:, :, ::-1], depth[:, :, ::-1]
      state, metrics = trainer.step(state, {'rgb': rgb, 'depth': depth})
      losses.append(metrics['loss'])
      return state, metrics

    writer = metric_writers.create_default_writer(depth_dir,
                                                  just_logging=jax.process_index() > 0)
    state, _ = loop_lib.run(
        state, step_fn, loop_lib.Checkpoints(mngr, lambda s, _, force: checkpoint.save(
            mngr, s, force=force)), name='depth',
        start=start, steps=steps, params_of=lambda s: s.params, log_every=dc.log_every,
        checkpoint_every=dc.checkpoint_every, writer=writer)
    writer.flush()
    losses = [float(x) for x in jax.device_get(losses)]
  else:
    mngr.close()
  params = sharding_lib.local_copy(state.params)

  if eval_data is None:
    eval_data = render_frames('test', int(dc.eval_clips), int(dc.frames_per_clip),
                              int(dc.resolution))
  pred = UNetDepthEstimator(module, params).estimate(eval_data['rgb'])
  metrics = {f'eval/{k}': v for k, v in depth_metrics(pred, eval_data['depth'],
                                                      float(dc.si_lambda)).items()}
  if losses:
    metrics.update({'train/first_loss': losses[0], 'train/last_loss': losses[-1],
                    'train/loss_last10': float(np.mean(losses[-10:]))})
  metrics['steps'] = steps
  fileio.write_json_atomic(os.path.join(depth_dir, 'metrics.json'), metrics)
  logging.info('depth metrics: %s', metrics)
  return metrics

