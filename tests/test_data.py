"""maskvid.data: renderer determinism and geometry, splits, storage, grain loader, mp4 source.

All renders use 8 x 32 x 32 (the default config's shape) so the ray caster compiles once per
family set (in-distribution, ood) for the whole file.
"""
import os

import numpy as np
import pytest

from maskvid.data import pipeline, records, scenes, storage, synthetic

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
  seeds = scenes.split_seeds(split, 4)
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
    scene = scenes.sample_scene(int(seed), split, T)
    k_inv = np.linalg.inv(clip['intrinsics'].astype(np.float64))
    v, u = np.mgrid[0:R, 0:R]
    x_cam = k_inv @ np.stack([u.ravel(), v.ravel(), np.ones(R * R)]) * clip['depth'][0].ravel()
    x_w = (np.linalg.inv(clip['world_to_camera'][0].astype(np.float64))
           @ np.vstack([x_cam, np.ones(R * R)]))[:3]
    room = scene['room']
    assert x_w[1].min() > -1e-3 and x_w[1].max() < room[1] + 1e-3
    assert np.abs(x_w[0]).max() < room[0] + 1e-3 and np.abs(x_w[2]).max() < room[2] + 1e-3


def test_splits_are_disjoint():
  seeds = {s: set(scenes.split_seeds(s, 500).tolist()) for s in scenes.SPLITS}
  assert not seeds['train'] & seeds['test'] and not seeds['train'] & seeds['ood']
  assert not seeds['test'] & seeds['ood']
  ind, ood = scenes.FAMILIES['in_distribution'], scenes.FAMILIES['ood']
  for key in ('shapes', 'textures', 'trajectories'):
    assert not set(ind[key]) & set(ood[key]), key
  seen = {s: dict(shapes=set(), textures=set(), trajectories=set()) for s in scenes.SPLITS}
  for split in scenes.SPLITS:
    for seed in scenes.split_seeds(split, 40):
      scene = scenes.sample_scene(int(seed), split, T)
      seen[split]['shapes'] |= set(scene['shape_families'])
      seen[split]['textures'] |= set(scene['texture_families'])
      seen[split]['trajectories'].add(scene['trajectory'])
  for key in ('shapes', 'textures', 'trajectories'):
    assert seen['train'][key] == set(ind[key]), key   # every train family is actually used
    assert seen['test'][key] <= set(ind[key])
    assert seen['ood'][key] == set(ood[key])
  with pytest.raises(ValueError, match='split'):
    scenes.split_seeds('val', 3)


def test_ensure_dataset_writes_splits_and_preview(data_dir):
  import imageio.v3 as iio
  for split, n in (('train', 6), ('test', 2), ('ood', 2)):
    src = records.ClipSource(data_dir, split)
    assert len(src) == n
  src = records.ClipSource(data_dir, 'test')
  item = src[1]
  ref = synthetic.render_clip(int(scenes.split_seeds('test', 2)[1]), 'test', T, R, R)
  for key in ref:
    np.testing.assert_array_equal(item[key], ref[key])
    assert item[key].dtype == ref[key].dtype and item[key].flags.writeable
  assert item['seed'].shape == () and item['seed'] == scenes.split_seeds('test', 2)[1]
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
  for data in (records.encode_clip(clip), _savez_bytes(clip)):   # current format and format 1
    out = records.decode_clip(data)
    for key, value in clip.items():
      np.testing.assert_array_equal(out[key], value)
      assert out[key].dtype == value.dtype and out[key].shape == np.shape(value)
  with pytest.raises(ValueError, match='header'):
    records.decode_clip(b'garbage')
  with pytest.raises(ValueError, match='truncated'):
    records.decode_clip(records.encode_clip(clip)[:-5])


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
    records.ClipSource(d, 'test')
  storage.ensure_dataset(_config({'test': 3}), d)
  assert len(records.ClipSource(d, 'test')) == 3
  assert not os.path.exists(os.path.join(d, 'test', 'shard-00000-of-00001.array_record'))


@pytest.mark.slow   # spawns render processes
def test_parallel_render_matches_in_process(data_dir, tmp_path):
  spec = dict(storage._split_spec(_config(), 'train'), num_clips=3, num_shards=2)
  storage.render_split(spec, str(tmp_path / 'train'), processes=2)
  parallel, serial = records.ClipSource(str(tmp_path), 'train'), records.ClipSource(data_dir, 'train')
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
  src = records.ClipSource(d, 'train')
  src[0]  # shard 0 is intact
  with pytest.raises(IOError, match='shard-00001-of-00002'):
    src[len(src) - 1]
  os.remove(shard)
  with pytest.raises(FileNotFoundError, match='shard-00001-of-00002'):
    records.ClipSource(d, 'train')
  with pytest.raises(FileNotFoundError, match='ensure_dataset'):
    records.ClipSource(d, 'nope')


def test_loader_batches(data_dir):
  src = records.ClipSource(data_dir, 'train')
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
  src = records.ClipSource(data_dir, 'test')
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
  src = records.ClipSource(data_dir, 'test')
  kwargs = dict(batch_size=2, clip_length=4, resolution=R, seed=3, shuffle=False, num_epochs=1)
  it = pipeline.make_loader(src, worker_count=2, **kwargs)
  got = next(it)['frames']
  del it   # stop the workers now rather than at interpreter exit
  np.testing.assert_array_equal(got, next(pipeline.make_loader(src, **kwargs))['frames'])


def test_per_process_shards_are_disjoint_and_cover(data_dir):
  src = records.ClipSource(data_dir, 'train')
  seen = []
  for index in range(3):
    it = pipeline.make_loader(src, batch_size=1, clip_length=2, resolution=R, seed=0,
                              num_epochs=1, keep_geometry=True, shard_index=index, shard_count=3)
    seen.append([int(b['seed'][0]) for b in it])
  flat = [s for shard in seen for s in shard]
  assert len(flat) == len(set(flat)) == len(src)
  assert set(flat) == set(scenes.split_seeds('train', len(src)).tolist())
  with pytest.raises(ValueError, match='shard_index'):
    pipeline.make_loader(src, batch_size=1, clip_length=2, resolution=R, seed=0, shard_index=3,
                         shard_count=3)
