"""maskvid.data: renderer determinism and geometry, splits, storage, grain loader, mp4 source.

All renders use 8 x 32 x 32 (the default config's shape) so the ray caster compiles once per
family set (in-distribution, ood) for the whole file.
"""
import os

import numpy as np
import pytest

from maskvid.data import pipeline, storage, synthetic

T, R = 8, 32


def _config(clips=None):
  from configs import default
  c = default.get_config()
  c.data.num_frames, c.data.resolution, c.data.num_shards = T, R, 2
  c.data.clips = clips or {'train': 6, 'test': 2, 'ood': 2}
  return c


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('data'))
  storage.ensure_dataset(_config(), d)
  return d


def _reproject(clip, a, b, w2c_b=None):
  """Warps frame a into frame b with depth + cameras; returns (visible fraction, colour match)."""
  k = clip['intrinsics'].astype(np.float64)
  _, h, w = clip['depth'].shape
  v, u = np.mgrid[0:h, 0:w]
  pix = np.stack([u.ravel(), v.ravel(), np.ones(h * w)])
  x_cam = np.linalg.inv(k) @ pix * clip['depth'][a].ravel()          # z-depth convention
  x_world = np.linalg.inv(clip['world_to_camera'][a].astype(np.float64)) @ np.vstack(
      [x_cam, np.ones(h * w)])
  m_b = clip['world_to_camera'][b] if w2c_b is None else w2c_b
  x_b = (m_b.astype(np.float64) @ x_world)[:3]
  z = x_b[2]
  proj = k @ x_b
  ub, vb = np.round(proj[0] / z).astype(int), np.round(proj[1] / z).astype(int)
  inside = (z > 1e-3) & (ub >= 0) & (ub < w) & (vb >= 0) & (vb < h)
  ub, vb = np.clip(ub, 0, w - 1), np.clip(vb, 0, h - 1)
  visible = inside & (np.abs(clip['depth'][b][vb, ub] - z) < 0.03 * z)
  diff = np.abs(clip['rgb'][a].reshape(-1, 3).astype(int) - clip['rgb'][b][vb, ub].astype(int))
  return visible.mean(), (diff.max(-1)[visible] < 40).mean()


def test_render_shapes_and_determinism():
  a = synthetic.render_clip(3, 'train', T, R, R)
  b = synthetic.render_clip(3, 'train', T, R, R)
  c = synthetic.render_clip(4, 'train', T, R, R)
  assert a['rgb'].shape == (T, R, R, 3) and a['rgb'].dtype == np.uint8
  assert a['depth'].shape == (T, R, R) and a['depth'].dtype == np.float32
  assert a['intrinsics'].shape == (3, 3) and a['world_to_camera'].shape == (T, 4, 4)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a['rgb'], c['rgb'])
  assert np.all(np.isfinite(a['depth'])) and a['depth'].min() > 0
  rot = a['world_to_camera'][:, :3, :3]
  np.testing.assert_allclose(rot @ np.swapaxes(rot, 1, 2), np.broadcast_to(np.eye(3), rot.shape),
                             atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
  np.testing.assert_array_equal(a['world_to_camera'][:, 3], np.tile([0, 0, 0, 1], (T, 1)))
  # The camera moves, and the images are colourful rather than flat.
  assert np.abs(np.diff(a['world_to_camera'][:, :3, 3], axis=0)).sum() > 0.1
  assert a['rgb'].std() > 20


@pytest.mark.parametrize('split', ['train', 'ood'])
def test_depth_agrees_with_geometry(split):
  seeds = synthetic.split_seeds(split, 4)
  for seed in seeds:
    clip = synthetic.render_clip(int(seed), split, T, R, R)
    visible, match = _reproject(clip, 0, T // 2)
    assert visible > 0.2, (seed, visible)
    assert match > (0.85 if split == 'train' else 0.75), (seed, match)
    # Control: with the camera moved 0.6 units sideways, far fewer pixels reproject consistently.
    wrong = clip['world_to_camera'][T // 2].copy()
    wrong[0, 3] += 0.6
    visible_wrong, match_wrong = _reproject(clip, 0, T // 2, wrong)
    assert visible_wrong * match_wrong < 0.75 * visible * match, (seed, match, match_wrong)
    # Every unprojected point lies inside the room, and the floor (y = 0) is seen.
    scene = synthetic.sample_scene(int(seed), split, T)
    k_inv = np.linalg.inv(clip['intrinsics'].astype(np.float64))
    v, u = np.mgrid[0:R, 0:R]
    x_cam = k_inv @ np.stack([u.ravel(), v.ravel(), np.ones(R * R)]) * clip['depth'][0].ravel()
    x_w = (np.linalg.inv(clip['world_to_camera'][0].astype(np.float64))
           @ np.vstack([x_cam, np.ones(R * R)]))[:3]
    room = scene['room']
    assert x_w[1].min() > -1e-3 and x_w[1].max() < room[1] + 1e-3
    assert np.abs(x_w[0]).max() < room[0] + 1e-3 and np.abs(x_w[2]).max() < room[2] + 1e-3


def test_splits_are_disjoint():
  seeds = {s: set(synthetic.split_seeds(s, 500).tolist()) for s in synthetic.SPLITS}
  assert not seeds['train'] & seeds['test'] and not seeds['train'] & seeds['ood']
  assert not seeds['test'] & seeds['ood']
  ind, ood = synthetic.FAMILIES['in_distribution'], synthetic.FAMILIES['ood']
  for key in ('shapes', 'textures', 'trajectories'):
    assert not set(ind[key]) & set(ood[key]), key
  seen = {s: dict(shapes=set(), textures=set(), trajectories=set()) for s in synthetic.SPLITS}
  for split in synthetic.SPLITS:
    for seed in synthetic.split_seeds(split, 40):
      scene = synthetic.sample_scene(int(seed), split, T)
      seen[split]['shapes'] |= set(scene['shape_families'])
      seen[split]['textures'] |= set(scene['texture_families'])
      seen[split]['trajectories'].add(scene['trajectory'])
  for key in ('shapes', 'textures', 'trajectories'):
    assert seen['train'][key] == set(ind[key]), key   # every train family is actually used
    assert seen['test'][key] <= set(ind[key])
    assert seen['ood'][key] == set(ood[key])
  with pytest.raises(ValueError, match='split'):
    synthetic.split_seeds('val', 3)


def test_ensure_dataset_writes_splits_and_preview(data_dir):
  import imageio.v3 as iio
  for split, n in (('train', 6), ('test', 2), ('ood', 2)):
    src = storage.ClipSource(data_dir, split)
    assert len(src) == n
  src = storage.ClipSource(data_dir, 'test')
  item = src[1]
  ref = synthetic.render_clip(int(synthetic.split_seeds('test', 2)[1]), 'test', T, R, R)
  for key in ref:
    np.testing.assert_array_equal(item[key], ref[key])
    assert item[key].dtype == ref[key].dtype and item[key].flags.writeable
  assert item['seed'].shape == () and item['seed'] == synthetic.split_seeds('test', 2)[1]
  preview = iio.imread(os.path.join(data_dir, 'preview.png'))
  assert preview.ndim == 3 and preview.shape[0] >= 6 * 2 * R and preview.std() > 10
  # Idempotent: nothing is re-rendered.
  stamp = os.path.getmtime(os.path.join(data_dir, 'train', 'meta.json'))
  storage.ensure_dataset(_config(), data_dir)
  assert os.path.getmtime(os.path.join(data_dir, 'train', 'meta.json')) == stamp
  assert not [f for f in os.listdir(data_dir) if f.startswith('.tmp')]


def test_record_format_round_trip():
  clip = {'rgb': np.arange(24, dtype=np.uint8).reshape(1, 2, 4, 3), 'seed': np.int64(7),
          'latents': np.linspace(-1, 1, 6, dtype=np.float32).reshape(1, 2, 3)}
  for data in (storage.encode_clip(clip), _savez_bytes(clip)):   # current format and format 1
    out = storage.decode_clip(data)
    for key, value in clip.items():
      np.testing.assert_array_equal(out[key], value)
      assert out[key].dtype == value.dtype and out[key].shape == np.shape(value)
  with pytest.raises(ValueError, match='header'):
    storage.decode_clip(b'garbage')
  with pytest.raises(ValueError, match='truncated'):
    storage.decode_clip(storage.encode_clip(clip)[:-5])


def _savez_bytes(clip):
  import io
  buf = io.BytesIO()
  np.savez(buf, **clip)
  return buf.getvalue()


def test_half_written_split_is_rerendered(tmp_path):
  d = str(tmp_path)
  os.makedirs(os.path.join(d, 'test'))
  with open(os.path.join(d, 'test', 'shard-00000-of-00001.array_record'), 'wb') as f:
    f.write(b'partial')
  with pytest.raises(FileNotFoundError, match='meta.json'):
    storage.ClipSource(d, 'test')
  storage.ensure_dataset(_config({'test': 3}), d)
  assert len(storage.ClipSource(d, 'test')) == 3
  assert not os.path.exists(os.path.join(d, 'test', 'shard-00000-of-00001.array_record'))


@pytest.mark.slow   # spawns render processes
def test_parallel_render_matches_in_process(data_dir, tmp_path):
  spec = dict(storage._split_spec(_config(), 'train'), num_clips=3, num_shards=2)
  storage.render_split(spec, str(tmp_path / 'train'), processes=2)
  parallel, serial = storage.ClipSource(str(tmp_path), 'train'), storage.ClipSource(data_dir, 'train')
  assert len(parallel) == 3
  for i in range(3):
    for key in ('rgb', 'depth', 'world_to_camera', 'seed'):
      np.testing.assert_array_equal(parallel[i][key], serial[i][key])


def test_corrupt_or_missing_shard_names_the_file(data_dir, tmp_path):
  import shutil
  d = str(tmp_path / 'copy')
  shutil.copytree(data_dir, d)
  shard = os.path.join(d, 'train', 'shard-00001-of-00002.array_record')
  with open(shard, 'r+b') as f:       # clobber the file, keeping its length
    f.write(os.urandom(os.path.getsize(shard)))
  src = storage.ClipSource(d, 'train')
  src[0]  # shard 0 is intact
  with pytest.raises(IOError, match='shard-00001-of-00002'):
    src[len(src) - 1]
  os.remove(shard)
  with pytest.raises(FileNotFoundError, match='shard-00001-of-00002'):
    storage.ClipSource(d, 'train')
  with pytest.raises(FileNotFoundError, match='ensure_dataset'):
    storage.ClipSource(d, 'nope')


def test_loader_batches(data_dir):
  src = storage.ClipSource(data_dir, 'train')
  it = pipeline.make_loader(src, batch_size=4, clip_length=4, resolution=R, seed=0)
  batch = next(it)
  assert set(batch) == {'frames'}
  frames = batch['frames']
  assert frames.shape == (4, 4, R, R, 3) and frames.dtype == np.float32
  assert frames.min() >= -1.0 and frames.max() <= 1.0 and frames.std() > 0.1
  # Every example is a contiguous window of some stored clip, exactly rescaled to [-1, 1].
  clips = [src[i]['rgb'].astype(np.float32) / 127.5 - 1.0 for i in range(len(src))]
  for ex in frames:
    assert any(np.allclose(ex, c[s:s + 4], atol=1e-6) for c in clips for s in range(T - 3))
  # Same seed -> same stream; other seed -> another stream.
  again = next(pipeline.make_loader(src, batch_size=4, clip_length=4, resolution=R, seed=0))
  other = next(pipeline.make_loader(src, batch_size=4, clip_length=4, resolution=R, seed=1))
  np.testing.assert_array_equal(again['frames'], frames)
  assert not np.array_equal(other['frames'], frames)


def test_loader_geometry_stride_and_resize(data_dir):
  src = storage.ClipSource(data_dir, 'test')
  it = pipeline.make_loader(src, batch_size=2, clip_length=3, resolution=16, seed=0,
                            shuffle=False, num_epochs=1, keep_geometry=True, frame_stride=2)
  batch = next(it)
  assert batch['frames'].shape == (2, 3, 16, 16, 3)
  assert batch['depth'].shape == (2, 3, 16, 16) and batch['world_to_camera'].shape == (2, 3, 4, 4)
  clip = src[0]
  np.testing.assert_array_equal(batch['world_to_camera'][0], clip['world_to_camera'][[0, 2, 4]])
  k = batch['intrinsics'][0]
  np.testing.assert_allclose(k[0, 0], clip['intrinsics'][0, 0] / 2, rtol=1e-6)
  np.testing.assert_allclose(k[0, 2], (16 - 1) / 2, rtol=1e-6)
  assert batch['seed'][0] == clip['seed']
  with pytest.raises(ValueError, match='clip_length'):
    next(pipeline.make_loader(src, batch_size=1, clip_length=T + 1, resolution=R, seed=0))


def test_loader_with_worker_processes(data_dir):
  src = storage.ClipSource(data_dir, 'test')
  kwargs = dict(batch_size=2, clip_length=4, resolution=R, seed=3, shuffle=False, num_epochs=1)
  it = pipeline.make_loader(src, worker_count=2, **kwargs)
  got = next(it)['frames']
  del it   # stop the workers now rather than at interpreter exit
  np.testing.assert_array_equal(got, next(pipeline.make_loader(src, **kwargs))['frames'])


def test_per_process_shards_are_disjoint_and_cover(data_dir):
  src = storage.ClipSource(data_dir, 'train')
  seen = []
  for index in range(3):
    it = pipeline.make_loader(src, batch_size=1, clip_length=2, resolution=R, seed=0,
                              num_epochs=1, keep_geometry=True, shard_index=index, shard_count=3)
    seen.append([int(b['seed'][0]) for b in it])
  flat = [s for shard in seen for s in shard]
  assert len(flat) == len(set(flat)) == len(src)
  assert set(flat) == set(synthetic.split_seeds('train', len(src)).tolist())
  with pytest.raises(ValueError, match='shard_index'):
    pipeline.make_loader(src, batch_size=1, clip_length=2, resolution=R, seed=0, shard_index=3,
                         shard_count=3)


def test_video_folder_source(tmp_path):
  import imageio.v2 as imageio
  from maskvid.data.video_folder import VideoFolderSource
  vdir = tmp_path / 'videos'
  vdir.mkdir()
  frames = np.zeros((10, 48, 64, 3), np.uint8)
  for t in range(10):                   # a bright square sliding right on a blue background
    frames[t, ..., 2] = 160
    frames[t, 16:32, 4 * t:4 * t + 16] = (250, 200, 40)
  imageio.mimwrite(str(vdir / 'clip.mp4'), frames, fps=10, macro_block_size=16)
  src = VideoFolderSource(str(vdir), num_frames=4, resolution=16)
  assert len(src) == 2                  # 10 frames -> two chunks of 4
  item = src[1]
  assert item['rgb'].shape == (4, 16, 16, 3) and item['rgb'].dtype == np.uint8
  # Chunk 1 = frames s+4..s+7 (s: the seeded start in [0, 2], the frames two chunks leave over),
  # centre-cropped 48x48 (x 8..56) and resized 3x down.
  import cv2
  start = src._chunks[1][1]  # pylint: disable=protected-access
  assert start - 4 in (0, 1, 2)
  # Each decoded frame is nearest to the frame it should be (codec error ~5, neighbours 5-11
  # apart, so a mean-error bound alone would pass an off-by-one frame).
  resized = np.stack([cv2.resize(f[:, 8:56], (16, 16), interpolation=cv2.INTER_AREA)
                      for f in frames]).astype(int)
  for k in range(4):
    errors = np.abs(resized - item['rgb'][k].astype(int)).mean(axis=(1, 2, 3))
    assert errors.argmin() == start + k, (k, errors.round(1))
    assert errors[start + k] < 12, k
  batch = next(pipeline.make_loader(src, batch_size=2, clip_length=4, resolution=16, seed=0))
  assert batch['frames'].shape == (2, 4, 16, 16, 3)
  # Through the config: data.source = video_folder renders nothing and previews the videos.
  config = _config()
  config.data.source, config.data.video_dir = 'video_folder', str(vdir)
  config.data.num_frames, config.data.resolution = 4, 16
  storage.ensure_dataset(config, str(tmp_path / 'data'))
  assert os.path.exists(tmp_path / 'data' / 'preview.png')
  assert not os.path.exists(tmp_path / 'data' / 'train')
  assert len(storage.open_source(config, str(tmp_path / 'data'), 'train')) == 2
  (vdir / 'broken.mp4').write_bytes(b'not a video')
  with pytest.raises(IOError, match='broken.mp4'):
    VideoFolderSource(str(vdir), num_frames=4, resolution=16, strict=True)
  lenient = VideoFolderSource(str(vdir), num_frames=4, resolution=16)   # the default
  assert len(lenient) == 2 and [os.path.basename(p) for p in lenient.skipped_videos] == [
      'broken.mp4']
  np.testing.assert_array_equal(lenient[1]['rgb'], item['rgb'])
  with pytest.raises(FileNotFoundError, match='no video files'):
    VideoFolderSource(str(tmp_path), num_frames=4, resolution=16)


def test_camera_speed_scales_the_path_toward_the_first_pose():
  seed = int(synthetic.split_seeds('test', 1)[0])
  still = synthetic.render_clip(seed, 'test', 4, 16, 16, speed=0.0)
  for t in range(1, 4):   # a static camera: every frame is frame 0
    np.testing.assert_array_equal(still['rgb'][t], still['rgb'][0])
    np.testing.assert_array_equal(still['world_to_camera'][t], still['world_to_camera'][0])
  full = synthetic.render_clip(seed, 'test', 4, 16, 16)
  np.testing.assert_array_equal(synthetic.render_clip(seed, 'test', 4, 16, 16, 1.0)['rgb'],
                                full['rgb'])
  np.testing.assert_array_equal(still['rgb'][0], full['rgb'][0])   # same first view
  half = synthetic.sample_scene(seed, 'test', 4, speed=0.5)
  scene = synthetic.sample_scene(seed, 'test', 4)
  np.testing.assert_allclose(half['eyes'], scene['eyes'][:1] + 0.5 * (scene['eyes'] -
                                                                     scene['eyes'][:1]))
  with pytest.raises(ValueError, match='speed'):
    synthetic.sample_scene(seed, 'test', 4, speed=-1)


def test_train_split_draws_each_clip_speed_from_the_mix(tmp_path):
  speeds = (0.0, 0.5, 1.0)
  drawn = [synthetic.clip_speed(s, speeds) for s in range(300)]
  assert drawn == [synthetic.clip_speed(s, speeds) for s in range(300)]   # deterministic
  assert {d: drawn.count(d) > 60 for d in speeds} == {d: True for d in speeds}
  c = _config({'train': 6, 'test': 2})
  c.data.camera_speeds = speeds
  storage.ensure_dataset(c, str(tmp_path))
  train = storage.ClipSource(str(tmp_path), 'train')
  for i in range(len(train)):
    clip = train[i]
    speed = float(clip['speed'])
    assert speed == synthetic.clip_speed(int(clip['seed']), speeds)
    moved = np.abs(clip['rgb'][-1].astype(int) - clip['rgb'][0].astype(int)).mean()
    assert (moved == 0) == (speed == 0), (i, speed, moved)
  test = storage.ClipSource(str(tmp_path), 'test')   # held-out splits keep the sampled paths
  np.testing.assert_array_equal(
      test[0]['rgb'], synthetic.render_clip(int(test[0]['seed']), 'test', T, R, R)['rgb'])
  c.data.camera_speeds = (-1.0,)
  with pytest.raises(ValueError, match='camera speeds'):
    storage.ensure_dataset(c, str(tmp_path / 'bad'))


def test_video_stride_mix_draws_a_stride_per_chunk(tmp_path):
  import imageio.v2 as imageio
  from maskvid.data.video_folder import VideoFolderSource
  vdir = tmp_path / 'videos'
  vdir.mkdir()
  frames = np.zeros((60, 16, 16, 3), np.uint8)
  frames[..., 0] = (np.arange(60) * 4)[:, None, None]     # frame index readable in red
  imageio.mimwrite(str(vdir / 'ramp.mp4'), frames, fps=10, macro_block_size=16)
  src = VideoFolderSource(str(vdir), num_frames=4, resolution=16, stride=(1, 3))
  strides = [c[2] for c in src._chunks]  # pylint: disable=protected-access
  assert set(strides) == {1, 3}
  assert strides == [c[2] for c in VideoFolderSource(   # pylint: disable=protected-access
      str(vdir), num_frames=4, resolution=16, stride=(1, 3))._chunks]
  for i, (_, start, stride) in enumerate(src._chunks):  # pylint: disable=protected-access
    red = src[i]['rgb'][..., 0].astype(float).mean((1, 2))
    np.testing.assert_allclose(red, (start + stride * np.arange(4)) * 4, atol=6)
  c = _config()
  c.data.source, c.data.video_dir, c.data.num_frames, c.data.resolution = (
      'video_folder', str(vdir), 4, 16)
  c.data.video_strides = (1, 3)
  assert storage.open_source(c, str(tmp_path), 'train').strides == (1, 3)
  assert storage.open_source(c, str(tmp_path), 'test').strides == (1,)


def test_video_chunk_that_fails_to_decode_is_replaced_or_raises_when_strict(tmp_path):
  """A chunk that opens but does not decode (a file damaged past its header) is replaced by the
  next chunk that decodes, counted once; strict sources raise naming the file."""
  import imageio.v2 as imageio
  from maskvid.data.video_folder import VideoFolderSource
  vdir = tmp_path / 'videos'
  vdir.mkdir()
  frames = np.zeros((12, 16, 16, 3), np.uint8)
  frames[..., 1] = (np.arange(12) * 20)[:, None, None]
  imageio.mimwrite(str(vdir / 'a.mp4'), frames, fps=10, macro_block_size=16)

  def damaged(src, bad):
    decode = src._decode  # pylint: disable=protected-access

    def _decode(index):
      if index == bad:
        raise IOError(f'cannot decode frames of video {src.paths[0]!r}: frame 5 does not decode')
      return decode(index)
    src._decode = _decode  # pylint: disable=protected-access
    return src

  src = damaged(VideoFolderSource(str(vdir), num_frames=4, resolution=16), bad=1)
  assert len(src) == 3
  good = VideoFolderSource(str(vdir), num_frames=4, resolution=16)
  np.testing.assert_array_equal(src[1]['rgb'], good[2]['rgb'])      # the next chunk instead
  np.testing.assert_array_equal(src[1]['rgb'], good[2]['rgb'])      # and again, no retry
  assert src.bad_data()['chunks'] == [1]
  np.testing.assert_array_equal(src[0]['rgb'], good[0]['rgb'])
  strict = damaged(VideoFolderSource(str(vdir), num_frames=4, resolution=16, strict=True), bad=1)
  with pytest.raises(IOError, match='a.mp4'):
    strict[1]
