"""synthetic_motion: deterministic, balanced, and only separable with the order of the frames."""

import itertools

import numpy as np
import pytest

from laps_jax.data import prepare
from laps_jax.data import synthetic_motion as sm
from laps_jax.data import video_decode

CLIPS_PER_CLASS = 40
NAMES = ('red', 'green', 'blue')


def colour_masks(frame):
  """bool[3, H, W]: pixels that are clearly red, green, blue (the disc; not the clutter)."""
  f = frame.astype(np.int32)
  r, g, b = f[..., 0], f[..., 1], f[..., 2]
  return np.stack([r - np.maximum(g, b) > 90, g - np.maximum(r, b) > 70,
                   b - np.maximum(r, g) > 90])


def frame_features(frame):
  """Hand-made per-frame features: for each colour, area and centroid of its pixels."""
  features = []
  for mask in colour_masks(frame):
    area = mask.sum()
    ys, xs = np.nonzero(mask)
    features += [area / 100.0, ys.mean() / 64.0 if area else 0.0, xs.mean() / 64.0 if area else 0.0]
  return np.array(features)


def downsampled(frame):
  """64x64x3 -> 8x8x3 block means, flattened: what a per-frame pixel classifier sees."""
  return frame.reshape(8, 8, 8, 8, 3).mean((1, 3)).ravel() / 255.0


@pytest.fixture(scope='module')
def clips():
  """(frames uint8[N, 16, 64, 64, 3], labels int[N]) with CLIPS_PER_CLASS per class."""
  out = [sm.generate_clip(7, 'train', i) for i in range(CLIPS_PER_CLASS * sm.NUM_CLASSES)]
  return np.stack([f for f, _ in out]), np.array([l for _, l in out])


def nearest_mean_accuracy(train_x, train_y, test_x, test_y):
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
  centres = np.stack([train_x[train_y == k].mean(0) for k in range(sm.NUM_CLASSES)])
  predictions = np.argmin(((test_x[:, None] - centres[None]) ** 2).sum(-1), axis=1)
  return float((predictions == test_y).mean())


def test_classes_and_clip_format(clips):
  frames, labels = clips
  assert frames.shape == (CLIPS_PER_CLASS * 6, 16, 64, 64, 3) and frames.dtype == np.uint8
  assert np.bincount(labels).tolist() == [CLIPS_PER_CLASS] * 6
  assert len(set(sm.CLASS_NAMES)) == 6
  assert sorted(tuple(name.split('_')) for name in sm.CLASS_NAMES) == sorted(
      itertools.permutations(NAMES))
  splits = sm.stretch_lengths(16, 4)
  assert all(sum(s) == 16 and min(s) >= 4 for s in splits)
  assert set(splits) == {tuple(p) for s in splits for p in itertools.permutations(s)}


def test_generation_is_deterministic():
  a, label_a = sm.generate_clip(3, 'validation', 17)
  b, label_b = sm.generate_clip(3, 'validation', 17)
  c, _ = sm.generate_clip(4, 'validation', 17)
  np.testing.assert_array_equal(a, b)
  assert label_a == label_b == 17 % 6
  assert not np.array_equal(a, c)


def test_each_clip_shows_its_colours_in_order_in_stretches(clips):
  """The colour sequence of a clip is its class name, each colour one stretch of >= 4 frames."""
  frames, labels = clips
  for clip, label in zip(frames[:60], labels[:60]):
    dominant = [int(np.argmax(colour_masks(frame).sum((1, 2)))) for frame in clip]
    runs = [k for k, _ in itertools.groupby(dominant)]
    assert [NAMES[k] for k in runs] == sm.CLASS_NAMES[label].split('_')
    lengths = [len(list(g)) for _, g in itertools.groupby(dominant)]
    assert min(lengths) >= 4 and sum(lengths) == 16


def test_single_frames_do_not_tell_the_class_but_their_order_does(clips):
  frames, labels = clips
  n = len(labels)
  features = np.stack([[frame_features(f) for f in clip] for clip in frames])   # [N, T, 9]
  group = (np.arange(n) // sm.NUM_CLASSES) % 4   # whole groups of 6 clips: all classes in both
  train, test = group != 0, group == 0

  # 1. Per frame: every frame is a sample labelled with its clip's class. Chance is 1/6.
  def per_frame(x):
    return x.reshape(n * 16, -1), np.repeat(labels, 16), np.repeat(train, 16), np.repeat(test, 16)
  for x in (features, np.stack([[downsampled(f) for f in clip] for clip in frames])):
    xs, ys, tr, te = per_frame(x)
    accuracy = nearest_mean_accuracy(xs[tr], ys[tr], xs[te], ys[te])
    assert accuracy < 0.25, accuracy

  # 2. The average of the per-frame features over the clip (a bag of frames): still chance.
  bag = features.mean(1)
  assert nearest_mean_accuracy(bag[train], labels[train], bag[test], labels[test]) < 0.3

  # 3. The same features read in order solve the task: the order of first appearance.
  areas = features[:, :, 0::3]                      # [N, T, colour]
  predictions = []
  for clip_areas in areas:
    first_seen = [int(np.argmax(clip_areas[:, c] > 1.0)) for c in range(3)]
    order = tuple(NAMES[c] for c in np.argsort(first_seen))
    predictions.append(sm.CLASS_NAMES.index('_'.join(order)))
  assert np.mean(np.array(predictions) == labels) > 0.95


def test_build_is_deterministic_and_independent_of_process_count(tmp_path):
  kwargs = dict(num_train=24, num_validation=8, seed=5)
  one = prepare.prepare('synthetic_motion', str(tmp_path / 'a'), num_processes=1, **kwargs)
  two = prepare.prepare('synthetic_motion', str(tmp_path / 'b'), num_processes=2, **kwargs)
  assert one.info.splits['train'].num_examples == 24
  assert one.info.splits['validation'].num_examples == 8
  assert one.info.metadata['num_train'] == 24 and one.info.metadata['seed'] == 5
  for split in ('train', 'validation'):
    a, b = one.as_data_source(split), two.as_data_source(split)
    for i in range(len(a)):
      assert a[i]['video_id'] == b[i]['video_id']
      assert a[i]['frames'] == b[i]['frames']
      assert a[i]['label'] == b[i]['label']
  # Stored frames decode back to the generated clip (JPEG error only).
  example = one.as_data_source('train')[0]
  index = int(example['video_id'].decode().split('_')[-1])
  clip, label = sm.generate_clip(5, 'train', index)
  assert example['label'] == label and example['num_frames'] == 16
  decoded = np.stack([np.asarray(video_decode.decode_jpeg(f)) for f in example['frames']])
  # (JPEG smooths the per-pixel noise away: ~5 levels; another clip differs by ~20.)
  assert np.abs(decoded.astype(float) - clip).mean() < 8.0
