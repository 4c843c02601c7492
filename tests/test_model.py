"""Video transformer: shapes, adaLN-Zero init, per-token modulation, dtypes, logical axes, errors."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from configs import pretrain
from maskvid.model import model as M

GRID = (2, 4, 4, 3)   # T, h, w, c: tiny, so XLA compiles stay cheap on a shared CPU


def tiny_config(patch_size=(1, 2, 2), **model):
  c = default.get_config()
  c.model.patch_size = patch_size
  c.model.width = 32
  c.model.depth = 1
  c.model.num_heads = 2
  c.model.mlp_ratio = 2.0
  c.vae.latent_channels = GRID[3]
  for k, v in model.items():
    c.model[k] = v
  if c.model.input_conditioning:
    c.diffusion.objective = 'conditioning'
  return c


def inputs(batch=2, grid=GRID, seed=0):
  rs = np.random.RandomState(seed)
  x = jnp.asarray(rs.randn(batch, *grid), jnp.float32)
  t = jnp.asarray(rs.uniform(size=(batch,) + grid[:3]), jnp.float32)
  return x, t


def random_params(module, x, t, *cond, seed=1, scale=0.05):
  """Random values for every parameter (zero-initialised ones included), drawn with numpy from
  the abstract shapes, so no init compile is needed."""
  shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), x, t, *cond)['params'])
  rs = np.random.RandomState(seed)

  def draw(path, s):
    base = 1.0 if 'scale' in jax.tree_util.keystr(path) else 0.0
    return jnp.asarray(base + scale * rs.randn(*s.shape), jnp.float32)
  return jax.tree_util.tree_map_with_path(draw, shapes)


# One module and one jitted apply shared by the tests that only need "some tiny model".
BASE = M.build_model(tiny_config())
APPLY = jax.jit(M.make_apply_fn(BASE))


@pytest.mark.parametrize('patch_size', [(1, 2, 2), (2, 2, 2), (1, 1, 1), (2, 4, 4)])
def test_shapes(patch_size):
  module = M.build_model(tiny_config(patch_size))
  x, t = inputs()
  v = jax.jit(M.make_apply_fn(module))(random_params(module, x, t), x, t)
  assert v.shape == x.shape and v.dtype == jnp.float32
  assert float(jnp.abs(v).mean()) > 1e-3


def test_zero_output_at_init():
  x, t = inputs()
  params = jax.jit(BASE.init)(jax.random.key(0), x, t)['params']
  # adaLN-Zero: the final projection is zero-initialised, so the output is exactly zero ...
  v = APPLY(params, x, t)
  assert np.array_equal(np.asarray(v), np.zeros(x.shape))
  # ... and every block's modulation (hence its gates) starts at zero.
  p = nn.unbox(params)
  assert not np.any(np.asarray(p['block_0']['adaln']['kernel']))
  assert not np.any(np.asarray(p['final']['proj']['kernel']))
  assert np.any(np.asarray(p['block_0']['attn']['qkv']['kernel']))


@pytest.mark.parametrize('adaln', ['block', 'single'])
def test_per_token_noise_level_modulates_that_token(adaln):
  x, t = inputs(batch=1)
  module = BASE if adaln == 'block' else M.build_model(tiny_config(adaln=adaln))
  apply = APPLY if adaln == 'block' else jax.jit(M.make_apply_fn(module))
  params = random_params(module, x, t, scale=0.2)
  v0 = apply(params, x, t)
  # Raise t of one patch (frame 1, patch row 1, col 0): that token's output changes the most.
  t1 = t.at[0, 1, 2:4, 0:2].set(0.99)
  diff = jnp.abs(apply(params, x, t1) - v0).mean(-1)[0]          # [T, h, w]
  inside = diff[1, 2:4, 0:2].mean()
  outside = (diff.sum() - diff[1, 2:4, 0:2].sum()) / (diff.size - 4)
  assert float(inside) > 5 * float(outside) > 0
  # t is pooled per patch with max: lowering a non-max entry inside a patch changes nothing.
  t_max = t.at[0, 0, 0:2, 0:2].set(jnp.array([[0.9, 0.1], [0.2, 0.3]]))
  t_low = t_max.at[0, 0, 1, 1].set(0.0)
  np.testing.assert_array_equal(np.asarray(apply(params, x, t_max)),
                                np.asarray(apply(params, x, t_low)))


def test_attention_mixes_context_across_spacetime():
  x, t = inputs(batch=1)
  params = random_params(BASE, x, t)
  x2 = x.at[0, 0, 0:2, 0:2].add(1.0)            # change one patch of frame 0
  d = jnp.abs(APPLY(params, x2, t) - APPLY(params, x, t))
  assert float(d[0, 1, 2:4, 2:4].max()) > 1e-4  # a patch of the other frame, far away, sees it


def test_bfloat16_compute_float32_params_close_to_float32():
  x, t = inputs(batch=1)
  m16 = M.build_model(tiny_config(dtype='bfloat16'))
  abstract = jax.eval_shape(m16.init, jax.random.key(0), x, t)['params']
  assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(nn.unbox(abstract)))
  params = random_params(BASE, x, t)
  v32 = APPLY(params, x, t)
  v16 = jax.jit(M.make_apply_fn(m16))(params, x, t)
  assert v16.dtype == jnp.float32
  rel = float(jnp.linalg.norm(v16 - v32) / jnp.linalg.norm(v32))
  assert 0 < rel < 0.05, rel


def test_remat_matches_no_remat():
  x, t = inputs(batch=1)
  params = random_params(BASE, x, t)
  modules = [BASE] + [M.build_model(tiny_config(remat=r)) for r in ('full', 'dots')]

  @jax.jit
  def all_grads(p):
    f = lambda m: lambda p: jnp.sum(M.make_apply_fn(m)(p, x, t) ** 2)
    return [jax.value_and_grad(f(m))(p) for m in modules]
  (l0, g0), *others = all_grads(params)
  for l1, g1 in others:
    np.testing.assert_allclose(l0, l1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match='config.model.remat'):
    jax.eval_shape(M.build_model(tiny_config(remat='some')).init, jax.random.key(0), x, t)


def test_scan_layers_matches_unrolled():
  x, t = inputs(batch=1)
  deep = tiny_config(depth=2)
  unrolled = M.build_model(deep)
  scanned = M.build_model(tiny_config(depth=2, scan_layers=True, remat='dots'))
  params = random_params(unrolled, x, t)
  abstract = jax.eval_shape(scanned.init, jax.random.key(0), x, t)['params']
  qkv = abstract['blocks']['attn']['qkv']['kernel']
  assert qkv.names == ('layers', 'embed', 'qkv', 'heads', 'kv') and qkv.value.shape[0] == 2
  stacked = {k: v for k, v in params.items() if not k.startswith('block_')}
  stacked['blocks'] = jax.tree.map(lambda *l: jnp.stack(l), params['block_0'], params['block_1'])
  np.testing.assert_allclose(jax.jit(M.make_apply_fn(scanned))(stacked, x, t),
                             jax.jit(M.make_apply_fn(unrolled))(params, x, t),
                             rtol=1e-5, atol=1e-6)


def test_cudnn_request_falls_back_off_gpu():
  if jax.default_backend() == 'gpu':
    pytest.skip('fallback is for machines without cuDNN attention')
  assert M.build_model(tiny_config(attention='cudnn', dtype='bfloat16')).attention == 'xla'


def test_logical_axis_names_on_every_param():
  x, t = inputs()
  params = jax.eval_shape(BASE.init, jax.random.key(0), x, t)['params']
  boxed = jax.tree.leaves(params, is_leaf=lambda l: isinstance(l, nn.LogicallyPartitioned))
  allowed = {'embed', 'mlp', 'heads', 'kv', 'qkv', 'patch', None}
  assert boxed and all(isinstance(l, nn.LogicallyPartitioned) for l in boxed)
  for l in boxed:
    assert len(l.names) == l.value.ndim and set(l.names) <= allowed, l.names
  assert params['block_0']['attn']['qkv']['kernel'].names == ('embed', 'qkv', 'heads', 'kv')
  assert params['block_0']['mlp']['fc1']['kernel'].names == ('embed', 'mlp')
  assert params['patch_embed']['kernel'].names == ('patch', 'embed')
  # The names resolve against the config's rules table.
  specs = nn.get_partition_spec(params)
  mesh_specs = nn.logical_to_mesh(specs, default.get_config().mesh.rules)
  assert mesh_specs['block_0']['mlp']['fc1']['kernel'] == jax.sharding.PartitionSpec('fsdp',
                                                                                    'tensor')


def test_bad_inputs_raise_clear_errors():
  module = M.build_model(tiny_config((2, 2, 2)))
  init = lambda *a: jax.eval_shape(module.init, jax.random.key(0), *a)
  x, t = inputs()
  with pytest.raises(ValueError, match='t must be'):
    init(x, t[:, :1])
  x3, t3 = inputs(grid=(3, 4, 4, 3))
  with pytest.raises(ValueError, match='not divisible by config.model.patch_size'):
    init(x3, t3)
  with pytest.raises(ValueError, match=r'x_t must be \[B, T, h, w, c\]'):
    init(x[0], t[0])
  with pytest.raises(ValueError, match='input_conditioning=False'):
    init(x, t, x, t > 0.5)
  bad = tiny_config()
  bad.model.attention = 'pallas'
  with pytest.raises(ValueError, match='config.model.attention'):
    M.build_model(bad)
  bad = tiny_config()
  bad.diffusion.objective = 'conditioning'
  with pytest.raises(ValueError, match='input_conditioning'):
    M.build_model(bad)
  bad = tiny_config()
  bad.model.dtype = 'float64'
  with pytest.raises(ValueError, match='config.model.dtype'):
    M.build_model(bad)


def test_input_conditioning_uses_known_latents_and_mask():
  module = M.build_model(tiny_config(input_conditioning=True))
  x, t = inputs()
  mask = jnp.zeros(t.shape, bool).at[:, 0].set(True)
  params = random_params(module, x, t, x, mask)
  assert params['patch_embed']['kernel'].shape[0] == 4 * (2 * GRID[3] + 1)
  apply = jax.jit(M.make_apply_fn(module))
  v = apply(params, x, t, x, mask)
  assert v.shape == x.shape
  # Known latents matter where the mask says known, and are zeroed where it says unknown.
  assert float(jnp.abs(apply(params, x, t, x + 1.0, mask) - v).max()) > 1e-4
  cond2 = x.at[:, 1:].add(5.0)
  np.testing.assert_array_equal(np.asarray(apply(params, x, t, cond2, mask)), np.asarray(v))
  with pytest.raises(ValueError, match='cond_latents'):
    jax.eval_shape(module.apply, {'params': params}, x, t)


@pytest.mark.parametrize('adaln', ['block', 'single'])
def test_param_count_and_flops(adaln):
  c = tiny_config(adaln=adaln, depth=3)
  x, t = inputs(grid=(c.data.clip_length, 8, 8, 3))
  params = jax.eval_shape(M.build_model(c).init, jax.random.key(0), x, t)['params']
  kernels = [l.size for path, l in jax.tree_util.tree_leaves_with_path(nn.unbox(params))
             if 'kernel' in jax.tree_util.keystr(path)]
  assert sum(kernels) == M.matmul_params(c)
  assert M.latent_grid(c) == (8, 8, 8, 3)
  n = M.num_tokens(c)
  assert n == 8 * 4 * 4
  expected = 6 * M.matmul_params(c) + 12 * c.model.depth * n * c.model.width
  assert M.flops_per_token(c) == expected
  assert M.flops_per_token(c, training=False) == expected / 3


def test_pretrain_size_in_range():
  c = pretrain.get_config()
  module = M.build_model(c)
  shapes = jax.eval_shape(module.init, jax.random.key(0), **M.example_inputs(c, 1))
  n = sum(l.size for l in jax.tree.leaves(nn.unbox(shapes['params'])))
  assert 300e6 <= n <= 700e6, n
  assert abs(M.matmul_params(c) - n) / n < 0.01


@pytest.fixture(scope='module')
def perturbed_model():
  """(jitted apply, params with every layer non-zero, x, t) of the tiny model, built once."""
  module = M.build_model(tiny_config(patch_size=(1, 1, 1)))
  x, t = inputs(batch=1)

  @jax.jit
  def init():
    params = module.init(jax.random.key(0), x, t)['params']
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))   # zero-init layers made non-zero
    return jax.tree.unflatten(treedef, [l + 0.1 * jax.random.normal(k, l.shape)
                                        for l, k in zip(leaves, keys)])
  return jax.jit(module.apply), init(), x, t


@pytest.mark.parametrize('axis', [1, 2, 3], ids=['frames', 'rows', 'columns'])
def test_positions_matter_on_every_axis(axis, perturbed_model):
  """Permuting frames, rows or columns of the input does not just permute the output: 3-D RoPE
  gives every axis a position (a model blind to one axis would be equivariant along it)."""
  apply, params, x, t = perturbed_model
  perm = np.roll(np.arange(x.shape[axis]), 1)
  out = apply({'params': params}, x, t)
  out_perm = apply({'params': params}, jnp.take(x, perm, axis), jnp.take(t, perm, axis))
  gap = float(jnp.max(jnp.abs(jnp.take(out, perm, axis) - out_perm)))
  assert gap > 1e-3, f'output equivariant to a shift along axis {axis}: positions ignored'
