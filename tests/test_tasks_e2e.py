"""Task commands end to end on a tiny run written here with the train/vae modules' own checkpoint
code. The weights are random everywhere (output layer included), so the model's output depends on
its input: these tests check plumbing and exactness, not quality."""
import json
import os

import imageio.v3 as iio
import numpy as np
import pytest

from configs import default
from maskvid import workdir as workdir_lib
from maskvid.sampling import completer as completer_lib
from maskvid.sampling import noise
from maskvid.tasks import cli
from maskvid.tasks import edit
from maskvid.tasks import interpolate
from maskvid.tasks import nvs
import random_weights

# The integration tier (`make test-fast` skips it). imageio-ffmpeg runs ffmpeg in a subprocess
# after JAX started its threads; harmless here.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings('ignore:os.fork')]


def write_tiny_workdir(workdir: str):
  """diffusion/ (random transformer), vae/ (random VAE) and latents/ stats of a tiny run."""
  from maskvid.train import checkpoint as ckpt_lib
  from maskvid.diffusion import trainer as trainer_lib
  from maskvid.vae import cache as cache_lib
  from maskvid.vae import train as vae_train
  c = default.get_config()
  c.data.resolution = 32
  c.data.clip_length = 4
  c.vae.base_channels = 8
  c.vae.channel_multipliers = (1, 2, 2)
  c.vae.norm_groups = 4
  c.model.width = 32
  c.model.depth = 1
  c.model.num_heads = 2
  c.train.batch_size = 1
  c.train.async_checkpoints = False
  c.mesh.data = 1
  c.sample.num_steps = 2
  vae_dir, diffusion_dir, latents_dir = (os.path.join(workdir, s)
                                         for s in ('vae', 'diffusion', 'latents'))
  workdir_lib.save_config(c, vae_dir)
  state = vae_train.make_trainer(c)[1].init(0)
  mgr = ckpt_lib.make_manager(vae_dir)
  ckpt_lib.save(mgr, state, force=True)
  mgr.wait_until_finished()
  mgr.close()
  os.makedirs(latents_dir)
  with open(os.path.join(latents_dir, cache_lib.STATS_FILE), 'w') as f:
    json.dump({'shift': [0.0] * 4, 'scale': [1.0] * 4}, f)
  with open(os.path.join(latents_dir, cache_lib.COMPLETE_FILE), 'w') as f:
    json.dump({}, f)
  workdir_lib.save_config(c, diffusion_dir)
  trainer = trainer_lib.Trainer(c)
  mgr = ckpt_lib.make_manager(diffusion_dir)
  ckpt_lib.save(mgr, random_weights.with_random_weights(trainer.init(0)), force=True)
  mgr.wait_until_finished()
  mgr.close()


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp('e2e')
  workdir = str(root / 'run')
  write_tiny_workdir(workdir)
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:32, 0:32]
  a = np.stack([yy * 8, xx * 8, (yy + xx) * 4], -1).clip(0, 255).astype(np.uint8)
  b = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  clip = np.stack([np.roll(a, k, axis=1) for k in range(4)])
  edited = clip[0].copy()
  edited[8:20, 8:20] = (255, 0, 255)
  paths = {k: str(root / f'{k}.png') for k in ('a', 'b', 'edited')}
  for k, v in (('a', a), ('b', b), ('edited', edited)):
    iio.imwrite(paths[k], v)
  paths['clip'] = str(root / 'clip.npy')
  np.save(paths['clip'], clip)
  paths['depth'] = str(root / 'depth.npy')
  np.save(paths['depth'], np.where((yy > 10) & (yy < 22), 2.0, 4.0).astype(np.float32))
  out = root / 'out'
  out.mkdir()
  # The commands' own loader (validates --checkpoint, then Completer.from_workdir); loaded once
  # and shared so the tiny model, VAE and sampler compile once for all three commands.
  completer = cli.load_completer(workdir)
  return dict(workdir=workdir, paths=paths, out=out, images=(a, b, clip, edited),
              completer=completer)


def test_nvs_command_end_to_end(run):
  assert isinstance(run['completer'], completer_lib.Completer)
  mp4, png = nvs.command(image=run['paths']['a'], trajectory='orbit', checkpoint=run['workdir'],
                         out=str(run['out'] / 'nvs.mp4'), depth='gt:' + run['paths']['depth'],
                         num_frames=4, num_steps=2, completer=run['completer'])
  assert iio.imread(mp4, index=None).shape == (4, 32, 32, 3)
  assert iio.imread(png).shape[0] >= 3 * 32


def test_nvs_longer_than_the_model_clip_goes_window_by_window(run):
  """10 views from a model trained on 4-frame clips: windows in time order (nvs' default,
  sliding), each one 4-frame call with the newest finished frames as context
  (`sampling.long_video`)."""
  a = run['images'][0]
  depth = np.load(run['paths']['depth'])
  k = nvs.geometry.intrinsics_from_fov(60.0, 32, 32)
  poses = nvs.geometry.make_trajectory('orbit', 10, float(np.median(depth)))
  out = nvs.novel_view_synthesis(run['completer'], a, depth, k, poses, seed=1, num_steps=2)
  assert out['video'].shape == (10, 32, 32, 3)
  np.testing.assert_array_equal(out['video'][0], a)                 # the input view, exact
  assert all(len(w.frames) <= 4 for w in out['windows']) and len(out['windows']) == 4
  news = [w.new for w in out['windows']]
  assert [t for n in news for t in n] == list(range(1, 10))          # in time order
  seen = out['pixel_mask']
  np.testing.assert_array_equal(out['video'][seen], out['warped'][seen])   # warped pixels kept


def test_interpolation_endpoints_bit_equal_in_latent_space(run):
  a, b = run['images'][:2]
  c = run['completer']
  out = interpolate.interpolate(c, a, b, 4, num_steps=2)
  # The sampler holds the endpoints' latents exactly as encoded from its input clip.
  z = np.asarray(c.encode(out['blend'][None]))[0]
  np.testing.assert_array_equal(out['latents'][0], z[0])
  np.testing.assert_array_equal(out['latents'][-1], z[-1])
  assert not np.allclose(out['latents'][1:-1], z[1:-1], atol=1e-3)  # the middle was generated
  # ... by the model: seed 0's start noise moved (a zero model would return it unchanged).
  eps0 = random_weights.start_noise(noise.clip_keys(0, 1), (1,) + out['latents'].shape)[0]
  assert np.abs(out['latents'][1:-1] - eps0[1:-1]).mean() > 0.1
  assert out['known_mask'][0].all() and not out['known_mask'][1:-1].any()
  mp4, _ = interpolate.command(start=run['paths']['a'], end=run['paths']['b'],
                               checkpoint=run['workdir'], out=str(run['out'] / 'interp.mp4'),
                               num_frames=4, num_steps=2, completer=c)
  assert iio.imread(mp4, index=None).shape == (4, 32, 32, 3)


def test_edit_command_end_to_end(run):
  c = run['completer']
  clip, edited = run['images'][2:]
  fills = c.fill_options
  for warp_hint in (False, True):
    # Blank region without copies from other frames: nothing but the model fills it.
    c.fill_options = dict(fills, temporal=warp_hint)
    res = edit.propagate_edit(c, clip, edited, num_steps=2, paste_known=True,
                              warp_hint=warp_hint)
    np.testing.assert_array_equal(res['video'][0], edited)   # frame 0 known, pasted exactly
    keep = res['pixel_mask'][1:]
    np.testing.assert_array_equal(res['video'][1:][keep], clip[1:][keep])
    hint = res['hint_mask']
    assert not (hint & res['pixel_mask']).any() and hint[1:].any() == warp_hint
    # Blank region: its patches are generated; hinted: they are known (unreliable) context.
    assert res['known_mask'][0].all() and res['known_mask'][1:].all() == warp_hint
  c.fill_options = fills
  mp4, png = edit.command(video=run['paths']['clip'], edited_frame=run['paths']['edited'],
                          checkpoint=run['workdir'], out=str(run['out'] / 'edit.mp4'),
                          num_steps=2, completer=c)
  assert iio.imread(mp4, index=None).shape == (4, 32, 32, 3) and os.path.exists(png)


def _readme_task_commands():
  """The `python -m maskvid.tasks.*` lines of the README's task section, verbatim."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with open(os.path.join(root, 'README.md')) as f:
    lines = [l.strip() for l in f]
  return root, [l for l in lines if l.startswith('python -m maskvid.tasks.')]


def test_readme_task_commands_run_verbatim_after_a_demo(run, tmp_path):
  """Every task command the README shows runs as written, in a directory laid out like one where
  `make demo` ran (runs/demo = a trained workdir: here the tiny one; runs/mine, the workdir of
  "Train on your own videos", likewise) with the input files the commands name. A README edit
  that breaks a command fails here."""
  import shlex  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root, commands = _readme_task_commands()
  assert {c.split()[2] for c in commands} == {'maskvid.tasks.nvs', 'maskvid.tasks.interpolate',
                                              'maskvid.tasks.edit'}
  os.makedirs(tmp_path / 'runs')
  os.symlink(run['workdir'], tmp_path / 'runs' / 'demo')
  os.symlink(run['workdir'], tmp_path / 'runs' / 'mine')
  a, b, clip, edited = run['images']
  for name, image in (('in.png', a), ('a.png', a), ('b.png', b), ('edit0.png', edited)):
    iio.imwrite(str(tmp_path / name), image)
  iio.imwrite(str(tmp_path / 'clip.mp4'), np.concatenate([clip, clip]), fps=8,
              macro_block_size=1)
  env = dict(os.environ, PYTHONPATH=root)
  for command in commands:
    args = shlex.split(command)
    args[0] = sys.executable
    proc = subprocess.run(args + ['--num_steps=1'], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f'{command}\n{proc.stderr[-3000:]}'
    out = [a.split('=', 1)[1] for a in args if a.startswith('--out=')][0]
    assert iio.imread(str(tmp_path / out), index=None).ndim == 4, command


@pytest.mark.parametrize('shape', [(45, 70), (70, 45), (33, 33), (500, 741)])
def test_any_input_size_keeps_every_known_pixel_at_full_resolution(run, shape):
  c = run['completer']
  h, w = shape
  rng = np.random.default_rng(h * w)
  frames = rng.integers(0, 256, (4, h, w, 3), dtype=np.uint8)
  mask = np.ones((4, h, w), bool)
  mask[1:3, h // 4:h // 2, w // 3:] = False            # a hole in the middle frames
  mask[3] = rng.uniform(size=(h, w)) < 0.6             # scattered known pixels
  out = c.complete_video(frames, mask, num_steps=1, return_latents=True)
  video = out['video']
  assert video.shape == frames.shape and video.dtype == np.uint8
  np.testing.assert_array_equal(video[mask], frames[mask])          # bit-equal, full resolution
  assert not np.array_equal(video[~mask], frames[~mask])              # the holes were filled
  assert out['latents'].shape[2:4] == (8, 8)                          # at the model's 32x32


def test_interpolate_command_writes_the_input_size(run, tmp_path):
  rng = np.random.default_rng(3)
  a = rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)
  b = rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)
  iio.imwrite(str(tmp_path / 'a.png'), a)
  iio.imwrite(str(tmp_path / 'b.png'), b)
  mp4, png = interpolate.command(start=str(tmp_path / 'a.png'), end=str(tmp_path / 'b.png'),
                                 checkpoint=run['workdir'], out=str(tmp_path / 'i.mp4'),
                                 num_frames=4, num_steps=1, completer=run['completer'])
  assert iio.imread(mp4, index=None).shape == (4, 40, 64, 3)
  assert iio.imread(png).shape[1] >= 4 * 64                # the strip shows full-size frames


def test_nvs_and_edit_commands_write_the_input_size(run, tmp_path):
  rng = np.random.default_rng(5)
  image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
  iio.imwrite(str(tmp_path / 'in.png'), image)
  mp4, png = nvs.command(image=str(tmp_path / 'in.png'), trajectory='orbit',
                         checkpoint=run['workdir'], out=str(tmp_path / 'nvs.mp4'),
                         depth='plane', num_frames=4, num_steps=1, completer=run['completer'])
  video = iio.imread(mp4, index=None)
  assert video.shape == (4, 40, 56, 3)
  assert iio.imread(png).shape[1] >= 56          # the strip keeps the full-size frames
  clip = np.stack([np.roll(image, 2 * k, axis=1) for k in range(4)])
  edited = clip[0].copy()
  edited[10:20, 10:30] = (255, 0, 255)
  np.save(str(tmp_path / 'clip.npy'), clip)
  iio.imwrite(str(tmp_path / 'edit0.png'), edited)
  mp4, _ = edit.command(video=str(tmp_path / 'clip.npy'), edited_frame=str(tmp_path / 'edit0.png'),
                        checkpoint=run['workdir'], out=str(tmp_path / 'edit.mp4'), num_steps=1,
                        completer=run['completer'])
  assert iio.imread(mp4, index=None).shape == (4, 40, 56, 3)


def test_gallery_writes_one_strip_per_task(run, tmp_path):
  from maskvid.tasks import gallery  # pylint: disable=g-import-not-at-top
  pngs = gallery.make_gallery(run['workdir'], str(tmp_path), completer=run['completer'],
                              num_steps=1)
  assert set(pngs) == {'nvs', 'interpolate', 'edit'}
  for task, png in pngs.items():
    assert os.path.basename(png) == f'gallery_{task}.png'
    assert iio.imread(png).shape[1] >= 8 * 32, task
