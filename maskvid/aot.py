"""The compile job: a config's programs compiled for a Cloud TPU slice, on any host.

    python -m maskvid.aot --config=configs/pretrain.py --topology=v5e-256 [--num_slices=2]
        [--out=aot.json] [--programs=train,sample,vae_encode] [--hbm_budget=0.85]

With libtpu installed (`make install` does it) `maskvid.topology` gives compile-only devices of
the slice; the job builds the run's own objects over a mesh of them from abstract shapes (nothing
is placed on a device) and compiles the jitted functions the run calls:
  train       `Trainer.step_fn` (the train step, state donated) at config.train.batch_size
  sample      `sampling.sampler.complete` (config.sample's options) at the eval batch, on the
              EMA params sharded as in training
  vae_encode  the latent cache's encoder (`vae.cache.posterior_mean_encoder`) on one chip, as
              the cache job runs it (one process, its first device, `cache.ENCODE_CLIPS` clips)
  vae_train, depth_train  (on request) the VAE's / depth net's own sharded step, data parallel
              over every chip as their stages run them
The real TPU compiler reports each program's bytes per chip (arguments, outputs, temporaries,
code; donated arguments counted once) or refuses a program that does not fit HBM. A program
over `hbm_budget` of HBM fails the job, which then prints one line naming what to change.

The mesh comes from config.mesh over the slice's chips (one axis may be -1: the rest), laid onto
the hardware by `sharding.make_mesh` (ICI within a slice, slices across 'data' over DCN). When
the batch axes (data x fsdp) outnumber the global batch, factors of 2 move from fsdp to tensor
(model parallelism) until they divide it; the report says so.

Step time and MFU are estimates from an explicit roofline (`maskvid.roofline`), not from XLA's cost
model (which counts a scanned layer stack once). See docs/scale_out.md.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import time
from typing import Any, Optional

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags

from maskvid import sharding as sharding_lib
from maskvid.bench import common as bench_common
from maskvid import roofline as roofline_lib
from maskvid import topology as topology_lib
from maskvid.model import model as model_lib
from maskvid.sampling import options as options_lib
from maskvid.sampling import sampler as sampler_lib
from maskvid.depth import train as depth_train_lib
from maskvid.diffusion import trainer as trainer_lib
from maskvid.vae import cache as cache_lib
from maskvid.vae import model as vae_model_lib
from maskvid.vae import train as vae_train_lib

PROGRAMS = ('train', 'sample', 'vae_encode', 'vae_train', 'depth_train')
DEFAULT_PROGRAMS = PROGRAMS[:3]   # what a diffusion pretraining run executes on the pod
GiB = topology_lib.GiB


class DoesNotFit(RuntimeError):
  """A program over the HBM budget; the message is the one line to act on."""


# ----------------------------------------------------------------------------- mesh
def plan_mesh(config, chips_per_slice: int, num_slices: int = 1) -> tuple[dict, str]:
  """config.mesh (one slice) resolved over `chips_per_slice`, with fsdp traded for tensor until
  the batch axes (data x fsdp, data counting every slice) divide the global batch.

  Returns (per-slice {'data', 'fsdp', 'tensor'} for config.mesh, a note; '' when nothing moved).
  """
  data, fsdp, tensor = sharding_lib.mesh_shape(config.mesh, chips_per_slice)
  batch = int(config.train.batch_size)
  heads = int(config.model.num_heads)
  moved = 1
  while batch % (data * num_slices * fsdp):
    if fsdp % 2 or heads % (tensor * 2):
      raise DoesNotFit(
          f'config.train.batch_size={batch} is not a multiple of the batch axes data x fsdp = '
          f'{data * num_slices} x {fsdp}, and model.num_heads={heads} cannot take a larger tensor '
          f'axis: raise config.train.batch_size to a multiple of {data * num_slices * fsdp} or '
          'set config.mesh.*')
    fsdp, tensor, moved = fsdp // 2, tensor * 2, moved * 2
  note = f'batch {batch} < chips: {moved}x of fsdp moved to tensor' if moved > 1 else ''
  return {'data': data, 'fsdp': fsdp, 'tensor': tensor}, note


def with_mesh(config, mesh_sizes: dict) -> ml_collections.ConfigDict:
  """A copy of `config` with config.mesh.{data,fsdp,tensor} set."""
  config = ml_collections.ConfigDict(config.to_dict())
  for k, v in mesh_sizes.items():
    config.mesh[k] = int(v)
  return config


# ----------------------------------------------------------------------------- memory
# The TPU compiler's two ways of saying a program exceeds HBM (the first number is what it needs).
_USED = re.compile(r'Used ([\d.]+)([KMGT]) of [\d.]+[KMGT] hbm'
                   r'|\(([\d.]+)([KMGT])\) exceeds available HBM')
_UNIT = {'K': 1024, 'M': 1024 ** 2, 'G': 1024 ** 3, 'T': 1024 ** 4}


def compile_measured(lowered) -> tuple[Optional[Any], dict, str]:
  """(compiled or None, memory, error line) for a lowered program."""
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except  (XlaRuntimeError RESOURCE_EXHAUSTED)
    text = str(e)
    m = _USED.search(text)
    if 'RESOURCE_EXHAUSTED' not in text or not m:
      raise
    number, unit = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    used = float(number) * _UNIT[unit]
    return None, {'total': int(used)}, text.splitlines()[0][:300]
  return compiled, bench_common.compiled_memory(compiled), ''


# ----------------------------------------------------------------------------- programs
@dataclasses.dataclass
class Program:
  name: str
  lowered: Any
  note: str = ''


def train_program(trainer: trainer_lib.Trainer) -> Program:
  """The Trainer's own jitted step, lowered on its abstract state and batch."""
  return Program('train', trainer.lower_step(),
                 f'batch {trainer.global_batch_size}, state donated')


def eval_batch(config, mesh) -> int:
  """config.eval.batch_size rounded up to a multiple of the batch axes (every chip gets clips)."""
  div = sharding_lib.batch_divisor(mesh)
  b = int(config.eval.batch_size)
  return -(-b // div) * div


def sample_program(config, trainer: trainer_lib.Trainer) -> Program:
  """`sampler.complete` with config.sample's options on the EMA params, as the eval calls it."""
  b = eval_batch(config, trainer.mesh)
  T, h, w, c = trainer.latent_shape
  batch = trainer.batch_sharding
  known = jax.ShapeDtypeStruct((b, T, h, w, c), jnp.float32, sharding=batch)
  mask = jax.ShapeDtypeStruct((b, T, h, w), jnp.bool_, sharding=batch)
  key = jax.eval_shape(lambda: jax.random.key(0))
  rng = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=sharding_lib.replicated(trainer.mesh))
  options = options_lib.sampler_options(config.sample)
  with trainer.context():
    lowered = sampler_lib.complete.lower(trainer.apply_fn, trainer.abstract_state.ema_params,
                                         known, mask, rng, **options)
  return Program('sample', lowered, f'batch {b}, {options["num_steps"]} {options["solver"]} '
                                    f'steps, guidance {options["guidance"]}')


def vae_encode_program(config, device) -> Program:
  """The latent cache's encoder on one chip at `cache.ENCODE_CLIPS` clips of the run's frames."""
  module = vae_model_lib.from_config(config.vae)
  res, frames_n = int(config.data.resolution), int(config.data.clip_length)
  single = jax.sharding.SingleDeviceSharding(device)
  frames = jax.ShapeDtypeStruct((cache_lib.ENCODE_CLIPS, frames_n, res, res, 3), jnp.float32,
                                sharding=single)
  params = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), frames)
  params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=single), params)
  lowered = cache_lib.posterior_mean_encoder(module).lower(params, frames)
  return Program('vae_encode', lowered, f'{cache_lib.ENCODE_CLIPS} clips of {frames_n} x {res}^2')


def image_net_program(name: str, config, devices) -> Program:
  """The VAE's or the depth net's own sharded step (`make_trainer`), data parallel over every
  chip as its stage runs it."""
  mesh = sharding_lib.data_parallel_mesh(devices)
  lib, batch = ((vae_train_lib, config.vae.train.batch_size) if name == 'vae_train'
                else (depth_train_lib, config.depth.batch_size))
  _, trainer = lib.make_trainer(config, mesh)
  return Program(name, trainer.lower(), f'batch {batch} over {mesh.size} chips, '
                                        f'{trainer.num_params / 1e6:.1f}M params replicated')


# ----------------------------------------------------------------------------- the job
def fix_for(config, name: str, mem: dict, budget_bytes: float, mesh_sizes: dict) -> str:
  """One line: what to change so that program `name` fits."""
  need = mem['total'] / GiB
  have = budget_bytes / GiB
  head = f'{name} needs {need:.2f} GiB per chip, over the {have:.2f} GiB budget: '
  if name == 'vae_encode':
    return head + 'lower maskvid.vae.cache.ENCODE_CLIPS or config.data.resolution'
  if name in ('vae_train', 'depth_train'):
    key = 'config.vae.train.batch_size' if name == 'vae_train' else 'config.depth.batch_size'
    return head + f'lower {key} (its frames are split over every chip)'
  if name == 'sample':
    return head + 'lower config.eval.batch_size or set config.model.attention=flash'
  if config.model.attention == 'xla':
    return head + 'set config.model.attention=flash (splash attention: no [N, N] logits)'
  if config.model.remat != 'full':
    return head + 'set config.model.remat=full'
  per_chip = int(config.train.batch_size) // (mesh_sizes['data'] * mesh_sizes['fsdp'])
  if per_chip > 1:
    return head + (f'lower config.train.batch_size (now {per_chip} clips per chip) or use more '
                   'chips')
  return head + ('set config.mesh.tensor=2 (model parallelism) or a smaller config.model.width/'
                 'depth')


def compile_for(config, topology: str, num_slices: int = 1, programs=DEFAULT_PROGRAMS,
                hbm_budget: float = 0.85, fit: bool = True) -> dict:
  """Compiles `programs` of `config` for `num_slices` x `topology`; returns the report.

  fit: when the train step is over budget with several clips per chip, retry it with gradient
  accumulation (config.train.microbatches, powers of two from a linear estimate) and keep the
  first that fits. What the job changed is in `report['overrides']`: the run must use them
  (`launch/tpu_pod.sh` passes them on). Raises DoesNotFit (with the report as `.report`) when a
  program is over budget.
  """
  unknown = [p for p in programs if p not in PROGRAMS]
  if unknown:
    raise ValueError(f'--programs: unknown {unknown}; choose from {list(PROGRAMS)}')
  slice_ = topology_lib.parse(topology)
  devices = topology_lib.compile_only_devices(slice_, num_slices)
  sizes, note = plan_mesh(config, slice_.chips, num_slices)
  requested = dict(zip(sharding_lib.MESH_AXES, sharding_lib.mesh_shape(config.mesh, slice_.chips)))
  overrides = {f'mesh.{k}': v for k, v in sizes.items() if v != requested[k]}
  config = with_mesh(config, sizes)
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  trainer = trainer_lib.Trainer(config, mesh)
  hbm = slice_.chip.hbm_bytes
  budget = hbm_budget * hbm
  report = dict(
      topology=slice_.name, num_slices=num_slices, topology_name=slice_.topology_name,
      chips=len(devices), device_kind=devices[0].device_kind, hbm_bytes=hbm,
      hbm_budget=hbm_budget, mesh=dict(mesh.shape), mesh_note=note, params=trainer.num_params,
      global_batch=trainer.global_batch_size,
      tokens_per_step=trainer.global_batch_size * model_lib.num_tokens(config),
      attention=trainer.module.attention, remat=config.model.remat, programs={})

  def measure(name, program, t0):
    compiled, mem, error = compile_measured(program.lowered)
    entry = dict(bytes_per_chip=mem['total'], memory=mem, hbm_bytes=hbm,
                 hbm_fraction=mem['total'] / hbm,
                 fits=bool(compiled is not None and mem['total'] <= budget),
                 compile_s=round(time.time() - t0, 1), note=program.note)
    if error:
      entry['error'] = error
    return entry

  failures = []
  for name in programs:
    t0 = time.time()
    if name == 'train':
      entry = measure(name, train_program(trainer), t0)
      per_chip = trainer.global_batch_size // sharding_lib.batch_divisor(mesh)
      k = trainer_lib.microbatches(config, trainer.global_batch_size)
      if fit and not entry['fits'] and per_chip > k:
        mem = entry['memory']
        fixed = mem.get('argument', 0) + mem.get('output', 0) + mem.get('code', 0)
        scale = mem.get('temp', mem['total']) / max(budget - fixed, 1)
        k = min(per_chip, max(2 * k, 2 ** math.ceil(math.log2(max(scale * k, 1)))))
        while per_chip % k == 0:
          config.train.microbatches = k
          trainer = trainer_lib.Trainer(config, mesh)
          entry = measure(name, train_program(trainer), t0)
          if entry['fits'] or k == per_chip:
            break
          k *= 2
        if entry['fits']:
          overrides['train.microbatches'] = k
      entry['microbatches'] = trainer_lib.microbatches(config, trainer.global_batch_size)
      entry.update(roofline_lib.train_step(config, dict(mesh.shape), num_slices, slice_,
                                           trainer.num_params))
    elif name == 'sample':
      entry = measure(name, sample_program(config, trainer), t0)
    elif name == 'vae_encode':
      entry = measure(name, vae_encode_program(config, devices[0]), t0)
    else:
      entry = measure(name, image_net_program(name, config, devices), t0)
    report['programs'][name] = entry
    if not entry['fits']:
      failures.append(fix_for(config, name, entry['memory'], budget, dict(mesh.shape)))
  report['overrides'] = [f'--config.{k}={v}' for k, v in overrides.items()]
  if failures:
    err = DoesNotFit(f'{slice_.name} x {num_slices}: ' + failures[0])
    err.report = report
    raise err
  return report


def format_report(report: dict) -> str:
  """The report as a table (one row per program) plus the mesh and the train estimate."""
  lines = [f"{report['topology']} x {report['num_slices']} ({report['topology_name']}, "
           f"{report['chips']} chips, {report['hbm_bytes'] / GiB:.0f} GiB HBM each); mesh "
           f"{report['mesh']}{' (' + report['mesh_note'] + ')' if report['mesh_note'] else ''}; "
           f"{report['params'] / 1e6:.1f}M params; batch {report['global_batch']}, "
           f"{report['tokens_per_step']:,} tokens/step; attention {report['attention']}, remat "
           f"{report['remat']}",
           '| program | args GiB | temp GiB | out GiB | total GiB/chip | % HBM | fits | compile s |',
           '|---|---|---|---|---|---|---|---|']
  for name, e in report['programs'].items():
    m = e['memory']
    g = lambda k: f"{m[k] / GiB:.2f}" if k in m else '-'
    lines.append(f"| {name} | {g('argument')} | {g('temp')} | {g('output')} | "
                 f"{e['bytes_per_chip'] / GiB:.2f} | {100 * e['hbm_fraction']:.1f} | "
                 f"{'yes' if e['fits'] else 'NO'} | {e['compile_s']} |")
  train = report['programs'].get('train')
  if train and 'est_step_s' in train:
    lines.append(
        f"train step estimate ({train['bound']}-bound): {train['est_step_s']:.3f} s "
        f"(perfect overlap {train['est_step_s_overlap']:.3f} s), MFU {100 * train['est_mfu']:.1f}% "
        f"(perfect overlap {100 * train['est_mfu_overlap']:.1f}%), {train['clips_per_s']:.1f} "
        "clips/s; "
        f"compute {train['compute_s']:.3f} s, HBM {train['hbm_s']:.3f} s, ICI "
        f"{train['ici_s']:.3f} s, DCN {train['dcn_s']:.3f} s per step; microbatches "
        f"{train.get('microbatches', 1)}")
  if report.get('overrides'):
    lines.append('run with: ' + ' '.join(report['overrides']))
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def define_flags():
  config_flags.DEFINE_config_file('config', None, 'Run config (a configs/*.py file).',
                                  lock_config=False)
  flags.DEFINE_string('topology', None, 'Cloud TPU accelerator type: v4-N, v5e-N, v5p-N, v6e-N.')
  flags.DEFINE_integer('num_slices', 1, 'Slices joined over DCN (multislice).')
  flags.DEFINE_string('out', '', 'Write the report as JSON here.')
  flags.DEFINE_list('programs', list(DEFAULT_PROGRAMS),
                    f'Which of {list(PROGRAMS)} to compile.')
  flags.DEFINE_float('hbm_budget', 0.85, 'A program over this fraction of HBM fails the job.')
  flags.DEFINE_bool('fit', True, 'Retry an over-budget train step with gradient accumulation.')
  flags.mark_flags_as_required(['config', 'topology'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  report, code = None, 0
  try:
    report = compile_for(FLAGS.config, FLAGS.topology, FLAGS.num_slices, tuple(FLAGS.programs),
                         FLAGS.hbm_budget, FLAGS.fit)
  except DoesNotFit as e:
    report, code = getattr(e, 'report', None), 1
    message = f'maskvid.aot: does not fit: {e}'
  except (ValueError, RuntimeError) as e:
    print(f'maskvid.aot: {str(e).splitlines()[0]}', file=sys.stderr)
    sys.exit(2)
  if report is not None:
    print(format_report(report))
    if FLAGS.out:
      with open(FLAGS.out, 'w') as f:
        json.dump(report, f, indent=1, default=float)
  if code:
    print(message, file=sys.stderr)
  sys.exit(code)


if __name__ == '__main__':
  define_flags()
  app.run(main)
