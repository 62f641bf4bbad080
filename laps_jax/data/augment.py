"""Per-clip augmentation on the host: frames (JPEG bytes) -> uint8[T, S, S, 3] plus the random
parameters of the float augmentations that the device applies (`laps_jax.data.device_augment`).

Training (`train_clip`), in order:
  1. short-side scale jitter: a short side drawn uniformly from the integers in
     [scale_jitter[0], scale_jitter[1]]; then a uniformly placed S x S crop (S = image_size) of the
     frame so scaled. The JPEGs are decoded in the DCT domain at 1/2, 1/4, 1/8 scale when that is
     still at least the jittered size; then only the crop's source box (rounded to whole decoded
     pixels: at most half a pixel off) is resized to S x S, once per frame (OpenCV);
  2. horizontal flip with probability 1/2 (`flip`), done by the resize's output copy;
  3. RandAugment / AutoAugment (`auto_augment`): '' (off), 'autoaugment' (the ImageNet policy of
     Cubuk et al. 2019, as in timm 'original') or a timm-style RandAugment spec
     'rand-m{M}-n{N}[-mstd{S}][-inc{0|1}]' (N ops drawn with replacement, each applied with
     probability 0.5 at magnitude M / 10 of its range, M jittered by N(0, S) when mstd is given;
     inc1 uses the 'increasing' op variants that PySlowFast's video RandAugment uses). Geometric
     ops fill with grey 128. These are PIL ops on uint8 images: they stay on the host, with no
     float round trip (lookup tables, histograms and affine warps that XLA has no cheap form of);
  4. colour jitter (`color_jitter` = p): brightness, contrast, saturation (factors in [0.6, 1.4])
     and hue (shift in [-0.1, 0.1] of the circle), each applied with probability p. The host
     draws the four numbers (`draw_color_jitter`); the device applies them on floats (the
     RGB -> HSV -> RGB of the hue shift costs the host ~10 ms a clip, the device nothing);
  5. normalisation (x / 255 - mean) / std: on the device;
  6. random erasing (`random_erasing` = p): with probability p one box of 2 % .. 1/3 of the area,
     aspect ratio log-uniform in [0.3, 3.3], filled with N(0, 1) noise (timm's 'pixel' mode, on the
     normalised values), the same box in every frame. The host draws the box and a noise seed
     (`draw_erasing`); the device fills it.
Every random choice is drawn once per clip from the given NumPy Generator (grain's per-record
Generator), so the clip stays temporally consistent (a flip or rotation never differs between
frames), the result is a pure function of (frames, indices, options, rng state), and a resumed run
sees the same parameters.

The NumPy functions `color_jitter`, `normalize` and `random_erasing` are the host references the
device versions are tested against.

Evaluation (`eval_views`): short side scaled to `test_short_side`, then `test_crops` crops
(see `sampling.test_crop_offsets`) of every test clip; no randomness; uint8.
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


def draw_color_jitter(probability: float, rng: np.random.Generator, strength: float = 0.4,
                      hue: float = 0.1) -> np.ndarray:
  """float32[4]: (brightness, contrast, saturation factors, hue shift); 1, 1, 1, 0 = not applied."""
  params = np.array([1.0, 1.0, 1.0, 0.0], np.float32)
  if probability <= 0:
    return params
  for i in range(3):   # brightness, contrast, saturation
    if rng.random() < probability:
      params[i] = rng.uniform(1 - strength, 1 + strength)
  if rng.random() < probability:
    params[3] = rng.uniform(-hue, hue)
  return params


def apply_color_jitter(clip: np.ndarray, params: np.ndarray) -> np.ndarray:
  """float32[T, H, W, 3] in [0, 255], params float32[4] (`draw_color_jitter`) -> jittered clip.

  Brightness scales; contrast blends with the clip's mean grey level; saturation blends with the
  grey image; hue rotates the hue circle (skipped when the shift is 0). Clipped to [0, 255].
  """
  brightness, contrast, saturation, shift = (float(x) for x in params)
  clip = clip * brightness
  clip = contrast * clip + (1 - contrast) * _grey(clip).mean()
  clip = saturation * clip + (1 - saturation) * _grey(clip)
  if shift != 0.0:
    h, s, v = _rgb_to_hsv(np.clip(clip, 0, 255) / 255.0)
    clip = _hsv_to_rgb((h + shift) % 1.0, s, v) * 255.0
  return np.clip(clip, 0, 255).astype(np.float32)


def color_jitter(clip: np.ndarray, probability: float, rng: np.random.Generator) -> np.ndarray:
  """float32[T, H, W, 3] in [0, 255] -> jittered, same factors for every frame (module doc)."""
  if probability <= 0:
    return clip
  return apply_color_jitter(clip, draw_color_jitter(probability, rng))


def normalize(clip: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """uint8 / float [0, 255] -> float32 (x / 255 - mean) / std, channels last."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  return ((np.asarray(clip, np.float32) / 255.0 - mean) / std).astype(np.float32)


def draw_erasing(probability: float, height: int, width: int, rng: np.random.Generator,
                 min_area: float = 0.02, max_area: float = 1 / 3, min_aspect: float = 0.3
                 ) -> tuple[np.ndarray, np.uint32]:
  """(box int32[4] = (top, left, h, w), noise seed uint32); h = w = 0: nothing erased."""
  box = np.zeros(4, np.int32)
  if probability <= 0 or rng.random() >= probability:
    return box, np.uint32(0)
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
      box[:] = (top, left, h, w)
      return box, np.uint32(rng.integers(0, 2**32))
  return box, np.uint32(0)


def erase_box(clip: np.ndarray, box: np.ndarray, noise: np.ndarray) -> np.ndarray:
  """clip float32[T, H, W, C] with box (top, left, h, w) filled from noise float32[T, H, W, C]."""
  top, left, h, w = (int(x) for x in box)
  if h == 0 or w == 0:
    return clip
  clip = clip.copy()
  clip[:, top:top + h, left:left + w] = noise[:, top:top + h, left:left + w]
  return clip


def random_erasing(clip: np.ndarray, probability: float, rng: np.random.Generator,
                   min_area: float = 0.02, max_area: float = 1 / 3,
                   min_aspect: float = 0.3) -> np.ndarray:
  """Erases one box (the same in every frame) with N(0, 1) noise; clip float32[T, H, W, 3]."""
  box, _ = draw_erasing(probability, clip.shape[1], clip.shape[2], rng, min_area, max_area,
                        min_aspect)
  return erase_box(clip, box, rng.standard_normal(clip.shape, dtype=np.float32))


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


def _decode_resized(frames: Sequence[bytes], indices: np.ndarray, size: tuple[int, int]
                    ) -> np.ndarray:
  """uint8[len(indices), *size, 3]: each distinct frame decoded (DCT-downscaled) and resized once."""
  unique, inverse = np.unique(np.asarray(indices), return_inverse=True)
  decoded = video_decode.decode_jpeg_stack(frames, unique, min_size=size)
  return video_decode.resize_stack(decoded, size)[inverse.reshape(-1)]


def _train_window(frames: Sequence[bytes], indices: np.ndarray, stored: tuple[int, int],
                  resized: tuple[int, int], top: int, left: int, size: int, flip: bool
                  ) -> np.ndarray:
  """uint8[T, size, size, 3]: the size x size window at (top, left) of the frames scaled to
  `resized`, decoded at the smallest DCT scale that is still >= `resized`; only the window's source
  box (rounded to whole decoded pixels) is resized, once per distinct frame."""
  unique, inverse = np.unique(np.asarray(indices), return_inverse=True)
  decoded = video_decode.decode_jpeg_stack(frames, unique, min_size=resized)
  fy = decoded.shape[1] / resized[0]
  fx = decoded.shape[2] / resized[1]
  y0, y1 = round(top * fy), min(round((top + size) * fy), decoded.shape[1])
  x0, x1 = round(left * fx), min(round((left + size) * fx), decoded.shape[2])
  clip = video_decode.resize_stack(decoded[:, y0:y1, x0:x1], (size, size), flip=flip)
  inverse = inverse.reshape(-1)
  if len(unique) == len(inverse) and np.array_equal(inverse, np.arange(len(inverse))):
    return clip   # distinct frames in order: no copy
  return clip[inverse]


def train_clip(frames: Sequence[bytes], indices: np.ndarray, options: TrainOptions,
               rng: np.random.Generator, frame_size: tuple[int, int] | None = None
               ) -> dict[str, np.ndarray]:
  """One training clip and the parameters of its device-side augmentation (module doc).

  frame_size: (height, width) of the stored frames when known (the record says it), else read
  from the first JPEG's header. Returns videos uint8[T, S, S, 3] (T = len(indices),
  S = image_size), color float32[4] (`draw_color_jitter`), erase_box int32[4] and erase_seed
  uint32 (`draw_erasing`).
  """
  height, width = frame_size or _frame_size(frames)
  size = options.image_size
  short = int(rng.integers(options.scale_jitter[0], options.scale_jitter[1] + 1))
  new_h, new_w = sampling.resized_size(height, width, short)
  top = int(rng.integers(0, new_h - size + 1))
  left = int(rng.integers(0, new_w - size + 1))
  flip = bool(options.flip and rng.random() < 0.5)
  clip = _train_window(frames, indices, (height, width), (new_h, new_w), top, left, size, flip)
  ops = options.auto_augment.sample(rng)
  if ops:
    clip = np.stack([np.asarray(image) for image in apply_ops(
        [Image.fromarray(frame) for frame in clip], ops)])
  color = draw_color_jitter(options.color_jitter, rng)
  erase_box_, erase_seed = draw_erasing(options.random_erasing, size, size, rng)
  return {'videos': clip, 'color': color, 'erase_box': erase_box_, 'erase_seed': erase_seed}


def host_train_clip(frames: Sequence[bytes], indices: np.ndarray, options: TrainOptions,
                    rng: np.random.Generator) -> np.ndarray:
  """The all-host reference of `train_clip` + the device part -> float32[T, S, S, 3] (tests,
  benchmarks). The erasing noise is drawn from NumPy with the clip's seed."""
  clip = train_clip(frames, indices, options, rng)
  pixels = apply_color_jitter(clip['videos'].astype(np.float32), clip['color'])
  pixels = normalize(pixels, options.mean, options.std)
  noise = np.random.default_rng(int(clip['erase_seed'])).standard_normal(pixels.shape,
                                                                          dtype=np.float32)
  return erase_box(pixels, clip['erase_box'], noise)


def eval_views(frames: Sequence[bytes], clip_indices: np.ndarray, short_side: int, crop: int,
               num_crops: int, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None) -> np.ndarray:
  """Test views -> uint8[K * num_crops, T, crop, crop, 3], clip-major (view = k * crops + c);
  normalised float32 instead when mean and std are given (the host reference).

  clip_indices: int[K, T] from `sampling.test_indices`. Each distinct frame is decoded and resized
  once (short side -> `short_side`), and the crops of `sampling.test_crop_offsets` are cut out.
  """
  height, width = _frame_size(frames)
  new_h, new_w = sampling.resized_size(height, width, short_side)
  offsets = sampling.test_crop_offsets(new_h, new_w, crop, num_crops)
  clip_indices = np.asarray(clip_indices)
  resized = _decode_resized(frames, clip_indices.reshape(-1), (new_h, new_w))
  resized = resized.reshape(*clip_indices.shape, new_h, new_w, 3)     # [K, T, h, w, 3]
  views = np.stack([resized[:, :, top:top + crop, left:left + crop] for top, left in offsets],
                   axis=1)                                           # [K, crops, T, S, S, 3]
  views = views.reshape(-1, *views.shape[2:])
  if mean is None or std is None:
    return views
  return normalize(views, mean, std)
