"""Device mesh and logical-axis sharding (MaxText style: the rules live in config.mesh).

One mesh with axes ('data', 'fsdp', 'tensor') and Auto axis types, so GSPMD propagates
shardings from the logical annotations on the parameters (Explicit axis types would demand
`out_sharding` on every contraction over a sharded dim). The batch dim is split over
('data', 'fsdp'); parameters are split by the rules table, e.g. embed -> fsdp, mlp -> tensor.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
  """Resolves config.mesh.{data,fsdp,tensor} (one of them may be -1 = remaining devices)."""
  sizes = [int(mesh_config[a]) for a in MESH_AXES]
  free = [i for i, s in enumerate(sizes) if s == -1]
  if len(free) > 1:
    raise ValueError(f'config.mesh: at most one of {MESH_AXES} may be -1, got {sizes}')
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f'config.mesh sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}')
  known = int(np.prod([s for s in sizes if s != -1]))
  if free:
    if num_devices % known:
      raise ValueError(f'config.mesh {dict(zip(MESH_AXES, sizes))}: {num_devices} devices are '
                       f'not divisible by the fixed axes (product {known})')
    sizes[free[0]] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f'config.mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} '
                     f'devices but {num_devices} are available')
  return tuple(sizes)


def make_mesh(mesh_config, devices: Sequence[Any] | None = None) -> Mesh:
  """Mesh with axes ('data', 'fsdp', 'tensor'), Auto axis types, from config.mesh.

  On TPU the device order follows the hardware (`device_grid`): ICI within a slice, DCN across
  slices, and an axis may span part of a physical axis (fsdp=8 on a 16x16 v6e).
  """
  devices = list(jax.devices()) if devices is None else list(devices)
  num_slices = count_slices(devices)
  # config.mesh describes one slice; slices add data parallelism (over DCN).
  data, fsdp, tensor = mesh_shape(mesh_config, len(devices) // num_slices)
  shape = (data * num_slices, fsdp, tensor)
  return Mesh(device_grid(shape, devices), MESH_AXES,
              axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def count_slices(devices: Sequence[Any]) -> int:
  """Number of TPU slices among `devices` (1 off TPU)."""
  return len({getattr(d, 'slice_index', 0) for d in devices})


def dcn_shape(shape: Sequence[int], num_slices: int) -> tuple[int, ...]:
  """How `num_slices` slices split the mesh `shape`: across 'data' (data parallelism over the
  slow network: one gradient all-reduce per step crosses it)."""
  if shape[0] % num_slices:
    raise ValueError(f'mesh {dict(zip(MESH_AXES, shape))} cannot be split over {num_slices} '
                     'slices: the data axis must be a multiple of the slice count')
  return (num_slices,) + (1,) * (len(shape) - 1)


def device_grid(shape: Sequence[int], devices: Sequence[Any]) -> np.ndarray:
  """`devices` arranged as an array of `shape` that maps mesh axes onto the interconnect."""
  from jax.experimental import mesh_utils  # pylint: disable=import-outside-toplevel
  shape = tuple(int(s) for s in shape)
  if devices[0].platform != 'tpu':
    return jax.make_mesh(shape, MESH_AXES[:len(shape)], devices=devices).devices
  num_slices = count_slices(devices)
  if num_slices > 1:
    dcn = dcn_shape(shape, num_slices)
    ici = tuple(s // d for s, d in zip(shape, dcn))
    return mesh_utils.create_hybrid_device_mesh(ici, dcn, devices,
                                                allow_split_physical_axes=True)
  return mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)


def logical_rules(mesh_config) -> tuple[tuple[str, Any], ...]:
  """config.mesh.rules as hashable tuples (JSON round trips turn tuples into lists)."""
  rules = []
  for rule in mesh_config.rules:
    name, target = rule
    if isinstance(target, list):
      target = tuple(target)
    if target is not None and not isinstance(target, (str, tuple)):
      raise ValueError(f'config.mesh.rules: target for {name!r} must be a mesh axis name, a '
                       f'tuple of them or None, got {target!r}')
    for axis in (target if isinstance(target, tuple) else (target,)):
      if axis is not None and axis not in MESH_AXES:
        raise ValueError(f'config.mesh.rules: {name!r} -> {axis!r} is not one of {MESH_AXES}')
    rules.append((str(name), target))
  return tuple(rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dim split over ('data', 'fsdp'); every other dim replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def tree_shardings(abstract_tree, mesh: Mesh, rules) -> Any:
  """NamedShardings for a (possibly nn.Partitioned-boxed) abstract pytree.

  Boxed leaves are mapped through the logical rules; plain leaves (step, RNG key, optimizer
  counters) are replicated. The result has the structure of the *unboxed* tree.
  """
  specs = nn.get_partition_spec(abstract_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_divisor(mesh: Mesh) -> int:
  """The global batch size must be a multiple of this (the batch axes' device count)."""
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def put_batch(batch: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """Host-local batch [B_local, ...] -> global jax.Array sharded over the batch axes.

  Single process: B_local is the global batch. Multi-process: each process passes its own
  slice (grain shards by process) and the global batch is the concatenation.
  """
  return jax.make_array_from_process_local_data(sharding, np.asarray(batch))


def data_parallel_mesh(devices: Sequence[Any] | None = None) -> Mesh:
  """The project's mesh with every device (default: all) on 'data' (pure data parallelism)."""
  return make_mesh({'data': -1, 'fsdp': 1, 'tensor': 1}, devices)


def replicate(tree, mesh: Mesh):
  """Same value on every device of `mesh` (each process passes its identical local copy)."""
  return jax.tree.map(lambda x: put_batch(x, replicated(mesh)), tree)


def local_copy(tree):
  """A replicated tree as arrays on this process's first device (for eval and pictures)."""
  return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)


def mesh_axes_of(name: str | None, rules) -> tuple[str, ...]:
  """The mesh axes a logical name maps to under `rules` (() when unmapped or None)."""
  for rule_name, target in rules:
    if rule_name == name:
      if target is None:
        return ()
      return (target,) if isinstance(target, str) else tuple(target)
  return ()


def logical_constraint(x: jax.Array, names: Sequence[str | None], rules) -> jax.Array:
  """`with_sharding_constraint` from logical names, under the mesh set by `jax.set_mesh`.

  A no-op without a mesh or rules (single-device calls). Mesh axes that do not divide their dim
  (an eval batch smaller than the pod) are dropped rather than padded, and an axis used by an
  earlier dim is not used twice.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not rules:
    return x
  if len(names) != x.ndim:
    raise ValueError(f'logical_constraint: {len(names)} names {tuple(names)} for a {x.ndim}-d '
                     f'array {x.shape}')
  used, spec = set(), []
  for size, name in zip(x.shape, names):
    kept = divisible_axes(size, mesh_axes_of(name, rules), mesh, used)
    used.update(kept)
    spec.append(kept if len(kept) > 1 else (kept[0] if kept else None))
  return jax.lax.with_sharding_constraint(x, P(*spec))


def divisible_axes(size: int, axes: Sequence[str], mesh, used=()) -> tuple[str, ...]:
  """The longest prefix of mesh `axes` whose sizes multiply to a divisor of `size`, stopping at
  an axis not in `mesh` or already `used` by another dim."""
  kept, prod = [], 1
  for a in axes:
    if a in used or a not in mesh.shape or size % (prod * mesh.shape[a]):
      break
    kept.append(a)
    prod *= mesh.shape[a]
  return tuple(kept)
