"""A folder of mp4 files runs through every stage that reads clips: render -> vae -> cache ->
diffusion (`config.data.source = 'video_folder'`), past an unreadable and a truncated video."""
import json
import os

import imageio.v2 as imageio
import numpy as np
import pytest

from maskvid import stages
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


def test_video_folder_runs_render_vae_cache_diffusion(tmp_path):
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
  c = testing.tiny_config(steps=4)
  c.data.source, c.data.video_dir = 'video_folder', videos
  c.data.num_frames = c.data.clip_length = FRAMES
  c.data.resolution = RES
  c.data.clips = {'train': 1, 'test': 1}       # which splits exist; the folders give the clips
  c.model.patch_size = (1, 1, 1)
  c.model.width, c.model.depth, c.model.num_heads = 32, 1, 2
  c.train.steps, c.train.batch_size, c.train.log_every = 2, 2, 1
  c.train.checkpoint_every = 2
  c.sample.num_steps, c.sample.num_clips = 2, 1
  workdir = str(tmp_path / 'run')

  with pytest.raises(IOError, match='garbage.mp4'):
    strict = c.copy_and_resolve_references()
    strict.data.strict_videos = True
    stages.run_vae(strict, str(tmp_path / 'strict'))
  vae_metrics = stages.run_vae(c, workdir)
  assert np.isfinite(vae_metrics['test/psnr'])
  assert vae_metrics['data/skipped_videos'] == 2       # counted in the stage's metrics
  stages.run_cache(c, workdir)
  latents_dir = os.path.join(workdir, 'latents')
  with open(os.path.join(latents_dir, cache.COMPLETE_FILE)) as f:
    assert json.load(f)['skipped']['train'] == {'videos': 2, 'chunks': 0}
  train_src = cache.LatentSource(latents_dir, 'train')
  assert len(train_src) == 9                            # 3 videos x 12 frames / 4
  assert len(cache.LatentSource(latents_dir, 'test')) == 3
  item = train_src[0]
  assert item['latents'].shape == (FRAMES, RES // 2, RES // 2, 4)
  assert item['rgb'].shape == (FRAMES, RES, RES, 3)
  result = stages.run_diffusion(c, workdir)
  assert result['step'] == 2 and np.isfinite(result['train/loss'])
  assert os.path.exists(os.path.join(workdir, 'diffusion', 'samples_0000002.png'))
