"""TFDS builder `synthetic_motion`: a small generated video dataset that only temporal models solve.

The project's embedded default dataset: no download, deterministic from a seed, 4,200 train and 420
validation clips of 16 frames at 64x64 by default, built in well under a minute on 2 cores.

Every clip shows a large disc drifting slowly over a cluttered scene. The disc changes colour twice:
it is red, green and blue, each for one unbroken stretch of the clip, and the class is the order of
the three colours (6 classes, the permutations, label = index in this list):

  0 red_green_blue    2 green_red_blue    4 blue_red_green
  1 red_blue_green    3 green_blue_red    5 blue_green_red

The three stretch lengths are a uniformly drawn ordered split of the 16 frames into parts of at
least 4 frames (so that 8 frames sampled at stride 2 see every colour, at least twice in the
middle). Clutter: a smooth random background texture per clip, a yellow-grey distractor disc doing
a random walk, the large disc's own slow random drift (reflected at the borders), Gaussian pixel
noise in every frame, random disc size and colour shades.

Why a per-frame model stays at chance (1/6). Every single frame has the same distribution in all
classes: one large disc, red, green or blue with probability 1/3 each (the stretch lengths are
exchangeable, so every colour is on screen for the same expected time whatever its place in the
order), at a position, size and shade drawn independently of the class. Stronger still, the
*unordered set* of a clip's frames has the same distribution in all classes: only the order of
the frames carries the label. A model that scores frames independently and averages (a 2D ViT
with the mean of per-frame logits) cannot beat 1/6; one that compares neighbouring frames learns it
in a few hundred steps (measured with this pipeline and the demo settings below: tiny LAPS, 4 layers
of width 64, patch 8, AdamW 1e-3 warm-up + cosine, batch 32: 92% validation top-1 after 700 steps,
about 4 minutes on 2 busy CPU cores; the loss leaves ln 6 after ~300 steps. The same recipe with
the per-frame vit2d: 16.7% after 500 steps, its loss never leaves ln 6).

Why a large disc and colours, not small moving dots: LAPS' temporal mixing (periodic shift) reads a
neighbouring frame's features at the same token, so a change that covers several 8x8 patches in
place is what a tiny model picks up quickly; an earlier design with small discs moving up or down
stayed at chance for 1,250 steps.

Horizontal (and vertical) flips change no label, so the dataset is safe with flip on or off;
reversing time changes every label.

Training on it (what the demo configs use): 8 frames at stride 2 (the sampled window covers 15 of
16 frames), crops of 32 after scale jitter of the short side in (32, 40).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import tensorflow_datasets as tfds

from laps_jax.data import builder_common
from laps_jax.data import video_decode

COLOURS = {
    'red': np.array([215.0, 45.0, 45.0]),
    'green': np.array([45.0, 190.0, 60.0]),
    'blue': np.array([45.0, 75.0, 225.0]),
}
ORDERS = tuple(itertools.permutations(('red', 'green', 'blue')))
CLASS_NAMES = tuple('_'.join(order) for order in ORDERS)
NUM_CLASSES = len(CLASS_NAMES)
SPLIT_IDS = {'train': 0, 'validation': 1}
DEFAULT_NUM_TRAIN = 4200
DEFAULT_NUM_VALIDATION = 420


@dataclasses.dataclass(frozen=True)
class MotionSpec:
  """How clips are drawn. Frames are `size` x `size`, `num_frames` long."""
  num_frames: int = 16
  size: int = 64
  min_stretch: int = 4           # frames of each colour, at least
  radius: tuple[float, float] = (13.0, 19.0)   # the coloured disc
  drift_std: float = 0.6         # px / frame, its slow drift
  distractor_radius: tuple[float, float] = (6.0, 9.0)
  distractor_step: float = 1.5   # std of the distractor's random-walk step, px
  noise_std: float = 6.0         # per-pixel Gaussian noise, 0..255 scale
  colour_jitter: float = 20.0    # per-channel shade jitter of the coloured disc


def stretch_lengths(num_frames: int, min_stretch: int) -> list[tuple[int, int, int]]:
  """All ordered splits of num_frames into 3 parts >= min_stretch (a permutation-closed set)."""
  return [c for c in itertools.product(range(min_stretch, num_frames + 1), repeat=3)
          if sum(c) == num_frames]


def _paint_disc(image: np.ndarray, cy: float, cx: float, radius: float, colour: np.ndarray
                ) -> None:
  """Alpha-blends an anti-aliased disc into float image[H, W, 3], in place (only its bounding box)."""
  size_y, size_x = image.shape[:2]
  y0, y1 = max(0, int(cy - radius - 1)), min(size_y, int(math.ceil(cy + radius + 2)))
  x0, x1 = max(0, int(cx - radius - 1)), min(size_x, int(math.ceil(cx + radius + 2)))
  if y0 >= y1 or x0 >= x1:
    return
  yy, xx = np.mgrid[y0:y1, x0:x1]
  dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
  alpha = np.clip(radius + 0.5 - dist, 0.0, 1.0).astype(np.float32)[..., None]
  patch = image[y0:y1, x0:x1]
  image[y0:y1, x0:x1] = patch * (1 - alpha) + colour.astype(np.float32) * alpha


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
  """Smooth random texture: 8x8 noise, bilinear-upsampled -> float32[size, size, 3] in ~[50, 170]."""
  coarse = rng.uniform(-1.0, 1.0, size=(8, 8, 3)).astype(np.float32)
  tint = rng.uniform(-10.0, 10.0, size=3)
  base = rng.uniform(90.0, 130.0)
  # Separable linear interpolation from the 8x8 grid to size x size.
  positions = np.linspace(0, 7, size)
  low = np.floor(positions).astype(int).clip(0, 6)
  frac = (positions - low)[:, None]
  rows = coarse[low] * (1 - frac[..., None]) + coarse[low + 1] * frac[..., None]
  grid = (rows[:, low] * (1 - frac[None, :, :]) + rows[:, low + 1] * frac[None, :, :])
  return (base + tint + 35.0 * grid).astype(np.float32)


def _reflect(position: np.ndarray, low: float, high: float) -> np.ndarray:
  position = np.where(position < low, 2 * low - position, position)
  return np.where(position > high, 2 * high - position, position)


def generate_clip(seed: int, split: str, index: int, spec: MotionSpec = MotionSpec()
                  ) -> tuple[np.ndarray, int]:
  """Clip `index` of `split`: (uint8[T, size, size, 3], label), a pure function of its arguments.

  The label is `index % 6`, so every class has the same number of clips (+-1).
  """
  rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
  label = index % NUM_CLASSES
  size, num_frames = spec.size, spec.num_frames
  splits = stretch_lengths(num_frames, spec.min_stretch)
  lengths = splits[int(rng.integers(len(splits)))]
  colour_of_frame = np.repeat(np.arange(3), lengths)       # stretch index of every frame
  shades = [COLOURS[name] + rng.uniform(-spec.colour_jitter, spec.colour_jitter, size=3)
            for name in ORDERS[label]]

  background = _background(rng, size)
  radius = rng.uniform(*spec.radius)
  low, high = radius * 0.6, size - 1 - radius * 0.6      # the disc may leave the frame a little
  position = rng.uniform(low, high, size=2)
  velocity = rng.normal(0.0, spec.drift_std, size=2)
  d_radius = rng.uniform(*spec.distractor_radius)
  d_position = rng.uniform(d_radius, size - 1 - d_radius, size=2)
  grey = rng.uniform(110.0, 190.0)
  d_colour = np.array([grey + 20.0, grey + 15.0, grey - 35.0]) + rng.uniform(-10, 10, size=3)

  frames = np.empty((num_frames, size, size, 3), np.uint8)
  for t in range(num_frames):
    if t > 0:
      position = position + velocity
      # Reflect the drift at the borders (and turn the velocity around with it).
      outside = (position < low) | (position > high)
      velocity = np.where(outside, -velocity, velocity)
      position = _reflect(position, low, high)
      d_position = _reflect(d_position + rng.normal(0.0, spec.distractor_step, size=2),
                            d_radius, size - 1 - d_radius)
    image = background.copy()
    _paint_disc(image, d_position[0], d_position[1], d_radius, d_colour)
    _paint_disc(image, position[0], position[1], radius, shades[colour_of_frame[t]])
    image += spec.noise_std * rng.standard_normal(size=image.shape, dtype=np.float32)
    frames[t] = np.clip(image + 0.5, 0, 255).astype(np.uint8)  # +0.5: round, then truncate
  return frames, label


class SyntheticClipWorker:
  """Picklable pool worker: clip index -> stored example (see `builder_common`)."""

  def __init__(self, seed: int, split: str, jpeg_quality: int, spec: MotionSpec):
    self.seed, self.split, self.jpeg_quality, self.spec = seed, split, jpeg_quality, spec

  def __call__(self, index: int) -> tuple[str, dict]:
    frames, label = generate_clip(self.seed, self.split, index, self.spec)
    video = video_decode.EncodedVideo(
        frames=[video_decode.encode_jpeg(f, self.jpeg_quality) for f in frames],
        fps=25.0, original_num_frames=len(frames), height=self.spec.size, width=self.spec.size)
    key = f'{self.split}_{index:06d}'
    return key, video_decode.example_from_video(key, label, video)


class SyntheticMotion(builder_common.VideoDatasetBuilder):
  """Generated clips whose 6 classes need temporal order; see `laps_jax.data.synthetic_motion`.

  Builder keyword arguments (besides those of `VideoDatasetBuilder`; `short_side` is unused, frames
  are stored at `size`): num_train (DEFAULT_NUM_TRAIN = 4200), num_validation
  (DEFAULT_NUM_VALIDATION = 420), seed (0), num_frames (16), size (64). They are recorded in the
  dataset's metadata.
  """

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
      '1.0.0': '8 classes: order and direction of a red and a blue small moving disc.',
      '2.0.0': '6 classes: order of the three colours of a large disc (learnable by tiny LAPS).',
  }
  FRAME_RECORDS = False  # 16 frames of 64x64 (~30 kB a record): reading a whole record is cheap

  def __init__(self, *, num_train: int | None = None, num_validation: int | None = None,
               seed: int = 0, num_frames: int = 16, size: int = 64, **kwargs):
    self.num_train = DEFAULT_NUM_TRAIN if num_train is None else num_train
    self.num_validation = DEFAULT_NUM_VALIDATION if num_validation is None else num_validation
    self.seed = seed
    self.spec = MotionSpec(num_frames=num_frames, size=size)
    if num_frames < 3 * self.spec.min_stretch:
      raise ValueError(f'num_frames must be >= {3 * self.spec.min_stretch}, got {num_frames}')
    kwargs.setdefault('short_side', size)
    super().__init__(**kwargs)

  def _label_names(self):
    return CLASS_NAMES

  def _info(self) -> tfds.core.DatasetInfo:
    info = super()._info()
    info.metadata.update(num_train=self.num_train, num_validation=self.num_validation,
                         seed=self.seed, num_frames=self.spec.num_frames, size=self.spec.size)
    return info

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download or read.
    return {'train': self._generate_examples(split='train', count=self.num_train),
            'validation': self._generate_examples(split='validation', count=self.num_validation)}

  def _generate_examples(self, split, count):
    worker = SyntheticClipWorker(self.seed, split, self.jpeg_quality, self.spec)
    # Clips are cheap (a few ms): ship them to the workers in chunks.
    chunksize = max(1, math.ceil(count / (self.num_processes * 8)))
    yield from builder_common.parallel_map(worker, list(range(count)), self.num_processes,
                                           f'synthetic_motion {split}', chunksize=chunksize,
                                           unit='clip')
    self._finish_split(split, count, [])
