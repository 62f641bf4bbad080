"""Frame and crop sampling, checked against plain loops written independently of the code."""

import numpy as np
import pytest

from laps_jax.data import sampling


def reference_dense(n, num_frames, stride, start):
  """Plain loop: frames start + i * stride, past the end the last frame (clamp policy)."""
  return [min(start + i * stride, n - 1) for i in range(num_frames)]


def reference_segment_test(n, num_segments):
  """The official SSv2 test rule (PySlowFast ssv2.py `_get_seq_frames`, test mode)."""
  seg_size = float(n - 1) / num_segments
  out = []
  for i in range(num_segments):
    start = int(np.round(seg_size * i))
    end = int(np.round(seg_size * (i + 1)))
    out.append((start + end) // 2)
  return out


def reference_segment_bounds(n, num_segments):
  seg_size = float(n - 1) / num_segments
  return [(int(np.round(seg_size * i)), int(np.round(seg_size * (i + 1))))
          for i in range(num_segments)]


@pytest.mark.parametrize('num_frames,stride', [(8, 8), (16, 16), (8, 2), (4, 1), (1, 5)])
def test_dense_train_indices_match_the_loop_and_cover_all_starts(num_frames, stride):
  rng = np.random.default_rng(0)
  window = (num_frames - 1) * stride + 1
  for n in (1, 3, window - 1, window, window + 1, window + 37, 300):
    if n < 1:
      continue
    starts = set()
    for _ in range(400):
      indices = sampling.train_indices(n, num_frames, 'dense', stride, rng)
      assert indices.dtype == np.int32 and indices.shape == (num_frames,)
      start = int(indices[0])
      starts.add(start)
      assert indices.tolist() == reference_dense(n, num_frames, stride, start)
    delta = max(n - window, 0)
    assert min(starts) >= 0 and max(starts) <= delta
    if delta <= 40:  # 400 draws hit every one of <= 41 possible starts
      assert starts == set(range(delta + 1))


def test_dense_short_video_repeats_the_last_frame():
  # 20 frames, 8 x stride 8 needs 57: the window starts at 0 and clamps.
  indices = sampling.train_indices(20, 8, 'dense', 8, np.random.default_rng(0))
  assert indices.tolist() == [0, 8, 16, 19, 19, 19, 19, 19]
  assert sampling.test_indices(20, 8, 'dense', 8, 3).tolist() == [[0, 8, 16, 19, 19, 19, 19, 19]] * 3
  # A single-frame video gives that frame T times.
  assert sampling.train_indices(1, 4, 'dense', 2, np.random.default_rng(0)).tolist() == [0] * 4


@pytest.mark.parametrize('n,num_frames,stride,clips', [(300, 8, 8, 10), (250, 16, 16, 4),
                                                       (100, 8, 2, 1), (64, 8, 8, 3),
                                                       (16, 8, 2, 2)])
def test_dense_test_views_are_evenly_spread_and_symmetric(n, num_frames, stride, clips):
  views = sampling.test_indices(n, num_frames, 'dense', stride, clips)
  window = (num_frames - 1) * stride + 1
  delta = n - window
  assert views.shape == (clips, num_frames)
  starts = views[:, 0].astype(float)
  for k, row in enumerate(views):
    assert row.tolist() == reference_dense(n, num_frames, stride, int(row[0]))
    # View k starts at fraction (k + 1/2) / K of the free range (within rounding).
    assert abs(starts[k] - delta * (k + 0.5) / clips) <= 0.5
    # Mirror symmetry: the views are placed symmetrically in the video.
    assert abs(starts[k] + starts[clips - 1 - k] - delta) <= 1
  if clips > 1:
    gaps = np.diff(starts)
    assert np.all(np.abs(gaps - delta / clips) <= 1)
  # Coverage: the frames left out at either end are at most half a spacing.
  first, last = views.min(), views.max()
  assert first <= delta / (2 * clips) + 0.5
  assert (n - 1) - last <= delta / (2 * clips) + 0.5
  if clips == 1:
    assert abs(starts[0] - delta / 2) <= 0.5  # centre clip


@pytest.mark.parametrize('n', [1, 5, 8, 16, 17, 40, 61, 300])
@pytest.mark.parametrize('num_segments', [8, 16])
def test_segment_sampling_matches_the_official_rule(n, num_segments):
  bounds = reference_segment_bounds(n, num_segments)
  assert sampling.test_indices(n, num_segments, 'segment', 1, 1)[0].tolist() == (
      reference_segment_test(n, num_segments))
  rng = np.random.default_rng(1)
  seen = [set() for _ in range(num_segments)]
  for _ in range(300):
    indices = sampling.train_indices(n, num_segments, 'segment', 1, rng)
    for i, index in enumerate(indices.tolist()):
      assert bounds[i][0] <= index <= bounds[i][1]
      seen[i].add(index)
    assert np.all(np.diff(indices) >= 0) and indices.min() >= 0 and indices.max() <= n - 1
  for i, (start, end) in enumerate(bounds):
    assert seen[i] == set(range(start, end + 1))  # every frame of the segment can be drawn


def test_segment_test_views_spread_inside_each_segment():
  n, segments, views = 161, 16, 2   # segments of 10 frames: [0, 10], [10, 20], ...
  indices = sampling.test_indices(n, segments, 'segment', 1, views)
  bounds = reference_segment_bounds(n, segments)
  for i, (start, end) in enumerate(bounds):
    # Two views: at 1/4 and 3/4 of the segment.
    assert indices[0, i] == int(np.floor(start + (end - start) * 0.25))
    assert indices[1, i] == int(np.floor(start + (end - start) * 0.75))
    assert indices[0, i] < indices[1, i]


def test_test_crop_offsets():
  # Landscape 224 x 298: left / centre / right, vertically centred.
  assert sampling.test_crop_offsets(224, 298, 224, 3) == [(0, 0), (0, 37), (0, 74)]
  # Portrait 300 x 224: top / centre / bottom.
  assert sampling.test_crop_offsets(300, 224, 224, 3) == [(0, 0), (38, 0), (76, 0)]
  # Short side larger than the crop: centred along it.
  assert sampling.test_crop_offsets(256, 341, 224, 3) == [(16, 0), (16, 58), (16, 117)]
  assert sampling.test_crop_offsets(256, 341, 224, 1) == [(16, 58)]
  with pytest.raises(ValueError):
    sampling.test_crop_offsets(200, 300, 224, 1)
  with pytest.raises(ValueError):
    sampling.test_crop_offsets(224, 300, 224, 2)


def test_resized_size_keeps_aspect_ratio():
  assert sampling.resized_size(240, 320, 224) == (224, 299)
  assert sampling.resized_size(320, 240, 224) == (299, 224)
  assert sampling.resized_size(64, 64, 40) == (40, 40)
  assert sampling.resized_size(32, 48, 64) == (64, 96)  # up-scaling too


def test_unknown_sampling_is_an_error():
  with pytest.raises(ValueError, match='dense'):
    sampling.train_indices(10, 4, 'random', 1, np.random.default_rng(0))
