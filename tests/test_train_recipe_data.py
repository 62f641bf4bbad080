"""Repeated augmentation (config.data.num_repeats): k differently augmented clips of each sampled
video side by side in a batch; an epoch counts videos."""
import numpy as np
import pytest

from laps_jax.data import pipeline


def _batches(config, count):
  iterator = iter(pipeline.make_train_loader(config.data, global_batch_size=config.batch_size, seed=3,
                                             num_classes=config.model.num_classes))
  return [next(iterator) for _ in range(count)]


def test_repeats_give_differently_augmented_clips_of_one_video_side_by_side(tiny_config):
  config = tiny_config()
  config.data.num_repeats = 2
  config.data.scale_jitter = (16, 24)  # random crops: the copies of a video differ
  for batch in _batches(config, 3):
    videos, labels = np.asarray(batch['videos']), np.asarray(batch['labels'])
    assert videos.shape[0] == labels.shape[0] == config.batch_size
    np.testing.assert_array_equal(labels[0::2], labels[1::2])  # a video's two clips are adjacent
    for i in range(0, config.batch_size, 2):
      assert not np.array_equal(videos[i], videos[i + 1]), i  # ... and augmented differently
    for key, value in batch.items():  # every per-clip array has one row per clip
      if np.ndim(value) and key.startswith(('videos', 'labels')):
        assert np.shape(value)[0] == config.batch_size, key


def test_repeated_batches_are_reproducible(tiny_config):
  """The k clips draw from the example's own random stream: the same seed gives the same batches
  (what resuming from a checkpointed iterator position relies on)."""
  config = tiny_config()
  config.data.num_repeats = 2
  for a, b in zip(_batches(config, 2), _batches(config, 2)):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_the_batch_must_split_into_whole_videos(tiny_config):
  config = tiny_config()
  config.data.num_repeats = 3  # 8 clips per batch is not a whole number of 3-clip videos
  with pytest.raises(ValueError, match='num_repeats'):
    _batches(config, 1)
