"""Pixel -> token mask rules and patch alignment on hand-made masks."""
import jax.numpy as jnp
import numpy as np
import pytest

from maskvid.sampling import masks


def test_align_to_patches():
  mask = np.ones((1, 2, 4, 4), bool)
  mask[0, 0, 0, 1] = False   # patch (t0, 0, 0) of size (1, 2, 2) becomes unknown
  mask[0, 1, 3, 3] = False   # patch (t1, 1, 1)
  got = np.asarray(masks.align_to_patches(mask, (1, 2, 2)))
  expect = np.ones((1, 2, 4, 4), bool)
  expect[0, 0, :2, :2] = False
  expect[0, 1, 2:, 2:] = False
  np.testing.assert_array_equal(got, expect)
  # Temporal patches of 2 frames: a hole in either frame clears the patch in both.
  got_t = np.asarray(masks.align_to_patches(mask, (2, 2, 2)))
  expect_t = np.ones((1, 2, 4, 4), bool)
  expect_t[0, :, :2, :2] = False
  expect_t[0, :, 2:, 2:] = False
  np.testing.assert_array_equal(got_t, expect_t)
  # Already aligned masks are unchanged.
  np.testing.assert_array_equal(np.asarray(masks.align_to_patches(expect, (1, 2, 2))), expect)


@pytest.mark.parametrize('call,match', [
    (lambda: masks.align_to_patches(np.ones((1, 2, 4, 4), bool), (1, 3, 2)), 'divisible by'),
    (lambda: masks.align_to_patches(np.ones((1, 2, 4, 4), bool), (2, 2)), 'patch_size'),
    (lambda: masks.align_to_patches(np.ones((2, 4, 4), bool), (1, 2, 2)), r'\[B, T, h, w\]'),
])
def test_bad_inputs(call, match):
  with pytest.raises((ValueError, TypeError), match=match):
    call()


def test_pixel_to_token_masks_known_and_exact_per_patch():
  # One clip, 1 frame, 16x16 pixels, VAE factor 2, patch (1, 2, 2): 4x4-pixel patches, a 2x2
  # grid of them. Patch (0, 0) all valid, (0, 1) one valid pixel, (1, 0) none, (1, 1) half.
  px = np.zeros((1, 1, 8, 8), bool)
  px[0, 0, :4, :4] = True
  px[0, 0, 0, 4] = True
  px[0, 0, 4:6, 4:8] = True
  known, exact = masks.pixel_to_token_masks(jnp.asarray(px), 2, (1, 2, 2))
  known, exact = np.asarray(known), np.asarray(exact)
  assert known.shape == exact.shape == (1, 1, 4, 4)
  patch_known = known[0, 0, ::2, ::2]
  patch_exact = exact[0, 0, ::2, ::2]
  np.testing.assert_array_equal(patch_known, [[True, True], [False, True]])
  np.testing.assert_array_equal(patch_exact, [[True, False], [False, False]])
  # Constant inside each patch (the model pools t per patch).
  np.testing.assert_array_equal(known[0, 0], np.repeat(np.repeat(patch_known, 2, 0), 2, 1))
  half, _ = masks.pixel_to_token_masks(jnp.asarray(px), 2, (1, 2, 2), min_valid=0.5)
  np.testing.assert_array_equal(np.asarray(half)[0, 0, ::2, ::2], [[True, False], [False, True]])
  # Hinted pixels count for known, never for exact: patch (1, 0) hinted whole, (1, 1) completed.
  hint = np.zeros_like(px)
  hint[0, 0, 4:8, :4] = True
  hint[0, 0, 6:8, 4:8] = True
  hk, he = masks.pixel_to_token_masks(jnp.asarray(px), 2, (1, 2, 2), hint_mask=jnp.asarray(hint))
  np.testing.assert_array_equal(np.asarray(hk)[0, 0, ::2, ::2], [[True, True], [True, True]])
  np.testing.assert_array_equal(np.asarray(he), exact)
  with pytest.raises(ValueError, match='hint_mask'):
    masks.pixel_to_token_masks(jnp.asarray(px), 2, (1, 2, 2), hint_mask=jnp.asarray(hint[..., 1:]))
  with pytest.raises(ValueError, match='pixel_mask'):
    masks.pixel_to_token_masks(jnp.asarray(px[:, :, :6]), 2, (1, 2, 2))
  with pytest.raises(ValueError, match='min_valid'):
    masks.pixel_to_token_masks(jnp.asarray(px), 2, (1, 2, 2), min_valid=0.0)


def test_min_hinted_needs_mostly_covered_patches_to_know_them_through_hints():
  # One model patch = 8x8 pixels (factor 4, patch (1, 2, 2)); a 16x16 frame holds 2x2 patches.
  given = np.zeros((1, 1, 16, 16), bool)
  hint = np.zeros_like(given)
  hint[0, 0, :8, :8] = True                # patch (0, 0): fully hinted
  hint[0, 0, :2, 8:] = True                # patch (0, 1): a quarter hinted
  given[0, 0, 8:, :1] = True               # patch (1, 0): one given column
  known, exact = (np.asarray(a)[0, 0, ::2, ::2] for a in masks.pixel_to_token_masks(
      jnp.asarray(given), 4, (1, 2, 2), min_valid=0.01, hint_mask=jnp.asarray(hint),
      min_hinted=0.9))
  np.testing.assert_array_equal(known, [[True, False], [True, False]])
  assert not exact.any()
  loose = np.asarray(masks.pixel_to_token_masks(jnp.asarray(given), 4, (1, 2, 2), min_valid=0.01,
                                          hint_mask=jnp.asarray(hint), min_hinted=None)[0])
  np.testing.assert_array_equal(loose[0, 0, ::2, ::2], [[True, True], [True, False]])  # = min_valid
  # The library's default is the configured rule (0.01 / 0.9), not "any pixel".
  default_rule = np.asarray(masks.pixel_to_token_masks(jnp.asarray(given), 4, (1, 2, 2),
                                                       hint_mask=jnp.asarray(hint))[0])
  np.testing.assert_array_equal(default_rule[0, 0, ::2, ::2], known)
  # Given pixels alone follow min_valid only, whatever min_hinted says.
  mostly = np.ones((1, 1, 16, 16), bool)
  mostly[0, 0, 0, 0] = False
  strict = np.asarray(masks.pixel_to_token_masks(jnp.asarray(mostly), 4, (1, 2, 2), min_valid=1.0,
                                           hint_mask=jnp.zeros_like(jnp.asarray(mostly)),
                                           min_hinted=0.9)[0])[0, 0, ::2, ::2]
  np.testing.assert_array_equal(strict, [[False, True], [True, True]])


def test_library_default_rule_is_the_configured_rule():
  import inspect  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from maskvid.sampling import options  # pylint: disable=g-import-not-at-top
  sample = default.get_config().sample
  params = inspect.signature(masks.pixel_to_token_masks).parameters
  assert (params['min_valid'].default, params['min_hinted'].default) == (0.01, 0.9)
  assert (sample.min_valid, sample.min_hinted) == (0.01, 0.9)
  # A run config older than the keys gets the same rule.
  assert options.token_rule({}) == dict(min_valid=0.01, min_hinted=0.9)
  # A 16x16-pixel patch (factor 8): 2 valid pixels (0.8%) are not enough, 3 (1.2%) are.
  for count, want in ((2, False), (3, True)):
    px = np.zeros((1, 1, 16, 16), bool)
    px[0, 0, 0, :count] = True
    known = np.asarray(masks.pixel_to_token_masks(jnp.asarray(px), 8, (1, 2, 2))[0])
    assert known.all() == want and known.any() == want, count
