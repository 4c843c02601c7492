"""The compile job (maskvid.aot): tiny programs compiled by the real TPU compiler on this host.

libtpu gives compile-only devices of any Cloud TPU topology; nothing runs on them. Each compile
of the tiny model takes seconds.
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import tiny
from maskvid import aot
from maskvid import sharding as sharding_lib
from maskvid import topology
from maskvid.model import attention as attention_lib
from maskvid.diffusion import trainer as trainer_lib

os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(**mesh):
  c = tiny.get_config()
  c.model.width, c.model.depth, c.model.num_heads = 64, 1, 2
  c.train.batch_size = 4
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
  for k, v in mesh.items():
    c.mesh[k] = v
  return c


@pytest.mark.parametrize('name,chips,grid', [
    ('v5e-4', 4, (2, 2)), ('v5e-256', 256, (16, 16)), ('v5litepod-16', 16, (4, 4)),
    ('v6e-256', 256, (16, 16)), ('v5p-8', 4, (2, 2, 1)), ('v5p-128', 64, (4, 4, 4)),
    ('v4-32', 16, (2, 2, 4))])
def test_topology_names_count_what_cloud_tpu_counts(name, chips, grid):
  s = topology.parse(name)
  assert (s.chips, s.grid) == (chips, grid)


@pytest.mark.parametrize('bad', ['v5e', 'v7x-8', 'v5p-7', 'v5e-12'])
def test_bad_topology_names_are_refused(bad):
  with pytest.raises(ValueError, match='topology'):
    topology.parse(bad)


@pytest.mark.parametrize('name,attention,programs', [
    ('v5e-4', 'flash', ('train',)),        # splash attention compiled into the TPU step
    ('v5p-8', 'xla', aot.DEFAULT_PROGRAMS),   # every program of a pretraining run
    pytest.param('v5p-8', 'xla', ('vae_train', 'depth_train'),   # the image nets' own steps
                 marks=pytest.mark.slow)])
def test_tiny_programs_compile_for_tpu_under_hbm(name, attention, programs):
  c = small_config(fsdp=2, tensor=2)
  c.model.attention, c.model.dtype = attention, 'bfloat16'
  c.data.resolution = 16                   # a small VAE (1, 2): its encoder compiles fast
  c.vae.channel_multipliers, c.vae.base_channels, c.vae.norm_groups = (1, 2), 8, 4
  c.vae.train.batch_size = c.depth.batch_size = 4     # frames split over the 4 chips
  c.depth.resolution, c.depth.base_channels, c.depth.channel_multipliers = 16, 8, (1, 2)
  report = aot.compile_for(c, name, programs=programs)
  for key in ('topology', 'chips', 'mesh', 'params', 'global_batch', 'programs', 'overrides'):
    assert key in report
  assert report['mesh'] == {'data': 1, 'fsdp': 2, 'tensor': 2} and report['overrides'] == []
  assert report['device_kind'] == topology.parse(name).chip.device_kind
  assert report['attention'] == ('splash' if attention == 'flash' else 'xla')
  assert tuple(report['programs']) == programs
  for entry in report['programs'].values():
    m = entry['memory']
    assert entry['fits'] and 0 < entry['bytes_per_chip'] < 0.01 * report['hbm_bytes']
    assert entry['bytes_per_chip'] == (m['argument'] + m['output'] - m['alias'] + m['temp']
                                       + m['code'])
    assert entry['hbm_bytes'] == topology.parse(name).chip.hbm_bytes
  for name in {'train', 'vae_train', 'depth_train'} & set(programs):
    assert report['programs'][name]['memory']['alias'] > 0     # the state is donated
  if 'train' in programs:
    train = report['programs']['train']
    assert 0 < train['est_mfu'] <= train['est_mfu_overlap'] <= 1
    assert {'model_flops_per_chip', 'est_step_s', 'est_mfu', 'est_method'} <= set(train)
  table = aot.format_report(report)
  assert all(f'| {p} |' in table for p in programs)


def test_a_program_over_hbm_is_refused_with_one_line(tmp_path):
  # 65,536 tokens per clip, one clip per chip: the XLA attention's [H, N, N] logits alone are
  # 32 GiB; gradient accumulation cannot split one clip.
  out = tmp_path / 'aot.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'maskvid.aot', '--config=configs/tiny.py', '--topology=v5e-4',
       '--programs=train', '--config.model.depth=1', '--config.model.width=64',
       '--config.model.num_heads=2', '--config.data.clip_length=16',
       '--config.data.num_frames=16', '--config.data.resolution=512',
       '--config.train.batch_size=4', f'--out={out}'],
      cwd=ROOT, capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': ROOT},
      timeout=300)
  assert proc.returncode == 1, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('maskvid.aot: does not fit: v5e-4 x 1: train needs')
  assert 'config.model.attention=flash' in last
  assert '| train |' in proc.stdout and '| NO |' in proc.stdout
  train = json.loads(out.read_text())['programs']['train']
  assert not train['fits'] and train['bytes_per_chip'] > 16 * 2**30


def test_the_job_chooses_gradient_accumulation_when_clips_per_chip_do_not_fit(monkeypatch):
  """The search over config.train.microbatches, against a stand-in compiler whose temporaries
  grow with the clips per microbatch (the real effect: docs/aot/v5e-16.txt, 16 clips per chip
  fit v5e-16 at 8 microbatches)."""
  gib = 2**30
  tried = []

  def program(trainer):
    k = trainer.config.train.microbatches
    tried.append(k)
    return aot.Program('train', lowered=16 // k, note='')   # clips per chip per microbatch

  def compile_measured(clips):
    mem = dict(argument=gib, output=gib, alias=gib, code=0, temp=int(clips * 3.5 * gib))
    mem['total'] = mem['argument'] + mem['output'] - mem['alias'] + mem['temp']
    return object(), mem, ''

  monkeypatch.setattr(aot, 'train_program', program)
  monkeypatch.setattr(aot, 'compile_measured', compile_measured)
  c = small_config()
  c.train.batch_size = 64                                    # 16 clips per chip on v5e-4
  c.model.attention, c.model.remat = 'flash', 'full'         # the other fixes already taken
  report = aot.compile_for(c, 'v5e-4', programs=('train',))
  train = report['programs']['train']
  # 16 clips x 3.5 GiB + 1 GiB: 57 GiB; within 0.85 x 16 GiB = 13.6 GiB: 3 clips, so k = 8
  # (2 clips, 8 GiB); the linear estimate goes there without trying 2 and 4.
  assert tried == [1, 8] and train['fits'] and train['microbatches'] == 8
  assert report['overrides'] == ['--config.train.microbatches=8']
  with pytest.raises(aot.DoesNotFit, match=r'lower config.train.batch_size \(now 16 clips'):
    aot.compile_for(c, 'v5e-4', programs=('train',), fit=False)


def test_two_slices_compile_on_a_hybrid_mesh():
  report = aot.compile_for(small_config(fsdp=2, tensor=2), 'v5e-4', num_slices=2,
                           programs=('train',))
  assert report['chips'] == 8 and report['mesh'] == {'data': 2, 'fsdp': 2, 'tensor': 2}
  assert report['programs']['train']['fits']
  assert report['programs']['train']['dcn_s'] > 0


def test_hybrid_mesh_puts_slices_on_data():
  devices = topology.compile_only_devices(topology.parse('v5e-4'), 2)
  mesh = sharding_lib.make_mesh({'data': 1, 'fsdp': -1, 'tensor': 1}, devices)
  assert dict(mesh.shape) == {'data': 2, 'fsdp': 4, 'tensor': 1}
  for i in range(2):   # each data row is one slice: FSDP collectives stay on ICI
    assert {d.slice_index for d in mesh.devices[i].flat} == {i}


def test_v6e_256_builds_a_mesh_that_splits_a_physical_axis():
  devices = topology.compile_only_devices(topology.parse('v6e-256'))
  mesh = sharding_lib.make_mesh({'data': -1, 'fsdp': 8, 'tensor': 1}, devices)
  assert dict(mesh.shape) == {'data': 32, 'fsdp': 8, 'tensor': 1}


def test_pod_larger_than_the_batch_moves_fsdp_to_tensor():
  c = small_config()
  c.train.batch_size = 4
  sizes, note = aot.plan_mesh(c, 4, num_slices=2)
  assert sizes == {'data': 1, 'fsdp': 2, 'tensor': 2} and 'tensor' in note
  c.model.num_heads = 1
  with pytest.raises(aot.DoesNotFit, match='config.train.batch_size'):
    aot.plan_mesh(c, 4, num_slices=2)


def test_the_compiled_step_is_the_trainers_own_function():
  devices = topology.compile_only_devices(topology.parse('v5e-4'))
  c = small_config(fsdp=4)
  trainer = trainer_lib.Trainer(c, sharding_lib.make_mesh(c.mesh, devices))
  lowered = aot.train_program(trainer).lowered
  with trainer.context():
    direct = trainer.step_fn.lower(trainer.abstract_state, trainer.abstract_batch)
  assert lowered.as_text() == direct.as_text()
  assert trainer.step_fn is trainer.sharded._step   # what Trainer.step calls
  assert trainer.module.attention == 'xla'


def test_flash_resolves_per_target_platform():
  assert attention_lib.resolve_attention('flash', jnp.bfloat16, 2, 64, 'tpu') == 'splash'
  assert attention_lib.resolve_attention('flash', jnp.bfloat16, 2, 64, 'cpu') == 'xla'
  assert attention_lib.resolve_attention('splash', jnp.bfloat16, 2, 64, 'gpu') == 'xla'
  devices = topology.compile_only_devices(topology.parse('v5e-4'))
  c = small_config(fsdp=2, tensor=2)
  c.model.attention, c.model.dtype = 'flash', 'bfloat16'
  trainer = trainer_lib.Trainer(c, sharding_lib.make_mesh(c.mesh, devices))
  assert trainer.module.attention == 'splash'       # host is a CPU; the target is a TPU
  text = trainer.lower_step().as_text()
  assert '@_splash_attention' in text and 'sdy.manual_computation' in text   # kernel in shard_map


def test_splash_attention_equals_xla_attention_on_cpu():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 128, 2, 32)), jnp.float32) for _ in range(3))
  ref = jax.nn.dot_product_attention(q, k, v)
  got = attention_lib.attend(q, k, v, 'splash')
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=2e-5, rtol=1e-4)
  loss = lambda kernel: lambda q, k, v: jnp.sum(jnp.sin(attention_lib.attend(q, k, v, kernel)))
  g_ref = jax.grad(loss('xla'), argnums=(0, 1, 2))(q, k, v)
  g_got = jax.grad(loss('splash'), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(g_got, g_ref):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=5e-5, rtol=1e-4)


def test_splash_needs_tokens_in_multiples_of_128():
  x = jnp.zeros((1, 96, 2, 32))
  with pytest.raises(ValueError, match='multiple of 128'):
    attention_lib.attend(x, x, x, 'splash')


def test_activation_constraints_follow_the_rules():
  devices = topology.compile_only_devices(topology.parse('v5e-4'))
  mesh = sharding_lib.make_mesh({'data': 1, 'fsdp': 4, 'tensor': 1}, devices)
  rules = (('activation_batch', ('data', 'fsdp')), ('activation_length', None),
           ('activation_embed', None))
  names = ('activation_batch', 'activation_length', 'activation_embed')
  f = jax.jit(lambda x: sharding_lib.logical_constraint(x * 2, names, rules))
  with jax.set_mesh(mesh):
    for batch, spec in ((8, P(('data', 'fsdp'), None, None)), (2, P('data', None, None))):
      x = jax.ShapeDtypeStruct((batch, 16, 8), jnp.float32, sharding=NamedSharding(mesh, P()))
      out = f.lower(x).compile().output_shardings
      assert out.is_equivalent_to(NamedSharding(mesh, spec), 3), (batch, out)


def test_without_libtpu_the_job_says_how_to_install_it(monkeypatch):
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  def no_tpu(**kwargs):
    raise RuntimeError('Unable to initialize backend tpu')
  monkeypatch.setattr(topologies, 'get_topology_desc', no_tpu)
  monkeypatch.setattr(topology, '_libtpu_installed', lambda: False)
  with pytest.raises(RuntimeError, match=r'pip install "jax\[tpu\]==' + jax.__version__):
    topology.compile_only_devices(topology.parse('v5e-4'))
