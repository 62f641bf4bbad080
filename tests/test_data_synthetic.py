"""synthetic_motion: deterministic, balanced, and only separable with the order of the frames."""

import numpy as np
import pytest

from laps_jax.data import prepare
from laps_jax.data import synthetic_motion as sm
from laps_jax.data import video_decode

CLIPS_PER_CLASS = 40


def frame_features(frame):
  """Hand-made per-frame features: for the red and the blue disc, presence, area, centroid."""
  frame = frame.astype(np.int32)
  r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
  features = []
  for mask in (r - np.maximum(g, b) > 100, b - np.maximum(r, g) > 100):
    area = mask.sum()
    present = area > 5
    ys, xs = np.nonzero(mask)
    features += [float(present), area / 100.0,
                 ys.mean() / 64.0 if present else 0.0, xs.mean() / 64.0 if present else 0.0]
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
  assert frames.shape == (CLIPS_PER_CLASS * 8, 16, 64, 64, 3) and frames.dtype == np.uint8
  assert np.bincount(labels).tolist() == [CLIPS_PER_CLASS] * 8
  assert len(sm.CLASS_NAMES) == 8 and len(set(sm.CLASS_NAMES)) == 8
  for label, name in enumerate(sm.CLASS_NAMES):
    blue_first, red_down, blue_down = sm.class_factors(label)
    first, second = name.split('_then_')
    assert first.startswith('blue' if blue_first else 'red')
    red = first if first.startswith('red') else second
    blue = first if first.startswith('blue') else second
    assert red.endswith('down' if red_down else 'up')
    assert blue.endswith('down' if blue_down else 'up')


def test_generation_is_deterministic():
  a, label_a = sm.generate_clip(3, 'validation', 17)
  b, label_b = sm.generate_clip(3, 'validation', 17)
  c, _ = sm.generate_clip(4, 'validation', 17)
  np.testing.assert_array_equal(a, b)
  assert label_a == label_b == 17 % 8
  assert not np.array_equal(a, c)


def test_single_frames_do_not_tell_the_class_but_their_order_does(clips):
  frames, labels = clips
  n = len(labels)
  features = np.stack([[frame_features(f) for f in clip] for clip in frames])   # [N, T, 8]
  group = (np.arange(n) // sm.NUM_CLASSES) % 4   # whole groups of 8 clips: all classes in both
  train, test = group != 0, group == 0

  # 1. Per frame: every frame is a sample labelled with its clip's class.
  def per_frame(x):
    return x.reshape(n * 16, -1), np.repeat(labels, 16), np.repeat(train, 16), np.repeat(test, 16)
  for x in (features, np.stack([[downsampled(f) for f in clip] for clip in frames])):
    xs, ys, tr, te = per_frame(x)
    accuracy = nearest_mean_accuracy(xs[tr], ys[tr], xs[te], ys[te])
    assert accuracy < 0.2, accuracy   # chance is 0.125

  # 2. The average of the per-frame features over the clip (a bag of frames): still chance.
  bag = features.mean(1)
  assert nearest_mean_accuracy(bag[train], labels[train], bag[test], labels[test]) < 0.25

  # 3. The same features read in order solve the task: who comes first, where each one goes.
  predictions = []
  for clip in features:
    red_frames = np.nonzero(clip[:, 0] > 0)[0]
    blue_frames = np.nonzero(clip[:, 4] > 0)[0]
    blue_first = blue_frames.mean() < red_frames.mean()
    red_down = clip[red_frames[-1], 2] > clip[red_frames[0], 2]
    blue_down = clip[blue_frames[-1], 6] > clip[blue_frames[0], 6]
    predictions.append(4 * blue_first + 2 * red_down + blue_down)
  assert np.mean(np.array(predictions) == labels) > 0.95


def test_every_frame_shows_one_coloured_disc_in_its_half(clips):
  frames, labels = clips
  for clip, label in zip(frames[:64], labels[:64]):
    blue_first, _, _ = sm.class_factors(label)
    for t, frame in enumerate(clip):
      f = frame_features(frame)
      red, blue = f[0] > 0, f[4] > 0
      assert red != blue
      assert blue == (blue_first == (t < 8))


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
