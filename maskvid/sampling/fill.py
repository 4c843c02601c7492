"""What partly known patches are encoded from: pixels from other frames where they agree, then
the nearest pixel of the same frame.

  context_fill(frames, known, hint)   the one rule the Completer and the eval share
  temporal_fill(frames, valid)        same pixel, another frame (agreement-gated, or blind)
  nearest_fill(frames, valid)         nearest valid pixel of the same frame (the trivial filler)
"""
import numpy as np
from scipy import ndimage


def context_fill(frames: np.ndarray, known: np.ndarray, hint=None, *, temporal: bool = True,
                 window: int = 7, max_diff: float = 0.2, min_support: int = 16,
                 bracket: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """The pixels the VAE encoder sees for a masked clip, and which of them are guesses.

  Unknown pixels first take the same pixel of other frames where the frames agree around it
  (`temporal_fill`, when `temporal`; `bracket`: also from a frame before and one after that
  agree with each other), then the nearest known pixel of their own frame
  (`nearest_fill`). Copied pixels are *hints*, like a warped edit: known for the token rule
  (`masks.pixel_to_token_masks(hint_mask=)`), never exact, never pasted back (the output there
  is the copy moved by the model's change, `composite`). So where another frame shows the
  answer the model gets it as context, and stochastic conditioning may repair a wrong copy.

  frames: float [..., T, H, W, 3]; known, hint: bool [..., T, H, W] (hint: pixels of `frames`
  that are already guesses). Returns (filled frames like `frames`, hint | copied).
  """
  frames = np.asarray(frames, np.float32)
  known = np.asarray(known, bool)
  hint = np.zeros_like(known) if hint is None else np.asarray(hint, bool)
  guessed = known | hint
  x = np.where(guessed[..., None], frames, 0.0).astype(np.float32)
  copied = np.zeros_like(guessed)
  if temporal:
    x, copied = temporal_fill(x, guessed, window=window, max_diff=max_diff,
                              min_support=min_support, bracket=bracket)
  return nearest_fill(x, guessed | copied), hint | copied


def nearest_fill(frames: np.ndarray, valid: np.ndarray, empty_value=0.0) -> np.ndarray:
  """Fills invalid pixels with the nearest valid pixel of the same frame.

  frames: [..., H, W, C]; valid: bool [..., H, W] (True = trusted pixel). A frame without any
  valid pixel is filled with `empty_value`. Returns an array like `frames`; valid pixels unchanged.
  """
  frames = np.asarray(frames)
  valid = np.asarray(valid, bool)
  if valid.shape != frames.shape[:-1]:
    raise ValueError(f'valid must be bool [..., H, W] = {frames.shape[:-1]}, got {valid.shape}')
  h, w, c = frames.shape[-3:]
  flat = frames.reshape(-1, h, w, c)
  flat_valid = valid.reshape(-1, h, w)
  out = np.empty_like(flat)
  for n in range(flat.shape[0]):
    if flat_valid[n].all():
      out[n] = flat[n]
    elif not flat_valid[n].any():
      out[n] = empty_value
    else:
      _, (iy, ix) = ndimage.distance_transform_edt(~flat_valid[n], return_indices=True)
      out[n] = flat[n][iy, ix]
  return out.reshape(frames.shape)


def temporal_fill(frames: np.ndarray, valid: np.ndarray, *, window: int = 7,
                  max_diff: float | None = 0.2, min_support: int = 16, bracket: bool = True,
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Fills invalid pixels with the same pixel of other frames of the clip where it is valid.

  Two kinds of evidence, tried in order:
    own: frame s is copied into frame t where the two frames *agree* around the pixel: over the
      pixels valid in both within a `window` x `window` box (doubled until it holds at least
      `min_support` such pixels, up to the whole frame), the mean absolute difference (mean
      over channels, in the frames' units) is at most `max_diff`. Sources nearest first (the
      earlier on a tie).
    bracket (`bracket=True`): where frame t has no evidence of its own (e.g. a middle frame of
      an interpolation), frames a < t < b that both show the pixel and agree around it give
      their blend `(1 - w) x_a + w x_b`, w = (t - a) / (b - a): what does not change from a to
      b is taken to be there in between. Tightest pair first.
  A static or slow camera passes (the other frames show the same thing there); a fast one
  fails and leaves the pixel to the model and the spatial fill. `max_diff=None` copies the
  nearest frame blindly (the 'temporal nearest' trivial answer; no bracket pass).

  frames: [..., T, H, W, C] float; valid: bool [..., T, H, W]. Returns (filled like `frames`,
  copied bool [..., T, H, W]: the pixels taken from other frames). Pixels still invalid keep
  their input values (`nearest_fill` is the next step).
  """
  frames = np.asarray(frames)
  valid = np.asarray(valid, bool)
  if frames.ndim < 4 or valid.shape != frames.shape[:-1]:
    raise ValueError(f'frames must be [..., T, H, W, C] and valid bool [..., T, H, W] of the same '
                     f'leading shape, got {frames.shape} and {valid.shape}')
  if int(window) < 1 or int(min_support) < 1:
    raise ValueError(f'window and min_support must be >= 1, got {window}, {min_support}')
  t, h, w, c = frames.shape[-4:]
  flat = frames.reshape(-1, t, h, w, c)
  flat_valid = valid.reshape(-1, t, h, w)
  out, copied = flat.copy(), np.zeros_like(flat_valid)
  sizes = []
  size = int(window)
  while size < 2 * max(h, w):
    sizes.append(size)
    size *= 2
  sizes.append(2 * max(h, w) + 1)
  for n in range(flat.shape[0]):
    x, m = flat[n], flat_valid[n]
    cache = {}

    def agree(a, b):   # symmetric agreement maps, each pair computed once per clip
      if (a, b) not in cache:
        cache[a, b] = cache[b, a] = _agree(x[a], x[b], m[a] & m[b], sizes, float(max_diff),
                                           int(min_support))
      return cache[a, b]

    for i in range(t):
      need = ~m[i]
      for s in sorted((j for j in range(t) if j != i), key=lambda j: (abs(j - i), j)):
        if not need.any():
          break
        take = need & m[s]
        if take.any() and max_diff is not None:
          take &= agree(i, s)
        out[n, i][take] = x[s][take]
        copied[n, i] |= take
        need &= ~take
      if max_diff is None or not bracket:
        continue
      pairs = sorted(((a, b) for a in range(i) for b in range(i + 1, t)),
                     key=lambda p: (p[1] - p[0], p[0]))
      for a, b in pairs:
        if not need.any():
          break
        take = need & m[a] & m[b]
        if not take.any():
          continue
        take &= agree(a, b)
        wgt = (i - a) / (b - a)
        out[n, i][take] = (1 - wgt) * x[a][take] + wgt * x[b][take]
        copied[n, i] |= take
        need &= ~take
  return out.reshape(frames.shape), copied.reshape(valid.shape)


def _agree(a, b, both, sizes, max_diff, min_support) -> np.ndarray:
  """bool [H, W]: frames a, b [H, W, C] agree around each pixel (see `temporal_fill`)."""
  diff = np.abs(a - b).mean(-1) * both
  result = np.zeros(both.shape, bool)
  decided = np.zeros(both.shape, bool)
  weight = both.astype(np.float64)
  for size in sizes:
    support = ndimage.uniform_filter(weight, size, mode='constant') * size ** 2
    total = ndimage.uniform_filter(diff.astype(np.float64), size, mode='constant') * size ** 2
    enough = ~decided & (support >= min_support - 1e-6)
    result[enough] = total[enough] <= max_diff * support[enough]
    decided |= enough
    if decided.all():
      break
  return result   # never enough co-valid pixels: no evidence, no copy
