"""Novel-view synthesis: one image + a camera path -> a video seen along that path.

image -> depth (ground truth, the trained U-Net, external weights, or Depth Anything V2) ->
forward-warp the image into every camera of the path (z-buffered splatting; holes,
disocclusions and pixels with uncertain depth are marked unknown) -> Completer fills the unknown
tokens (optionally with stochastic conditioning, --renoise_at) -> decoded video. Frame 0 is the
input view.

  python -m maskvid.tasks.nvs --image=in.png --trajectory=orbit --checkpoint=DIR --out=out.mp4
      [--depth=auto|plane|gt|gt:DEPTH.npy|net:DIR|external:WEIGHTS.safetensors|
               depth_anything:WEIGHTS[?scale=1&size=518]] [--num_frames=8]
      [--renoise_at=0.3] [--fov_deg=60] [--strength=1]
`--image=synthetic:SPLIT:SEED` renders frame 0 of a synthetic clip (then --depth=gt uses its
ground-truth depth and intrinsics). --trajectory is a name (see maskvid.geometry.trajectory) or a
JSON pose file whose first pose is the input view.
"""
import os

from absl import app
from absl import flags
from absl import logging
import cv2
import numpy as np

from maskvid import geometry
from maskvid.tasks import cli
from maskvid.tasks import common
from maskvid.tasks import io
from maskvid.data import synthetic
from maskvid.data import scenes
from maskvid import depth as depth_lib


def nvs_conditioning(image: np.ndarray, depth: np.ndarray, intrinsics: np.ndarray,
                     world_to_camera: np.ndarray, **warp_kwargs):
  """Warps the source view into each camera of the path.

  Args:
    image: uint8 [H, W, 3], seen from world_to_camera[0]; depth: z-depth [H, W];
    intrinsics: [3, 3]; world_to_camera: [T, 4, 4] (frame 0 = the source camera).
  Returns:
    (frames uint8 [T, H, W, 3] with zeros where unknown, pixel_mask bool [T, H, W],
     warped depth float32 [T, H, W]); frame 0 is the image itself, fully known.
  """
  image, depth = np.asarray(image), np.asarray(depth)
  poses = np.asarray(world_to_camera)
  if image.dtype != np.uint8 or image.ndim != 3 or depth.shape != image.shape[:2]:
    raise ValueError(f'image must be uint8 [H, W, 3] and depth [H, W] of the same size, got '
                     f'{image.dtype} {image.shape} and {depth.shape}')
  r = geometry.warp_to_cameras(image, depth, intrinsics, poses[0], poses, **warp_kwargs)
  frames, mask, wdepth = r.image.copy(), r.mask.copy(), r.depth.copy()
  frames[0], mask[0], wdepth[0] = image, True, depth
  return frames, mask, wdepth


def novel_view_synthesis(completer, image, depth, intrinsics, world_to_camera, *, seed: int = 0,
                         warp_kwargs=None, **sample_kwargs) -> dict:
  """image uint8 [H,W,3] + depth [H,W] + path [T,4,4] -> dict(video uint8 [T,H,W,3],
  warped uint8 [T,H,W,3], pixel_mask bool [T,H,W], and what the completer returns)."""
  frames, mask, _ = nvs_conditioning(image, depth, intrinsics, world_to_camera,
                                     **(warp_kwargs or {}))
  logging.info('nvs: %d views, %.1f%% of pixels known after warping', len(frames),
               100.0 * mask.mean())
  # Long paths: windows in time order. Every frame's known content is frame 0's warp, so anchors
  # (far-apart views generated together) only add inconsistent keyframes: on 32-frame test paths
  # the generated pixels reproject 0.013 worse than with sliding windows (docs/sampling.md).
  if sample_kwargs.get('long_strategy') is None:
    sample_kwargs['long_strategy'] = 'sliding'
  out = common.run_completion(completer, frames, mask, seed=seed, **sample_kwargs)
  out.update(warped=frames, pixel_mask=mask)
  return out


def _resize_depth(depth: np.ndarray, size: tuple) -> np.ndarray:
  """Nearest keeps depth edges sharp (averaging would invent in-between surfaces)."""
  depth = np.asarray(depth, np.float32)
  if depth.shape == tuple(size):
    return depth
  return cv2.resize(depth, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


PLANE_DEPTH = 1.0   # the plane fallback's distance (named trajectories scale with the depth)


def resolve_depth_arg(depth_arg: str, image_arg: str, checkpoint: str) -> str:
  """`auto` (the default) -> gt for synthetic images, else net:CHECKPOINT/depth when the workdir
  has a trained depth network, else `plane` (a fronto-parallel plane: no parallax inside the
  image, disocclusions only at its borders), with a warning saying how to get real depth."""
  if depth_arg != 'auto':
    return depth_arg
  if image_arg.startswith('synthetic:'):
    return 'gt'
  net_dir = os.path.join(checkpoint, 'depth')
  if os.path.isfile(os.path.join(net_dir, 'config.json')):
    return f'net:{checkpoint}'
  logging.warning('nvs: no depth network in %s, so depth is a fronto-parallel plane; train one '
                  'with `python -m maskvid.main --config=configs/depth_tiny.py --workdir=%s` or '
                  'pass --depth=gt:DEPTH.npy / external:WEIGHTS', net_dir, checkpoint)
  return 'plane'


def prepare_inputs(image_arg: str, depth_arg: str, size: tuple, fov_deg: float):
  """Validates and loads (image uint8 [H,W,3], depth estimator or depth array, intrinsics)."""
  if image_arg.startswith('synthetic:'):
    try:
      _, split, seed = image_arg.split(':')
      seed = int(seed)
    except ValueError:
      raise io.InputError(f"--image: expected 'synthetic:SPLIT:SEED', got {image_arg!r}") from None
    if split not in scenes.SPLITS:
      raise io.InputError(f'--image: split must be one of {scenes.SPLITS}, got {split!r}')
    clip = synthetic.render_clip(seed, split, 1, size[0], size[1])
    image, gt, k = clip['rgb'][0], clip['depth'][0], clip['intrinsics']
  else:   # the user's image at its own size and aspect (the Completer handles any size)
    image = io.read_image(image_arg, '--image')
    gt, k = None, geometry.intrinsics_from_fov(fov_deg, *image.shape[:2])
  full = image.shape[:2]
  if depth_arg == 'plane':
    depth = np.full(image.shape[:2], PLANE_DEPTH, np.float32)
  elif depth_arg == 'gt':
    if gt is None:
      raise io.InputError("--depth: 'gt' needs --image=synthetic:SPLIT:SEED (or use "
                          "--depth=gt:DEPTH.npy, net:DIR or external:PATH)")
    depth = gt
  elif depth_arg.startswith('gt:'):
    depth = io.read_depth(depth_arg[3:], '--depth')
    if depth.shape != full:
      aspect = (depth.shape[0] * full[1]) / (depth.shape[1] * full[0])
      if not 0.98 < aspect < 1.02:
        raise io.InputError(f'--depth: depth map of shape {depth.shape} does not have the '
                            f'aspect of the image ({full[0]}x{full[1]})')
      depth = _resize_depth(depth, full)
  elif depth_arg.startswith(('net:', 'external:', 'depth_anything:')):
    try:
      estimator = depth_lib.make_depth_estimator(depth_arg)
    except (FileNotFoundError, ValueError) as e:
      raise io.InputError(f'--depth: {e}') from e
    if depth_arg.startswith('depth_anything:'):   # resizes to its own input size and back
      depth = estimator.estimate(image)
    else:   # the depth net runs at the model's size; its map is brought back to the image's
      depth = _resize_depth(estimator.estimate(io.resize_frames(image, *size)), full)
  else:
    raise io.InputError(f"--depth: expected gt, gt:PATH, net:DIR, external:PATH or "
                        f"depth_anything:PATH, got {depth_arg!r}")
  return image, np.asarray(depth, np.float32), np.asarray(k, np.float32)


def check_depth_arg(depth_arg: str, image_arg: str) -> None:
  """Cheap validation of --depth before the model is loaded."""
  kind, _, path = depth_arg.partition(':')
  if kind == 'depth_anything':
    path = path.partition('?')[0]   # FILE?scale=..&size=..: options are checked on load
  if depth_arg == 'plane':
    return
  if kind == 'gt' and not path:
    if not image_arg.startswith('synthetic:'):
      raise io.InputError("--depth: 'gt' needs --image=synthetic:SPLIT:SEED (or use "
                          "--depth=gt:DEPTH.npy, net:DIR or external:PATH)")
  elif kind in ('gt', 'external', 'depth_anything') and path:
    if not os.path.isfile(path):
      raise io.InputError(f'--depth: file not found: {path!r}')
  elif kind == 'net' and path:
    if not os.path.isdir(path):
      raise io.InputError(f'--depth: directory not found: {path!r}')
  else:
    raise io.InputError(f"--depth: expected auto, plane, gt, gt:PATH, net:DIR, external:PATH or "
                        f"depth_anything:PATH[?scale=S&size=N], got {depth_arg!r}")


def command(*, image: str, trajectory: str, checkpoint: str, out: str, depth: str = 'auto',
            num_frames: int = 8, fov_deg: float = 60.0, strength: float = 1.0, seed: int = 0,
            fps: int = 8, completer=None, min_valid=None, **sample_kwargs) -> tuple:
  """The whole command; validates every input before loading the model. Returns (mp4, png)."""
  io.require_output(out)
  if num_frames < 2:
    raise io.InputError(f'--num_frames: must be >= 2, got {num_frames}')
  if not trajectory.endswith('.json') and trajectory not in geometry.TRAJECTORIES:
    raise io.InputError(f'--trajectory: must be one of {geometry.TRAJECTORIES} or a .json file, '
                        f'got {trajectory!r}')
  if trajectory.endswith('.json') and not os.path.isfile(trajectory):
    raise io.InputError(f'--trajectory: file not found: {trajectory!r}')
  if not image.startswith('synthetic:'):
    io.read_image(image, '--image')  # fail on a bad image before the slow model load
  depth = resolve_depth_arg(depth, image, checkpoint)
  check_depth_arg(depth, image)
  if completer is None:
    completer = cli.load_completer(checkpoint, min_valid)
  size = common.model_resolution(completer)
  img, dep, k = prepare_inputs(image, depth, size, fov_deg)
  try:
    poses = geometry.make_trajectory(trajectory, num_frames, float(np.median(dep)),
                                     strength=strength)
  except (ValueError, FileNotFoundError) as e:
    raise io.InputError(f'--trajectory: {e}') from e
  result = novel_view_synthesis(completer, img, dep, k, poses, seed=seed, **sample_kwargs)
  return io.write_outputs(out, result['video'],
                          {'warped input': result['warped'],
                           'known pixels': io.mask_to_rgb(result['pixel_mask']),
                           'output': result['video']}, fps=fps)


def main(argv):
  f = flags.FLAGS
  cli.run_main(argv, lambda: command(
      image=f.image, trajectory=f.trajectory, checkpoint=f.checkpoint, out=f.out, depth=f.depth,
      num_frames=f.num_frames, fov_deg=f.fov_deg, strength=f.strength, seed=f.seed, fps=f.fps,
      min_valid=f.min_valid,
      **cli.sample_options(f)))


if __name__ == '__main__':
  flags.DEFINE_string('image', None, "Input image, or 'synthetic:SPLIT:SEED'.")
  flags.DEFINE_string('trajectory', 'orbit', 'Camera path name or .json pose file.')
  flags.DEFINE_string('depth', 'auto', 'auto (gt for synthetic:..., else the net in '
                      'CHECKPOINT/depth if trained, else plane) | plane | gt | gt:DEPTH.npy | '
                      'net:DIR | external:WEIGHTS | depth_anything:WEIGHTS[?scale=1&size=518] '
                      '(Depth Anything V2 .pth or .safetensors; see docs/depth.md)')
  flags.DEFINE_integer('num_frames', 8, 'Frames in the output video (input view included).')
  flags.DEFINE_float('fov_deg', 60.0, 'Horizontal field of view of the (square) input image.')
  flags.DEFINE_float('strength', 1.0, 'Scales the camera motion of named trajectories.')
  cli.define_common_flags()
  flags.mark_flags_as_required(['image'])
  app.run(main)
