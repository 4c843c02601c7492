"""A TFDS dataset without a test split: a held-out share of its train examples is the test split
and never reaches training (`data.sources.held_out` / `open_source`).

Frames are `tfds.features.Tensor` (no TensorFlow: ~0.1 s to prepare, where `Video` features
import TF and encode PNGs for ~9 s); each example's pixels are its index, so a clip tells which
example it came from.
"""
import functools

import numpy as np

from configs import default
from maskvid.data import sources

COUNT = 5   # train examples; the 10% hash rule holds out at least one


@functools.lru_cache(maxsize=None)
def _builder():
  """The builder class, defined once per process (TFDS registers builders by name)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class TinyHeldOutIndices(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'clip': tfds.features.Tensor(shape=(None, 4, 4, 3), dtype=np.uint8)}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples()}

    def _generate_examples(self):
      for v in range(COUNT):
        yield str(v), {'clip': np.full((3, 4, 4, 3), 10 * v, np.uint8)}

  return TinyHeldOutIndices


def test_tfds_without_test_split_holds_out_train_examples(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  _builder()(data_dir=data_dir, file_format='array_record').download_and_prepare()
  c = default.get_config()
  c.data.source, c.data.tfds_name, c.data.tfds_data_dir = 'tfds', 'tiny_held_out_indices', data_dir
  c.data.tfds_frames_key, c.data.num_frames, c.data.resolution = 'clip', 2, 4
  c.data.clips = {'train': 1, 'test': 1}
  share = sources.held_out(c)
  assert not share.scores_training and len(share.test) >= 1
  assert sorted(share.train + share.test, key=int) == [str(i) for i in range(COUNT)]
  assert set(share.train).isdisjoint(share.test)
  assert sources.source_splits(c) == ('train', 'test')
  train, test = (sources.open_source(c, '', s) for s in ('train', 'test'))
  assert (len(train), len(test)) == (len(share.train), len(share.test))

  # share indexes the prepared split's records (TFDS stores them in a shuffled order): record j
  # holds example `pixel // 10`.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  records = tfds.data_source('tiny_held_out_indices', split='train', data_dir=data_dir)
  example_of = lambda j: int(records[int(j)]['clip'][0, 0, 0, 0]) // 10

  def examples(src):   # which examples a source's clips come from
    return sorted(int(src[i]['rgb'][0, 0, 0, 0]) // 10 for i in range(len(src)))
  assert examples(train) == sorted(example_of(j) for j in share.train)
  assert examples(test) == sorted(example_of(j) for j in share.test)
  assert set(examples(train)).isdisjoint(examples(test))
