"""Edit propagation: an edit made on frame 0 is carried through the rest of the clip.

original clip + edited frame 0 -> edited region (difference + morphology, or --mask) -> region
tracked through the original clip with Farneback optical flow (maskvid.tasks.track) -> frame 0
is the edited frame (known); in later frames the tracked region (dilated) is not given and the
rest is -> inside the region the edited frame 0 pulled along the chained flow is a *hint*
(known but unreliable: `--renoise_at` lets the model repair it; --nowarp_hint leaves the region
blank) -> the Completer repaints the region consistently with the edit.

  python -m maskvid.tasks.edit --video=clip.mp4 --edited_frame=edit.png --checkpoint=DIR
      --out=out.mp4 [--mask=region.png] [--threshold=24] [--dilate=2] [--renoise_at=0.3]
      [--nowarp_hint]
"""
from typing import Optional

from absl import app
from absl import flags
from absl import logging
import numpy as np

from maskvid.tasks import cli
from maskvid.tasks import common
from maskvid.tasks import io
from maskvid.tasks import track


def edit_inputs(video, edited_frame, region0: Optional[np.ndarray] = None, *,
                threshold: int = 24, dilate_radius: int = 2, warp_hint: bool = True,
                flows=None) -> dict:
  """What the completer is given for an edit (the command and the eval's 'edit' task).

  video uint8 [T,H,W,3], edited_frame uint8 [H,W,3] (frame 0 edited), region0 bool [H,W] or None
  (found from the frame-0 difference above `threshold`). The region is tracked with optical flow
  (`flows`: `track.consecutive_flows(video)`, computed when None) and dilated; with `warp_hint`
  the edited frame 0 pulled along the flow into it is a hint. Returns dict(frames uint8
  [T,H,W,3], pixel_mask, hint_mask, region bool [T,H,W]).
  """
  video, edited_frame = np.asarray(video), np.asarray(edited_frame)
  if region0 is None:
    region0 = track.find_edit_region(video[0], edited_frame, threshold=threshold)
  if not np.asarray(region0).any():
    raise ValueError('the edited region is empty: the edited frame equals frame 0 of the video '
                     '(lower the threshold or pass a mask)')
  flows = track.consecutive_flows(video) if flows is None else flows
  region = track.track_region(video, region0, flows)
  frames, mask, hint = track.edit_conditioning(video, edited_frame, region,
                                               dilate_radius=dilate_radius,
                                               flows=flows if warp_hint else None)
  return dict(frames=frames, pixel_mask=mask, hint_mask=hint, region=region)


def propagate_edit(completer, video, edited_frame, region0: Optional[np.ndarray] = None, *,
                   threshold: int = 24, dilate_radius: int = 2, seed: int = 0,
                   warp_hint: bool = True, **sample_kwargs) -> dict:
  """-> dict(video uint8 [T,H,W,3], region bool [T,H,W], pixel_mask, conditioning, ...)."""
  given = edit_inputs(video, edited_frame, region0, threshold=threshold,
                      dilate_radius=dilate_radius, warp_hint=warp_hint)
  region = given['region']
  logging.info('edit: region covers %.1f%% of frame 0, %.1f%% of the last frame',
               100 * region[0].mean(), 100 * region[-1].mean())
  out = common.run_completion(completer, given['frames'], given['pixel_mask'], seed=seed,
                              hint_mask=given['hint_mask'], **sample_kwargs)
  out.update(region=region, pixel_mask=given['pixel_mask'], hint_mask=given['hint_mask'],
             conditioning=given['frames'])
  return out


def command(*, video: str, edited_frame: str, checkpoint: str, out: str, mask: str = '',
            threshold: int = 24, dilate: int = 2, seed: int = 0, fps: int = 8, completer=None,
            min_valid=None, warp_hint: bool = True, **sample_kwargs) -> tuple:
  """Validates, loads, runs and writes (mp4, png)."""
  io.require_output(out)
  clip = io.read_video(video, '--video')
  edited = io.read_image(edited_frame, '--edited_frame')
  if edited.shape != clip.shape[1:]:
    raise io.InputError(f'--edited_frame: size {edited.shape[1]}x{edited.shape[0]} differs from '
                        f'the --video frames {clip.shape[2]}x{clip.shape[1]}')
  if mask:
    region0 = io.read_mask(mask, '--mask')
    if region0.shape != clip.shape[1:3]:
      raise io.InputError(f'--mask: size {region0.shape[1]}x{region0.shape[0]} differs from the '
                          f'--video frames {clip.shape[2]}x{clip.shape[1]}')
  else:
    region0 = track.find_edit_region(clip[0], edited, threshold=threshold)
    if not region0.any():
      raise io.InputError(f'--edited_frame: no pixel differs from frame 0 of --video by more '
                          f'than --threshold={threshold}; pass --mask or lower --threshold')
  if completer is None:
    completer = cli.load_completer(checkpoint, min_valid)
  # Any frame size: tracked at full resolution; the Completer works at the model's and returns
  # this size with every pixel outside the edited region exact (`sampling.fullres`). Any length:
  # clips longer than the model's go window by window (`sampling.long_video`).
  result = propagate_edit(completer, clip, edited, region0, dilate_radius=dilate, seed=seed,
                          warp_hint=warp_hint, **sample_kwargs)
  return io.write_outputs(out, result['video'],
                          {'input': clip, 'known pixels': io.mask_to_rgb(result['pixel_mask']),
                           'output': result['video']}, fps=fps)


def main(argv):
  f = flags.FLAGS
  cli.run_main(argv, lambda: command(
      video=f.video, edited_frame=f.edited_frame, checkpoint=f.checkpoint, out=f.out,
      mask=f.mask or '', threshold=f.threshold, dilate=f.dilate, seed=f.seed, fps=f.fps,
      min_valid=f.min_valid, warp_hint=f.warp_hint,
      **cli.sample_options(f)))


if __name__ == '__main__':
  flags.DEFINE_string('video', None, 'Original clip (mp4/gif/.npy uint8 [T,H,W,3]).')
  flags.DEFINE_string('edited_frame', None, 'Edited version of the first frame (image file).')
  flags.DEFINE_string('mask', '', 'Optional mask image of the edited region (non-zero = edited).')
  flags.DEFINE_integer('threshold', 24, 'Per-pixel difference (0-255) that counts as edited.')
  flags.DEFINE_integer('dilate', 2, 'Pixels added around the tracked region before inpainting.')
  flags.DEFINE_bool('warp_hint', True, 'Warp the edited frame 0 along the optical flow into the '
                    'region as a known-but-unreliable hint (False: the region is left blank).')
  cli.define_common_flags()
  flags.mark_flags_as_required(['video', 'edited_frame'])
  app.run(main)
