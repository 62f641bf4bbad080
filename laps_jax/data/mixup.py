"""Batch-level soft targets: label smoothing, mixup and cutmix (timm `Mixup` semantics, for clips).

`mix_batch` turns a batch of clips and integer labels into mixed clips and soft targets:
  - targets start as smoothed one-hot vectors: `1 - eps + eps / K` on the label, `eps / K` elsewhere
    (eps = label_smoothing);
  - when both mixup_alpha and cutmix_alpha are > 0, each batch uses one of the two, chosen with
    probability 1/2; with only one > 0 that one; with both 0 the batch is only smoothed;
  - mixup: lam ~ Beta(alpha, alpha); clip i becomes lam * x[i] + (1 - lam) * x[b - 1 - i] (the batch
    mixed with its own reverse, as timm's 'batch' mode);
  - cutmix: lam ~ Beta(alpha, alpha); a box of area ratio (1 - lam) at a uniform centre, clipped
    to the frame, is pasted from clip b - 1 - i into clip i, the same box in every frame; lam is
    then recomputed from the clipped box area;
  - targets = lam * t[i] + (1 - lam) * t[b - 1 - i].
Shapes: videos float32[b, T, H, W, C], labels int[b] -> videos float32[b, T, H, W, C],
targets float32[b, K].

The host draws the random numbers (`draw_mix`, once per batch from grain's Generator); the jitted
train step applies them (`laps_jax.data.device_augment.mix`). `mix_batch` / `apply_mix` are the
NumPy references.
"""

from __future__ import annotations

import numpy as np


def smooth_one_hot(labels: np.ndarray, num_classes: int, smoothing: float) -> np.ndarray:
  """int[b] -> float32[b, K]: (1 - smoothing) one-hot + smoothing / K everywhere."""
  off = smoothing / num_classes
  targets = np.full((len(labels), num_classes), off, np.float32)
  targets[np.arange(len(labels)), labels] = 1.0 - smoothing + off
  return targets


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator
               ) -> tuple[int, int, int, int]:
  """(top, bottom, left, right) of a box of area ~ (1 - lam) * H * W at a uniform centre, clipped."""
  ratio = np.sqrt(1.0 - lam)
  cut_h, cut_w = int(height * ratio), int(width * ratio)
  cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
  top, bottom = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
  left, right = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
  return int(top), int(bottom), int(left), int(right)


def draw_mix(batch_size: int, height: int, width: int, *, mixup_alpha: float, cutmix_alpha: float,
             rng: np.random.Generator) -> dict[str, np.ndarray]:
  """The random part of `mix_batch`, as per-clip arrays (module doc), for clip i of b:

    mix_weight float32[b]: pixel weight of clip i in a mixup blend (1 = not blended);
    mix_box    int32[b, 4]: (top, bottom, left, right) pasted from the partner (empty: none);
    mix_lam    float32[b]: weight of clip i's own targets.
  The partner of clip i is clip b - 1 - i. Every row holds the same numbers (one draw per batch),
  so the arrays split over devices like the clips do.
  """
  use_mixup, use_cutmix = mixup_alpha > 0, cutmix_alpha > 0
  if use_mixup and use_cutmix:
    if rng.random() < 0.5:
      use_mixup = False
    else:
      use_cutmix = False
  weight, box, lam = 1.0, (0, 0, 0, 0), 1.0
  if use_mixup:
    lam = weight = float(rng.beta(mixup_alpha, mixup_alpha))
  elif use_cutmix:
    lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
    box = cutmix_box(height, width, lam, rng)
    top, bottom, left, right = box
    lam = 1.0 - (bottom - top) * (right - left) / float(height * width)
  return {'mix_weight': np.full(batch_size, weight, np.float32),
          'mix_box': np.tile(np.asarray(box, np.int32), (batch_size, 1)),
          'mix_lam': np.full(batch_size, lam, np.float32)}


def partners(batch_size: int, groups: int = 1) -> np.ndarray:
  """int[b]: the partner of each clip, its mirror b' - 1 - i inside its group of b' = b / groups
  consecutive clips (groups = 1: the whole batch reversed, timm's 'batch' mode)."""
  size = batch_size // groups
  return (np.arange(batch_size) // size) * size + (size - 1 - np.arange(batch_size) % size)


def apply_mix(videos: np.ndarray, targets: np.ndarray, params: dict[str, np.ndarray],
              groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """The NumPy reference of the device mix: (float videos [b, T, H, W, C], targets [b, K]) ->
  mixed with `partners(b, groups)` and the per-clip `params` of `draw_mix`."""
  partner = partners(len(videos), groups)
  weight = params['mix_weight'][:, None, None, None, None]
  mixed = (weight * videos + (1.0 - weight) * videos[partner]).astype(np.float32)
  for i, (top, bottom, left, right) in enumerate(params['mix_box'].tolist()):
    mixed[i, :, top:bottom, left:right] = videos[partner[i], :, top:bottom, left:right]
  lam = params['mix_lam'][:, None]
  return mixed, (lam * targets + (1.0 - lam) * targets[partner]).astype(np.float32)


def mix_batch(videos: np.ndarray, labels: np.ndarray, num_classes: int, *, mixup_alpha: float,
              cutmix_alpha: float, label_smoothing: float, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
  """(videos, labels) -> (mixed videos, soft targets); see the module doc (host reference)."""
  targets = smooth_one_hot(labels, num_classes, label_smoothing)
  params = draw_mix(len(videos), videos.shape[2], videos.shape[3], mixup_alpha=mixup_alpha,
                    cutmix_alpha=cutmix_alpha, rng=rng)
  return apply_mix(np.asarray(videos, np.float32), targets, params)
