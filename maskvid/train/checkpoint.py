"""Orbax checkpoints of a whole TrainState, for every trainer: `{run_dir}/checkpoints/<step>/state`.

Saves are atomic (orbax writes a temporary dir and renames it), optionally asynchronous, and
keep the newest `keep`. Restoring uses the trainer's abstract state, so arrays come back with
this run's shardings even if the checkpoint was written under another mesh. Inference reads one
subtree (`params` or `ema_params`) without touching the optimizer state.
"""
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from maskvid import fileio
from maskvid import recovery

CHECKPOINT_SUBDIR = 'checkpoints'
STATE_ITEM = 'state'


def checkpoint_dir(run_dir: str) -> str:
  """Absolute local path or gs:// URI (orbax writes either) of the checkpoints."""
  return os.path.join(fileio.absolute(run_dir), CHECKPOINT_SUBDIR)


def make_manager(run_dir: str, *, keep: int = 2, async_save: bool = False,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """CheckpointManager of `run_dir/checkpoints` keeping the newest `keep` steps (0: all)."""
  if read_only:
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0,
                                           enable_async_checkpointing=False)
  else:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep if keep > 0 else None, create=True,
                                           enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(checkpoint_dir(run_dir), options=options)


def save(manager: ocp.CheckpointManager, state, force: bool = False) -> bool:
  """Saves `state` under its step; returns whether a save was started."""
  step = int(jax.device_get(state.step))
  if step in manager.all_steps():
    return False
  return manager.save(step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state)}),
                      force=force)


def restore_latest(manager: ocp.CheckpointManager, abstract_state,
                   move_aside: bool = True) -> Any | None:
  """The newest readable checkpoint restored onto `abstract_state`'s shardings, or None.

  An unreadable newer one is logged and (when `move_aside`) moved aside
  (`recovery.restore_newest_readable`); inference loads pass move_aside=False: read only.
  """
  def restore(step):
    logging.info('restoring checkpoint step %d from %s', step, manager.directory)
    return manager.restore(step, args=ocp.args.Composite(
        **{STATE_ITEM: ocp.args.StandardRestore(abstract_state)}))[STATE_ITEM]
  return recovery.restore_newest_readable(manager, restore, move_aside=move_aside)


def restore_subtree(run_dir: str, name: str, abstract, what: str = 'run') -> Any:
  """State field `name` ('params' or 'ema_params') of the newest readable checkpoint of
  `run_dir`, onto `abstract`'s shardings (orbax partial restore: nothing else is read). Leaves
  of `abstract` without a sharding (e.g. straight from `jax.eval_shape`) go to this process's
  first device: what inference loads.

  Read only. Raises FileNotFoundError naming the directory when there is no checkpoint.
  """
  ckpt_dir = checkpoint_dir(run_dir)
  if not fileio.path(ckpt_dir).is_dir():
    raise FileNotFoundError(f'no checkpoints in {run_dir!r} ({ckpt_dir} is missing): train the '
                            f'{what} first')
  manager = make_manager(run_dir, read_only=True)
  if manager.latest_step() is None:
    raise FileNotFoundError(f'no finished checkpoint in {ckpt_dir!r}: train the {what} first '
                            '(or wait for it to write one)')
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = {name: jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, 'sharding', None)
                                     or device), abstract)}
  args = ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                restore_args=ocp.checkpoint_utils.construct_restore_args(target))

  def restore(step):
    with ocp.PyTreeCheckpointer() as reader:
      return reader.restore(os.path.join(str(manager.directory), str(step), STATE_ITEM),
                            args=args)[name]
  try:
    return recovery.restore_newest_readable(manager, restore, move_aside=False)
  finally:
    manager.close()
