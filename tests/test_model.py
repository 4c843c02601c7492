"""Video transformer: shapes, adaLN-Zero init, per-token modulation, dtypes, logical axes, errors."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from configs import pretrain
from maskvid.model import model as M

GRID = (4, 8, 8, 3)   # T, h, w, c


def tiny_config(patch_size=(1, 2, 2), **model):
  c = default.get_config()
  c.model.patch_size = patch_size
  c.model.width = 32
  c.model.depth = 2
  c.model.num_heads = 2
  c.model.mlp_ratio = 2.0
  c.vae.latent_channels = GRID[3]
  for k, v in model.items():
    c.model[k] = v
  if c.model.input_conditioning:
    c.diffusion.objective = 'conditioning'
  return c


def inputs(batch=2, grid=GRID, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(k1, (batch,) + grid)
  t = jax.random.uniform(k2, (batch,) + grid[:3])
  return x, t


def init(module, x, t, *cond):
  return jax.jit(module.init)(jax.random.key(0), x, t, *cond)['params']


def perturb(params, seed=1, scale=0.05):
  """Give every parameter (zero-initialised ones included) random values."""
  leaves, treedef = jax.tree.flatten(nn.unbox(params))
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [l + scale * jax.random.normal(k, l.shape)
                                      for l, k in zip(leaves, keys)])


@pytest.mark.parametrize('patch_size', [(1, 2, 2), (2, 2, 2), (1, 1, 1), (2, 4, 4)])
def test_shapes_and_zero_output_at_init(patch_size):
  module = M.build_model(tiny_config(patch_size))
  x, t = inputs()
  params = init(module, x, t)
  v = jax.jit(M.make_apply_fn(module))(params, x, t)
  assert v.shape == x.shape and v.dtype == jnp.float32
  # adaLN-Zero: the final projection is zero-initialised, so the output is exactly zero.
  assert np.array_equal(np.asarray(v), np.zeros(x.shape))
  # ... and the gates of every block start at zero.
  p = nn.unbox(params)
  assert not np.any(np.asarray(p['block_0']['adaln']['kernel']))
  v2 = jax.jit(M.make_apply_fn(module))(perturb(params), x, t)
  assert float(jnp.abs(v2).mean()) > 1e-3


def test_per_token_noise_level_modulates_that_token():
  module = M.build_model(tiny_config((1, 2, 2), depth=1))
  x, t = inputs(batch=1)
  params = perturb(init(module, x, t), scale=0.2)
  apply = jax.jit(M.make_apply_fn(module))
  v0 = apply(params, x, t)
  # Raise t of one patch (frame 1, patch row 2, col 3): that token's output changes the most.
  t1 = t.at[0, 1, 4:6, 6:8].set(0.99)
  diff = jnp.abs(apply(params, x, t1) - v0).mean(-1)[0]          # [T, h, w]
  inside = diff[1, 4:6, 6:8].mean()
  outside = (diff.sum() - diff[1, 4:6, 6:8].sum()) / (diff.size - 4)
  assert float(inside) > 5 * float(outside) > 0
  # t is pooled per patch with max: lowering a non-max entry inside a patch changes nothing.
  t_max = t.at[0, 2, 0:2, 0:2].set(jnp.array([[0.9, 0.1], [0.2, 0.3]]))
  t_low = t_max.at[0, 2, 1, 1].set(0.0)
  np.testing.assert_array_equal(np.asarray(apply(params, x, t_max)),
                                np.asarray(apply(params, x, t_low)))


def test_attention_mixes_context_across_spacetime():
  module = M.build_model(tiny_config((1, 2, 2)))
  x, t = inputs(batch=1)
  params = perturb(init(module, x, t))
  apply = jax.jit(M.make_apply_fn(module))
  x2 = x.at[0, 0].add(1.0)                      # change frame 0 only
  d = jnp.abs(apply(params, x2, t) - apply(params, x, t))
  assert float(d[0, 3].max()) > 1e-4            # a far frame sees it


def test_bfloat16_compute_float32_params_close_to_float32():
  x, t = inputs()
  m32 = M.build_model(tiny_config())
  m16 = M.build_model(tiny_config(dtype='bfloat16'))
  params = perturb(init(m32, x, t))
  params16 = init(m16, x, t)
  assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(nn.unbox(params16)))
  v32 = jax.jit(M.make_apply_fn(m32))(params, x, t)
  v16 = jax.jit(M.make_apply_fn(m16))(params, x, t)
  assert v16.dtype == jnp.float32
  rel = float(jnp.linalg.norm(v16 - v32) / jnp.linalg.norm(v32))
  assert 0 < rel < 0.05, rel


@pytest.mark.parametrize('remat', ['full', 'dots'])
def test_remat_matches_no_remat(remat):
  x, t = inputs(batch=1)
  base = M.build_model(tiny_config())
  other = M.build_model(tiny_config(remat=remat))
  params = perturb(init(base, x, t))
  assert jax.tree.structure(params) == jax.tree.structure(nn.unbox(init(other, x, t)))

  def grads(module):
    f = lambda p: jnp.sum(M.make_apply_fn(module)(p, x, t) ** 2)
    return jax.jit(jax.value_and_grad(f))(params)
  (l0, g0), (l1, g1) = grads(base), grads(other)
  np.testing.assert_allclose(l0, l1, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_logical_axis_names_on_every_param():
  module = M.build_model(tiny_config())
  x, t = inputs()
  params = jax.eval_shape(module.init, jax.random.key(0), x, t)['params']
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
  x, t = inputs()
  with pytest.raises(ValueError, match='t must be'):
    module.init(jax.random.key(0), x, t[:, :3])
  x3, t3 = inputs(grid=(3, 8, 8, 3))
  with pytest.raises(ValueError, match='not divisible by config.model.patch_size'):
    module.init(jax.random.key(0), x3, t3)
  with pytest.raises(ValueError, match=r'x_t must be \[B, T, h, w, c\]'):
    module.init(jax.random.key(0), x[0], t[0])
  with pytest.raises(ValueError, match='input_conditioning=False'):
    module.init(jax.random.key(0), x, t, x, t > 0.5)
  bad = tiny_config()
  bad.model.attention = 'flash'
  with pytest.raises(ValueError, match='config.model.attention'):
    M.build_model(bad).init(jax.random.key(0), x, t)
  bad = tiny_config()
  bad.diffusion.objective = 'conditioning'
  with pytest.raises(ValueError, match='input_conditioning'):
    M.build_model(bad)


def test_input_conditioning_uses_known_latents_and_mask():
  module = M.build_model(tiny_config(input_conditioning=True))
  x, t = inputs()
  mask = jnp.zeros(t.shape, bool).at[:, 0].set(True)
  params = perturb(init(module, x, t, x, mask))
  assert params['patch_embed']['kernel'].shape[0] == 4 * (2 * GRID[3] + 1)
  apply = jax.jit(M.make_apply_fn(module))
  v = apply(params, x, t, x, mask)
  assert v.shape == x.shape
  # Known latents matter where the mask says known, and are zeroed where it says unknown.
  assert float(jnp.abs(apply(params, x, t, x + 1.0, mask) - v).max()) > 1e-4
  cond2 = x.at[:, 1:].add(5.0)
  np.testing.assert_array_equal(np.asarray(apply(params, x, t, cond2, mask)), np.asarray(v))
  with pytest.raises(ValueError, match='cond_latents'):
    module.apply({'params': params}, x, t)


def test_param_count_and_flops():
  c = tiny_config()
  module = M.build_model(c)
  x, t = inputs(grid=(c.data.clip_length, 8, 8, 3))
  params = jax.eval_shape(module.init, jax.random.key(0), x, t)['params']
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
