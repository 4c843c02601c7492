"""Orbax checkpoints of the whole TrainState in `{diffusion_dir}/checkpoints/<step>`.

Saves are atomic (orbax writes a temporary dir and renames it), optionally asynchronous
(config.train.async_checkpoints) and keep the newest config.train.keep_checkpoints. Restoring
uses the Trainer's abstract state, so arrays come back with this run's mesh shardings even if
the checkpoint was written under another mesh.
"""
import copy
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from maskvid import fileio
from maskvid import recovery
from maskvid import workdir as workdir_lib
from maskvid import sharding as sharding_lib
from maskvid.train import step as step_lib

CHECKPOINT_SUBDIR = 'checkpoints'


def checkpoint_dir(diffusion_dir: str) -> str:
  """Absolute local path or gs:// URI (orbax writes either) of the checkpoints."""
  return os.path.join(fileio.absolute(diffusion_dir), CHECKPOINT_SUBDIR)


def make_manager(diffusion_dir: str, config, read_only: bool = False) -> ocp.CheckpointManager:
  """CheckpointManager keeping config.train.keep_checkpoints steps (async per config)."""
  if read_only:
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0,
                                           enable_async_checkpointing=False)
  else:
    keep = int(config.train.keep_checkpoints)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep if keep > 0 else None, create=True,
        enable_async_checkpointing=bool(config.train.async_checkpoints))
  return ocp.CheckpointManager(checkpoint_dir(diffusion_dir), options=options)


def save(manager: ocp.CheckpointManager, state, force: bool = False) -> bool:
  """Saves `state` under its step; returns whether a save was started."""
  step = int(jax.device_get(state.step))
  if step in manager.all_steps():
    return False
  return manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                      force=force)


def restore_latest(manager: ocp.CheckpointManager, abstract_state,
                   move_aside: bool = True) -> Any | None:
  """The newest readable checkpoint restored onto `abstract_state`'s shardings, or None.

  An unreadable newer one is logged and (when `move_aside`) moved aside
  (`recovery.restore_newest_readable`); inference loads pass move_aside=False: read only.
  """
  def restore(step):
    logging.info('restoring checkpoint step %d from %s', step, manager.directory)
    return manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))['state']
  return recovery.restore_newest_readable(manager, restore, move_aside=move_aside)


def load_for_inference(diffusion_dir: str):
  """(config, module, ema_params) from a diffusion stage dir alone.

  The config comes from `diffusion_dir/config.json`, the module from `build_model(config)`,
  and the EMA params from the newest checkpoint, placed on a single device.
  Raises FileNotFoundError naming the directory when the config or a checkpoint is missing.
  """

  config_path = os.path.join(diffusion_dir, 'config.json')
  if not fileio.path(config_path).exists():
    raise FileNotFoundError(
        f'No diffusion run in {diffusion_dir!r}: {config_path} is missing. Train one with '
        '`python -m maskvid.main --config=configs/tiny.py --workdir=DIR` (job=diffusion).')
  config = workdir_lib.read_config(config_path)
  ckpt_dir = checkpoint_dir(diffusion_dir)
  if not fileio.path(ckpt_dir).is_dir():
    raise FileNotFoundError(f'No checkpoints in {diffusion_dir!r} ({ckpt_dir} is missing): '
                            'train the diffusion stage first.')
  manager = make_manager(diffusion_dir, config, read_only=True)
  if manager.latest_step() is None:
    raise FileNotFoundError(f'No finished checkpoint in {ckpt_dir!r}: train the diffusion stage '
                            'first (or wait for it to write one).')
  # One device, any batch size: inference does not need the training mesh.
  local = copy.deepcopy(config)
  local.mesh.data, local.mesh.fsdp, local.mesh.tensor = 1, 1, 1
  mesh = sharding_lib.make_mesh(local.mesh, devices=jax.devices()[:1])
  trainer = step_lib.Trainer(local, mesh=mesh)
  ema = restore_ema_params(manager, trainer.abstract_state.ema_params)
  manager.close()
  return config, trainer.module, ema


def restore_ema_params(manager: ocp.CheckpointManager, abstract_ema):
  """Only the EMA params of the newest readable checkpoint (orbax partial restore: the
  optimizer state and the raw params are never read); read only, nothing moved aside."""
  target = {'ema_params': abstract_ema}
  args = ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                restore_args=ocp.checkpoint_utils.construct_restore_args(target))

  def restore(step):
    with ocp.PyTreeCheckpointer() as reader:
      return reader.restore(os.path.join(str(manager.directory), str(step), 'state'),
                            args=args)['ema_params']
  return recovery.restore_newest_readable(manager, restore, move_aside=False)
