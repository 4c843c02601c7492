"""One sharded step builder for every trainer (diffusion transformer, VAE, depth net).

A trainer supplies two pure functions and the shape of its global batch:
  init_state(seed int32 []) -> TrainState   (params may be nn.Partitioned-boxed: logical axes)
  step(state, batch) -> (state, metrics)    batch: a pytree of [B, ...] arrays
and `ShardedStep` makes them programs over a mesh:
  - state shardings from the params' logical axis names through `rules` (unboxed leaves, the
    step, the key and optimizer counters: replicated);
  - every batch leaf split over the batch axes ('data', 'fsdp') on its leading dim;
  - `init` and `step` jitted with these as explicit in/out shardings; `step` donates its state;
  - `lower` on abstract inputs: nothing is placed on devices, so the same jitted step compiles
    for compile-only TPU devices (`maskvid.aot`).
"""
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from maskvid import sharding as sharding_lib

StepFn = Callable[[Any, Any], tuple[Any, dict]]


class ShardedStep:
  """`init(seed)`, `step(state, batch)` and `lower()` of one trainer over `mesh`.

  Args:
    mesh: a ('data', 'fsdp', 'tensor') mesh.
    rules: logical axis rules (`sharding.logical_rules(config.mesh)`).
    init_state: `seed -> TrainState`, pure; it makes its keys from the traced seed.
    step: the pure train step.
    batch_shapes: pytree of `jax.ShapeDtypeStruct` (or arrays) of the *global* batch.
    compiler_options: XLA options of the step (e.g. the CPU optimisation level).
  """

  def __init__(self, mesh, rules, init_state: Callable[[jax.Array], Any], step: StepFn,
               batch_shapes, *, compiler_options: Mapping[str, Any] | None = None):
    self.mesh, self.rules = mesh, rules
    seed = jax.ShapeDtypeStruct((), jnp.int32)
    with self.context():
      boxed = jax.eval_shape(init_state, seed)
      self.state_shardings = sharding_lib.tree_shardings(boxed, mesh, rules)
    self.abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        nn.unbox(boxed), self.state_shardings)
    self.batch_sharding = sharding_lib.batch_sharding(mesh)
    self.abstract_batch = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self.batch_sharding),
        batch_shapes)
    self._init = jax.jit(lambda s: nn.unbox(init_state(s)), out_shardings=self.state_shardings)
    self._step = jax.jit(step, in_shardings=(self.state_shardings, self.batch_sharding),
                         out_shardings=(self.state_shardings, sharding_lib.replicated(mesh)),
                         donate_argnums=(0,), compiler_options=dict(compiler_options or {}) or None)

  def context(self):
    """The mesh, set while tracing and running (`jax.set_mesh`)."""
    return jax.set_mesh(self.mesh)

  def init(self, seed: int):
    """Fresh sharded state; its values depend only on `seed`, not on the mesh."""
    with self.context():
      return self._init(jnp.int32(seed))

  def put_batch(self, local_batch):
    """This process's batch (a pytree of [B_local, ...]) as global arrays split over the batch
    axes; arrays already sharded so pass through."""
    def put(x):
      if isinstance(x, jax.Array) and x.sharding == self.batch_sharding:
        return x
      return sharding_lib.put_batch(np.asarray(x), self.batch_sharding)
    return jax.tree.map(put, local_batch)

  def step(self, state, local_batch):
    """One sharded step. `state` is donated: do not reuse it after the call."""
    batch = self.put_batch(local_batch)
    with self.context():
      return self._step(state, batch)

  @property
  def step_fn(self):
    """The jitted step itself: `(state, batch) -> (state, metrics)`."""
    return self._step

  def lower(self, state=None, batch=None):
    """The step lowered on `abstract_state` / `abstract_batch` (default) or on given values;
    `.compile()` it for memory and cost analysis. Places nothing on devices."""
    state = self.abstract_state if state is None else state
    batch = self.abstract_batch if batch is None else batch
    with self.context():
      return self._step.lower(state, batch)

  def replicate(self, tree):
    """A copy of `tree` replicated on every device of the mesh."""
    with self.context():
      return jax.jit(lambda x: x, out_shardings=sharding_lib.replicated(self.mesh))(tree)

  @property
  def num_params(self) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(self.abstract_state.params)))
