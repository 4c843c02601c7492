"""Frame VAE: shapes at 4x/8x and several latent widths, frame-wise encoding, loss, bad input."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from maskvid.vae import losses
from maskvid.vae import model


@pytest.mark.parametrize('mults,size,latent_channels,linear_skip', [
    ((1, 2, 2), 16, 4, False),      # 4x
    pytest.param((1, 2, 2), 32, 16, True, marks=pytest.mark.slow),     # 4x, the old tiny config
    pytest.param((1, 2, 4), 32, 4, True, marks=pytest.mark.slow),      # 4x, the demo's VAE
    pytest.param((1, 1, 2, 2), 32, 16, False, marks=pytest.mark.slow),  # 8x
    pytest.param((1, 2, 2, 2), 16, 6, True, marks=pytest.mark.slow),   # 8x, odd width
])
def test_encode_decode_shapes(mults, size, latent_channels, linear_skip):
  vae = model.AutoencoderKL(latent_channels=latent_channels, base_channels=8,
                            channel_multipliers=mults, num_res_blocks=1, norm_groups=4,
                            linear_skip=linear_skip)
  f = 2 ** (len(mults) - 1)
  assert vae.downsample_factor == f
  frames = jax.random.uniform(jax.random.key(0, impl='rbg'), (2, 3, size, size, 3),
                              minval=-1, maxval=1)
  # jit whole calls: one compile each instead of one per eager op (slow on a busy CPU).
  params = jax.jit(vae.init)(jax.random.key(1, impl='rbg'), frames)
  mean, logvar = jax.jit(lambda p, x: vae.apply(p, x, method=vae.encode))(params, frames)
  assert mean.shape == logvar.shape == (2, 3, size // f, size // f, latent_channels)
  out = jax.jit(lambda p, z: vae.apply(p, z, method=vae.decode))(params, mean)
  assert out.shape == frames.shape
  assert np.all(np.isfinite(out))
  both = jax.jit(lambda p, x, k: (vae.apply(p, x), vae.apply(p, x, sample_posterior=True,
                                                             rngs={'sample': k})))
  (recon, mean2, _), (sampled, _, _) = both(params, frames, jax.random.key(2, impl='rbg'))
  np.testing.assert_allclose(mean2, mean, atol=1e-5)
  np.testing.assert_allclose(recon, out, atol=1e-4)
  # Sampling the posterior (rng stream 'sample') changes the output.
  assert not np.allclose(sampled, recon)


@pytest.mark.slow
def test_frames_are_encoded_independently():
  """A frame encoded alone gives the same latent as inside a clip (time folded into batch)."""
  vae = model.AutoencoderKL(4, 8, (1, 2), 1, 4, mid_attention=True)
  clip = jax.random.uniform(jax.random.key(0, impl='rbg'), (2, 4, 16, 16, 3),
                            minval=-1, maxval=1)
  params = jax.jit(vae.init)(jax.random.key(1, impl='rbg'), clip)
  mean_clip, _ = vae.apply(params, clip, method=vae.encode)
  mean_one, _ = vae.apply(params, clip[1:2, 2:3], method=vae.encode)
  np.testing.assert_allclose(mean_one[0, 0], mean_clip[1, 2], atol=1e-5)
  dec_clip = vae.apply(params, mean_clip, method=vae.decode)
  dec_one = vae.apply(params, mean_clip[1:2, 2:3], method=vae.decode)
  np.testing.assert_allclose(dec_one[0, 0], dec_clip[1, 2], atol=1e-5)


def test_from_config_matches_config_and_json_lists():
  c = default.get_config()
  vae = model.from_config(c.vae)
  assert vae.latent_channels == c.vae.latent_channels
  assert vae.downsample_factor == 2 ** (len(c.vae.channel_multipliers) - 1)
  # config.json stores tuples as lists; from_config must accept a plain dict of lists.
  as_json = dict(c.vae.to_dict(), channel_multipliers=[1, 2, 2, 2])
  assert model.from_config(as_json).downsample_factor == 8


def test_bad_inputs_raise_clear_errors():
  vae = model.AutoencoderKL(4, 8, (1, 2), 1, 4)
  params = jax.jit(vae.init)(jax.random.key(0, impl='rbg'), jnp.zeros((1, 1, 8, 8, 3)))
  with pytest.raises(ValueError, match=r'frames must have shape \[B,T,H,W,3\]'):
    vae.apply(params, jnp.zeros((1, 8, 8, 3)), method=vae.encode)
  with pytest.raises(ValueError, match='divisible by the downsample factor 2'):
    vae.apply(params, jnp.zeros((1, 1, 9, 9, 3)), method=vae.encode)
  with pytest.raises(ValueError, match=r'z must have shape \[B,T,h,w,4\]'):
    vae.apply(params, jnp.zeros((1, 1, 4, 4, 3)), method=vae.decode)
  with pytest.raises(ValueError, match='norm_groups=3'):
    bad = model.AutoencoderKL(4, 8, (1, 2), 1, 3)
    jax.eval_shape(bad.init, jax.random.key(0, impl='rbg'), jnp.zeros((1, 1, 8, 8, 3)))


def test_posterior_sample_uses_the_given_noise():
  """z = mean + exp(logvar / 2) * noise: the trainer draws noise for the global batch itself."""
  vae = model.AutoencoderKL(4, 8, (1, 2), 1, 4)
  x = jax.random.uniform(jax.random.key(1), (2, 1, 8, 8, 3), minval=-1, maxval=1)
  params = vae.init(jax.random.key(0, impl='rbg'), x)
  mean, logvar = vae.apply(params, x, method=vae.encode)
  noise = jax.random.normal(jax.random.key(2), mean.shape)
  recon, _, _ = vae.apply(params, x, sample_posterior=True, noise=noise)
  expected = vae.apply(params, mean + jnp.exp(0.5 * logvar) * noise, method=vae.decode)
  np.testing.assert_allclose(recon, expected, rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(recon - vae.apply(params, x)[0]).max()) > 1e-4   # the noise mattered
  with pytest.raises(ValueError, match=r'noise must have the latent shape \(2, 1, 4, 4, 4\)'):
    vae.apply(params, x, sample_posterior=True, noise=noise[:1])


def test_vae_loss_values():
  x = jnp.zeros((1, 1, 4, 4, 3))
  mean = jnp.zeros((1, 1, 2, 2, 2))
  logvar = jnp.zeros_like(mean)
  # Perfect reconstruction and a standard-normal posterior: zero loss.
  loss, m = losses.vae_loss(x, x, mean, logvar, kl_weight=1.0)
  assert float(loss) == 0.0 and float(m['kl']) == 0.0
  # L1 of 0.5 everywhere; KL of mean=1 is 0.5 per element, 8 elements / 48 pixels.
  loss, m = losses.vae_loss(x, x + 0.5, mean + 1.0, logvar, kl_weight=0.1)
  np.testing.assert_allclose(m['l1'], 0.5)
  np.testing.assert_allclose(m['kl'], 0.5 * 8 / 48, rtol=1e-6)
  np.testing.assert_allclose(loss, 0.5 + 0.1 * 0.5 * 8 / 48, rtol=1e-6)


def test_vae_loss_l2_option():
  x = jnp.zeros((1, 1, 4, 4, 3))
  mean = jnp.zeros((1, 1, 2, 2, 2))
  err = jnp.where(jnp.arange(4)[:, None] < 2, 0.5, -1.0) * jnp.ones((1, 1, 4, 4, 3))
  loss, m = losses.vae_loss(x, err, mean, mean, kl_weight=0.0, reconstruction_loss='l2')
  # Half the pixels off by 0.5, half by 1.0: L2 = (0.25 + 1) / 2, L1 = 0.75.
  np.testing.assert_allclose(loss, 0.625, rtol=1e-6)
  np.testing.assert_allclose(m['l2'], 0.625, rtol=1e-6)
  np.testing.assert_allclose(m['l1'], 0.75, rtol=1e-6)
  with pytest.raises(ValueError, match='reconstruction_loss'):
    losses.vae_loss(x, x, mean, mean, kl_weight=0.0, reconstruction_loss='huber')


def test_linear_skip_is_a_patch_linear_map_at_init():
  """patch_out starts at zero (output = deep path); patch_in adds a linear map of each patch."""
  kw = dict(latent_channels=4, base_channels=8, channel_multipliers=(1, 2), num_res_blocks=1,
            norm_groups=4)
  plain, skip = model.AutoencoderKL(**kw), model.AutoencoderKL(**kw, linear_skip=True)
  x = jax.random.uniform(jax.random.key(0, impl='rbg'), (1, 2, 8, 8, 3), minval=-1, maxval=1)
  p_skip = skip.init(jax.random.key(1, impl='rbg'), x)
  p_plain = {'params': {k: v for k, v in p_skip['params'].items()
                        if k not in ('patch_in', 'patch_out')}}
  z = jax.random.normal(jax.random.key(2, impl='rbg'), (1, 2, 4, 4, 4))
  np.testing.assert_allclose(skip.apply(p_skip, z, method=skip.decode),
                             plain.apply(p_plain, z, method=plain.decode), atol=1e-6)
  m_skip, _ = skip.apply(p_skip, x, method=skip.encode)
  m_plain, _ = plain.apply(p_plain, x, method=plain.encode)
  k = p_skip['params']['patch_in']
  patch = x[0, 1, 2:4, 4:6]  # the patch behind latent (1, 2) of frame 1
  expected = jnp.einsum('hwi,hwio->o', patch, k['kernel'])[:4] + k['bias'][:4]
  np.testing.assert_allclose(m_skip[0, 1, 1, 2] - m_plain[0, 1, 1, 2], expected, atol=1e-5)



def test_group_norm_matches_flax():
  """Same parameters and values as flax.linen.GroupNorm (what diffusers weights were mapped to)."""
  x = jax.random.normal(jax.random.key(0, impl='rbg'), (2, 6, 5, 8)) * 3.0 + 2.0
  ref = nn.GroupNorm(num_groups=4, epsilon=1e-6)
  ours = model.GroupNorm(num_groups=4)
  shapes = jax.tree.map(lambda a: a.shape, ours.init(jax.random.key(1, impl='rbg'), x))
  assert shapes == jax.tree.map(lambda a: a.shape, ref.init(jax.random.key(1, impl='rbg'), x))
  params = {'params': {'scale': jnp.arange(8.0) - 3.0, 'bias': jnp.arange(8.0) * 0.5}}
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=2e-5)
  # Each group of 2 channels is normalised to zero mean, unit variance before the affine map.
  y = ours.apply({'params': {'scale': jnp.ones(8), 'bias': jnp.zeros(8)}}, x)
  groups = y.reshape(2, 30, 4, 2)
  np.testing.assert_allclose(groups.mean(axis=(1, 3)), 0.0, atol=1e-5)
  np.testing.assert_allclose(groups.var(axis=(1, 3)), 1.0, atol=1e-4)


def test_upsample_is_nearest_resize_then_conv():
  """The phase-decomposed upsampler computes LDM's nearest 2x + 3x3 conv with the same params."""

  class Reference(nn.Module):
    @nn.compact
    def __call__(self, x):
      n, h, w, c = x.shape
      x = jax.image.resize(x, (n, 2 * h, 2 * w, c), method='nearest')
      return nn.Conv(c, (3, 3), padding=1, name='conv')(x)

  x = jax.random.normal(jax.random.key(0, impl='rbg'), (2, 5, 7, 8))
  params = model.Upsample().init(jax.random.key(1, impl='rbg'), x)
  ref_params = Reference().init(jax.random.key(1, impl='rbg'), x)
  # Same names, shapes and initial values as nn.Conv(c, (3, 3), name='conv').
  jax.tree.map(np.testing.assert_array_equal, params, ref_params)
  params['params']['conv']['bias'] = jax.random.normal(jax.random.key(2, impl='rbg'), (8,))
  out = model.Upsample().apply(params, x)
  assert out.shape == (2, 10, 14, 8)
  np.testing.assert_allclose(out, Reference().apply(params, x), atol=1e-5)


def test_codec_decode_undoes_the_latent_normalisation():
  """decode(z) = VAE decode of z * scale + shift, checked against the module itself with a
  non-trivial shift/scale (not against the codec's own encode)."""
  from maskvid.vae import codec as codec_lib  # pylint: disable=g-import-not-at-top
  module = model.AutoencoderKL(latent_channels=2, base_channels=8, channel_multipliers=(1, 2),
                                   num_res_blocks=1, norm_groups=4)
  frames = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 2, 8, 8, 3)), jnp.float32)
  variables = module.init(jax.random.key(0), frames)
  shift, scale = np.array([0.5, -1.5], np.float32), np.array([2.0, 0.25], np.float32)
  codec = codec_lib.LatentCodec(module, variables, shift, scale)
  z = jnp.asarray(np.random.default_rng(1).normal(size=(1, 2, 4, 4, 2)), jnp.float32)
  raw = module.apply(variables, z * scale + shift, method=module.decode)
  np.testing.assert_allclose(codec.decode(z), jnp.clip(raw, -1, 1), atol=1e-6)
  mean = module.apply(variables, frames, method=module.encode)[0]
  np.testing.assert_allclose(codec.encode(frames), (mean - shift) / scale, atol=1e-5)
  undone = jnp.clip(module.apply(variables, z, method=module.decode), -1, 1)
  assert not np.allclose(codec.decode(z), undone, atol=1e-3)   # the shift/scale matter here
