"""Per-clip augmentation: frames (JPEG bytes) -> normalised float32[T, S, S, 3], same op on all frames.

Training (`train_clip`), in order:
  1. short-side scale jitter: a short side drawn uniformly from the integers in
     [scale_jitter[0], scale_jitter[1]]; then a uniformly placed S x S crop (S = image_size). Done
     as one resize of the crop box (PIL `resize(box=...)`), and JPEGs are decoded at 1/2, 1/4, 1/8
     scale when that is still larger than needed (PIL `draft`), so only useful pixels are made;
  2. horizontal flip with probability 1/2 (`flip`);
  3. RandAugment / AutoAugment (`auto_augment`): '' (off), 'autoaugment' (the ImageNet policy of
     Cubuk et al. 2019, as in timm 'original') or a timm-style RandAugment spec
     'rand-m{M}-n{N}[-mstd{S}][-inc{0|1}]' (N ops drawn with replacement, each applied with
     probability 0.5 at magnitude M / 10 of its range, M jittered by N(0, S) when mstd is given;
     inc1 uses the 'increasing' op variants that PySlowFast's video RandAugment uses). Geometric
     ops fill with grey 128;
  4. colour jitter (`color_jitter` = p): brightness, contrast, saturation (factors in [0.6, 1.4])
     and hue (shift in [-0.1, 0.1] of the circle), each applied with probability p;
  5. normalisation (x / 255 - mean) / std;
  6. random erasing (`random_erasing` = p): with probability p one box of 2 % .. 1/3 of the area,
     aspect ratio log-uniform in [0.3, 3.3], filled with N(0, 1) noise (timm's 'pixel' mode, on the
     normalised values), the same box in every frame.
Every random choice is drawn once per clip from the given NumPy Generator, so the clip stays
temporally consistent (a flip or rotation never differs between frames), and the result is a pure
function of (frames, indices, options, rng state).

Evaluation (`eval_views`): short side scaled to `test_short_side`, then `test_crops` crops
(see `sampling.test_crop_offsets`) of every test clip; no randomness.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from laps_jax.data import sampling
from laps_jax.data import video_decode

FILL = (128, 128, 128)
RESAMPLE = Image.BILINEAR


# ----------------------------------------------------------------------------------------------
# RandAugment / AutoAugment ops. Each takes a PIL image and one argument.
# ----------------------------------------------------------------------------------------------

def _affine(image, matrix):
  return image.transform(image.size, Image.AFFINE, matrix, resample=RESAMPLE, fillcolor=FILL)


def _solarize_add(image, add, threshold=128):
  lut = [min(255, i + add) if i < threshold else i for i in range(256)]
  return image.point(lut * len(image.getbands()))


def _posterize(image, bits):
  return image if bits >= 8 else ImageOps.posterize(image, max(0, bits))


OPS = {
    'AutoContrast': lambda im, _: ImageOps.autocontrast(im),
    'Equalize': lambda im, _: ImageOps.equalize(im),
    'Invert': lambda im, _: ImageOps.invert(im),
    'Rotate': lambda im, deg: im.rotate(deg, resample=RESAMPLE, fillcolor=FILL),
    'Posterize': _posterize,
    'Solarize': lambda im, threshold: ImageOps.solarize(im, threshold),
    'SolarizeAdd': _solarize_add,
    'Color': lambda im, f: ImageEnhance.Color(im).enhance(f),
    'Contrast': lambda im, f: ImageEnhance.Contrast(im).enhance(f),
    'Brightness': lambda im, f: ImageEnhance.Brightness(im).enhance(f),
    'Sharpness': lambda im, f: ImageEnhance.Sharpness(im).enhance(f),
    'ShearX': lambda im, f: _affine(im, (1, f, 0, 0, 1, 0)),
    'ShearY': lambda im, f: _affine(im, (1, 0, 0, f, 1, 0)),
    'TranslateXRel': lambda im, f: _affine(im, (1, 0, f * im.size[0], 0, 1, 0)),
    'TranslateYRel': lambda im, f: _affine(im, (1, 0, 0, 0, 1, f * im.size[1])),
}


def _signed(value, rng):
  return value if rng.random() < 0.5 else -value


def op_argument(name: str, level: float, rng: np.random.Generator, increasing: bool = False):
  """The op's argument at magnitude `level` in [0, 10] (timm's level -> argument maps)."""
  m = level / 10.0
  if name in ('AutoContrast', 'Equalize', 'Invert'):
    return None
  if name == 'Rotate':
    return _signed(30.0 * m, rng)
  if name in ('ShearX', 'ShearY'):
    return _signed(0.3 * m, rng)
  if name in ('TranslateXRel', 'TranslateYRel'):
    return _signed(0.45 * m, rng)
  if name in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
    return 1.0 + _signed(0.9 * m, rng) if increasing else 1.8 * m + 0.1
  if name == 'Posterize':
    return 4 - int(4 * m) if increasing else int(4 * m)
  if name == 'PosterizeOriginal':
    return int(4 * m) + 4
  if name == 'Solarize':
    return 256 - int(256 * m) if increasing else int(256 * m)
  if name == 'SolarizeAdd':
    return int(110 * m)
  raise ValueError(f'unknown op {name}')


RAND_OPS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize',
            'SolarizeAdd', 'Color', 'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY',
            'TranslateXRel', 'TranslateYRel')

# AutoAugment ImageNet policy (Cubuk et al. 2019, Table 9): 25 sub-policies of
# two (op, probability, level) steps.
AUTOAUGMENT_IMAGENET = (
    (('PosterizeOriginal', 0.4, 8), ('Rotate', 0.6, 9)),
    (('Solarize', 0.6, 5), ('AutoContrast', 0.6, 5)),
    (('Equalize', 0.8, 8), ('Equalize', 0.6, 3)),
    (('PosterizeOriginal', 0.6, 7), ('PosterizeOriginal', 0.6, 6)),
    (('Equalize', 0.4, 7), ('Solarize', 0.2, 4)),
    (('Equalize', 0.4, 4), ('Rotate', 0.8, 8)),
    (('Solarize', 0.6, 3), ('Equalize', 0.6, 7)),
    (('PosterizeOriginal', 0.8, 5), ('Equalize', 1.0, 2)),
    (('Rotate', 0.2, 3), ('Solarize', 0.6, 8)),
    (('Equalize', 0.6, 8), ('PosterizeOriginal', 0.4, 6)),
    (('Rotate', 0.8, 8), ('Color', 0.4, 0)),
    (('Rotate', 0.4, 9), ('Equalize', 0.6, 2)),
    (('Equalize', 0.0, 7), ('Equalize', 0.8, 8)),
    (('Invert', 0.6, 4), ('Equalize', 1.0, 8)),
    (('Color', 0.6, 4), ('Contrast', 1.0, 8)),
    (('Rotate', 0.8, 8), ('Color', 1.0, 2)),
    (('Color', 0.8, 8), ('Solarize', 0.8, 7)),
    (('Sharpness', 0.4, 7), ('Invert', 0.6, 8)),
    (('ShearX', 0.6, 5), ('Equalize', 1.0, 9)),
    (('Color', 0.4, 0), ('Equalize', 0.6, 3)),
    (('Equalize', 0.4, 7), ('Solarize', 0.2, 4)),
    (('Solarize', 0.6, 5), ('AutoContrast', 0.6, 5)),
    (('Invert', 0.6, 4), ('Equalize', 1.0, 8)),
    (('Color', 0.6, 4), ('Contrast', 1.0, 8)),
    (('Equalize', 0.8, 8), ('Equalize', 0.6, 3)),
)


@dataclasses.dataclass(frozen=True)
class AutoAugmentPolicy:
  """A parsed `auto_augment` spec; `sample(rng)` draws one clip's [(op name, argument)]."""
  kind: str                 # '', 'autoaugment' or 'rand'
  num_ops: int = 2
  magnitude: float = 9.0
  magnitude_std: float = 0.0
  increasing: bool = False
  probability: float = 0.5  # RandAugment per-op probability

  def sample(self, rng: np.random.Generator) -> list[tuple[str, object]]:
    ops = []
    if self.kind == 'autoaugment':
      sub_policy = AUTOAUGMENT_IMAGENET[int(rng.integers(len(AUTOAUGMENT_IMAGENET)))]
      for name, probability, level in sub_policy:
        if rng.random() < probability:
          op = 'Posterize' if name == 'PosterizeOriginal' else name
          ops.append((op, op_argument(name, level, rng)))
    elif self.kind == 'rand':
      for _ in range(self.num_ops):
        name = RAND_OPS[int(rng.integers(len(RAND_OPS)))]
        if rng.random() >= self.probability:
          continue
        level = self.magnitude
        if self.magnitude_std > 0:
          level = float(np.clip(rng.normal(level, self.magnitude_std), 0.0, 10.0))
        ops.append((name, op_argument(name, level, rng, self.increasing)))
    return ops


def parse_auto_augment(spec: str) -> AutoAugmentPolicy:
  """'' | 'autoaugment' | 'rand-m{M}-n{N}[-mstd{S}][-inc{0|1}]' -> policy; ValueError otherwise."""
  if spec == '':
    return AutoAugmentPolicy(kind='')
  if spec == 'autoaugment':
    return AutoAugmentPolicy(kind='autoaugment')
  parts = spec.split('-')
  if parts[0] != 'rand':
    raise ValueError(f"auto_augment must be '', 'autoaugment' or 'rand-m<M>-n<N>...', got {spec!r}")
  policy = dict(kind='rand')
  for part in parts[1:]:
    match = re.fullmatch(r'(mstd|inc|m|n|p)([0-9.]+)', part)
    if not match:
      raise ValueError(f'auto_augment {spec!r}: cannot read {part!r} (m<magnitude>, n<ops>, '
                       'mstd<std>, inc<0|1>, p<probability>)')
    key, value = match.groups()
    if key == 'm':
      policy['magnitude'] = float(value)
    elif key == 'n':
      policy['num_ops'] = int(value)
    elif key == 'mstd':
      policy['magnitude_std'] = float(value)
    elif key == 'inc':
      policy['increasing'] = bool(int(value))
    else:
      policy['probability'] = float(value)
  return AutoAugmentPolicy(**policy)


def apply_ops(images: Sequence[Image.Image], ops: Sequence[tuple[str, object]]
              ) -> list[Image.Image]:
  """The same op sequence applied to every frame."""
  images = list(images)
  for name, argument in ops:
    images = [OPS[name](image, argument) for image in images]
  return images


# ----------------------------------------------------------------------------------------------
# Colour jitter, normalisation, random erasing (NumPy, on the whole clip at once).
# ----------------------------------------------------------------------------------------------

def _grey(clip: np.ndarray) -> np.ndarray:
  """ITU-R 601 luma of float[..., 3] -> float[..., 1] (what PIL's convert('L') uses)."""
  return (clip @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]


def _rgb_to_hsv(rgb: np.ndarray):
  maxc, minc = rgb.max(-1), rgb.min(-1)
  v = maxc
  delta = maxc - minc
  s = np.where(maxc > 0, delta / np.maximum(maxc, 1e-8), 0.0)
  safe = np.maximum(delta, 1e-8)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  h = np.where(maxc == r, (g - b) / safe, np.where(maxc == g, 2.0 + (b - r) / safe,
                                                   4.0 + (r - g) / safe))
  h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
  return h, s, v


def _hsv_to_rgb(h, s, v):
  i = np.floor(h * 6.0)
  f = h * 6.0 - i
  p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
  i = i.astype(np.int32) % 6
  r = np.choose(i, [v, q, p, p, t, v])
  g = np.choose(i, [t, v, v, q, p, p])
  b = np.choose(i, [p, p, t, v, v, q])
  return np.stack([r, g, b], -1)


def color_jitter(clip: np.ndarray, probability: float, rng: np.random.Generator,
                 strength: float = 0.4, hue: float = 0.1) -> np.ndarray:
  """float32[T, H, W, 3] in [0, 255] -> jittered, same factors for every frame (module doc)."""
  if probability <= 0:
    return clip
  if rng.random() < probability:   # brightness
    clip = clip * rng.uniform(1 - strength, 1 + strength)
  if rng.random() < probability:   # contrast: blend with the clip's mean grey level
    factor = rng.uniform(1 - strength, 1 + strength)
    clip = factor * clip + (1 - factor) * _grey(clip).mean()
  if rng.random() < probability:   # saturation: blend with the grey image
    factor = rng.uniform(1 - strength, 1 + strength)
    clip = factor * clip + (1 - factor) * _grey(clip)
  if rng.random() < probability:   # hue: rotate the hue circle
    shift = rng.uniform(-hue, hue)
    h, s, v = _rgb_to_hsv(np.clip(clip, 0, 255) / 255.0)
    clip = _hsv_to_rgb((h + shift) % 1.0, s, v) * 255.0
  return np.clip(clip, 0, 255).astype(np.float32)


def normalize(clip: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """uint8 / float [0, 255] -> float32 (x / 255 - mean) / std, channels last."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  return ((np.asarray(clip, np.float32) / 255.0 - mean) / std).astype(np.float32)


def random_erasing(clip: np.ndarray, probability: float, rng: np.random.Generator,
                   min_area: float = 0.02, max_area: float = 1 / 3,
                   min_aspect: float = 0.3) -> np.ndarray:
  """Erases one box (the same in every frame) with N(0, 1) noise; clip float32[T, H, W, 3]."""
  if probability <= 0 or rng.random() >= probability:
    return clip
  _, height, width, channels = clip.shape
  area = height * width
  log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
  for _ in range(10):
    target = rng.uniform(min_area, max_area) * area
    aspect = math.exp(rng.uniform(*log_aspect))
    h = int(round(math.sqrt(target * aspect)))
    w = int(round(math.sqrt(target / aspect)))
    if 0 < h < height and 0 < w < width:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      clip = clip.copy()
      clip[:, top:top + h, left:left + w] = rng.standard_normal(
          (clip.shape[0], h, w, channels), dtype=np.float32)
      return clip
  return clip


# ----------------------------------------------------------------------------------------------
# Whole clips.
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """What `train_clip` does; built from the data config by the pipeline."""
  image_size: int
  scale_jitter: tuple[int, int]
  flip: bool = False
  color_jitter: float = 0.0
  auto_augment: AutoAugmentPolicy = AutoAugmentPolicy(kind='')
  random_erasing: float = 0.0
  mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
  std: tuple[float, float, float] = (0.5, 0.5, 0.5)


def _frame_size(frames: Sequence[bytes]) -> tuple[int, int]:
  """(height, width) of the stored frames, read from the first JPEG's header only."""
  width, height = video_decode.decode_jpeg_size(frames[0])
  return height, width


def _crop_resize(images: Sequence[Image.Image], stored: tuple[int, int],
                 box: tuple[float, float, float, float], size: int) -> list[Image.Image]:
  """Resizes `box` (left, top, right, bottom, in stored-frame pixels) of every image to size^2.

  Images may have been decoded at a reduced scale (draft): the box is scaled to their size.
  """
  out = []
  for image in images:
    sx, sy = image.size[0] / stored[1], image.size[1] / stored[0]
    scaled = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    out.append(image.resize((size, size), RESAMPLE, box=scaled))
  return out


def train_clip(frames: Sequence[bytes], indices: np.ndarray, options: TrainOptions,
               rng: np.random.Generator) -> np.ndarray:
  """One augmented training clip -> float32[T, S, S, 3] (T = len(indices), S = image_size)."""
  height, width = _frame_size(frames)
  size = options.image_size
  short = int(rng.integers(options.scale_jitter[0], options.scale_jitter[1] + 1))
  new_h, new_w = sampling.resized_size(height, width, short)
  top = int(rng.integers(0, new_h - size + 1))
  left = int(rng.integers(0, new_w - size + 1))
  sy, sx = height / new_h, width / new_w
  box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
  images = video_decode.decode_jpeg_frames(frames, indices, min_size=(new_w, new_h))
  images = _crop_resize(images, (height, width), box, size)
  if options.flip and rng.random() < 0.5:
    images = [image.transpose(Image.FLIP_LEFT_RIGHT) for image in images]
  ops = options.auto_augment.sample(rng)
  if ops:
    images = apply_ops(images, ops)
  clip = np.stack([np.asarray(image, np.float32) for image in images])
  clip = color_jitter(clip, options.color_jitter, rng)
  clip = normalize(clip, options.mean, options.std)
  return random_erasing(clip, options.random_erasing, rng)


def eval_views(frames: Sequence[bytes], clip_indices: np.ndarray, short_side: int, crop: int,
               num_crops: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """Test views -> float32[K * num_crops, T, crop, crop, 3], clip-major (view = k * crops + c).

  clip_indices: int[K, T] from `sampling.test_indices`. Each frame is decoded once, its short side
  scaled to `short_side`, and the crops of `sampling.test_crop_offsets` are cut out.
  """
  height, width = _frame_size(frames)
  new_h, new_w = sampling.resized_size(height, width, short_side)
  offsets = sampling.test_crop_offsets(new_h, new_w, crop, num_crops)
  sy, sx = height / new_h, width / new_w
  unique = np.unique(clip_indices)
  decoded = dict(zip(unique.tolist(), video_decode.decode_jpeg_frames(
      frames, unique, min_size=(new_w, new_h))))
  crops = {}
  for top, left in offsets:
    box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
    resized = _crop_resize([decoded[i] for i in unique.tolist()], (height, width), box, crop)
    crops[(top, left)] = dict(zip(unique.tolist(), resized))
  views = []
  for indices in clip_indices:
    for offset in offsets:
      views.append(np.stack([np.asarray(crops[offset][int(i)], np.float32) for i in indices]))
  return normalize(np.stack(views), mean, std)
