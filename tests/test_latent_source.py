"""The latent cache reader hands out normalised latents: (z - shift) / scale per channel, with the
stats the cache wrote (a reader that skipped it would feed the transformer raw VAE latents)."""
import numpy as np

from maskvid.vae import cache
from maskvid.vae import testing


def test_latent_source_normalises_with_the_cache_stats(tmp_path):
  latents_dir = str(tmp_path / 'latents')
  testing.write_latent_cache(latents_dir, seed=3)    # raw z ~ N(shift, scale^2) per channel
  stats = cache.load_latent_stats(latents_dir)
  assert np.ptp(stats['shift']) > 1 and np.ptp(stats['scale']) > 1   # a map that shows
  source = cache.LatentSource(latents_dir, 'train')
  z = np.stack([source[i]['latents'] for i in range(len(source))])
  assert z.shape == (10, 6, 8, 8, 4) and z.dtype == np.float32
  np.testing.assert_allclose(z.reshape(-1, 4).mean(0), 0.0, atol=0.05)
  np.testing.assert_allclose(z.reshape(-1, 4).std(0), 1.0, atol=0.05)
