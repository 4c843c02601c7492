"""Long paths from a short-clip model: the window planner against one window and no context.

Synthetic `test` scenes rendered along `--frames`-frame camera paths (GT depth and cameras);
`nvs` from frame 0 (its GT-depth warp is every frame's known content) and `interpolate` between
frames 0 and T-1, completed by a trained run's Completer in these ways:

  one_window    the whole video in one call (a T-frame clip the model never trained on)
  independent   windows of the model's clip in time order, no shared context (sliding, 0)
  sliding       windows in time order, each with the 2 newest finished frames as context
  anchors       keyframes over the whole path first, then the frames between (2 context frames),
                with the run's sampler options (the demo: guidance 2 over everything known)
  anchors g1    the same without guidance (one model pass a step)
  anchors ctx-guided  the same with guidance over each window's context frames only
                (`complete_long(guide_context=True)`: the window's own given pixels in both
                passes)
  trivial       nearest fill of the warp (nvs) / the cross-fade of the endpoints (interpolate)

Printed: PSNR of the generated frames against the render (mean ± SE over scenes; all of them and
the last 8), the paired differences to independent windows (last-8 PSNR, reprojection; and the
reprojection error over every frame pair scored on the target's generated pixels only), the
reprojection error between far-apart frames (0, T/2, T-1) with GT geometry, model calls, wall
seconds, and the sampler's compiled memory for one window vs the one-window call; written:
`--out`/long_video.png (PSNR against frame index per task) and long_video_strip.png (one scene's
nvs, a row per method).

  python -m maskvid.bench.long_video --workdir=runs/demo --frames=32 --scenes=4
"""
import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from maskvid import pictures
from maskvid.data import synthetic
from maskvid.data import scenes
from maskvid.eval import consistency
from maskvid.eval import metrics
from maskvid.sampling import completer as completer_lib
from maskvid.sampling import fill
from maskvid.sampling import long_video
from maskvid.sampling import sampler
from maskvid.bench import common
from maskvid.tasks import interpolate
from maskvid.tasks import nvs

METHODS = ('trivial', 'one_window', 'independent', 'sliding', 'anchors', 'anchors g1',
           'anchors ctx-guided')


def task_inputs(task: str, clip: dict):
  """(frames uint8 [T,H,W,3], pixel_mask [T,H,W], trivial answer uint8 [T,H,W,3])."""
  rgb = clip['rgb']
  if task == 'nvs':
    frames, mask, _ = nvs.nvs_conditioning(rgb[0], clip['depth'][0], clip['intrinsics'],
                                           clip['world_to_camera'])
    trivial = fill.nearest_fill(pictures.to_float(frames), mask)
    return frames, mask, pictures.to_uint8(trivial)
  frames, mask = interpolate.interpolation_conditioning(rgb[0], rgb[-1], len(rgb))
  return frames, mask, frames   # the display frames are the cross-fade


def complete(completer, method: str, frames, mask, seed: int):
  """-> (uint8 [T,H,W,3], model calls)."""
  if method == 'one_window':
    return completer.complete_video(frames, mask, seed=seed), 1
  strategy, context = {'independent': ('sliding', 0), 'sliding': ('sliding', 2)}.get(
      method, ('anchors', 2))
  options = {'anchors g1': dict(guidance=1.0),
             'anchors ctx-guided': dict(guide_context=True)}.get(method, {})
  out = long_video.complete_long(completer, frames, mask, strategy=strategy, context=context,
                                 seed=seed, **options)
  return out['video'], len(out['windows'])


def sampler_memory(completer, frames: int) -> float:
  """MiB the compiled sampler needs for one clip (`common.compiled_memory`)."""
  h = completer.resolution // completer.latent_factor
  shape = (1, frames, h, h, int(completer.config.vae.latent_channels))
  opts = completer.sample_options()
  opts.pop('progress', None)
  lowered = sampler.complete.lower(completer.apply_fn, completer.params,
                                   jnp.zeros(shape), jnp.zeros(shape[:-1], bool),
                                   jax.random.key(0), **opts)
  mem = common.compiled_memory(lowered.compile())
  return float('nan') if mem is None else mem['total'] / 2 ** 20


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True, help='a trained run (diffusion/, vae/)')
  parser.add_argument('--frames', type=int, default=32)
  parser.add_argument('--scenes', type=int, default=4)
  parser.add_argument('--out', default='', help='where the PNGs go (default: WORKDIR/bench)')
  args = parser.parse_args()
  completer = completer_lib.Completer.from_workdir(args.workdir)
  res, T = completer.resolution, args.frames
  out_dir = args.out or os.path.join(args.workdir, 'bench')
  os.makedirs(out_dir, exist_ok=True)
  clips = [synthetic.render_clip(int(s), 'test', T, res, res)
           for s in scenes.split_seeds('test', args.scenes)]
  far = [0, T // 2, T - 1]
  psnr = {(t, m): [] for t in ('nvs', 'interpolate') for m in METHODS}
  calls, seconds = {}, dict.fromkeys(psnr, 0.0)
  reproj = {k: [] for k in psnr}       # per scene: frames 0, T/2, T-1
  reproj_gen = {k: [] for k in psnr}   # every frame pair, scored on the target's generated pixels
  strip = {}
  for i, clip in enumerate(clips):
    gt = pictures.to_float(clip['rgb'])
    for task in ('nvs', 'interpolate'):
      frames, mask, trivial = task_inputs(task, clip)
      scored = [t for t in range(T) if not mask[t].all()]
      for m in METHODS:
        start = time.time()
        video, n = (trivial, 0) if m == 'trivial' else complete(completer, m, frames, mask, i)
        seconds[task, m] += time.time() - start
        calls[task, m] = n
        pred = pictures.to_float(video)
        psnr[task, m].append([float(metrics.psnr(pred[t], gt[t])) if t in scored else np.nan
                              for t in range(T)])
        reproj[task, m].append(consistency.reprojection_error(
            pred, clip['depth'], clip['intrinsics'], clip['world_to_camera'], frame_ids=far))
        reproj_gen[task, m].append(consistency.reprojection_error(
            pred, clip['depth'], clip['intrinsics'], clip['world_to_camera'], target_mask=~mask))
        if i == 0 and task == 'nvs':
          strip[m] = pred
      print(f'scene {i + 1}/{len(clips)} {task} done', flush=True)
  window_mib = sampler_memory(completer, completer.clip_length)
  whole_mib = sampler_memory(completer, T)
  print(f'\n{T}-frame paths, {len(clips)} test scenes, windows of {completer.clip_length} '
        f'frames; PSNR of the generated frames (dB, mean ± SE over scenes)\n')
  print('| task | method | PSNR | PSNR last 8 | reproj (0, T/2, T-1) | last 8 - independent '
        '(paired) | reproj - independent (paired) | reproj of generated pixels - independent '
        '(paired) | model calls | seconds |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  se = lambda v: v.std(ddof=1) / np.sqrt(len(v))
  for (task, m), rows in psnr.items():
    per_scene = np.nanmean(np.asarray(rows), axis=1)
    last = np.nanmean(np.asarray(rows)[:, -8:], axis=1)
    r = np.asarray(reproj[task, m], np.float64)
    # Paired over scenes: the scene-to-scene spread cancels, so a gap beyond ~2 of these SEs is
    # the method's and not the scenes'.
    d_last = last - np.nanmean(np.asarray(psnr[task, 'independent'])[:, -8:], axis=1)
    d_r = r - np.asarray(reproj[task, 'independent'], np.float64)
    g = np.asarray(reproj_gen[task, m], np.float64)
    d_g = g - np.asarray(reproj_gen[task, 'independent'], np.float64)
    print(f'| {task} | {m} | {per_scene.mean():.2f} ± {se(per_scene):.2f} | '
          f'{last.mean():.2f} ± {se(last):.2f} | {r.mean():.4f} | '
          f'{d_last.mean():+.2f} ± {se(d_last):.2f} | {d_r.mean():+.4f} ± {se(d_r):.4f} | '
          f'{g.mean():.4f}, {d_g.mean():+.4f} ± {se(d_g):.4f} | {calls[task, m]} | '
          f'{seconds[task, m]:.1f} |')
  print(f'\nsampler memory (compiled, one clip): window of {completer.clip_length} frames '
        f'{window_mib:.1f} MiB, one {T}-frame call {whole_mib:.1f} MiB')
  _plot(psnr, T, os.path.join(out_dir, 'long_video.png'))
  path = pictures.save_grid(os.path.join(out_dir, 'long_video_strip.png'),
                            {'ground truth': pictures.to_float(clips[0]['rgb']), **strip})
  print('wrote', os.path.join(out_dir, 'long_video.png'), path)


def _plot(psnr: dict, T: int, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
  for ax, task in zip(axes, ('nvs', 'interpolate')):
    for m in METHODS:
      ax.plot(range(T), np.nanmean(np.asarray(psnr[task, m]), axis=0), marker='.', label=m)
    ax.set_title(task)
    ax.set_xlabel('frame')
    ax.set_ylabel('PSNR (dB)')
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


if __name__ == '__main__':
  main()
