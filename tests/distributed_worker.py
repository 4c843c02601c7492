"""One process of the multi-process training check (driven by tests/test_distributed.py).

  python tests/distributed_worker.py --out=DIR --workdir=DIR [--coordinator=127.0.0.1:PORT
      --num_processes=2 --process_id=0]

Without --coordinator it is the single-process reference. JAX_PLATFORMS=cpu and XLA_FLAGS
(--xla_force_host_platform_device_count) come from the caller. The run: explicit
`maskvid.distributed.initialize`, the real `Trainer` (tiny model) on a ('data', 'fsdp', 'tensor')
= (2, 2, 2) mesh over all global devices, three steps fed through `prefetch_to_device` with this
process's rows of a fixed global batch, an orbax save + restore of the whole TrainState through
`maskvid.train.checkpoint`, one more step from the restored state, and with --eval the training
preview's completion (`preview.complete_clips` on replicated EMA params, 2 sampler steps).
Writes, per process, `DIR/result_<pid>.json` (losses, device counts) and
`DIR/completion_<pid>.npy`, and on process 0 `DIR/params.npz` (the gathered final params).
"""
from maskvid.sampling import preview
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GLOBAL_BATCH = 8
STEPS = 3


def tiny_config(args):
  from configs import default  # pylint: disable=g-import-not-at-top
  c = default.get_config()
  c.data.resolution = 16          # latents [T=4, 4, 4, 4] with the default 4x VAE
  c.data.clip_length = 4
  c.model.width = 32
  c.model.depth = 1               # compile time dominates this check; one block is enough
  c.model.num_heads = 2
  c.train.batch_size = GLOBAL_BATCH
  c.train.steps = 10
  c.train.warmup_steps = 1
  c.train.learning_rate = 1e-3
  c.train.async_checkpoints = True
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, 2, 2
  if args.coordinator:
    c.distributed.coordinator_address = args.coordinator
    c.distributed.num_processes = args.num_processes
    c.distributed.process_id = args.process_id
  return c


def _save_and_restore(workdir, trainer, state):
  """Orbax from every process into one shared directory, then restore onto the same shardings:
  (restored, its step, per-leaf equal, per-leaf sharding kept)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from maskvid import distributed  # pylint: disable=g-import-not-at-top
  from maskvid.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  manager = ckpt_lib.make_manager(workdir)
  assert ckpt_lib.save(manager, state, force=True)
  manager.wait_until_finished()
  distributed.sync('checkpoint-written')
  manager.close()
  manager = ckpt_lib.make_manager(workdir)
  restored = ckpt_lib.restore_latest(manager, trainer.abstract_state)
  manager.close()
  restored_step = int(jax.device_get(restored.step))
  same = jax.tree.map(
      lambda a, b: all(np.array_equal(x.data, y.data)
                       for x, y in zip(a.addressable_shards, b.addressable_shards)),
      state.params, restored.params)
  shardings_kept = jax.tree.map(lambda a, b: a.sharding == b.sharding, state.params,
                                restored.params)
  return restored, restored_step, same, shardings_kept


def _save_completion(config, trainer, restored, out, pid):
  """What train_and_evaluate's evaluate() does on every process: sample with replicated EMA
  params from host arrays, then read the result back with np.asarray."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from maskvid.diffusion import mask_mixture as masks_lib  # pylint: disable=g-import-not-at-top
  config.sample.num_steps = 2
  gt = np.random.default_rng(7).standard_normal((2, *trainer.latent_shape)).astype(np.float32)
  known_mask = np.asarray(masks_lib.sample_known_mask(
      jax.random.key(5), 2, trainer.latent_shape[:3], tuple(config.model.patch_size),
      config.diffusion))
  completion, _ = preview.complete_clips(config, trainer.replicate(restored.ema_params),
                                         trainer.apply_fn, gt, known_mask, seed=6)
  np.save(os.path.join(out, f'completion_{pid}.npy'), np.asarray(completion))


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--out', required=True)
  p.add_argument('--workdir', required=True)
  p.add_argument('--coordinator', default='')
  p.add_argument('--num_processes', type=int, default=1)
  p.add_argument('--process_id', type=int, default=0)
  p.add_argument('--eval', action='store_true',
                 help='also run the train loop\'s eval completion on replicated EMA params')
  args = p.parse_args()
  config = tiny_config(args)

  from maskvid import distributed  # pylint: disable=g-import-not-at-top
  mode = distributed.initialize(config)   # before any other JAX call

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from maskvid.diffusion import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

  pid, nproc = jax.process_index(), jax.process_count()
  trainer = trainer_lib.Trainer(config)
  local_b = trainer.local_batch_size
  assert local_b == distributed.host_local_batch_size(GLOBAL_BATCH) == GLOBAL_BATCH // nproc

  # The same global batch for every layout; each process loads only its rows (like grain's
  # per-process shard), in process order along the batch axes.
  def global_batch(step):
    rng = np.random.default_rng(1000 + step)
    return rng.standard_normal((GLOBAL_BATCH, *trainer.latent_shape)).astype(np.float32)

  def local_batches(steps):
    for s in steps:
      yield global_batch(s)[pid * local_b:(pid + 1) * local_b]

  state = trainer.init(0)
  losses = []
  for batch in distributed.prefetch_to_device(local_batches(range(STEPS)), trainer.batch_sharding):
    assert batch.shape[0] == GLOBAL_BATCH and not (nproc > 1 and batch.is_fully_addressable)
    state, metrics = trainer.step(state, batch)
    losses.append(float(metrics['loss']))

  restored, restored_step, same, shardings_kept = _save_and_restore(args.workdir, trainer, state)
  del state
  restored, metrics = trainer.step(restored, next(local_batches([STEPS])))
  losses.append(float(metrics['loss']))

  params = multihost_utils.process_allgather(restored.params, tiled=True)
  flat = {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(params)}
  os.makedirs(args.out, exist_ok=True)
  if distributed.is_main_process():
    np.savez(os.path.join(args.out, 'params.npz'), **flat)
  if args.eval:
    _save_completion(config, trainer, restored, args.out, pid)

  sharded = sum(not x.sharding.is_fully_replicated for x in jax.tree.leaves(restored.params))
  result = {
      'mode': mode, 'process_index': pid, 'process_count': nproc,
      'local_devices': jax.local_device_count(), 'global_devices': jax.device_count(),
      'is_main': distributed.is_main_process(), 'losses': losses,
      'restored_step': restored_step, 'restored_equal': all(jax.tree.leaves(same)),
      'shardings_kept': all(jax.tree.leaves(shardings_kept)),
      'sharded_param_leaves': int(sharded), 'mesh': dict(trainer.mesh.shape),
  }
  with open(os.path.join(args.out, f'result_{pid}.json'), 'w') as f:
    json.dump(result, f)
  distributed.sync('done')  # no process exits while another still needs it for a collective


if __name__ == '__main__':
  main()
