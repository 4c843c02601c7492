"""composite: given pixels exact, hinted pixels are the hint moved by the model's change."""
import numpy as np
import pytest

from maskvid.sampling import composite


def test_given_hinted_and_generated_pixels():
  rng = np.random.default_rng(0)
  frames, decoded, decoded_in = (rng.uniform(-0.5, 0.5, (2, 4, 4, 3)).astype(np.float32)
                                 for _ in range(3))
  given = np.zeros((2, 4, 4), bool)
  given[:, 0] = True
  hint = np.zeros_like(given)
  hint[:, 1:3] = True
  hint[:, 0, 0] = True                      # given wins over hinted
  out = composite.composite(decoded, frames, given, hint, decoded_in)
  np.testing.assert_array_equal(out[given], frames[given])
  h = hint & ~given
  np.testing.assert_allclose(out[h], np.clip(frames + decoded - decoded_in, -1, 1)[h], atol=1e-6)
  rest = ~given & ~hint
  np.testing.assert_array_equal(out[rest], decoded[rest])
  # The model left the hint as it was: the hint comes back exactly.
  same = composite.composite(decoded_in, frames, given, hint, decoded_in)
  np.testing.assert_array_equal(same[h], frames[h])
  # No hint: given pasted over the decode, nothing else needed.
  np.testing.assert_array_equal(composite.composite(decoded, frames, given),
                                np.where(given[..., None], frames, decoded))
  with pytest.raises(ValueError, match='decoded_input'):
    composite.composite(decoded, frames, given, hint)
  with pytest.raises(ValueError, match='must be'):
    composite.composite(decoded[:1], frames, given)
