"""Latent cache: values equal re-encoding, stats applied, no-op re-run, incomplete cache rejected."""
import json
import os

import numpy as np
import pytest

from maskvid.vae import model as vae_model
from maskvid.data import sources
from maskvid.vae import cache
from maskvid.vae import testing
from maskvid.vae import train

pytestmark = pytest.mark.slow   # the integration tier (`make test-fast` skips it)

tiny_config = testing.tiny_config


class GeometryClips(testing.ProceduralClips):
  """Procedural clips with the geometry keys a rendered ClipSource carries."""

  def __getitem__(self, index):
    clip = super().__getitem__(index)
    t, h, w, _ = clip['rgb'].shape
    clip['depth'] = np.full((t, h, w), 1.0 + index, np.float32)
    clip['intrinsics'] = np.array([[h, 0, h / 2], [0, h, h / 2], [0, 0, 1]], np.float32)
    clip['world_to_camera'] = np.tile(np.eye(4, dtype=np.float32), (t, 1, 1))
    clip['seed'] = np.int64(100 + index)
    return clip


SOURCES = {'train': GeometryClips(5, 4, 16, seed=0), 'test': GeometryClips(2, 4, 16, seed=1),
           'ood': GeometryClips(3, 4, 16, seed=2)}


@pytest.fixture(scope='module')
def vae_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('cache') / 'vae')
  train.train_vae_on_sources(tiny_config(steps=2), d, SOURCES)
  return d


@pytest.fixture
def fake_data(monkeypatch):
  # The cache reads splits through sources.ClipSource; serve procedural clips instead of a render.
  monkeypatch.setattr(sources, 'ClipSource', lambda data_dir, split: SOURCES[split])


def _config():
  c = tiny_config()
  c.data.clips = {'train': 5, 'test': 2, 'ood': 3}
  c.data.num_shards = 2
  return c


def test_cache_round_trip(tmp_path, vae_dir, fake_data):
  latents_dir = str(tmp_path / 'latents')
  cache.build_latent_cache(_config(), vae_dir, 'unused', latents_dir)
  assert cache.is_complete(latents_dir)
  stats = cache.load_latent_stats(latents_dir)
  assert stats['shift'].shape == stats['scale'].shape == (4,)
  assert np.all(stats['scale'] > 0)

  module, params = vae_model.load_vae(vae_dir)
  all_train = []
  for split, src in SOURCES.items():
    latent_src = cache.LatentSource(latents_dir, split)
    assert len(latent_src) == len(src)
    frames = np.stack([src[i]['rgb'] for i in range(len(src))]).astype(np.float32) / 127.5 - 1
    mean, _ = module.apply(params, frames, method=module.encode)
    for i in range(len(src)):
      item = latent_src[i]
      assert item['latents'].dtype == np.float32 and item['latents'].shape == (4, 8, 8, 4)
      # Stored value == re-encoding (posterior mean), normalised with stats.json.
      np.testing.assert_allclose(item['latents'] * stats['scale'] + stats['shift'], mean[i],
                                 rtol=1e-4, atol=1e-4)
      np.testing.assert_array_equal(item['rgb'], src[i]['rgb'])
      np.testing.assert_array_equal(item['depth'], src[i]['depth'])
      np.testing.assert_array_equal(item['world_to_camera'], src[i]['world_to_camera'])
      np.testing.assert_array_equal(item['intrinsics'], src[i]['intrinsics'])
      if split == 'train':
        all_train.append(item['latents'])
  # Train latents are normalised per channel: mean 0, std 1.
  z = np.stack(all_train).reshape(-1, 4)
  np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(z.std(0), 1.0, atol=1e-3)

  # Re-running is a no-op: nothing is rewritten.
  before = {f: os.path.getmtime(os.path.join(latents_dir, f)) for f in os.listdir(latents_dir)}
  cache.build_latent_cache(_config(), vae_dir, 'unused', latents_dir)
  after = {f: os.path.getmtime(os.path.join(latents_dir, f)) for f in os.listdir(latents_dir)}
  assert before == after
  assert not [p for p in os.listdir(tmp_path) if '.tmp-' in p]


def test_incomplete_cache_is_rejected_and_rebuilt(tmp_path, vae_dir, fake_data):
  latents_dir = str(tmp_path / 'latents')
  cache.build_latent_cache(_config(), vae_dir, 'unused', latents_dir)
  expected = cache.LatentSource(latents_dir, 'test')[1]['latents']
  # A crash before the marker: every shard present, no COMPLETE.json.
  os.remove(os.path.join(latents_dir, cache.COMPLETE_FILE))
  with pytest.raises(FileNotFoundError, match=r'latents.* is incomplete .*build_latent_cache'):
    cache.LatentSource(latents_dir, 'test')
  with pytest.raises(FileNotFoundError, match='is incomplete'):
    cache.load_latent_stats(latents_dir)
  with pytest.raises(FileNotFoundError, match='does not exist'):
    cache.LatentSource(str(tmp_path / 'nothing'), 'test')
  # Building again replaces the incomplete directory with a complete, identical cache.
  cache.build_latent_cache(_config(), vae_dir, 'unused', latents_dir)
  np.testing.assert_allclose(cache.LatentSource(latents_dir, 'test')[1]['latents'], expected,
                             rtol=1e-5, atol=1e-5)
  with open(os.path.join(latents_dir, cache.COMPLETE_FILE)) as f:
    assert json.load(f)['splits'] == {'train': 5, 'test': 2, 'ood': 3}
  with pytest.raises(FileNotFoundError, match="split 'val'"):
    cache.LatentSource(latents_dir, 'val')
