"""Task modules: conditioning builders, the edit tracker, commands (validation, atomic outputs)."""
import os

import cv2
import imageio.v3 as iio
import numpy as np
import pytest

from maskvid import geometry
from maskvid.sampling import interface
from maskvid.tasks import edit
from maskvid.tasks import interpolate
from maskvid.tasks import io
from maskvid.tasks import nvs
from maskvid.tasks import track

# imageio-ffmpeg runs ffmpeg in a subprocess after JAX started its threads; harmless here.
pytestmark = pytest.mark.filterwarnings('ignore:os.fork')


class FakeCompleter:
  """A `sampling.interface.VideoCompleter` standing in for the Completer: 4x average-pool
  'latents', known ones kept exactly, unknown ones set to the mean of the known latents of their
  frame (or 0)."""
  resolution = 32
  clip_length = 8
  factor = 4

  def __init__(self):
    self.calls = []

  def encode(self, frames):
    f = np.asarray(frames, np.float32) / 127.5 - 1.0
    b, t, h, w, c = f.shape
    return f.reshape(b, t, h // 4, 4, w // 4, 4, c).mean((3, 5))

  def decode(self, latents):
    return np.repeat(np.repeat(latents, 4, 2), 4, 3)

  def complete_video(self, frames, pixel_mask, *, num_steps=None, solver=None, renoise_at=None,
                     guidance=None, seed=0, rng=None, paste_known=True, return_latents=False,
                     progress=False, hint_mask=None, guide_frames=None):
    self.calls.append(dict(frames=frames, pixel_mask=pixel_mask, num_steps=num_steps,
                           renoise_at=renoise_at, seed=seed, hint_mask=hint_mask,
                           guide_frames=guide_frames))
    z = self.encode(frames)
    b, t, h, w, _ = z.shape
    known = pixel_mask.reshape(b, t, h, 4, w, 4).all((3, 5))
    count = np.maximum(known.sum((2, 3)), 1)[..., None]
    fill = np.where(known[..., None], z, 0).sum((2, 3)) / count
    out = np.where(known[..., None], z, fill[:, :, None, None])
    video = np.clip((self.decode(out) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    return ({'video': video, 'latents': out, 'known_mask': known} if return_latents else video)


def _smooth_scene(size=48, num_frames=8, velocity=(1.5, 1.0), square=16, seed=0):
  """A checker-textured square gliding over a smooth background; returns (frames, masks)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
  ph = rng.uniform(0, 6, 4)
  bg = np.stack([120 + 60 * np.sin(xx / 5 + ph[0]) * np.cos(yy / 7 + ph[1]),
                 120 + 60 * np.sin(yy / 4 + ph[2]), 120 + 60 * np.cos((xx + yy) / 6 + ph[3])], -1)
  sy, sx = np.mgrid[0:square, 0:square]
  tex = np.stack([200 * (((sy // 4) + (sx // 4)) % 2) + 30, 50 + 8 * sx, 50 + 8 * sy], -1)
  frames, masks = [], []
  for t in range(num_frames):
    f, m = bg.copy(), np.zeros((size, size), bool)
    y, x = int(round(6 + velocity[1] * t)), int(round(6 + velocity[0] * t))
    f[y:y + square, x:x + square] = tex
    m[y:y + square, x:x + square] = True
    frames.append(np.clip(f, 0, 255).astype(np.uint8))
    masks.append(m)
  return np.stack(frames), np.stack(masks)


def test_tasks_take_only_a_video_completer():
  assert isinstance(FakeCompleter(), interface.VideoCompleter)
  frames = np.zeros((2, 32, 32, 3), np.uint8)
  with pytest.raises(TypeError, match='VideoCompleter'):
    interpolate.interpolate(object(), frames[0], frames[1], 4)


def test_tracker_follows_moving_square():
  frames, masks = _smooth_scene()
  tracked = track.track_region(frames, masks[0])
  ious = [track.iou(a, b) for a, b in zip(tracked, masks)]
  assert min(ious) > 0.8, ious
  # Not trivially satisfied: a region that stays put loses the square.
  assert track.iou(masks[0], masks[-1]) < 0.5


def test_warp_edit_carries_the_edit_along_the_motion():
  frames, masks = _smooth_scene()
  edited = frames[0].copy()
  edited[masks[0]] = (255, 0, 255)
  flows = track.consecutive_flows(frames)
  assert flows.shape == (7, 48, 48, 2)
  coords, valid = track.frame0_coordinates(flows)
  np.testing.assert_array_equal(coords[0], np.stack(np.mgrid[0:48, 0:48][::-1], -1))
  # Inside the moved square, frame-t pixels map back (1.5, 1.0) px per frame into frame 0.
  t = 4
  inner = cv2.erode(masks[t].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
  shift = (coords[t] - np.stack(np.mgrid[0:48, 0:48][::-1], -1))[inner].mean(0)
  np.testing.assert_allclose(shift, (-1.5 * t, -1.0 * t), atol=1.0)
  hint, hint_mask = track.warp_edit(edited, masks, flows)
  assert not hint_mask[0].any() and hint.dtype == np.uint8
  for t in range(1, 8):
    assert hint_mask[t][masks[t]].mean() > 0.9
    np.testing.assert_allclose(hint[t][inner if t == 4 else masks[t] & hint_mask[t]].mean(0),
                               (255, 0, 255), atol=40)
  with pytest.raises(ValueError, match='flows must be'):
    track.warp_edit(edited, masks, flows[1:])


def test_find_edit_region_by_difference():
  frames, masks = _smooth_scene(num_frames=1)
  edited = frames[0].copy()
  edited[masks[0]] = (255, 0, 255)
  noisy = np.clip(frames[0] + np.random.default_rng(0).normal(0, 4, frames[0].shape), 0, 255)
  region = track.find_edit_region(noisy.astype(np.uint8), edited)
  # The whole edit, grown by at most the 1-px safety dilation, and no noise speckle.
  assert region[masks[0]].all()
  grown = cv2.dilate(masks[0].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
  assert not region[~grown].any()
  assert track.iou(track.find_edit_region(noisy.astype(np.uint8), edited, dilate_radius=0),
                   masks[0]) > 0.95
  assert not track.find_edit_region(frames[0], frames[0]).any()


def test_edit_conditioning_and_propagation_with_fake_completer():
  frames, masks = _smooth_scene(size=32, num_frames=4, square=10, velocity=(1.0, 1.0))
  edited = frames[0].copy()
  edited[masks[0]] = (255, 0, 255)
  fake = FakeCompleter()
  out = edit.propagate_edit(fake, frames, edited, dilate_radius=1, num_steps=3)
  cond, mask = fake.calls[0]['frames'][0], fake.calls[0]['pixel_mask'][0]
  np.testing.assert_array_equal(cond[0], edited)
  assert mask[0].all()
  hint = fake.calls[0]['hint_mask'][0]
  for t in range(1, 4):
    assert not mask[t][masks[t]].any()                    # tracked square: unknown
    np.testing.assert_array_equal(cond[t][mask[t]], frames[t][mask[t]])  # rest: the original
    assert mask[t].mean() > 0.75
    # ... and the edit pulled along the flow into it: a magenta hint over the moved square.
    assert not (hint[t] & mask[t]).any() and hint[t][masks[t]].mean() > 0.8
    np.testing.assert_allclose(cond[t][hint[t] & masks[t]].mean(0), (255, 0, 255), atol=40)
  assert out['video'].shape == frames.shape and out['video'].dtype == np.uint8
  assert fake.calls[0]['num_steps'] == 3
  with pytest.raises(ValueError, match='empty'):
    edit.propagate_edit(fake, frames, frames[0])


def test_interpolation_hands_the_endpoints_as_given_pixels():
  rng = np.random.default_rng(0)
  a, b = (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2))
  frames, mask = interpolate.interpolation_conditioning(a, b, 6)
  assert mask[0].all() and mask[-1].all() and not mask[1:-1].any()
  # What the task hands the completer: the endpoints as given pixels, every middle pixel
  # unknown, the task's options passed through. (That the endpoints then come back bit-equal
  # in latent space is the real Completer's job: test_tasks_e2e.)
  fake = FakeCompleter()
  out = interpolate.interpolate(fake, a, b, 6, num_steps=3, seed=5)
  call = fake.calls[0]
  np.testing.assert_array_equal(call['frames'][0, 0], a)
  np.testing.assert_array_equal(call['frames'][0, -1], b)
  np.testing.assert_array_equal(call['pixel_mask'][0], mask)
  assert (call['num_steps'], call['seed']) == (3, 5)
  assert out['latents'].shape[0] == 6
  with pytest.raises(ValueError, match='same size'):
    interpolate.interpolation_conditioning(a, b[:16], 6)


def test_nvs_conditioning_marks_disocclusions_unknown():
  rng = np.random.default_rng(1)
  img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  depth = np.full((32, 32), 4.0, np.float32)
  depth[10:20, 10:20] = 2.0
  k = geometry.intrinsics_from_fov(60.0, 32, 32)
  poses = geometry.make_trajectory('truck_right', 4, 4.0)
  frames, mask, _ = nvs.nvs_conditioning(img, depth, k, poses)
  np.testing.assert_array_equal(frames[0], img)
  assert mask[0].all()
  assert 0.6 < mask[-1].mean() < 0.97
  assert (frames[~mask] == 0).all()
  # Known pixels of later views are copies of source pixels (nearest splatting).
  src_colours = {tuple(c) for c in img.reshape(-1, 3)}
  assert all(tuple(c) in src_colours for c in frames[-1][mask[-1]][:50])


def test_nvs_inputs_with_external_depth_weights(tmp_path):
  import jax
  import jax.numpy as jnp
  from maskvid import depth as md
  from maskvid.depth import net as depth_net
  module = depth_net.DepthUNet(base_channels=4, channel_multipliers=(1, 2), norm_groups=2)
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.2, x.shape), jnp.float32), shapes)
  weights = str(tmp_path / 'w.safetensors')
  md.save_external_depth(weights, module, params)
  img = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
  iio.imwrite(tmp_path / 'in.png', img)
  image, depth, k = nvs.prepare_inputs(str(tmp_path / 'in.png'), 'external:' + weights,
                                       (32, 32), 60.0)
  # The image keeps its own size; depth is estimated at the model's size and brought back.
  assert image.shape == (40, 48, 3) and depth.shape == (40, 48)
  np.testing.assert_array_equal(image, img)
  small = md.load_external_depth(weights).estimate(io.resize_frames(img, 32, 32))
  want = cv2.resize(small, (48, 40), interpolation=cv2.INTER_NEAREST)
  np.testing.assert_allclose(depth, want, rtol=1e-6)
  np.testing.assert_allclose(k, geometry.intrinsics_from_fov(60.0, 40, 48))


# ----------------------------------------------------------------------------- commands

@pytest.fixture
def files(tmp_path):
  rng = np.random.default_rng(2)
  a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  b = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  clip, masks = _smooth_scene(size=32, num_frames=4, square=10, velocity=(1.0, 1.0))
  edited = clip[0].copy()
  edited[masks[0]] = (255, 0, 255)
  paths = dict(a=tmp_path / 'a.png', b=tmp_path / 'b.png', small=tmp_path / 'small.png',
               clip=tmp_path / 'clip.npy', edited=tmp_path / 'edited.png',
               depth=tmp_path / 'depth.npy', empty=tmp_path / 'empty.png',
               bad=tmp_path / 'bad.png', ckpt=tmp_path / 'ckpt')
  iio.imwrite(paths['a'], a)
  iio.imwrite(paths['b'], b)
  iio.imwrite(paths['small'], a[:16, :16])
  np.save(paths['clip'], clip)
  iio.imwrite(paths['edited'], edited)
  np.save(paths['depth'], np.full((32, 32), 3.0, np.float32))
  iio.imwrite(paths['empty'], np.zeros((32, 32), np.uint8))
  paths['bad'].write_bytes(b'this is not a png')
  for stage in ('diffusion', 'vae'):
    (paths['ckpt'] / stage).mkdir(parents=True)
  out = tmp_path / 'out'
  out.mkdir()
  return {k: str(v) for k, v in paths.items()}, out


def test_commands_write_mp4_and_strip(files):
  p, out = files
  fake = FakeCompleter()
  mp4, png = nvs.command(image=p['a'], trajectory='orbit', checkpoint=p['ckpt'],
                         out=str(out / 'nvs.mp4'), depth='gt:' + p['depth'], num_frames=4,
                         completer=fake, renoise_at=0.3)
  assert fake.calls[-1]['renoise_at'] == 0.3
  assert iio.imread(mp4, index=None).shape == (4, 32, 32, 3)
  assert iio.imread(png).ndim == 3
  interpolate.command(start=p['a'], end=p['b'], checkpoint=p['ckpt'], out=str(out / 'i.mp4'),
                      num_frames=5, completer=fake)
  assert iio.imread(str(out / 'i.mp4'), index=None).shape[0] == 5
  edit.command(video=p['clip'], edited_frame=p['edited'], checkpoint=p['ckpt'],
               out=str(out / 'e.mp4'), completer=fake)
  assert sorted(os.listdir(out)) == ['e.mp4', 'e.png', 'i.mp4', 'i.png', 'nvs.mp4', 'nvs.png']
  # An MP4 input (lossy) works too: compression noise is not mistaken for the edit.
  clip = np.load(p['clip'])
  src = os.path.join(os.path.dirname(p['clip']), 'clip.mp4')
  iio.imwrite(src, clip, extension='.mp4', fps=8, codec='libx264', macro_block_size=1, quality=10)
  edit.command(video=src, edited_frame=p['edited'], checkpoint=p['ckpt'],
               out=str(out / 'e2.mp4'), completer=fake)
  unknown = ~fake.calls[-1]['pixel_mask'][0]
  assert 0 < unknown[1].mean() < 0.4 and not unknown[0].any()


@pytest.mark.parametrize('task,kwargs,match', [
    ('nvs', dict(image='bad'), '--image: cannot read'),
    ('nvs', dict(image='missing'), '--image: file not found'),
    ('nvs', dict(depth='gt'), "--depth: 'gt' needs"),
    ('nvs', dict(depth='net:/nonexistent'), '--depth: directory not found'),
    ('nvs', dict(trajectory='spiral'), '--trajectory'),
    ('nvs', dict(checkpoint='a'), '--checkpoint'),
    ('interpolate', dict(end='small'), '--end: size 16x16 differs'),
    ('interpolate', dict(out='x.avi'), '--out'),
    ('edit', dict(mask='empty'), '--mask: mask .* is empty'),
    ('edit', dict(edited_frame='small'), '--edited_frame: size'),
    ('edit', dict(edited_frame='clip0'), '--edited_frame: no pixel differs'),
    ('edit', dict(video='a'), '--video'),
])
def test_commands_reject_bad_input_and_write_nothing(files, task, kwargs, match):
  p, out = files
  clip0 = os.path.join(os.path.dirname(p['a']), 'clip0.png')
  iio.imwrite(clip0, np.load(p['clip'])[0])
  p = dict(p, clip0=clip0, missing=p['a'] + '.nope')
  resolve = lambda v: p.get(v, v)
  target = str(out / 'o.mp4')
  if task == 'nvs':
    args = dict(image=p['a'], trajectory='orbit', checkpoint=p['ckpt'], out=target,
                depth='gt:' + p['depth'])
    fn = nvs.command
  elif task == 'interpolate':
    args = dict(start=p['a'], end=p['b'], checkpoint=p['ckpt'], out=target)
    fn = interpolate.command
  else:
    args = dict(video=p['clip'], edited_frame=p['edited'], checkpoint=p['ckpt'], out=target)
    fn = edit.command
  args.update({k: (str(out / v) if k == 'out' else resolve(v)) for k, v in kwargs.items()})
  completer = None if 'checkpoint' in kwargs else FakeCompleter()
  with pytest.raises(io.InputError, match=match):
    fn(completer=completer, **args)
  assert os.listdir(out) == []


def test_failed_run_leaves_no_partial_output(files, monkeypatch):
  p, out = files

  class Boom(FakeCompleter):
    def complete_video(self, *a, **k):
      raise RuntimeError('sampler crashed')

  def failing_write(path, *a, **k):
    with open(path, 'wb') as f:
      f.write(b'partial')
    raise OSError('disk full')
  with pytest.raises(RuntimeError):
    interpolate.command(start=p['a'], end=p['b'], checkpoint=p['ckpt'], out=str(out / 'i.mp4'),
                        completer=Boom())
  monkeypatch.setattr(io.iio, 'imwrite', failing_write)
  with pytest.raises(OSError):
    interpolate.command(start=p['a'], end=p['b'], checkpoint=p['ckpt'], out=str(out / 'i.mp4'),
                        completer=FakeCompleter())
  assert os.listdir(out) == []


@pytest.mark.parametrize('module,args,match', [
    ('interpolate', ['--start={missing}', '--end={a}'], '--start: file not found'),
    ('nvs', ['--image={bad}', '--trajectory=orbit'], '--image: cannot read image'),
    ('edit', ['--video={clip}', '--edited_frame={small}'], '--edited_frame: size'),
])
def test_command_line_reports_bad_input(files, module, args, match):
  import subprocess
  import sys
  p, out = files
  p = dict(p, missing=p['a'] + '.nope')
  cmd = [sys.executable, '-m', f'maskvid.tasks.{module}', f'--checkpoint={p["ckpt"]}',
         f'--out={out / "o.mp4"}'] + [a.format(**p) for a in args]
  r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert r.returncode != 0
  assert match in r.stderr, r.stderr[-2000:]
  assert os.listdir(out) == []
