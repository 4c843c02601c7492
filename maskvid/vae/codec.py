"""The latent codec: a trained VAE plus the cache's normalisation, as one encode/decode pair.

Every consumer of latents (the training preview, eval, the Completer, the ladder) goes through
this class, so the normalisation `z = (mean_posterior(x) - shift) / scale` is written once.
"""
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from maskvid.vae import cache
from maskvid.vae import model as vae_model


class LatentCodec:
  """frames [B,T,H,W,3] float in [-1, 1] <-> normalised latents [B,T,h,w,c] (jitted).

  Attributes: module (the VAE), variables, shift / scale (float32 [c]), factor (spatial
  downsampling of the VAE), latent_channels.
  """

  def __init__(self, module, variables, shift, scale):
    self.module, self.variables = module, variables
    self.shift = jnp.asarray(shift, jnp.float32)
    self.scale = jnp.asarray(scale, jnp.float32)
    self.factor = int(module.downsample_factor)
    self.latent_channels = int(module.latent_channels)
    self._encode = jax.jit(lambda v, x, shift, scale: (
        module.apply(v, x, method=module.encode)[0] - shift) / scale)
    self._decode = jax.jit(lambda v, z, shift, scale: jnp.clip(
        module.apply(v, z * scale + shift, method=module.decode), -1.0, 1.0))

  @classmethod
  def load(cls, vae_dir: str, latents_dir: Optional[str] = None, *,
           stats: Optional[Mapping[str, Any]] = None) -> 'LatentCodec':
    """The VAE of vae_dir with the stats of a complete cache in latents_dir (or given `stats`)."""
    module, variables = vae_model.load_vae(vae_dir)
    if stats is None:
      if latents_dir is None:
        raise ValueError('LatentCodec.load needs latents_dir or stats (shift/scale per channel)')
      stats = cache.load_latent_stats(latents_dir)
    return cls(module, variables, np.asarray(stats['shift']), np.asarray(stats['scale']))

  def encode(self, frames) -> jax.Array:
    """float frames [B,T,H,W,3] in [-1, 1] -> normalised latents [B,T,H/f,W/f,c]."""
    return self._encode(self.variables, jnp.asarray(frames, jnp.float32), self.shift, self.scale)

  def decode(self, latents) -> jax.Array:
    """normalised latents [B,T,h,w,c] -> frames [B,T,h*f,w*f,3] clipped to [-1, 1]."""
    return self._decode(self.variables, jnp.asarray(latents, jnp.float32), self.shift,
                        self.scale)
