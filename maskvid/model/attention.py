"""Self-attention kernels, resolved for the platform a program is compiled *for*.

`config.model.attention`:
  xla     `jax.nn.dot_product_attention` (materialises the [B, H, N, N] logits)
  cudnn   cuDNN flash attention (GPU, bf16/fp16)
  splash  the Pallas splash-attention kernel (`jax.experimental.pallas.ops.tpu`): TPU, or its
          interpreter on CPU (tests)
  flash   whichever fused kernel the target has: cudnn on GPU, splash on TPU, xla elsewhere

The target is the platform of the mesh's devices, not the host's backend: the compile job
(`maskvid.aot`) builds TPU programs on a CPU host with compile-only TPU devices.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from maskvid import sharding as sharding_lib

NAMES = ('xla', 'cudnn', 'splash', 'flash')
_LANES = 128   # splash tiles are multiples of the TPU lane width


def target_platform(devices=None) -> str:
  """'cpu' | 'gpu' | 'tpu' of `devices` (default: this process's backend)."""
  if devices is None:
    return jax.default_backend()
  platform = np.asarray(devices).flat[0].platform
  return 'gpu' if platform in ('cuda', 'rocm') else platform


@functools.lru_cache(maxsize=None)
def _cudnn_attention_runs(num_heads: int, head_dim: int, dtype_name: str) -> Optional[str]:
  """Compile and run cuDNN attention (forward and backward) once; None if it works, else why.

  Guards against cuDNN builds that advertise the path but fail at compile or run time (jax issue
  32430 on CUDA 13 builds), so a run degrades to the XLA path instead of crashing mid-training.
  """
  q = np.zeros((1, 128, num_heads, head_dim), jnp.dtype(dtype_name))
  def f(q):
    out = jax.nn.dot_product_attention(q, q, q, implementation='cudnn')
    return jnp.sum(out.astype(jnp.float32))
  try:
    jax.block_until_ready(jax.jit(jax.value_and_grad(f))(q))
  except Exception as e:  # pylint: disable=broad-except
    return f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
  return None


def resolve_attention(name: str, dtype, num_heads: int, head_dim: int,
                      platform: Optional[str] = None) -> str:
  """config.model.attention -> the kernel the module runs: 'xla', 'cudnn' or 'splash'.

  platform: the target ('cpu' | 'gpu' | 'tpu'; default this host's backend). A kernel the target
  cannot run falls back to 'xla' with a warning: cuDNN off GPU, with a dtype other than
  bfloat16/float16, a head dim not a multiple of 8 or above 256, or a probe call that fails;
  splash off TPU (an explicit 'splash' on CPU runs the Pallas interpreter, for tests).
  Call outside jit.
  """
  if name not in NAMES:
    raise ValueError(f'config.model.attention must be one of {list(NAMES)}, got {name!r}')
  platform = platform or jax.default_backend()
  if name == 'flash':
    name = {'gpu': 'cudnn', 'tpu': 'splash'}.get(platform, 'xla')
  if name == 'splash':
    if platform not in ('tpu', 'cpu'):
      logging.warning('config.model.attention=splash is a TPU kernel, target is %r; using the '
                      'XLA implementation.', platform)
      return 'xla'
    return 'splash'
  if name != 'cudnn':
    return name
  reason = None
  if platform != 'gpu':
    reason = f'target platform is {platform!r}'
  elif jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    reason = f'compute dtype {jnp.dtype(dtype).name} (cuDNN needs bfloat16/float16)'
  elif head_dim % 8 or head_dim > 256:
    reason = f'head dim {head_dim} (cuDNN needs a multiple of 8, <= 256)'
  elif jax.default_backend() == 'gpu':
    reason = _cudnn_attention_runs(num_heads, head_dim, jnp.dtype(dtype).name)
  if reason:
    logging.warning('config.model.attention=cudnn unavailable (%s); using the XLA '
                    'implementation.', reason)
    return 'xla'
  return 'cudnn'


def _splash_kernel(num_heads: int, seq_len: int, interpret: bool):
  # Built inside each trace, never cached: the kernel holds its mask tables as arrays made in
  # the trace that built it, and a cached one would leak them into the next trace.
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  block = math.gcd(seq_len, 512)
  sizes = sk.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                        block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                        block_q_dq=block, block_kv_dq=block)
  mask = sm.MultiHeadMask([sm.FullMask((seq_len, seq_len))] * num_heads)
  return sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                            interpret=interpret)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, batch_axes=None,
                     head_axes=None) -> jax.Array:
  """Full (non-causal) attention through the Pallas splash kernel. q, k, v `[B, N, H, d]`.

  Under a mesh (`jax.set_mesh`) the kernel runs per shard inside `shard_map`, with the batch
  split over `batch_axes` and the heads over `head_axes` (mesh axis names; those that do not
  divide the dim are dropped). N must be a multiple of 128. Off TPU it runs the Pallas
  interpreter (slow: tests only).
  """
  b, n, h, d = q.shape
  if n % _LANES:
    raise ValueError(f'splash attention needs a token count that is a multiple of {_LANES}, got '
                     f'{n} (config.model.attention=splash/flash: choose the patch size or '
                     'resolution accordingly, or attention=xla)')
  interpret = jax.default_backend() != 'tpu'
  scale = 1.0 / math.sqrt(d)

  def local(q, k, v):
    kernel = _splash_kernel(q.shape[2], n, interpret)
    qh, kh, vh = (jnp.swapaxes(x, 1, 2) for x in (q * jnp.asarray(scale, q.dtype), k, v))
    return jnp.swapaxes(jax.vmap(kernel)(qh, kh, vh), 1, 2)

  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return local(q, k, v)
  batch = sharding_lib.divisible_axes(b, batch_axes or (), mesh)
  heads = sharding_lib.divisible_axes(h, head_axes or (), mesh, used=batch)
  spec = P(batch or None, None, heads or None, None)
  return jax.shard_map(local, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)(q, k, v)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, kernel: str, batch_axes=None,
           head_axes=None) -> jax.Array:
  """Softmax attention of q, k, v `[B, N, H, d]` -> `[B, N, H, d]` with the resolved `kernel`."""
  if kernel == 'splash':
    return splash_attention(q, k, v, batch_axes, head_axes)
  return jax.nn.dot_product_attention(q, k, v, implementation=None if kernel == 'xla' else kernel)
