"""maskvid.data: real-video sources (mp4 folders: strides, bad chunks) and the camera-speed mix of
the rendered train split."""
import os

import numpy as np
import pytest

from maskvid.data import pipeline, records, scenes, sources, storage, synthetic

from test_data import R, T, _config


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
  assert len(sources.open_source(config, str(tmp_path / 'data'), 'train')) == 2
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
  seed = int(scenes.split_seeds('test', 1)[0])
  still = synthetic.render_clip(seed, 'test', 4, 16, 16, speed=0.0)
  for t in range(1, 4):   # a static camera: every frame is frame 0
    np.testing.assert_array_equal(still['rgb'][t], still['rgb'][0])
    np.testing.assert_array_equal(still['world_to_camera'][t], still['world_to_camera'][0])
  full = synthetic.render_clip(seed, 'test', 4, 16, 16)
  np.testing.assert_array_equal(synthetic.render_clip(seed, 'test', 4, 16, 16, 1.0)['rgb'],
                                full['rgb'])
  np.testing.assert_array_equal(still['rgb'][0], full['rgb'][0])   # same first view
  half = scenes.sample_scene(seed, 'test', 4, speed=0.5)
  scene = scenes.sample_scene(seed, 'test', 4)
  np.testing.assert_allclose(half['eyes'], scene['eyes'][:1] + 0.5 * (scene['eyes'] -
                                                                     scene['eyes'][:1]))
  with pytest.raises(ValueError, match='speed'):
    scenes.sample_scene(seed, 'test', 4, speed=-1)


def test_train_split_draws_each_clip_speed_from_the_mix(tmp_path):
  speeds = (0.0, 0.5, 1.0)
  drawn = [scenes.clip_speed(s, speeds) for s in range(300)]
  assert drawn == [scenes.clip_speed(s, speeds) for s in range(300)]   # deterministic
  assert {d: drawn.count(d) > 60 for d in speeds} == {d: True for d in speeds}
  c = _config({'train': 6, 'test': 2})
  c.data.camera_speeds = speeds
  storage.ensure_dataset(c, str(tmp_path))
  train = records.ClipSource(str(tmp_path), 'train')
  for i in range(len(train)):
    clip = train[i]
    speed = float(clip['speed'])
    assert speed == scenes.clip_speed(int(clip['seed']), speeds)
    moved = np.abs(clip['rgb'][-1].astype(int) - clip['rgb'][0].astype(int)).mean()
    assert (moved == 0) == (speed == 0), (i, speed, moved)
  test = records.ClipSource(str(tmp_path), 'test')   # held-out splits keep the sampled paths
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
  assert sources.open_source(c, str(tmp_path), 'train').strides == (1, 3)
  assert sources.open_source(c, str(tmp_path), 'test').strides == (1,)


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
