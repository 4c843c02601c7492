"""Random draws for a batch of clips from one key, or from one key per clip.

With one key per clip (a typed key array [B], e.g. `jax.random.key(seed + jnp.arange(B))` via
`clip_keys`), clip b's noise depends on its own key only: a clip completed inside a batch gets the
draws it gets alone, so a batched eval row and a one-clip command with the same key agree. A single
key draws the whole batch at once (the clips' noise then depends on the batch). Per-clip draws
equal the one-clip draws for threefry keys (JAX's default); 'rbg' keys draw differently under
`vmap`, so they keep a batch reproducible but not equal to its clips alone.
"""
import jax
import jax.numpy as jnp


def is_per_clip(rng) -> bool:
  """True for a typed key array [B] (one key per clip)."""
  return jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) and rng.ndim == 1


def clip_keys(seed: int, num_clips: int, impl=None) -> jax.Array:
  """Typed keys [num_clips]: clip b gets jax.random.key(seed + b)."""
  return jnp.stack([jax.random.key(int(seed) + b, impl=impl) for b in range(num_clips)])


def check(rng, batch: int) -> None:
  if is_per_clip(rng) and rng.shape[0] != batch:
    raise ValueError(f'rng: one key per clip needs {batch} keys (the batch), got {rng.shape[0]}')


def split(rng, num: int) -> jax.Array:
  """`num` keys along a new leading axis: [num] for a key, [num, B] for keys [B]."""
  if is_per_clip(rng):
    return jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, num))(rng), 0, 1)
  return jax.random.split(rng, num)


def normal(rng, shape, dtype=jnp.float32) -> jax.Array:
  """N(0, 1) draws of `shape` [B, ...]: per clip from its own key, or from one key."""
  if is_per_clip(rng):
    return jax.vmap(lambda k: jax.random.normal(k, tuple(shape[1:]), dtype))(rng)
  return jax.random.normal(rng, shape, dtype)
