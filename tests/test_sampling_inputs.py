"""sampling.inputs: prepare -> complete, the one pixel path of the Completer, eval and preview."""
import einops
import numpy as np

from maskvid.sampling import inputs


def _space_to_depth(x, f=2):   # [N,T,H,W,3] -> [N,T,H/f,W/f,3 f f]: an exact "VAE"
  return einops.rearrange(x, 'n t (h a) (w b) c -> n t h w (a b c)', a=f, b=f)


def _depth_to_space(z, f=2):
  return einops.rearrange(z, 'n t h w (a b c) -> n t (h a) (w b) c', a=f, b=f)


def _lossy_decode(z):
  """A VAE with an error: every decoded pixel 0.25 off (clipped), so a given pixel comes back
  exactly only if it is pasted over the decode, never through the round trip."""
  return np.clip(_depth_to_space(np.asarray(z)) + 0.25, -1.0, 1.0)


def test_complete_zeroes_unknown_latents_and_composites():
  rng = np.random.default_rng(0)
  frames = rng.uniform(-1, 1, (1, 2, 8, 8, 3)).astype(np.float32)
  known_px = np.zeros((1, 2, 8, 8), bool)
  known_px[:, :, :4] = True                 # the top half of every frame is given
  given = inputs.prepare(frames, known_px, np.zeros_like(known_px), encode=_space_to_depth,
                         decode=_lossy_decode, factor=2, patch_size=(1, 2, 2),
                         fill_options=dict(temporal=False), token_rule=dict(min_valid=0.01))
  assert given.known.shape == (1, 2, 4, 4)
  np.testing.assert_array_equal(given.known[0, :, :2], True)
  np.testing.assert_array_equal(given.known[0, :, 2:], False)
  seen = {}

  def sample(known_latents, known, exact):
    seen.update(latents=known_latents, known=known, exact=exact)
    return np.where(known[..., None], known_latents, 0.5)   # "generate" 0.5 in the holes

  latents, out = inputs.complete(given, sample, _lossy_decode)
  # The sampler never sees the nearest-filled values of unknown tokens.
  np.testing.assert_array_equal(seen['latents'][~given.known], 0.0)
  np.testing.assert_array_equal(seen['latents'][given.known], given.latents[given.known])
  np.testing.assert_array_equal(seen['exact'], given.exact)
  assert latents.shape == given.latents.shape
  # Given pixels come back exactly although the decode is 0.25 off; holes are the decode.
  np.testing.assert_array_equal(out[known_px], frames[known_px])
  np.testing.assert_allclose(out[~known_px], 0.75)
  # paste_known=False: the raw decode everywhere, the codec's error on the given pixels too.
  _, raw = inputs.complete(given, sample, _lossy_decode, paste_known=False)
  np.testing.assert_allclose(raw[known_px], np.clip(frames[known_px] + 0.25, -1, 1), atol=1e-6)
  assert np.abs(raw[known_px] - frames[known_px]).max() > 0.2
