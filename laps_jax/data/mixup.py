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


def mix_batch(videos: np.ndarray, labels: np.ndarray, num_classes: int, *, mixup_alpha: float,
              cutmix_alpha: float, label_smoothing: float, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
  """(videos, labels) -> (mixed videos, soft targets); see the module doc."""
  targets = smooth_one_hot(labels, num_classes, label_smoothing)
  use_mixup, use_cutmix = mixup_alpha > 0, cutmix_alpha > 0
  if use_mixup and use_cutmix:
    if rng.random() < 0.5:
      use_mixup = False
    else:
      use_cutmix = False
  if not (use_mixup or use_cutmix):
    return videos, targets
  partner = slice(None, None, -1)  # clip i is mixed with clip b - 1 - i
  if use_mixup:
    lam = float(rng.beta(mixup_alpha, mixup_alpha))
    videos = (lam * videos + (1.0 - lam) * videos[partner]).astype(np.float32)
  else:
    lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
    height, width = videos.shape[2:4]
    top, bottom, left, right = cutmix_box(height, width, lam, rng)
    mixed = videos.copy()
    mixed[:, :, top:bottom, left:right] = videos[partner, :, top:bottom, left:right]
    videos = mixed
    lam = 1.0 - (bottom - top) * (right - left) / float(height * width)
  targets = (lam * targets + (1.0 - lam) * targets[partner]).astype(np.float32)
  return videos, targets
