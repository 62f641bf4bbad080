"""grain transforms: a stored example -> a training clip or evaluation views, a batch -> soft
targets. They are picklable: with num_workers > 0 they run in grain's worker processes."""

from __future__ import annotations

from typing import Any, Mapping

import grain.python as grain
import numpy as np

from laps_jax.data import augment
from laps_jax.data import mixup
from laps_jax.data import sampling


def train_options(c) -> augment.TrainOptions:
  """The data config's per-clip training augmentation."""
  return augment.TrainOptions(
      image_size=int(c.image_size), scale_jitter=(int(c.scale_jitter[0]), int(c.scale_jitter[1])),
      flip=bool(c.flip), color_jitter=float(c.color_jitter),
      auto_augment=augment.parse_auto_augment(c.auto_augment),
      random_erasing=float(c.random_erasing), mean=tuple(float(x) for x in c.mean),
      std=tuple(float(x) for x in c.std))


class TrainClip(grain.RandomMapTransform):
  """Stored example -> {'videos': uint8[T, S, S, 3], 'labels': int32, 'color': float32[4],
  'erase_box': int32[4], 'erase_seed': uint32} (random clip, host augmentation, the parameters of
  the device augmentation: `augment.train_clip`)."""

  def __init__(self, options: augment.TrainOptions, num_frames: int, sampling_mode: str,
               stride: int):
    self.options, self.num_frames = options, num_frames
    self.sampling_mode, self.stride = sampling_mode, stride

  def random_map(self, example: Mapping[str, Any], rng: np.random.Generator) -> dict:
    frames = example['frames']
    indices = sampling.train_indices(len(frames), self.num_frames, self.sampling_mode,
                                     self.stride, rng)
    frame_size = (int(example['height']), int(example['width'])) if 'height' in example else None
    clip = augment.train_clip(frames, indices, self.options, rng, frame_size)
    clip['labels'] = np.int32(example['label'])
    return clip


class MixBatch(grain.RandomMapTransform):
  """Batch -> batch plus the mixup / cutmix parameters `mix_weight`, `mix_box`, `mix_lam` of
  `mixup.draw_mix` (one draw per batch; the train step applies them, with label smoothing)."""

  def __init__(self, mixup_alpha: float, cutmix_alpha: float):
    self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha

  def random_map(self, batch: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict:
    b, _, height, width, _ = batch['videos'].shape
    return {**batch, **mixup.draw_mix(b, height, width, mixup_alpha=self.mixup_alpha,
                                      cutmix_alpha=self.cutmix_alpha, rng=rng)}


class EvalClip(grain.MapTransform):
  """Stored example (or padding) -> {'videos': uint8[T, S, S, 3] or uint8[V, T, S, S, 3],
  'labels', 'mask'}; deterministic views."""

  def __init__(self, c, multi_view: bool):
    self.num_frames, self.stride = int(c.num_frames), int(c.frame_stride)
    self.sampling_mode = c.sampling
    self.num_clips = int(c.test_clips) if multi_view else 1
    self.num_crops = int(c.test_crops) if multi_view else 1
    self.multi_view = multi_view
    self.short_side, self.crop = int(c.test_short_side), int(c.image_size)

  def _shape(self) -> tuple[int, ...]:
    clip = (self.num_frames, self.crop, self.crop, 3)
    return (self.num_clips * self.num_crops,) + clip if self.multi_view else clip

  def map(self, example: Mapping[str, Any]) -> dict:
    if example.get('padding', False):
      return {'videos': np.zeros(self._shape(), np.uint8), 'labels': np.int32(0),
              'mask': np.bool_(False)}
    frames = example['frames']
    indices = sampling.test_indices(len(frames), self.num_frames, self.sampling_mode, self.stride,
                                    self.num_clips)
    views = augment.eval_views(frames, indices, self.short_side, self.crop, self.num_crops)
    return {'videos': views if self.multi_view else views[0],
            'labels': np.int32(example['label']), 'mask': np.bool_(True)}


class PaddedSource:
  """A random-access source of `length` >= len(source) records; the extra ones are padding."""

  def __init__(self, source, length: int):
    self.source, self.length = source, length

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int):
    if index < len(self.source):
      return self.source[index]
    return {'padding': True}

  def __repr__(self) -> str:
    return f'PaddedSource({self.source!r}, length={self.length})'
