"""`Completer`: a trained run (diffusion EMA weights + VAE + latent stats) behind one call.

    completer = Completer.from_workdir('runs/demo')          # or Completer(diffusion_dir, vae_dir)
    video = completer.complete_video(frames, pixel_mask, num_steps=25, seed=0)   # uint8

Pipeline of `complete_video`: unknown pixels filled (`fill.context_fill`: the same pixel of
another frame where the frames agree around it, as a hint; else the nearest known pixel) -> VAE
posterior mean -> normalised latents `(z - shift) / scale`; pixel mask -> token masks by the
documented rule
(`masks.pixel_to_token_masks`: a model patch is known when at least `min_valid` of its pixels are,
exact when all are; known but inexact patches are unreliable context that stochastic conditioning
re-noises); `objectives.complete` with the run's objective (the one completion entry the eval and
the preview use too) fills the rest; decode, composite (every given pixel comes back exactly)
and quantise to uint8. Every default is the run's `config.sample` (`sampling.options`).
Everything heavy is jitted once per shape; the sampler's compiled
function is reused across calls because the Completer keeps one `apply_fn` object.
"""
import os
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from maskvid import pictures
from maskvid.model import model as model_lib
from maskvid.sampling import objectives
from maskvid.sampling import fullres
from maskvid.sampling import inputs as inputs_lib
from maskvid.sampling import masks
from maskvid.sampling import noise
from maskvid.sampling import options as options_lib
from maskvid.vae import cache
from maskvid.vae import codec as codec_lib
from maskvid import workdir as workdir_lib
from maskvid.workdir import stage_dir


class Completer:
  """Masked video completion with a trained maskvid run.

  Args:
    diffusion_dir: the diffusion stage dir (config.json + checkpoints/); EMA weights are used.
    vae_dir: the VAE stage dir (config.json + checkpoints/).
    latents_dir: the latent-cache dir holding the normalisation stats; default: the run config's
      `paths.latents`, else `latents/` next to diffusion_dir.
    latent_stats: dict(shift=[c], scale=[c]) to use instead of reading latents_dir.
    min_valid: fraction of a model patch's pixels that must be valid for it to be known
      (default: the run config's sample.min_valid, else 0.01).

  Attributes: config (the diffusion run config), objective (its config.diffusion.objective:
  which sampler `objectives.complete` drives it with), module / params (EMA) / apply_fn of the
  denoiser, codec (`vae.codec.LatentCodec`: VAE + shift / scale), latent_factor, patch_size.
  """

  def __init__(self, diffusion_dir: str, vae_dir: str, latents_dir: Optional[str] = None, *,
               latent_stats: Optional[Mapping[str, Any]] = None,
               min_valid: Optional[float] = None):
    for name, directory in (('diffusion_dir', diffusion_dir), ('vae_dir', vae_dir)):
      if not directory or not os.path.isdir(directory):
        raise FileNotFoundError(f'{name}: checkpoint directory {directory!r} does not exist (train '
                                'it with `python -m maskvid.main --config=configs/demo.py '
                                '--workdir=DIR`)')
    self.config, self.module, self.params = model_lib.load_for_inference(diffusion_dir)
    # Which sampler drives the model: a baseline trained with another objective is completed
    # the way the eval's row for it is, never the masked way.
    self.objective = str(self.config.diffusion.get('objective', 'masked'))
    self.apply_fn = model_lib.make_apply_fn(self.module)
    if latent_stats is None:
      latent_stats = self._read_stats(diffusion_dir, latents_dir)
    self.codec = codec_lib.LatentCodec.load(vae_dir, stats=latent_stats)
    self.latent_factor = self.codec.factor
    self.patch_size = tuple(int(p) for p in self.config.model.patch_size)
    self.resolution = int(self.config.data.get('resolution', 0))   # H == W the model was trained at
    self.clip_length = int(self.config.data.clip_length)           # frames per training clip
    rule = options_lib.token_rule(self.config.sample)
    self.min_valid = float(rule['min_valid'] if min_valid is None else min_valid)
    self.min_hinted = rule['min_hinted']
    self.fill_options = options_lib.fill_options(self.config.sample)

  def _read_stats(self, diffusion_dir: str, latents_dir: Optional[str]) -> Mapping[str, Any]:
    if latents_dir is None:
      configured = self.config.get('paths', {}).get('latents', '')
      latents_dir = configured or os.path.join(
          os.path.dirname(os.path.abspath(diffusion_dir)), 'latents')
    try:
      return cache.load_latent_stats(latents_dir)
    except (FileNotFoundError, OSError) as e:
      raise FileNotFoundError(f'latents_dir: no latent stats in {latents_dir!r} ({e}); build the '
                              'cache stage or pass latents_dir / latent_stats') from e

  @classmethod
  def from_workdir(cls, workdir: str, **kwargs) -> 'Completer':
    """Completer of a maskvid workdir (its diffusion/, vae/ and latents/ stage dirs).

    Stage paths overridden in the run config (config.paths) are honoured.
    """
    if not workdir or not os.path.isdir(workdir):
      raise FileNotFoundError(f'workdir {workdir!r} does not exist')
    diffusion_dir = os.path.join(workdir, 'diffusion')
    config_path = os.path.join(diffusion_dir, 'config.json')
    if not os.path.exists(config_path):
      raise FileNotFoundError(f'workdir {workdir!r} has no trained diffusion stage ({config_path} '
                              'is missing): run `python -m maskvid.main --config=configs/demo.py '
                              f'--workdir={workdir}`')
    config = workdir_lib.read_config(config_path)
    kwargs.setdefault('latents_dir', stage_dir(config, workdir, 'latents'))
    return cls(diffusion_dir, stage_dir(config, workdir, 'vae'), **kwargs)

  # ------------------------------------------------------------------------------- latents
  def encode(self, frames) -> jax.Array:
    """frames [B,T,H,W,3] (uint8, or float in [-1, 1]) -> normalised latents [B,T,h,w,c]."""
    x = pictures.to_float(frames)
    if x.ndim != 5 or x.shape[-1] != 3:
      raise ValueError(f'frames must be [B, T, H, W, 3], got shape {x.shape}')
    return self.codec.encode(x)

  def decode(self, latents) -> jax.Array:
    """normalised latents [B,T,h,w,c] -> float frames [B,T,H,W,3] in [-1, 1]."""
    z = jnp.asarray(latents, jnp.float32)
    if z.ndim != 5 or z.shape[-1] != self.codec.latent_channels:
      raise ValueError(f'latents must be [B, T, h, w, {self.codec.latent_channels}], got {z.shape}')
    return self.codec.decode(z)

  def sample_options(self, num_steps=None, solver=None, renoise_at=None, guidance=None,
                     progress=False) -> dict:
    """Sampler keyword arguments: given values, else the run config's `sample` section."""
    return dict(options_lib.sampler_options(self.config.sample, num_steps=num_steps,
                                            solver=solver, renoise_at=renoise_at,
                                            guidance=guidance), progress=bool(progress))

  def complete_latents(self, known, known_mask, rng, exact_mask=None, guide_mask=None,
                       **options) -> jax.Array:
    """`objectives.complete` (the run's objective) with its EMA weights; options as in
    `sample_options`."""
    return objectives.complete(self.objective, self.apply_fn, self.params,
                              jnp.asarray(known, jnp.float32), jnp.asarray(known_mask), rng,
                              exact_mask=exact_mask, guide_mask=guide_mask,
                              **self.sample_options(**options))

  def token_masks(self, pixel_mask, hint_mask=None) -> tuple[jax.Array, jax.Array]:
    """bool [B,T,H,W] pixels (and hinted ones) -> (known, exact) bool [B,T,h,w]
    (`masks.pixel_to_token_masks`)."""
    return masks.pixel_to_token_masks(jnp.asarray(pixel_mask), self.latent_factor,
                                      self.patch_size, self.min_valid, hint_mask=hint_mask,
                                      min_hinted=self.min_hinted)

  # ------------------------------------------------------------------------------- video
  def _complete_other_size(self, x, m, hint, size, *, paste_known, return_latents, **options):
    """complete_video for frames [B,T,H,W,3] (float) of a size other than the model's."""
    frames8 = pictures.to_uint8(x)
    lo, lo_guessed = fullres.to_model_resolution(frames8, m | hint, size)
    lo_given = fullres.to_model_resolution(frames8, m, size)[1] if hint.any() else lo_guessed
    out = self.complete_video(lo, lo_given, paste_known=paste_known, return_latents=True,
                              hint_mask=lo_guessed & ~lo_given, **options)
    feather = float(np.ceil(max(x.shape[2] / size[0], x.shape[3] / size[1])))
    known = m if paste_known else np.zeros_like(m)
    video = fullres.to_input_resolution(out['video'], frames8, known, feather)
    if hint.any():   # hinted pixels keep their full-resolution detail, moved by the model's change
      video = fullres.move_hints(video, frames8, hint & ~m, out['video'], lo, lo_guessed)
    return dict(out, video=video) if return_latents else video

  def complete_video(self, frames, pixel_mask, *, num_steps: Optional[int] = None,
                     solver: Optional[str] = None, renoise_at: Optional[float] = None,
                     guidance: Optional[float] = None, seed: int = 0,
                     rng: Optional[jax.Array] = None, paste_known: bool = True,
                     return_latents: bool = False, progress: bool = False,
                     hint_mask=None, guide_frames=None):
    """Completes the unknown pixels of a clip (or a batch of clips).

    Args:
      frames: uint8 [T,H,W,3] / [B,T,H,W,3], or float in [-1, 1] of those shapes, any H x W:
        at the model's resolution (`resolution`) they are completed as they are; any other size
        or aspect goes through `sampling.fullres` (completed at the model's resolution, the
        result upsampled into the holes, every known pixel kept at full resolution, seams
        blended over `ceil(H / resolution)` pixels). T must be a multiple of the temporal patch.
      pixel_mask: bool [T,H,W] / [B,T,H,W], True = known pixel (its value is trusted).
      num_steps, solver, renoise_at, guidance: sampler options (None: the run config's
        `sample` section; renoise_at = 0 turns stochastic conditioning off).
      seed: sampling seed (ignored when `rng` is given): clip b of a batch samples with
        `jax.random.key(seed + b)` (`sampling.noise.clip_keys`), so it gets the same draws as
        when completed alone with seed + b (and as the eval's row for clip b).
      paste_known: copy the known input pixels over the decoded output (default; False shows
        the raw decode, e.g. to see the VAE's error on the given pixels).
      return_latents: also return the latents and the latent known mask.
      progress: log a line per sampler step (the task commands turn it on).
      hint_mask: optional bool of pixel_mask's shape: pixels whose value in `frames` is a guess
        (e.g. an edit warped along optical flow), not given. They count as given for the
        `known` token rule, never for `exact`, so their tokens are clean context that
        stochastic conditioning (`renoise_at`) re-noises and repairs. They are not pasted back:
        the output there is the hint moved by what the model changed (`sampling.composite`).
      guide_frames: optional bool [T] / [B, T]: with guidance, only these frames' known tokens
        are dropped in the guidance branch (`sampler.complete(guide_mask=)`), the other known
        frames stay clean in both passes; None: every known token (plain mask-dropout guidance).

    Returns:
      uint8 frames with the rank of `frames` ([T,H,W,3] or [B,T,H,W,3]); with return_latents a
      dict(video=..., latents [B,T,h,w,c], known_mask [B,T,h,w]).
    """
    x, m, hint = _batched_inputs(frames, pixel_mask, hint_mask)
    unbatched = np.ndim(frames) == 4
    size = (self.resolution, self.resolution)
    if self.resolution and x.shape[2:4] != size:
      out = self._complete_other_size(x, m, hint, size, num_steps=num_steps, solver=solver,
                                      renoise_at=renoise_at, guidance=guidance, seed=seed,
                                      rng=rng, paste_known=paste_known,
                                      return_latents=return_latents, progress=progress,
                                      guide_frames=guide_frames)
      if unbatched:
        out = ({**out, 'video': out['video'][0]} if return_latents else out[0])
      return out
    pt, ph, pw = self.patch_size
    f = self.latent_factor
    _, T, H, W, _ = x.shape
    if T % pt or H % (f * ph) or W % (f * pw):
      raise ValueError(f'frames [.., T={T}, H={H}, W={W}, 3] must have T divisible by {pt} and H, '
                       f'W by {f * ph} x {f * pw} (VAE factor {f} x model patch {ph} x {pw})')
    if rng is None:   # clip b of the batch: key(seed + b), the draws it gets completed alone
      rng = noise.clip_keys(seed, x.shape[0])

    # Unknown pixels come from other frames where they agree (as hints), else the nearest known
    # pixel: no hard edges for the encoder, and the other frames' pixels reach the model.
    given = inputs_lib.prepare(
        np.asarray(x), m, hint, encode=self.encode, decode=self.decode,
        factor=self.latent_factor, patch_size=self.patch_size, fill_options=self.fill_options,
        token_rule=dict(min_valid=self.min_valid, min_hinted=self.min_hinted))
    out, video = inputs_lib.complete(
        given, lambda known, known_mask, exact: self.complete_latents(
            known, known_mask, rng, exact_mask=exact,
            guide_mask=_frame_tokens(guide_frames, known_mask), num_steps=num_steps,
            solver=solver, renoise_at=renoise_at, guidance=guidance, progress=progress),
        self.decode, paste_known=False)
    # Known pixels are pasted as uint8 below (bit-exact); hinted ones move with the model.
    video = pictures.to_uint8(video)
    if paste_known:
      video = np.where(m[..., None], pictures.to_uint8(x), video)
    if unbatched:
      video = video[0]
    if return_latents:
      return dict(video=video, latents=np.asarray(out), known_mask=given.known)
    return video


def _frame_tokens(frames, known) -> Optional[jax.Array]:
  """bool [T] / [B, T] frame flags (or None) -> the known tokens [B, T, h, w] of those frames."""
  if frames is None:
    return None
  flags = np.broadcast_to(np.asarray(frames, bool), known.shape[:2])
  return jnp.asarray(known & flags[:, :, None, None])


def _batched_inputs(frames, pixel_mask, hint_mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`complete_video`'s inputs checked and batched: float [B,T,H,W,3], bool [B,T,H,W] x2."""
  x = pictures.to_float(frames)
  if x.ndim not in (4, 5) or x.shape[-1] != 3:
    raise ValueError(f'frames must be [T, H, W, 3] or [B, T, H, W, 3], got shape {x.shape}')
  m = np.asarray(pixel_mask)
  if m.dtype != np.bool_:
    raise TypeError(f'pixel_mask must be bool (True = known pixel), got dtype {m.dtype}')
  if m.shape != x.shape[:-1]:
    raise ValueError(f'pixel_mask must have shape frames.shape[:-1] = {x.shape[:-1]}, got '
                     f'{m.shape}')
  hint = np.zeros_like(m) if hint_mask is None else np.asarray(hint_mask)
  if hint.dtype != np.bool_ or hint.shape != m.shape:
    raise ValueError(f'hint_mask must be bool of pixel_mask\'s shape {m.shape}, got '
                     f'{hint.dtype} {hint.shape}')
  if x.ndim == 4:
    return x[None], m[None], hint[None]
  return x, m, hint
