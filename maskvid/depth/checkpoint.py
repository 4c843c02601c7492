"""Depth-net checkpoints: the module + optimiser a run builds, and restore for inference.

depth_dir/checkpoints/<step>/ holds {'params', 'opt_state'} (orbax, atomic); depth_dir/config.json
is the run config the module is rebuilt from.
"""
import os

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from maskvid import fileio
from maskvid import optim
from maskvid.depth import net as depth_net


def make_manager(depth_dir: str, keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(os.path.join(fileio.absolute(depth_dir), 'checkpoints'),
                               options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def init(config, abstract: bool = False):
  """(module, params, tx); abstract=True gives ShapeDtypeStructs (restore targets, no compile)."""
  module = depth_net.from_config(config.depth)
  res = int(config.depth.resolution)
  # rbg keys: threefry's init graph takes many seconds to compile on a busy CPU; rbg is cheap.
  init = lambda: module.init(jax.random.key(int(config.seed), impl='rbg'),
                             jnp.zeros((1, res, res, 3)))
  params = jax.eval_shape(init) if abstract else jax.jit(init)()
  tx = optim.make_optimizer(config.depth, 'config.depth')
  return module, params, tx


def restore_params(config, depth_dir: str):
  """(module, params) from the latest checkpoint in depth_dir/checkpoints."""
  module, params, tx = init(config, abstract=True)
  mngr = make_manager(depth_dir)
  step = mngr.latest_step()
  if step is None:
    raise FileNotFoundError(f'no depth checkpoint in {os.path.join(depth_dir, "checkpoints")}')
  target = {'params': params, 'opt_state': jax.eval_shape(tx.init, params)}
  restored = mngr.restore(step, args=ocp.args.StandardRestore(target))
  mngr.close()
  return module, restored['params']
