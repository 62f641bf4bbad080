"""The `config.data` schema: the keys, what each means, and `validate_config`.

`config.data` keys (an ml_collections ConfigDict; `validate_config` demands exactly these):

  name             TFDS name: 'synthetic_motion' | 'kinetics400' | 'kinetics600' | 'kinetics700' |
                   'ssv2'.
  data_dir         str: the folder of prepared datasets (`~` is expanded). `synthetic_motion` is
                   generated there on first use; the others must be prepared once with
                   `python -m laps_jax.data.prepare --dataset=NAME --manual_dir=DIR --data_dir=DATA_DIR`.
  train_split      split for training ('train').
  eval_split       split for the periodic single-view evaluation ('validation').
  test_split       split for the final multi-view test ('validation' for Kinetics / SSv2, whose
                   test labels are not public; 'test' when a labelled Kinetics test CSV was given).
  num_frames       T, frames per clip (LAPS 8, LVT 16).
  frame_stride     dense sampling: distance between sampled frames (LAPS 8, LVT 16 on Kinetics).
  sampling         'dense' (T frames `frame_stride` apart) | 'segment' (TSN: one frame per each of
                   T equal segments; SSv2). Details and short videos: `laps_jax.data.sampling`.
  image_size       S, side of the square crop fed to the model (224).
  scale_jitter     (min, max): training short side drawn uniformly from these integers before the
                   random S x S crop ((256, 320) LVT, (224, 360) LAPS); min >= image_size.
  test_short_side  evaluation short side before the crops (224 LAPS / LVT); >= image_size.
  flip             bool: random horizontal flip in training. False for SSv2, where left/right is
                   part of the label.
  color_jitter     probability of each of brightness / contrast / saturation / hue jitter (0 = off;
                   LAPS 0.1).
  auto_augment     '' | 'autoaugment' (ImageNet policy) | RandAugment spec 'rand-m7-n4[-mstd0.5]
                   [-inc1]'; the same ops on every frame of a clip (`laps_jax.data.augment`).
  random_erasing   probability of erasing one box, the same in every frame (0 = off; LVT SSv2 0.5).
  mixup_alpha      Beta(alpha, alpha) mixup at batch level (0 = off; LVT Kinetics 0.4).
  cutmix_alpha     Beta(alpha, alpha) cutmix at batch level (0 = off); with mixup, one of the two
                   per batch, each with probability 1/2.
  label_smoothing  eps of the soft targets (LAPS 0.1, LVT 0.3).
  mean, std        3-tuples, normalisation (x / 255 - mean) / std (0.5 / 0.5 for the papers' ViTs).
  test_clips       K, clips per video in multi-view evaluation (LAPS 10, LVT 4 Kinetics / 2 SSv2).
  test_crops       1 (centre) or 3 (left / centre / right, or top / centre / bottom for portrait).
  num_workers      grain worker processes decoding and augmenting (0 = in the main process), or
                   'auto': the CPUs this process may use, shared among the JAX processes of the
                   host, less one (`loaders.num_workers`). The run configs type the field
                   `object`, so `--config.data.num_workers=auto` and `=4` both parse; a digit
                   string ('4', from a config that typed it str) is read as 4.
  prefetch         batches each worker prepares ahead (grain per-worker buffer size, >= 1).
  shuffle          bool: shuffle the training records (reshuffled every epoch).
  num_repeats      k >= 1: repeated augmentation, k differently augmented clips of each sampled
                   training video in the same batch (1 = off; VideoMAE 2). An epoch is still every
                   video once: k times the steps (`laps_jax.data.repeated_augmentation`).
"""

from __future__ import annotations

from laps_jax.data import augment
from laps_jax.data import registry

CONFIG_KEYS = (
    'name', 'data_dir', 'train_split', 'eval_split', 'test_split', 'num_frames', 'frame_stride',
    'sampling', 'image_size', 'scale_jitter', 'test_short_side', 'flip', 'color_jitter',
    'auto_augment', 'random_erasing', 'mixup_alpha', 'cutmix_alpha', 'label_smoothing', 'mean',
    'std', 'test_clips', 'test_crops', 'num_workers', 'prefetch', 'shuffle', 'num_repeats',
)


def validate_config(data_config) -> None:
  """Raises ValueError naming every missing or unknown key, or the first bad value."""
  keys = set(data_config.keys())
  missing = sorted(set(CONFIG_KEYS) - keys)
  unknown = sorted(keys - set(CONFIG_KEYS))
  if missing or unknown:
    raise ValueError(f'config.data: missing keys {missing}, unknown keys {unknown} '
                     f'(expected exactly {list(CONFIG_KEYS)}; documented in {__name__})')
  c = data_config

  def check(condition, message):
    if not condition:
      raise ValueError(f'config.data.{message}')

  check(c.name in registry.BUILDERS, f'name: {c.name!r} is not one of {sorted(registry.BUILDERS)}')
  check(isinstance(c.data_dir, str) and c.data_dir, 'data_dir: a non-empty path is needed')
  check(c.sampling in ('dense', 'segment'), f"sampling: 'dense' or 'segment', got {c.sampling!r}")
  check(int(c.num_frames) >= 1, f'num_frames: >= 1, got {c.num_frames}')
  check(int(c.frame_stride) >= 1, f'frame_stride: >= 1, got {c.frame_stride}')
  check(int(c.image_size) >= 1, f'image_size: >= 1, got {c.image_size}')
  check(len(tuple(c.scale_jitter)) == 2 and
        int(c.image_size) <= int(c.scale_jitter[0]) <= int(c.scale_jitter[1]),
        f'scale_jitter: (min, max) with image_size <= min <= max, got {c.scale_jitter}')
  check(int(c.test_short_side) >= int(c.image_size),
        f'test_short_side: >= image_size, got {c.test_short_side}')
  for key in ('color_jitter', 'random_erasing'):
    check(0.0 <= float(c[key]) <= 1.0, f'{key}: a probability in [0, 1], got {c[key]}')
  for key in ('mixup_alpha', 'cutmix_alpha'):
    check(float(c[key]) >= 0.0, f'{key}: >= 0, got {c[key]}')
  check(0.0 <= float(c.label_smoothing) < 1.0,
        f'label_smoothing: in [0, 1), got {c.label_smoothing}')
  for key in ('mean', 'std'):
    check(len(tuple(c[key])) == 3, f'{key}: 3 values (R, G, B), got {c[key]}')
  check(all(float(s) > 0 for s in c.std), f'std: > 0, got {c.std}')
  check(int(c.test_clips) >= 1, f'test_clips: >= 1, got {c.test_clips}')
  check(int(c.test_crops) in (1, 3), f'test_crops: 1 or 3, got {c.test_crops}')
  check(c.num_workers == 'auto' or str(c.num_workers).isdigit(),
        f"num_workers: >= 0 or 'auto', got {c.num_workers!r}")
  check(int(c.prefetch) >= 1, f'prefetch: >= 1, got {c.prefetch}')
  check(int(c.num_repeats) >= 1, f'num_repeats: >= 1, got {c.num_repeats}')
  try:
    augment.parse_auto_augment(c.auto_augment)
  except ValueError as e:
    raise ValueError(f'config.data.auto_augment: {e}') from None
