"""TFDS builder `synthetic_motion`: a small generated video dataset that only temporal models solve.

The project's embedded default dataset: no download, deterministic from a seed, 4,000 train and 400
validation clips of 16 frames at 64x64 by default, built in seconds on 2 cores.

Every clip has two halves of 8 frames. In one half a red disc is on screen, in the other a blue
disc; each moves straight up or straight down at 3 px / frame. The class says which colour comes
first and where each one goes (8 classes, 2 x 2 x 2, label = 4*order + 2*red_down + blue_down):

  0 red_up_then_blue_up        4 blue_up_then_red_up
  1 red_up_then_blue_down      5 blue_down_then_red_up
  2 red_down_then_blue_up      6 blue_up_then_red_down
  3 red_down_then_blue_down    7 blue_down_then_red_down

Clutter: a smooth random background texture per clip, a yellow-grey distractor disc that does a
random walk through all 16 frames, Gaussian pixel noise in every frame, random disc size and
colour shades.

Why a per-frame model stays at chance. Every single frame has the same distribution in all classes:
it shows exactly one disc, red or blue with probability 1/2 each, at a horizontal position drawn
uniformly and a vertical position whose distribution is the same for an upward and a downward half
(an upward path is a downward path played backwards: start heights are drawn so that the set of
heights visited is symmetric). Stronger still, the *unordered set* of a clip's frames has the same
distribution in all classes (each half is time-reversal symmetric and the two halves are drawn
independently): only the order of the frames carries the label, so a model that scores frames
independently and averages (a 2D ViT with mean of per-frame logits) cannot beat 1/8, while a model
that compares frames across time can reach ~100%.

Horizontal flip does not change any label here (all motion is vertical, colours are kept), so the
dataset is safe with or without flip; vertical flip or temporal reversal would change labels.

Training on it (what the demo configs use): 8 frames at stride 2 (the sampled window covers 15 of 16
frames, 4 frames in each half), crops of 32 after scale jitter of the short side in (32, 40):
each half then moves by ~3.4 px per sampled frame.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow_datasets as tfds

from laps_jax.data import builder_common
from laps_jax.data import video_decode

CLASS_NAMES = (
    'red_up_then_blue_up',
    'red_up_then_blue_down',
    'red_down_then_blue_up',
    'red_down_then_blue_down',
    'blue_up_then_red_up',
    'blue_down_then_red_up',
    'blue_up_then_red_down',
    'blue_down_then_red_down',
)
NUM_CLASSES = len(CLASS_NAMES)
SPLIT_IDS = {'train': 0, 'validation': 1}
DEFAULT_NUM_TRAIN = 4000
DEFAULT_NUM_VALIDATION = 400

RED = np.array([215.0, 45.0, 45.0])
BLUE = np.array([45.0, 75.0, 225.0])


@dataclasses.dataclass(frozen=True)
class MotionSpec:
  """How clips are drawn. Frames are `size` x `size`, `num_frames` long (even; two halves)."""
  num_frames: int = 16
  size: int = 64
  speed: float = 3.0          # px / frame of the red and blue discs
  radius: tuple[float, float] = (5.0, 8.0)
  margin: float = 9.0         # disc centres stay this far from the border
  distractor_step: float = 1.5  # std of the distractor's random-walk step, px
  noise_std: float = 6.0        # per-pixel Gaussian noise, 0..255 scale
  colour_jitter: float = 25.0   # per-channel shade jitter of the discs


def class_factors(label: int) -> tuple[bool, bool, bool]:
  """label -> (blue_first, red_moves_down, blue_moves_down): label = 4*order + 2*red + blue."""
  return bool(label // 4), bool((label // 2) % 2), bool(label % 2)


def _paint_disc(image: np.ndarray, cy: float, cx: float, radius: float, colour: np.ndarray
                ) -> None:
  """Alpha-blends an anti-aliased disc into float image[H, W, 3], in place (only its bounding box)."""
  size_y, size_x = image.shape[:2]
  y0, y1 = max(0, int(cy - radius - 1)), min(size_y, int(math.ceil(cy + radius + 2)))
  x0, x1 = max(0, int(cx - radius - 1)), min(size_x, int(math.ceil(cx + radius + 2)))
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


def _vertical_path(rng: np.random.Generator, spec: MotionSpec, steps: int, down: bool
                   ) -> np.ndarray:
  """Disc centre heights over `steps` frames; an upward path is a downward one reversed."""
  length = spec.speed * (steps - 1)
  low, high = spec.margin, spec.size - 1 - spec.margin
  top = rng.uniform(low, high - length)   # the smallest height visited
  heights = top + spec.speed * np.arange(steps)
  return heights if down else heights[::-1]


def generate_clip(seed: int, split: str, index: int, spec: MotionSpec = MotionSpec()
                  ) -> tuple[np.ndarray, int]:
  """Clip `index` of `split`: (uint8[T, size, size, 3], label), a pure function of its arguments.

  The label is `index % 8`, so every class has the same number of clips (+-1).
  """
  rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
  label = index % NUM_CLASSES
  blue_first, red_down, blue_down = class_factors(label)
  size, t_total = spec.size, spec.num_frames
  half = t_total // 2

  background = _background(rng, size)
  # Distractor: reflected Gaussian random walk, stationary uniform start (time-reversible).
  d_pos = rng.uniform(spec.margin, size - 1 - spec.margin, size=2)
  d_radius = rng.uniform(*spec.radius)
  grey = rng.uniform(110.0, 190.0)
  d_colour = np.array([grey + 20.0, grey + 15.0, grey - 35.0]) + rng.uniform(-10, 10, size=3)

  actors = []  # (colour, radius, x, heights) for the first and the second half
  for colour_is_blue in ((True, False) if blue_first else (False, True)):
    base = BLUE if colour_is_blue else RED
    colour = base + rng.uniform(-spec.colour_jitter, spec.colour_jitter, size=3)
    radius = rng.uniform(*spec.radius)
    x = rng.uniform(spec.margin, size - 1 - spec.margin)
    down = blue_down if colour_is_blue else red_down
    actors.append((colour, radius, x, _vertical_path(rng, spec, half, down)))

  frames = np.empty((t_total, size, size, 3), np.uint8)
  low, high = spec.margin, size - 1 - spec.margin
  for t in range(t_total):
    image = background.copy()
    if t > 0:
      d_pos = d_pos + rng.normal(0.0, spec.distractor_step, size=2)
      # Reflect at the borders of the allowed box.
      d_pos = np.where(d_pos < low, 2 * low - d_pos, d_pos)
      d_pos = np.where(d_pos > high, 2 * high - d_pos, d_pos)
    _paint_disc(image, d_pos[0], d_pos[1], d_radius, d_colour)
    colour, radius, x, heights = actors[t // half]
    _paint_disc(image, heights[t % half], x, radius, colour)
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
  """Generated clips whose 8 classes need temporal order; see `laps_jax.data.synthetic_motion`.

  Builder keyword arguments (besides those of `VideoDatasetBuilder`; `short_side` is unused, frames
  are stored at `size`): num_train (DEFAULT_NUM_TRAIN = 4000), num_validation
  (DEFAULT_NUM_VALIDATION = 400), seed (0), num_frames (16), size (64). They are recorded in the
  dataset's metadata.
  """

  def __init__(self, *, num_train: int | None = None, num_validation: int | None = None,
               seed: int = 0, num_frames: int = 16, size: int = 64, **kwargs):
    if num_frames % 2 or num_frames < 4:
      raise ValueError(f'num_frames must be even and >= 4, got {num_frames}')
    self.num_train = DEFAULT_NUM_TRAIN if num_train is None else num_train
    self.num_validation = DEFAULT_NUM_VALIDATION if num_validation is None else num_validation
    self.seed = seed
    self.spec = MotionSpec(num_frames=num_frames, size=size)
    if self.spec.speed * (num_frames // 2 - 1) > size - 1 - 2 * self.spec.margin:
      raise ValueError(f'size {size} too small for {num_frames} frames at '
                       f'{self.spec.speed} px/frame')
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
