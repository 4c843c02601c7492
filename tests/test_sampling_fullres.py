"""sampling.fullres: masked area downsampling, exact paste-back, seam blending."""
import numpy as np

from maskvid.sampling import fullres


def test_downsampling_averages_known_pixels_only():
  frames = np.zeros((1, 4, 4, 3), np.uint8)
  frames[0, :, :2] = 200           # left half known, bright
  frames[0, :, 2:] = 17            # right half unknown: its values must not leak
  mask = np.zeros((1, 4, 4), bool)
  mask[0, :, :2] = True
  mask[0, 0, 2] = True             # one known pixel on the right
  lo, lo_mask = fullres.to_model_resolution(frames, mask, (2, 2))
  np.testing.assert_array_equal(lo_mask[0], [[True, False], [True, False]])
  np.testing.assert_array_equal(lo[0, :, 0], 200)     # 4 known pixels of 200
  assert lo[0, 0, 1, 0] == 17                          # only the one known pixel counts
  assert lo[0, 1, 1, 0] == 0                           # nothing known: 0, and unknown


def test_upsampling_pastes_known_pixels_and_blends_the_seam():
  h, w, feather = 12, 12, 3.0
  frames = np.full((1, h, w, 3), 200, np.uint8)
  mask = np.zeros((1, h, w), bool)
  mask[0, :, :4] = True                                # known: columns 0..3
  generated = np.zeros((1, 3, 3, 3), np.uint8)          # the model's fill: black
  out = fullres.to_input_resolution(generated, frames, mask, feather)
  assert out.shape == frames.shape
  np.testing.assert_array_equal(out[0, :, :4], 200)    # known pixels exact
  # Column 4 is 1 pixel from the known region: 2/3 known colour; from 3 pixels on, generated.
  np.testing.assert_allclose(out[0, :, 4, 0], np.round(200 * 2 / 3), atol=1)
  np.testing.assert_allclose(out[0, :, 5, 0], np.round(200 / 3), atol=1)
  np.testing.assert_array_equal(out[0, :, 7:], 0)
  # No known pixel at all: the upsampled generation everywhere.
  out = fullres.to_input_resolution(generated, frames, np.zeros_like(mask), feather)
  np.testing.assert_array_equal(out, 0)
