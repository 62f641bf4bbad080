"""Which frames and which pixels of a stored video make one clip (pure index arithmetic, NumPy).

Temporal sampling, for a video of `n` stored frames and a clip of `T = num_frames` frames:

  dense (LAPS 8x8, LVT 16x16 on Kinetics): T frames `stride` apart, i.e. a window of
    `W = (T - 1) * stride + 1` frames. Training: the window starts uniformly in [0, n - W].
    Test view k of K: the window starts at round((n - W) * (k + 0.5) / K), K windows spread evenly
    over the video (K = 1 is the centre clip).
    Short videos (n < W): the window starts at 0 and indices past the end repeat the last frame
    (clamp), as PySlowFast does; the clip then ends on a still. Looping (wrapping to frame 0) was
    not chosen because it puts a cut, a jump back in time, inside the clip.

  segment (TSN, SSv2): the video is cut into T equal segments, one frame from each. With
    `seg = (n - 1) / T`, segment i spans frames [round(seg * i), round(seg * (i + 1))] (inclusive,
    neighbouring segments share their border frame), as in the official SSv2 loaders (PySlowFast
    `ssv2.py`). Training: a uniformly random frame of each segment. Test view k of K: the frame at
    fraction (k + 0.5) / K of each segment (K = 1 is the segment middle, the official choice).
    Short videos (n < T): segments are shorter than a frame and indices repeat; always in range.

Spatial sampling (after the short side is scaled to `short_side`): a square crop of side `crop`.
  Test crops: 1 = centre; 3 = start / centre / end along the long side (left / centre / right for
  landscape, top / centre / bottom for portrait), centred along the short side.
"""

from __future__ import annotations

import numpy as np


def dense_window(num_frames: int, stride: int) -> int:
  """Frames spanned by a dense clip: (num_frames - 1) * stride + 1."""
  return (num_frames - 1) * stride + 1


def dense_indices(video_frames: int, num_frames: int, stride: int, start: int) -> np.ndarray:
  """int32[num_frames]: start, start + stride, ...; indices past the end repeat the last frame."""
  if video_frames < 1:
    raise ValueError('a video needs at least one frame')
  indices = start + stride * np.arange(num_frames)
  return np.clip(indices, 0, video_frames - 1).astype(np.int32)


def dense_train_start(video_frames: int, num_frames: int, stride: int,
                      rng: np.random.Generator) -> int:
  """Uniform window start in [0, max(n - W, 0)]."""
  delta = max(video_frames - dense_window(num_frames, stride), 0)
  return int(rng.integers(0, delta + 1))


def dense_test_starts(video_frames: int, num_frames: int, stride: int, num_clips: int
                      ) -> np.ndarray:
  """int32[num_clips]: window starts of the K evenly spread test clips (module doc)."""
  delta = max(video_frames - dense_window(num_frames, stride), 0)
  k = np.arange(num_clips)
  return np.round(delta * (k + 0.5) / num_clips).astype(np.int32)


def segment_bounds(video_frames: int, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
  """(start, end) int32[num_segments] each, inclusive frame bounds of the segments (module doc)."""
  if video_frames < 1:
    raise ValueError('a video needs at least one frame')
  seg = (video_frames - 1) / num_segments
  i = np.arange(num_segments)
  # np.round is half-to-even like Python's round() used by the official loader.
  return np.round(seg * i).astype(np.int32), np.round(seg * (i + 1)).astype(np.int32)


def segment_train_indices(video_frames: int, num_segments: int, rng: np.random.Generator
                          ) -> np.ndarray:
  """int32[num_segments]: a uniformly random frame of each segment."""
  start, end = segment_bounds(video_frames, num_segments)
  return rng.integers(start, end + 1).astype(np.int32)


def segment_test_indices(video_frames: int, num_segments: int, view: int, num_views: int
                         ) -> np.ndarray:
  """int32[num_segments]: the frame at fraction (view + 0.5) / num_views of each segment."""
  start, end = segment_bounds(video_frames, num_segments)
  offset = (end - start) * (view + 0.5) / num_views
  return np.clip(np.floor(start + offset), start, end).astype(np.int32)


def train_indices(video_frames: int, num_frames: int, sampling: str, stride: int,
                  rng: np.random.Generator) -> np.ndarray:
  """int32[num_frames] for one random training clip with `sampling` 'dense' or 'segment'."""
  if sampling == 'dense':
    start = dense_train_start(video_frames, num_frames, stride, rng)
    return dense_indices(video_frames, num_frames, stride, start)
  if sampling == 'segment':
    return segment_train_indices(video_frames, num_frames, rng)
  raise ValueError(f"sampling must be 'dense' or 'segment', got {sampling!r}")


def test_indices(video_frames: int, num_frames: int, sampling: str, stride: int, num_clips: int
                 ) -> np.ndarray:
  """int32[num_clips, num_frames]: the frames of the K test clips (K = 1: the centre clip)."""
  if sampling == 'dense':
    starts = dense_test_starts(video_frames, num_frames, stride, num_clips)
    return np.stack([dense_indices(video_frames, num_frames, stride, s) for s in starts])
  if sampling == 'segment':
    return np.stack([segment_test_indices(video_frames, num_frames, k, num_clips)
                     for k in range(num_clips)])
  raise ValueError(f"sampling must be 'dense' or 'segment', got {sampling!r}")


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(height, width) after scaling so that the short side is `short_side` (up or down)."""
  if height <= width:
    return short_side, max(short_side, int(round(width * short_side / height)))
  return max(short_side, int(round(height * short_side / width))), short_side


def test_crop_offsets(height: int, width: int, crop: int, num_crops: int) -> list[tuple[int, int]]:
  """(top, left) of the test crops in an image of (height, width) (module doc); len num_crops."""
  if crop > height or crop > width:
    raise ValueError(f'crop {crop} larger than the image {height}x{width}')
  centre = ((height - crop) // 2, (width - crop) // 2)
  if num_crops == 1:
    return [centre]
  if num_crops != 3:
    raise ValueError(f'test_crops must be 1 or 3, got {num_crops}')
  if width >= height:   # landscape (or square): left, centre, right
    return [(centre[0], 0), centre, (centre[0], width - crop)]
  return [(0, centre[1]), centre, (height - crop, centre[1])]  # portrait: top, centre, bottom
