"""Repeated augmentation (config.data.num_repeats = k): each sampled training video gives k
differently augmented clips, side by side in the same batch (VideoMAE's `num_sample`, MMAction2's
`num_repeats`; Hoffer et al. 2020, "Augment your batch").

A batch of b clips then holds b / k videos. An epoch still means every video seen once, so it
takes k times as many steps (laps_jax/train/setup.py counts epochs in videos seen).

    stored example --RepeatedClips--> k clips, each array stacked to (k, ...)
                   --Batch(b / k)-->  (b / k, k, ...)
                   --FlattenRepeats-> (b, ...): a video's k clips adjacent

The k clips draw their frames, crops and augmentation one after the other from the example's
random generator, so they differ, and the whole is as reproducible (and resumable) as k = 1.
"""

from __future__ import annotations

from typing import Any, Mapping

import grain.python as grain
import numpy as np


class RepeatedClips(grain.RandomMapTransform):
  """Stored example -> the `clip_transform`'s output drawn `num_repeats` times, each array
  stacked on a new leading axis of size num_repeats."""

  def __init__(self, clip_transform: grain.RandomMapTransform, num_repeats: int):
    self.clip_transform, self.num_repeats = clip_transform, num_repeats

  def random_map(self, example: Mapping[str, Any], rng: np.random.Generator) -> dict:
    clips = [self.clip_transform.random_map(example, rng) for _ in range(self.num_repeats)]
    return {key: np.stack([np.asarray(clip[key]) for clip in clips]) for key in clips[0]}


class FlattenRepeats(grain.MapTransform):
  """Batch {key: (b / k, k, ...)} -> {key: (b, ...)}."""

  def map(self, batch: Mapping[str, np.ndarray]) -> dict:
    return {key: value.reshape((-1,) + value.shape[2:]) for key, value in batch.items()}


def clip_batches(clip_transform: grain.RandomMapTransform, local_batch: int, num_repeats: int) -> list:
  """The loader operations from stored examples to batches of `local_batch` clips, with
  `num_repeats` clips per video (1: the clip transform and a plain Batch)."""
  if num_repeats < 1:
    raise ValueError(f'config.data.num_repeats must be >= 1, got {num_repeats}')
  if num_repeats == 1:
    return [clip_transform, grain.Batch(local_batch, drop_remainder=True)]
  if local_batch % num_repeats:
    raise ValueError(f'the per-process batch {local_batch} is not divisible by '
                     f'config.data.num_repeats={num_repeats}')
  return [RepeatedClips(clip_transform, num_repeats),
          grain.Batch(local_batch // num_repeats, drop_remainder=True), FlattenRepeats()]
