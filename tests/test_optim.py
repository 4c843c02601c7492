"""The optimizer: weight decay on kernels only, decided by name, not by rank."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import tiny
from maskvid import optim
from maskvid.model import model as model_lib


@pytest.mark.parametrize('scan_layers', [False, True])
def test_decay_mask_is_kernels_by_name(scan_layers):
  c = tiny.get_config()
  c.model.depth, c.model.scan_layers = 2, scan_layers
  module = model_lib.build_model(c)
  params = jax.eval_shape(module.init, jax.random.key(0), **model_lib.example_inputs(c))['params']
  for tree in (nn.unbox(params), params):        # the trainer builds its state from boxed params
    flat = jax.tree_util.tree_flatten_with_path(optim.decay_mask(tree))[0]
    names = {jax.tree_util.keystr(k): v for k, v in flat}
    assert names and all(v == ("['kernel']" in k) for k, v in names.items()), names
  shapes = {jax.tree_util.keystr(k): v.shape
            for k, v in jax.tree_util.tree_flatten_with_path(nn.unbox(params))[0]}
  qkv_bias = [s for k, s in shapes.items() if "['qkv']['bias']" in k]
  assert qkv_bias and len(qkv_bias[0]) >= 3        # the >= 2-D rule would have decayed it


def test_adamw_leaves_biases_undecayed():
  c = tiny.get_config().train
  c.weight_decay, c.grad_clip = 0.5, 0.0
  tx = optim.adam_direction(c)
  params = {'dense': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((3, 2, 2))}}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates['dense']['kernel'], 0.5)
  np.testing.assert_allclose(updates['dense']['bias'], 0.0)
