"""Frame interpolation: two endpoint images -> a video that starts at one and ends at the other.

The endpoints are known (clean, t = 0: their latents are kept bit-exactly by the sampler), every
frame between them is unknown; the Completer generates the middle.

  python -m maskvid.tasks.interpolate --start=a.png --end=b.png --checkpoint=DIR --out=out.mp4
      [--num_frames=8] [--renoise_at=0.3]
The output has the endpoints' size (any size or aspect; odd sizes gain one edge-replicated
row/column in the MP4 only, which H.264 needs, not in the PNG strip).
"""
from absl import app
from absl import flags
from absl import logging
import numpy as np

from maskvid.tasks import cli
from maskvid.tasks import common
from maskvid.tasks import io


def interpolation_conditioning(start: np.ndarray, end: np.ndarray, num_frames: int):
  """uint8 [H,W,3] endpoints -> (frames uint8 [T,H,W,3], pixel_mask bool [T,H,W]).

  Middle frames hold a linear cross-fade (only for display: they are unknown to the sampler).
  """
  start, end = np.asarray(start), np.asarray(end)
  if start.shape != end.shape or start.ndim != 3 or start.dtype != np.uint8:
    raise ValueError(f'start and end must be uint8 [H, W, 3] of the same size, got {start.dtype} '
                     f'{start.shape} and {end.dtype} {end.shape}')
  if num_frames < 3:
    raise ValueError(f'num_frames must be >= 3 (two endpoints and a middle), got {num_frames}')
  w = np.linspace(0.0, 1.0, num_frames)[:, None, None, None]
  frames = np.round((1 - w) * start + w * end).astype(np.uint8)
  frames[0], frames[-1] = start, end
  mask = np.zeros(frames.shape[:3], bool)
  mask[0] = mask[-1] = True
  return frames, mask


def interpolate(completer, start, end, num_frames: int, *, seed: int = 0, **sample_kwargs) -> dict:
  """Endpoints uint8 [H,W,3] -> dict(video uint8 [T,H,W,3], blend, pixel_mask, latents...)."""
  frames, mask = interpolation_conditioning(start, end, num_frames)
  logging.info('interpolate: %d frames, endpoints known', num_frames)
  out = common.run_completion(completer, frames, mask, seed=seed, **sample_kwargs)
  out.update(blend=frames, pixel_mask=mask)
  return out


def command(*, start: str, end: str, checkpoint: str, out: str, num_frames: int = 8,
            seed: int = 0, fps: int = 8, completer=None, min_valid=None,
            **sample_kwargs) -> tuple:
  """Validates, loads, runs and writes (mp4, png). Endpoints must have the same size."""
  io.require_output(out)
  if num_frames < 3:
    raise io.InputError(f'--num_frames: must be >= 3, got {num_frames}')
  a, b = io.read_image(start, '--start'), io.read_image(end, '--end')
  if a.shape != b.shape:
    raise io.InputError(f'--end: size {b.shape[1]}x{b.shape[0]} differs from --start '
                        f'{a.shape[1]}x{a.shape[0]}')
  if completer is None:
    completer = cli.load_completer(checkpoint, min_valid)
  # Any size: the Completer works at the model's resolution and returns the input's, with the
  # endpoints' pixels exact (`sampling.fullres`).
  result = interpolate(completer, a, b, num_frames, seed=seed, **sample_kwargs)
  return io.write_outputs(out, result['video'],
                          {'cross-fade': result['blend'], 'output': result['video']}, fps=fps)


def main(argv):
  f = flags.FLAGS
  cli.run_main(argv, lambda: command(
      start=f.start, end=f.end, checkpoint=f.checkpoint, out=f.out, num_frames=f.num_frames,
      seed=f.seed, fps=f.fps, min_valid=f.min_valid, **cli.sample_options(f)))


if __name__ == '__main__':
  flags.DEFINE_string('start', None, 'First frame (image file).')
  flags.DEFINE_string('end', None, 'Last frame (image file, same size as --start).')
  flags.DEFINE_integer('num_frames', 8, 'Frames in the output, endpoints included.')
  cli.define_common_flags()
  flags.mark_flags_as_required(['start', 'end'])
  app.run(main)
