"""VAE checkpoints: the train state, atomic orbax saves, restore, and `load_vae` for inference.

vae_dir/checkpoints/<step>/ holds items `params` and `opt_state`; vae_dir/config.json (written by
the stage) is what `load_vae` rebuilds the module from.
"""
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from maskvid import fileio
from maskvid import sharding as sharding_lib
from maskvid import workdir
from maskvid.vae import model as vae_model

CHECKPOINT_SUBDIR = 'checkpoints'


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def make_manager(vae_dir: str, keep: int = 2) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=True)
  return ocp.CheckpointManager(os.path.join(fileio.absolute(vae_dir), CHECKPOINT_SUBDIR),
                               options=options)


def _abstract(tree, sharding=None):
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def save(mgr: ocp.CheckpointManager, state: TrainState) -> None:
  mgr.save(int(state.step), args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      opt_state=ocp.args.StandardSave(state.opt_state)), force=True)


def restore(mgr: ocp.CheckpointManager, step: int, target: TrainState,
            mesh: Mesh) -> TrainState:
  sharding = sharding_lib.replicated(mesh)
  restored = mgr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(_abstract(target.params, sharding)),
      opt_state=ocp.args.StandardRestore(_abstract(target.opt_state, sharding))))
  return TrainState(step=sharding_lib.replicate(np.int32(step), mesh), params=restored['params'],
                    opt_state=restored['opt_state'])


def load_vae(vae_dir: str, step: int | None = None):
  """Rebuilds `(module, params)` from vae_dir/config.json and its latest (or given) checkpoint."""
  if not fileio.path(vae_dir).is_dir():
    raise FileNotFoundError(f'VAE directory {vae_dir!r} does not exist (run the vae stage first)')
  config = workdir.load_config(vae_dir, 'VAE')
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
