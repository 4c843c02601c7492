"""Real-video sources run through every stage that reads clips: render -> vae -> cache ->
diffusion -> eval ('holes', 'interpolate'): a folder of mp4 files (`data.source='video_folder'`,
past an unreadable, a truncated and a too-short video) and a TFDS dataset (`data.source='tfds'`)."""
import functools
import json
import os

import imageio.v2 as imageio
import numpy as np
import pytest

from maskvid import stages
from maskvid.data import sources
from maskvid.vae import cache
from maskvid.vae import testing

FRAMES, RES = 4, 16


def _write_videos(folder: str, count: int, seed: int) -> None:
  """Moving stripes and a drifting square: 12 frames of 32x32 per video (3 clips of 4)."""
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:32, 0:32]
  for v in range(count):
    colour = rng.integers(40, 255, 3)
    frames = []
    for t in range(12):
      stripes = ((xx + 2 * t + 3 * v) // 4) % 2
      img = (stripes[..., None] * colour).astype(np.uint8)
      img[8 + t:16 + t, 4 + v:12 + v] = 255 - colour
      frames.append(img)
    imageio.mimwrite(os.path.join(folder, f'clip{v}.mp4'), frames, fps=8, macro_block_size=16)


def _tiny_video_config(c):
  c.data.num_frames = c.data.clip_length = FRAMES
  c.data.resolution = RES
  c.data.clips = {'train': 1, 'test': 1}       # which splits exist; the source gives the clips
  c.model.patch_size = (1, 1, 1)
  c.model.width, c.model.depth, c.model.num_heads = 32, 1, 2
  c.train.steps, c.train.batch_size, c.train.log_every = 2, 2, 1
  c.train.checkpoint_every = 2
  c.sample.num_steps, c.sample.preview_clips = 2, 1
  c.eval.splits, c.eval.num_clips, c.eval.num_samples, c.eval.one_step = ('test',), 2, 1, False
  c.eval.methods = ('nearest_fill', 'cross_fade', 'ours')
  c.eval.lpips_weights = ''
  c.eval.dists_weights = c.eval.fvd_weights = ''
  return c


def _check_eval(c, workdir):
  """eval on real video: 'holes' and 'interpolate' scored (no geometry metrics), the tasks that
  need the renderer skipped with a note; the demo config's speed sweep (the README's own-videos
  command runs configs/demo.py) skipped with a note, not a crash."""
  c.eval.speeds = (0.0, 1.0)
  results = stages.run_eval(c, workdir)
  assert 'speed_sweep' not in results
  assert any('speed sweep skipped' in n for n in results['notes'])
  m = results['metrics']['test']
  assert set(m) == {'interpolate', 'holes'}
  assert np.isfinite(m['holes']['ours']['psnr_hole'])
  assert np.isfinite(m['interpolate']['cross_fade']['psnr_hole'])
  assert np.isnan(m['holes']['ours']['reproj'])                 # no GT geometry: not measured
  assert np.isnan(m['interpolate']['warp_oracle']['psnr_hole'])
  assert any('test/nvs: skipped' in n for n in results['notes'])
  assert any('test/edit: skipped' in n for n in results['notes'])
  assert os.path.exists(os.path.join(workdir, 'eval', 'test_holes.png'))


@pytest.mark.slow
def test_video_folder_runs_render_vae_cache_diffusion_eval(tmp_path):
  videos = str(tmp_path / 'videos')
  _write_videos(os.path.join(videos, 'train'), 3, seed=0)
  _write_videos(os.path.join(videos, 'test'), 1, seed=1)
  # Two bad files among the training videos: garbage, and a valid file cut in half.
  train_dir = os.path.join(videos, 'train')
  with open(os.path.join(train_dir, 'garbage.mp4'), 'wb') as f:
    f.write(b'not a video at all')
  with open(os.path.join(train_dir, 'clip0.mp4'), 'rb') as f:
    data = f.read()
  with open(os.path.join(train_dir, 'truncated.mp4'), 'wb') as f:
    f.write(data[:len(data) // 2])
  imageio.mimwrite(os.path.join(train_dir, 'short.mp4'), [np.zeros((32, 32, 3), np.uint8)] * 3,
                   fps=8, macro_block_size=16)
  c = _tiny_video_config(testing.tiny_config(steps=4))
  c.data.source, c.data.video_dir = 'video_folder', videos
  workdir = str(tmp_path / 'run')

  with pytest.raises(IOError, match='garbage.mp4'):
    strict = c.copy_and_resolve_references()
    strict.data.strict_videos = True
    stages.run_vae(strict, str(tmp_path / 'strict'))
  vae_metrics = stages.run_vae(c, workdir)
  assert np.isfinite(vae_metrics['test/psnr'])
  assert vae_metrics['data/skipped_videos'] == 2       # counted in the stage's metrics
  assert vae_metrics['data/short_videos'] == 1
  stages.run_cache(c, workdir)
  latents_dir = os.path.join(workdir, 'latents')
  with open(os.path.join(latents_dir, cache.COMPLETE_FILE)) as f:
    assert json.load(f)['skipped']['train'] == {'videos': 2, 'chunks': 0, 'short': 1}
  train_src = cache.LatentSource(latents_dir, 'train')
  assert len(train_src) == 9                            # 3 videos x 12 frames / 4
  assert len(cache.LatentSource(latents_dir, 'test')) == 3
  item = train_src[0]
  assert item['latents'].shape == (FRAMES, RES // 2, RES // 2, 4)
  assert item['rgb'].shape == (FRAMES, RES, RES, 3)
  result = stages.run_diffusion(c, workdir)
  assert result['step'] == 2 and np.isfinite(result['train/loss'])
  assert os.path.exists(os.path.join(workdir, 'diffusion', 'samples_0000002.png'))
  _check_eval(c, workdir)


def test_video_folder_stride_and_random_start(tmp_path):
  from maskvid.data import video_folder  # pylint: disable=g-import-not-at-top
  _write_videos(str(tmp_path), 2, seed=0)   # 12 frames each
  consecutive = video_folder.VideoFolderSource(str(tmp_path), 4, 16)
  strided = video_folder.VideoFolderSource(str(tmp_path), 4, 16, stride=2)
  assert len(consecutive) == 6 and len(strided) == 2            # a clip spans 4 / 7 frames
  assert strided.span == 7
  # 12 frames hold one 7-frame chunk with 5 to spare: the start differs across seeds.
  starts = {video_folder.VideoFolderSource(str(tmp_path), 4, 16, stride=2, seed=s)._chunks[0][1]  # pylint: disable=protected-access
            for s in range(8)}
  assert len(starts) > 1 and all(0 <= x <= 5 for x in starts)
  frames = video_folder.VideoFolderSource(str(tmp_path), 12, 16)[0]['rgb']
  start = strided._chunks[0][1]  # pylint: disable=protected-access
  np.testing.assert_array_equal(strided[0]['rgb'], frames[start:start + 7:2])
  with pytest.raises(ValueError, match='13 frames one clip spans.*2 short'):
    video_folder.VideoFolderSource(str(tmp_path), 7, 16, stride=2)   # spans 13 > 12


def _write_tfds(data_dir: str) -> None:
  """A tiny TFDS video dataset in ArrayRecord format: train 3 videos (one too short), test 1."""
  _tfds_builder()(data_dir=data_dir, file_format='array_record').download_and_prepare()


@functools.lru_cache(maxsize=None)
def _tfds_builder():
  """The builder class, defined once per process (TFDS registers builders by name)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class TinyMovingStripes(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'clip': tfds.features.Video(shape=(None, 32, 32, 3)), 'name': tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples(0, 3), 'test': self._generate_examples(1, 1)}

    def _generate_examples(self, seed, count):
      yy, xx = np.mgrid[0:32, 0:32]
      for v in range(count):
        length = 3 if (seed, v) == (0, 2) else 12
        frames = np.stack([(((xx + 2 * t + 5 * v + seed) // 4) % 2)[..., None] * [200, 90, 30]
                           for t in range(length)]).astype(np.uint8)
        yield f'{seed}-{v}', {'clip': frames, 'name': f'video{v}'}

  return TinyMovingStripes


def _tfds_config(tmp_path, steps):
  """The tiny video config on the tiny TFDS dataset (written to tmp_path/tfds)."""
  data_dir = str(tmp_path / 'tfds')
  _write_tfds(data_dir)
  c = _tiny_video_config(testing.tiny_config(steps=steps))
  c.data.source, c.data.tfds_name, c.data.tfds_data_dir = 'tfds', 'tiny_moving_stripes', data_dir
  c.data.tfds_frames_key = 'clip'
  return c


@pytest.mark.slow
def test_tfds_source_runs_vae_cache_diffusion_eval(tmp_path):
  c = _tfds_config(tmp_path, steps=4)
  c.data.video_stride = 2
  workdir = str(tmp_path / 'run')
  vae_metrics = stages.run_vae(c, workdir)
  assert np.isfinite(vae_metrics['test/psnr'])
  assert vae_metrics['data/short_videos'] == 1                 # the 3-frame video: skipped
  stages.run_cache(c, workdir)
  train = cache.LatentSource(os.path.join(workdir, 'latents'), 'train')
  assert len(train) == 3                                       # one clip per example
  assert train[0]['latents'].shape == (FRAMES, RES // 2, RES // 2, 4)
  result = stages.run_diffusion(c, workdir)
  assert result['step'] == 2 and np.isfinite(result['train/loss'])
  _check_eval(c, workdir)
  bad = c.copy_and_resolve_references()
  bad.data.tfds_frames_key = 'frames'
  with pytest.raises(KeyError, match="no feature 'frames'.*'clip'"):
    sources.open_source(bad, '', 'train')[0]


def test_video_folder_without_test_holds_out_videos_by_name(tmp_path):
  from maskvid.data import holdout  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  videos = str(tmp_path / 'videos')
  _write_videos(videos, 10, seed=0)
  c = default.get_config()
  c.data.source, c.data.video_dir = 'video_folder', videos
  c.data.num_frames, c.data.resolution = FRAMES, RES
  data_dir = str(tmp_path / 'data')
  share = sources.held_out(c, data_dir)
  assert len(share.test) >= 1 and not share.scores_training
  assert set(share.train).isdisjoint(share.test) and len(share.train) + len(share.test) == 10
  assert sources.source_splits(c) == ('train', 'test')        # no 'ood' for real video
  train = sources.open_source(c, data_dir, 'train')
  test = sources.open_source(c, data_dir, 'test')
  names = lambda src: {os.path.basename(p) for p in src.paths}
  assert names(train) == set(share.train) and names(test) == set(share.test)
  with pytest.raises(ValueError, match="only the splits"):
    sources.open_source(c, data_dir, 'ood')
  # Adding a video moves no other video: only the new file may land on either side.
  _write_videos(str(tmp_path / 'more'), 11, seed=3)
  os.rename(str(tmp_path / 'more' / 'clip10.mp4'), os.path.join(videos, 'new.mp4'))
  again = sources.held_out(c, data_dir)
  assert set(again.test) - {'new.mp4'} == set(share.test)
  assert set(again.train) - {'new.mp4'} == set(share.train)
  # The rule alone (no record) is stable too wherever the threshold, not the fallback, decides.
  many = [f'v{i}.mp4' for i in range(200)]
  base = holdout.split_files(many, 0.1)
  grown = holdout.split_files(many + ['extra.mp4'], 0.1)
  assert set(grown.test) - {'extra.mp4'} == set(base.test) and 5 < len(base.test) < 40
  # One video: nothing to hold out, and the split says it scores training clips.
  solo = str(tmp_path / 'solo')
  _write_videos(solo, 1, seed=0)
  c.data.video_dir = solo
  assert sources.held_out(c, str(tmp_path / 'solo_data')).scores_training


@pytest.mark.slow
def test_video_folder_run_scores_held_out_files_and_no_ood(tmp_path):
  videos = str(tmp_path / 'videos')
  _write_videos(videos, 10, seed=0)
  c = _tiny_video_config(testing.tiny_config(steps=2))
  c.data.source, c.data.video_dir = 'video_folder', videos
  c.data.clips = {'train': 1, 'test': 1, 'ood': 1}     # as the demo config has them
  c.eval.splits = ('test', 'ood')
  workdir = str(tmp_path / 'run')
  stages.run_vae(c, workdir)
  stages.run_cache(c, workdir)
  latents_dir = os.path.join(workdir, 'latents')
  assert not os.path.exists(os.path.join(latents_dir, 'ood'))
  share = sources.held_out(c, os.path.join(workdir, 'data'))
  train = cache.LatentSource(latents_dir, 'train')
  test = cache.LatentSource(latents_dir, 'test')
  assert len(train) == 3 * len(share.train) and len(test) == 3 * len(share.test)
  # No clip of a held-out video is in the train cache.
  train_rgb = {train[i]['rgb'].tobytes() for i in range(len(train))}
  assert not any(test[i]['rgb'].tobytes() in train_rgb for i in range(len(test)))
  stages.run_diffusion(c, workdir)
  results = stages.run_eval(c, workdir)
  assert set(results['metrics']) == {'test'}
  report = open(os.path.join(workdir, 'eval', 'results.md')).read()
  for name in share.test:
    assert name in report
  assert 'ood: not evaluated' in report and 'TRAINING' not in report
