"""Cloud TPU slices by the names Cloud TPU sells them, and their compile-only devices.

`parse('v5e-256')` -> `Slice` (generation, chips, physical grid, chip spec). Names count what
Cloud TPU counts: TensorCores for v4 and v5p (two per chip: v5p-128 is 64 chips), chips for v5e
and v6e. `compile_only_devices(slice, num_slices)` gives the devices of that topology from libtpu
(`jax.experimental.topologies`) on any host, CPU included: programs lowered for a mesh of them
compile with the real TPU compiler, and nothing can be placed on them.

The chip numbers (HBM, bf16 peak, HBM and ICI bandwidth) are Cloud TPU's published per-chip
figures; DCN is assumed 25 GB/s per host (a 200 Gbps NIC), hosts of 4 chips. They feed the
roofline estimates of `maskvid.roofline` (the compile job) and nothing else.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re

import jax

GiB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str              # generation as in the accelerator type: v4 | v5e | v5p | v6e
  device_kind: str       # what jax reports
  hbm_bytes: int
  peak_flops: float      # dense bf16 FLOP/s
  hbm_bw: float          # bytes/s
  ici_bw: float          # bytes/s per chip, all links together, one direction
  cores_per_chip: int    # 2 where the accelerator type counts TensorCores
  dims: int              # physical torus dimensions


CHIPS = {
    'v4': Chip('v4', 'TPU v4', 32 * GiB, 275e12, 1228e9, 300e9, 2, 3),
    'v5e': Chip('v5e', 'TPU v5 lite', 16 * GiB, 197e12, 819e9, 200e9, 1, 2),
    'v5p': Chip('v5p', 'TPU v5', 95 * GiB, 459e12, 2765e9, 600e9, 2, 3),
    'v6e': Chip('v6e', 'TPU v6 lite', 32 * GiB, 918e12, 1640e9, 448e9, 1, 2),
}
ALIASES = {'v5litepod': 'v5e', 'v6litepod': 'v6e'}
DCN_BW_PER_HOST = 25e9
CHIPS_PER_HOST = 4


@dataclasses.dataclass(frozen=True)
class Slice:
  name: str              # e.g. 'v5e-256'
  chip: Chip
  chips: int
  grid: tuple[int, ...]  # physical chip grid, e.g. (16, 16)

  @property
  def topology_name(self) -> str:
    return f'{self.chip.name}:' + 'x'.join(str(g) for g in self.grid)

  @property
  def hosts(self) -> int:
    return max(1, self.chips // CHIPS_PER_HOST)


def _grid(chips: int, dims: int) -> tuple[int, ...]:
  """Power-of-two chip counts as Cloud TPU lays them out (2-D: 16x16; 3-D: 4x4x8)."""
  if chips < 1 or chips & (chips - 1):
    raise ValueError(f'chip count {chips} is not a power of two')
  if dims == 2:
    grid = [1, 1]
    k = 0
    while grid[0] * grid[1] < chips:
      grid[k % 2] *= 2
      k += 1
    return tuple(sorted(grid))
  if chips < 4:
    return (chips, 1, 1)
  grid, k = [2, 2, 1], 2           # 2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, 4x4x8, 4x8x8, 8x8x8, ...
  while grid[0] * grid[1] * grid[2] < chips:
    grid[k] *= 2
    k = 2 if grid[2] == 2 and grid[0] == 2 and grid[1] == 2 else (k - 1) % 3
  return tuple(grid)


def parse(name: str) -> Slice:
  """'v5e-256' | 'v5litepod-16' | 'v5p-128' | 'v6e-64' | 'v4-32' -> Slice."""
  m = re.fullmatch(r'(v\d+[a-z]*)-(\d+)', name.strip())
  if not m:
    raise ValueError(f'--topology must look like v5e-256, v5p-128, v6e-64 or v4-32 (Cloud TPU '
                     f'accelerator types), got {name!r}')
  gen = ALIASES.get(m.group(1), m.group(1))
  if gen not in CHIPS:
    raise ValueError(f'--topology {name!r}: unknown TPU generation {m.group(1)!r} (one of '
                     f'{sorted(CHIPS)})')
  chip = CHIPS[gen]
  n = int(m.group(2))
  if n % chip.cores_per_chip:
    raise ValueError(f'--topology {name!r}: {gen} types count TensorCores ({chip.cores_per_chip} '
                     'per chip); the number must be even')
  chips = n // chip.cores_per_chip
  try:
    grid = _grid(chips, chip.dims)
  except ValueError as e:
    raise ValueError(f'--topology {name!r}: {e}') from None
  return Slice(f'{gen}-{n}', chip, chips, grid)


def compile_only_devices(slice_: Slice, num_slices: int = 1) -> list:
  """The devices of `num_slices` x `slice_` from libtpu, for lowering and compiling only."""
  os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')   # no metadata server off Cloud
  # Compile-only: no chip is opened, so another process holding libtpu's lock is no conflict.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  kwargs = {'num_slices': int(num_slices)} if num_slices > 1 else {}
  if slice_.chip.cores_per_chip > 1:
    kwargs['chip_config_name'] = 'megacore'   # one device per chip, as the runtime shows it
  try:
    devices = list(topologies.get_topology_desc(topology_name=slice_.topology_name,
                                                platform='tpu', **kwargs).devices)
  except Exception as e:  # pylint: disable=broad-except
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if not _libtpu_installed():
      raise RuntimeError(
          'the TPU compiler (libtpu) is not installed: pip install "jax[tpu]==' + jax.__version__
          + '" (make install does this)') from None
    raise RuntimeError(f'cannot build the {slice_.topology_name} topology x {num_slices}: '
                       f'{text}') from None
  expected = slice_.chips * num_slices
  if len(devices) != expected:
    raise RuntimeError(f'{slice_.topology_name} x {num_slices} gave {len(devices)} devices, '
                       f'expected {expected} chips')
  return devices


def _libtpu_installed() -> bool:
  return importlib.util.find_spec('libtpu') is not None
