"""PCA start of the VAE's linear patch path: at step 0 the VAE reconstructs as the PCA does."""
import einops
import jax
import numpy as np
import pytest

from maskvid.vae import model as vae_model
from maskvid.vae import pca_init
from maskvid.vae import testing
from maskvid.vae import train


def _frames(n_clips=8, seed=0):
  src = testing.ProceduralClips(n_clips, 4, 16, seed=seed)
  return train.eval_frames(src, 4 * n_clips)[:, 0]          # [N,16,16,3] in [-1, 1]


def _numpy_pca_reconstruction(frames, f, k):
  x = einops.rearrange(frames.astype(np.float64), 'n (h p) (w q) c -> (n h w) (p q c)', p=f, q=f)
  mu = x.mean(0)
  _, _, vt = np.linalg.svd(x - mu, full_matrices=False)
  rec = mu + (x - mu) @ vt[:k].T @ vt[:k]
  n, h, w, _ = frames.shape
  return einops.rearrange(rec, '(n h w) (p q c) -> n (h p) (w q) c', n=n, h=h // f, w=w // f,
                          p=f, q=f)


def test_patch_pca_is_orthonormal_and_sorted():
  mean, directions, variances = pca_init.patch_pca(_frames(), 2, 5)
  assert mean.shape == (12,) and directions.shape == (5, 12) and variances.shape == (5,)
  np.testing.assert_allclose(directions @ directions.T, np.eye(5), atol=1e-9)
  assert np.all(np.diff(variances) <= 0) and variances[-1] > 0
  with pytest.raises(ValueError, match='components must be in'):
    pca_init.patch_pca(_frames(), 2, 13)


def test_pca_start_reconstructs_like_the_pca():
  frames = _frames()
  module = vae_model.AutoencoderKL(latent_channels=4, base_channels=8, channel_multipliers=(1, 2),
                                   norm_groups=4, linear_skip=True)
  params = module.init(jax.random.key(0), frames[:1, None])
  new = pca_init.pca_init(params, frames, 2, 4)
  assert jax.tree.structure(new) == jax.tree.structure(params)
  recon, mean, logvar = module.apply(new, frames[:, None])
  expected = _numpy_pca_reconstruction(frames, 2, 4)
  np.testing.assert_allclose(np.asarray(recon[:, 0]), expected, atol=2e-4)
  # Whitened latents: unit variance per channel over the frames the PCA saw; small logvar.
  np.testing.assert_allclose(np.asarray(mean).reshape(-1, 4).std(0), 1.0, rtol=1e-3)
  np.testing.assert_allclose(np.asarray(logvar), -6.0)
  before = module.apply(params, frames[:, None])[0]
  err = lambda r: float(np.mean((np.asarray(r[:, 0]) - frames) ** 2))
  assert err(recon) < 0.2 * err(before)


def test_pca_start_needs_the_linear_path():
  module = vae_model.AutoencoderKL(latent_channels=4, base_channels=8, channel_multipliers=(1, 2),
                                   norm_groups=4, linear_skip=False)
  frames = _frames(2)
  params = module.init(jax.random.key(0), frames[:1, None])
  with pytest.raises(ValueError, match='linear_skip=True'):
    pca_init.pca_init(params, frames, 2, 4)


def test_training_from_the_pca_start(tmp_path):
  c = testing.tiny_config(steps=4)
  c.vae.linear_skip = True
  c.vae.linear_skip_init = 'pca'
  c.vae.pca_frames = 16
  sources = {'train': testing.ProceduralClips(6, 4, 16, seed=0),
             'test': testing.ProceduralClips(2, 4, 16, seed=1)}
  out = train.train_vae_on_sources(c, str(tmp_path / 'vae'), sources)
  assert out['step'] == 4 and out['test/psnr'] > 20.0, out
  c.vae.linear_skip_init = 'svd'
  with pytest.raises(ValueError, match="config.vae.linear_skip_init must be 'random' or 'pca'"):
    train.train_vae_on_sources(c, str(tmp_path / 'vae2'), sources)
