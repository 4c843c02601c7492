"""The context fill: pixels another frame shows reach the encoder, only where the frames agree."""
import numpy as np
import pytest

from maskvid.eval import protocol
from maskvid.sampling import fill
from maskvid.sampling import masks


def _texture(seed, t=4, h=32, w=32):
  rs = np.random.RandomState(seed)
  frame = rs.uniform(-1, 1, size=(h, w, 3)).astype(np.float32)
  return frame, np.repeat(frame[None], t, axis=0)


def _block_masks(t, h, w, seed, keep=0.5, block=4):
  rs = np.random.RandomState(seed)
  coarse = rs.uniform(size=(t, h // block, w // block)) < keep
  return np.repeat(np.repeat(coarse, block, 1), block, 2)


def test_static_clip_copies_every_pixel_another_frame_shows_exactly():
  _, clip = _texture(0)
  known = _block_masks(*clip.shape[:3], seed=1)
  filled, copied = fill.temporal_fill(np.where(known[..., None], clip, 0.0), known)
  shown = known.any(0)[None] & ~known            # unknown here, known in some other frame
  np.testing.assert_array_equal(copied, shown)
  np.testing.assert_array_equal(filled[copied], clip[copied])
  np.testing.assert_array_equal(filled[known], clip[known])


def test_moving_clip_is_not_copied_where_frames_disagree_but_blind_copy_is():
  frame, _ = _texture(2)
  clip = np.stack([np.roll(frame, 3 * i, axis=1) for i in range(4)])   # a fast pan of noise
  known = _block_masks(*clip.shape[:3], seed=3)
  x = np.where(known[..., None], clip, 0.0)
  _, copied = fill.temporal_fill(x, known)
  assert copied.mean() < 0.01
  blind, blind_copied = fill.temporal_fill(x, known, max_diff=None)
  assert blind_copied.sum() > 0.3 * (~known).sum()
  assert np.abs(blind[blind_copied] - clip[blind_copied]).mean() > 0.3   # the copies are wrong


def test_agreement_threshold_orders_copies():
  frame, _ = _texture(4)
  clip = np.stack([frame, frame + 0.1, frame + 0.3])   # brightness drift: small, then large
  known = _block_masks(3, 32, 32, seed=5)
  x = np.where(known[..., None], clip, 0.0)
  loose = fill.temporal_fill(x, known, max_diff=0.5)[1].sum()
  mid = fill.temporal_fill(x, known, max_diff=0.2)[1].sum()
  strict = fill.temporal_fill(x, known, max_diff=0.05)[1].sum()
  assert loose > mid > strict == 0


def test_context_fill_copies_are_hints_known_but_never_exact():
  _, clip = _texture(6, t=2, h=16, w=16)
  known = np.zeros((2, 16, 16), bool)
  known[0, :, :10] = True                 # left of frame 0, right of frame 1, some of both
  known[1, :, 6:] = True
  filled, hint = fill.context_fill(clip, known)
  np.testing.assert_array_equal(filled, clip)        # static: every pixel shown somewhere
  np.testing.assert_array_equal(hint, ~known)
  k, e = (np.asarray(a)[0] for a in masks.pixel_to_token_masks(
      known[None], 4, (1, 2, 2), 1.0, hint_mask=hint[None]))
  given = masks.pixel_to_token_masks(known[None], 4, (1, 2, 2), 1.0)[0][0]
  assert k.all() and not np.asarray(given).all()    # copies make every token known ...
  np.testing.assert_array_equal(e, given)           # ... and none of them exact
  off, off_hint = fill.context_fill(clip, known, temporal=False)
  assert not off_hint.any()
  # Frames that share no known pixel give no evidence that they agree: nothing is copied.
  apart = np.zeros_like(known)
  apart[0, :, :8], apart[1, :, 8:] = True, True
  assert not fill.context_fill(clip, apart)[1].any()
  np.testing.assert_array_equal(off, fill.nearest_fill(np.where(known[..., None], clip, 0), known))


def test_temporal_nearest_row_is_exact_on_a_static_clip_and_blind_on_motion():
  frame, clip = _texture(7, t=4, h=16, w=16)
  known = _block_masks(4, 16, 16, seed=8)
  out = protocol.temporal_nearest(clip, known)
  shown = known.any(0)[None].repeat(4, 0)
  np.testing.assert_array_equal(out[shown], clip[shown])


def test_temporal_fill_rejects_bad_shapes():
  with pytest.raises(ValueError, match='frames must be'):
    fill.temporal_fill(np.zeros((4, 8, 8, 3)), np.zeros((4, 8, 7), bool))
