"""What the sampler is given for a masked clip, and how its decode is put back: the one path the
Completer (and through it the task commands) and the eval share.

  prepare(frames, known_px, hint_px, *, encode, decode, factor, patch_size, fill_options,
          token_rule) -> Inputs
  complete(inputs, sample, decode, paste_known=True) -> (latents, float frames)
  finish(inputs, decoded, paste_known=True) -> float frames [..., T, H, W, 3]

prepare once, then `complete` as often as there are samples to draw: the Completer, the eval's
rows and the training preview all go prepare -> complete.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax.numpy as jnp
import numpy as np

from maskvid.sampling import composite
from maskvid.sampling import fill
from maskvid.sampling import masks


@dataclasses.dataclass
class Inputs:
  """A batch of N masked clips as the sampler sees them."""
  frames: np.ndarray       # float [N, T, H, W, 3]: context-filled pixels the encoder sees
  known_px: np.ndarray     # bool [N, T, H, W]: given pixels (pasted back exactly)
  hint_px: np.ndarray      # bool [N, T, H, W]: guesses (task hints and copied pixels)
  latents: np.ndarray      # [N, T, h, w, c] normalised
  known: np.ndarray        # bool [N, T, h, w] known tokens
  exact: np.ndarray        # bool [N, T, h, w] exact tokens
  decoded_in: Optional[np.ndarray]   # the decoded input latents where hints exist (composite)


def prepare(frames, known_px, hint_px, *, encode: Callable, decode: Callable, factor: int,
            patch_size, fill_options: dict, token_rule: dict) -> Inputs:
  """Fill (`fill.context_fill`: copies become hints), encode, token masks
  (`masks.pixel_to_token_masks`). frames float [N,T,H,W,3] in [-1, 1]; masks bool [N,T,H,W];
  encode / decode: frames <-> normalised latents (e.g. batched codec calls)."""
  filled, hint_px = fill.context_fill(frames, known_px, hint_px, **fill_options)
  latents = np.asarray(encode(filled))
  known, exact = (np.asarray(a) for a in masks.pixel_to_token_masks(
      jnp.asarray(known_px), factor, tuple(patch_size), hint_mask=jnp.asarray(hint_px),
      **token_rule))
  decoded_in = np.asarray(decode(latents)) if hint_px.any() else None
  return Inputs(filled, np.asarray(known_px, bool), hint_px, latents, known, exact, decoded_in)


def complete(inputs: Inputs, sample: Callable, decode: Callable,
             paste_known: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """One completion of prepared inputs: (latents [N,T,h,w,c], frames float [N,T,H,W,3]).

  sample(known_latents, known, exact) -> latents: a sampler over the token masks (unknown
  latents are zeroed: no sampler may read them); decode: latents -> frames; the decode is put
  back over the input by `finish`.
  """
  known_latents = np.where(inputs.known[..., None], inputs.latents, 0.0).astype(np.float32)
  latents = np.asarray(sample(known_latents, inputs.known, inputs.exact))
  return latents, finish(inputs, np.asarray(decode(latents)), paste_known)


def finish(inputs: Inputs, decoded, paste_known: bool = True) -> np.ndarray:
  """The decoded completion composited over the input (`composite`): given pixels exact (unless
  paste_known is False), hinted and copied ones moved by the model's change, the rest decoded."""
  given = inputs.known_px if paste_known else np.zeros_like(inputs.known_px)
  return composite.composite(decoded, inputs.frames, given, inputs.hint_px & ~inputs.known_px,
                             inputs.decoded_in)
