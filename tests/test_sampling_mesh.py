"""The sampler under an 8-device CPU mesh: sharded batch and sharded params, same result.

XLA_FLAGS must be set before jax is imported, so the check runs in a fresh subprocess.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow   # the integration tier (`make test-fast` skips it)

SCRIPT = textwrap.dedent('''
    import json
    import jax, jax.numpy as jnp, numpy as np
    import flax.linen as nn
    from jax.sharding import NamedSharding, PartitionSpec as P
    from configs import default
    from maskvid.model import model as model_lib
    from maskvid.sampling import sampler
    from maskvid import sharding

    assert jax.device_count() == 8, jax.devices()
    config = default.get_config()
    config.model.width, config.model.depth, config.model.num_heads = 32, 1, 2
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 4, 2, 1
    module = model_lib.build_model(config)
    apply_fn = model_lib.make_apply_fn(module)
    shape = (8, 2, 4, 4, 4)
    boxed = module.init(jax.random.key(0), jnp.zeros(shape), jnp.zeros(shape[:-1]))['params']
    rs = np.random.RandomState(0)
    # Random weights everywhere (init zeroes the output layer: a zero model would make every
    # sampler return its start noise and hide a wrong sharding or a dropped guidance term).
    params = jax.tree.map(lambda x: jnp.asarray(0.2 * rs.normal(size=x.shape), x.dtype),
                          nn.unbox(boxed))
    known = jnp.asarray(rs.normal(size=shape), jnp.float32)
    mask = jnp.asarray(rs.uniform(size=shape[:-1]) < 0.5)
    rng = jax.random.key(1, impl='rbg')
    opts = dict(num_steps=3, solver='heun', guidance=2.0)

    reference = np.asarray(sampler.complete(apply_fn, params, known, mask, rng, **opts))
    # What the tolerance must resolve: the same call without guidance, and with one weight
    # matrix's rows shuffled (what a mis-assembled shard would do).
    no_guidance = np.asarray(sampler.complete(apply_fn, params, known, mask, rng,
                                              **dict(opts, guidance=1.0)))
    leaves, treedef = jax.tree.flatten(params)
    big = max(range(len(leaves)), key=lambda i: leaves[i].size)
    leaves[big] = leaves[big][::-1]
    shuffled = np.asarray(sampler.complete(apply_fn, jax.tree.unflatten(treedef, leaves),
                                           known, mask, rng, **opts))

    mesh = sharding.make_mesh(config.mesh)
    rules = sharding.logical_rules(config.mesh)
    param_shardings = sharding.tree_shardings(boxed, mesh, rules)
    batch = sharding.batch_sharding(mesh)
    with jax.set_mesh(mesh):
      p = jax.device_put(params, param_shardings)
      k = jax.device_put(known, batch)
      m = jax.device_put(mask, batch)
      out = sampler.complete(apply_fn, p, k, m, rng, **opts)
      out.block_until_ready()
    sharded_params = sum(not s.is_fully_replicated for s in jax.tree.leaves(param_shardings))
    print(json.dumps(dict(
        max_diff=float(np.abs(np.asarray(out) - reference).max()),
        guidance_gap=float(np.abs(no_guidance - reference).max()),
        shuffle_gap=float(np.abs(shuffled - reference).max()),
        known_exact=bool(np.array_equal(np.asarray(out)[np.asarray(mask)],
                                        np.asarray(known)[np.asarray(mask)])),
        out_spec=str(out.sharding.spec),
        out_devices=len(out.sharding.device_set),
        shards=len(out.addressable_shards),
        shard_batch=out.addressable_shards[0].data.shape[0],
        sharded_params=sharded_params,
        finite=bool(np.all(np.isfinite(np.asarray(out)))))))
''')


def test_complete_under_8_device_mesh():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true',
             JAX_PLATFORMS='cpu', PYTHONPATH=root + os.pathsep + os.environ.get('PYTHONPATH', ''))
  proc = subprocess.run([sys.executable, '-c', SCRIPT], cwd=root, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  res = json.loads(proc.stdout.strip().splitlines()[-1])
  assert res['finite'] and res['known_exact'], res
  assert res['sharded_params'] > 0, res  # fsdp really split some weights
  assert res['out_devices'] == 8 and res['shards'] == 8, res
  assert res['shard_batch'] == 1, res  # batch 8 over data*fsdp = 8: one clip per device
  assert res['max_diff'] < 1e-4, res  # same numbers as the single-device run
  # ... at a tolerance that a dropped guidance term or a shuffled weight would violate.
  assert res['guidance_gap'] > 1e-2 and res['shuffle_gap'] > 1e-2, res
