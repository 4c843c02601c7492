"""Benchmark of the data layer: renderer throughput, default-config dataset build, loader speed.

Usage:
  python -m maskvid.bench.data                      # 1,000 clips of 16 x 64 x 64, default loader
  python -m maskvid.bench.data --processes=2        # render in 2 spawned processes
  python -m maskvid.bench.data --num_clips=100 --skip_train_step

Prints one table:
  * rendering N clips of T x H x W (after one warm-up clip that compiles the ray caster): wall
    seconds, clips/s, and process CPU seconds; the machine's core count and load average before and
    after give the context (the wall time on a shared machine depends on what else runs).
  * building the default config's dataset (256/32/32 clips of 8 x 32 x 32, incl. compilation).
  * grain loader examples/s on that dataset (batch_size, clip_length from the config).
  * the tiny config's diffusion train step examples/s (maskvid.bench.train_step on random
    latents) and the ratio loader / train step (the target is >= 10x).
  * real video (--videos=N, 0 skips): N mp4 files of 48 frames at 128x128 (moving textures) are
    written, then the mp4 folder source (`VideoFolderSource`, 8 frames every 2nd, 32x32) is timed
    through the grain loader (examples/s) and through one process of the latent cache
    (`cache._encode_shards` with the default config's VAE at its initial weights: decode +
    encode + write, clips/s per process).
"""
import os
import tempfile
import time

from absl import app
from absl import flags
import imageio.v2 as imageio
import jax
import numpy as np

from configs import default
from configs import tiny
from maskvid.bench import train_step
from maskvid.data import pipeline
from maskvid.data import storage
from maskvid.data import records
from maskvid.data import synthetic
from maskvid.data import scenes
from maskvid.data import video_folder
from maskvid.vae import cache
from maskvid.vae import model as vae_model

FLAGS = flags.FLAGS
flags.DEFINE_integer('num_clips', 1000, 'Clips to render for the renderer benchmark.')
flags.DEFINE_integer('frames', 16, 'Frames per rendered clip.')
flags.DEFINE_integer('resolution', 64, 'Rendered height == width.')
flags.DEFINE_integer('processes', 1, 'Render processes (>1: storage.render_split in spawned CPU '
                     'processes, each compiling once; timed including that compilation).')
flags.DEFINE_string('split', 'train', 'Split (family set) to render: train | test | ood.')
flags.DEFINE_integer('loader_batches', 200, 'Timed loader batches (after 5 warm-up batches).')
flags.DEFINE_integer('worker_count', 0, 'grain worker processes for the loader benchmark.')
flags.DEFINE_bool('skip_train_step', False, 'Skip the tiny train step measurement.')
flags.DEFINE_integer('videos', 8, 'mp4 files for the video-source rows (0: skip them).')


def _cpu_seconds() -> float:
  t = os.times()
  return t.user + t.system + t.children_user + t.children_system


def bench_render(num_clips: int, frames: int, resolution: int, split: str) -> dict:
  seeds = scenes.split_seeds(split, num_clips + 1)
  t0 = time.perf_counter()
  synthetic.render_clip(int(seeds[-1]), split, frames, resolution, resolution)  # compiles
  compile_s = time.perf_counter() - t0
  load0, cpu0, t0 = os.getloadavg()[0], _cpu_seconds(), time.perf_counter()
  for i, seed in enumerate(seeds[:-1]):
    synthetic.render_clip(int(seed), split, frames, resolution, resolution)
    if (i + 1) % 200 == 0:
      print(f'  rendered {i + 1}/{num_clips} clips ({time.perf_counter() - t0:.1f} s)', flush=True)
  wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
  return dict(compile_s=compile_s, wall_s=wall, cpu_s=cpu, load_before=load0,
              load_after=os.getloadavg()[0])


def bench_render_parallel(num_clips: int, frames: int, resolution: int, split: str,
                          processes: int) -> dict:
  spec = dict(format_version=records.FORMAT_VERSION, split=split, num_clips=num_clips,
              num_frames=frames, height=resolution, width=resolution, num_shards=4 * processes)
  load0, cpu0, t0 = os.getloadavg()[0], _cpu_seconds(), time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    storage.render_split(spec, os.path.join(tmp, split), processes=processes)
  wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
  return dict(compile_s=float('nan'), wall_s=wall, cpu_s=cpu, load_before=load0,
              load_after=os.getloadavg()[0])


def bench_dataset_and_loader(data_dir: str, batches: int, worker_count: int) -> dict:
  config = default.get_config()
  t0 = time.perf_counter()
  storage.ensure_dataset(config, data_dir)
  build_s = time.perf_counter() - t0
  source = records.ClipSource(data_dir, 'train')
  it = pipeline.make_loader(source, batch_size=config.vae.train.batch_size,
                            clip_length=config.data.clip_length,
                            resolution=config.data.resolution, seed=0,
                            worker_count=worker_count, frame_stride=config.data.frame_stride)
  for _ in range(5):
    batch = next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    batch = next(it)
  wall = time.perf_counter() - t0
  return dict(build_s=build_s, clips={k: int(v) for k, v in config.data.clips.items()},
              clip_shape=(config.data.num_frames, config.data.resolution, config.data.resolution),
              batch_shape=tuple(batch['frames'].shape),
              examples_per_s=batches * config.vae.train.batch_size / wall)


def _write_videos(folder: str, count: int, frames: int = 48, size: int = 128) -> None:
  """Moving stripes under a drifting gradient: `count` mp4 files of `frames` frames."""
  os.makedirs(folder, exist_ok=True)
  yy, xx = np.mgrid[0:size, 0:size]
  for v in range(count):
    clip = [np.stack([((xx + 3 * t + 7 * v) // 8 % 2) * 200, (yy + t) % 256,
                      np.full_like(xx, 40 * v % 256)], -1).astype(np.uint8) for t in range(frames)]
    imageio.mimwrite(os.path.join(folder, f'video{v}.mp4'), clip, fps=24, macro_block_size=16)


def bench_video_source(folder: str, count: int, batches: int, worker_count: int) -> dict:
  """Loader examples/s and latent-cache clips/s (one process) on an mp4 folder."""
  _write_videos(os.path.join(folder, 'videos'), count)
  config = default.get_config()
  res = int(config.data.resolution)
  source = video_folder.VideoFolderSource(os.path.join(folder, 'videos'), 8, res, stride=2)
  it = pipeline.make_loader(source, batch_size=8, clip_length=8, resolution=res, seed=0,
                            worker_count=worker_count)
  next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  loader = batches * 8 / (time.perf_counter() - t0)
  module = vae_model.from_config(config.vae)
  params = module.init(jax.random.key(0), np.zeros((1, 1, res, res, 3), np.float32))
  encode = cache.posterior_mean_encoder(module)
  bounds = np.array([0, len(source)])
  for sub in ('warm', 'cache'):
    os.makedirs(os.path.join(folder, sub))
  cache._encode_shards(source, encode, params, res, os.path.join(folder, 'warm'),  # pylint: disable=protected-access
                       np.array([0, min(8, len(source))]), [0], False)   # compiles
  part = cache._encode_shards(source, encode, params, res, os.path.join(folder, 'cache'),  # pylint: disable=protected-access
                              bounds, [0], True)
  return dict(clips=len(source), loader_examples_per_s=loader,
              cache_clips_per_s=len(source) / part['seconds'])


def bench_train_step() -> dict:
  """Examples/s of the tiny config's train step, or a note why it could not be measured."""
  try:
    config = tiny.get_config()
    r = train_step.run(config, steps=5, warmup=1)
  except Exception as e:  # pylint: disable=broad-except
    return dict(note=f'train step not measured: {type(e).__name__}: {e}'[:200])
  return dict(examples_per_s=r['batch'] / r['step_s'], step_s=r['step_s'], batch=r['batch'],
              device=r['device'])


def main(argv):
  """Runs the three measurements and prints the table."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  rows = [('machine', f'{os.cpu_count()} CPU cores, load average (1 min) at start '
                      f'{os.getloadavg()[0]:.1f}')]
  shape = f'{FLAGS.frames}x{FLAGS.resolution}x{FLAGS.resolution}'
  if FLAGS.processes > 1:
    r = bench_render_parallel(FLAGS.num_clips, FLAGS.frames, FLAGS.resolution, FLAGS.split,
                              FLAGS.processes)
    rows.append(('render processes', f'{FLAGS.processes} (wall and CPU include their compiles)'))
  else:
    r = bench_render(FLAGS.num_clips, FLAGS.frames, FLAGS.resolution, FLAGS.split)
    rows.append((f'render compile + first clip ({FLAGS.split})', f"{r['compile_s']:.1f} s"))
  rows += [
      (f'render {FLAGS.num_clips} clips {shape} (wall)',
       f"{r['wall_s']:.1f} s = {FLAGS.num_clips / r['wall_s']:.1f} clips/s "
       f"(target < 120 s for 1,000)"),
      ('  CPU time (this process + workers)', f"{r['cpu_s']:.1f} s = {1e3 * r['cpu_s'] / FLAGS.num_clips:.1f} ms/clip"),
      ('  load average before / after', f"{r['load_before']:.1f} / {r['load_after']:.1f}"),
  ]
  with tempfile.TemporaryDirectory() as tmp:
    d = bench_dataset_and_loader(os.path.join(tmp, 'data'), FLAGS.loader_batches,
                                 FLAGS.worker_count)
  rows += [
      ('default dataset build (incl. compile)',
       f"{d['build_s']:.1f} s for {d['clips']} clips of {'x'.join(map(str, d['clip_shape']))}"),
      (f'loader examples/s (workers={FLAGS.worker_count})',
       f"{d['examples_per_s']:,.0f} (batch {d['batch_shape']})"),
  ]
  if FLAGS.videos:
    with tempfile.TemporaryDirectory() as tmp:
      v = bench_video_source(tmp, FLAGS.videos, FLAGS.loader_batches // 4, FLAGS.worker_count)
    rows += [
        (f'mp4 folder: {FLAGS.videos} videos of 48 frames, 128x128',
         f"{v['clips']} clips of 8 frames (stride 2) at 32x32"),
        (f'  loader examples/s (workers={FLAGS.worker_count})',
         f"{v['loader_examples_per_s']:,.1f}"),
        ('  latent cache clips/s per process', f"{v['cache_clips_per_s']:,.1f} (decode + "
         'encode + write, default VAE)')]
  if FLAGS.skip_train_step:
    rows.append(('tiny train step examples/s', 'skipped (--skip_train_step)'))
  else:
    s = bench_train_step()
    if 'note' in s:
      rows.append(('tiny train step examples/s', s['note']))
    else:
      ratio = d['examples_per_s'] / s['examples_per_s']
      rows += [('tiny train step examples/s',
                f"{s['examples_per_s']:,.1f} (batch {s['batch']}, {1e3 * s['step_s']:.0f} ms/step, "
                f"{s['device']})"),
               ('loader / train step', f"{ratio:,.1f}x (target >= 10x)")]
  rows.append(('load average (1 min) at end', f'{os.getloadavg()[0]:.1f}'))
  width = max(len(k) for k, _ in rows)
  line = '-' * (width + 60)
  print('\n'.join([line] + [f'{k:<{width}}  {v}' for k, v in rows] + [line]))


if __name__ == '__main__':
  app.run(main)
