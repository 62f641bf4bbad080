"""The float part of the input pipeline, inside the jitted steps: uint8 clips -> model input.

The host ships uint8 videos (4x less to copy than float32) and the random parameters it drew for
each clip (`augment.train_clip`, `mixup.draw_mix`, from grain's per-record Generators, so a
resumed run sees the same ones). Here, in order (the order of the host pipeline it replaces):

  1. colour jitter with the clip's (brightness, contrast, saturation, hue shift) on [0, 255];
  2. normalisation (x / 255 - mean) / std;
  3. random erasing: the clip's box filled with N(0, 1) noise from its seed;
  4. mixup / cutmix with the batch's parameters; a clip's partner is its mirror inside its group
     of B / groups consecutive clips (groups = the number of batch shards, so no clip crosses a
     device: `mixup.partners`);
  5. soft targets: label smoothing, then the same mix of the partner's targets.

Shapes: videos uint8[B, T, H, W, 3] (train, single view) or uint8[B, V, T, H, W, 3] (multi view),
labels int32[B], color float32[B, 4], erase_box int32[B, 4] (top, left, h, w), erase_seed
uint32[B], mix_weight / mix_lam float32[B], mix_box int32[B, 4] (top, bottom, left, right).
NumPy references: `augment.apply_color_jitter`, `augment.normalize`, `augment.erase_box`,
`mixup.smooth_one_hot`, `mixup.apply_mix`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, what PIL's convert('L') uses


def normalize(videos: jax.Array, mean, std) -> jax.Array:
  """uint8 / float [..., 3] in [0, 255] -> float32 (x / 255 - mean) / std."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (videos.astype(jnp.float32) / 255.0 - mean) / std


def _grey(clip: jax.Array) -> jax.Array:
  return (clip @ jnp.asarray(LUMA, jnp.float32))[..., None]


def _rgb_to_hsv(rgb: jax.Array):
  maxc, minc = rgb.max(-1), rgb.min(-1)
  delta = maxc - minc
  s = jnp.where(maxc > 0, delta / jnp.maximum(maxc, 1e-8), 0.0)
  safe = jnp.maximum(delta, 1e-8)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  h = jnp.where(maxc == r, (g - b) / safe,
                jnp.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
  h = jnp.where(delta > 0, (h / 6.0) % 1.0, 0.0)
  return h, s, maxc


def _hsv_to_rgb(h, s, v):
  i = jnp.floor(h * 6.0)
  f = h * 6.0 - i
  p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
  i = i.astype(jnp.int32) % 6
  pick = lambda *options: jnp.select([i == k for k in range(6)], options)
  return jnp.stack([pick(v, q, p, p, t, v), pick(t, v, v, q, p, p), pick(p, p, t, v, v, q)], -1)


def _color_jitter_clip(clip: jax.Array, params: jax.Array) -> jax.Array:
  """float32[T, H, W, 3] in [0, 255], params float32[4] -> jittered (augment.apply_color_jitter)."""
  brightness, contrast, saturation, shift = params[0], params[1], params[2], params[3]
  clip = clip * brightness
  clip = contrast * clip + (1 - contrast) * _grey(clip).mean()
  clip = saturation * clip + (1 - saturation) * _grey(clip)

  def rotate_hue(x):
    h, s, v = _rgb_to_hsv(jnp.clip(x, 0, 255) / 255.0)
    return _hsv_to_rgb((h + shift) % 1.0, s, v) * 255.0

  clip = jax.lax.cond(shift != 0.0, rotate_hue, lambda x: x, clip)
  return jnp.clip(clip, 0, 255)


def color_jitter(videos: jax.Array, params: jax.Array) -> jax.Array:
  """float32[B, T, H, W, 3] in [0, 255], params float32[B, 4] -> jittered, per clip."""
  return jax.vmap(_color_jitter_clip)(videos, params)


def erase(videos: jax.Array, box: jax.Array, seed: jax.Array) -> jax.Array:
  """float32[B, T, H, W, C]; box int32[B, 4] (top, left, h, w; h = 0: none) filled with N(0, 1)
  noise drawn from each clip's seed uint32[B]."""
  _, _, height, width, _ = videos.shape

  def one(clip, box, seed):
    top, left, h, w = box[0], box[1], box[2], box[3]
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    noise = jax.random.normal(jax.random.key(seed), clip.shape, jnp.float32)
    return jnp.where(inside[None, :, :, None], noise, clip)

  return jax.vmap(one)(videos, box, seed)


def smooth_one_hot(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
  """int32[B] -> float32[B, K]: (1 - smoothing) one-hot + smoothing / K everywhere."""
  return jax.nn.one_hot(labels, num_classes) * (1.0 - smoothing) + smoothing / num_classes


def _mirror(x: jax.Array, groups: int) -> jax.Array:
  """x[partners(B, groups)]: each group of B / groups consecutive rows reversed (no gather)."""
  shape = x.shape
  return jnp.flip(x.reshape(groups, shape[0] // groups, *shape[1:]), axis=1).reshape(shape)


def mix(videos: jax.Array, targets: jax.Array, weight: jax.Array, box: jax.Array, lam: jax.Array,
        groups: int = 1) -> tuple[jax.Array, jax.Array]:
  """Mixup / cutmix with the host's parameters (module doc) -> (videos, targets)."""
  _, _, height, width, _ = videos.shape
  partner = _mirror(videos, groups)
  w = weight[:, None, None, None, None]
  blended = w * videos + (1.0 - w) * partner
  rows = jnp.arange(height)[None, :, None]
  cols = jnp.arange(width)[None, None, :]
  inside = ((rows >= box[:, 0, None, None]) & (rows < box[:, 1, None, None]) &
            (cols >= box[:, 2, None, None]) & (cols < box[:, 3, None, None]))
  videos = jnp.where(inside[:, None, :, :, None], partner, blended)
  lam = lam[:, None]
  return videos, lam * targets + (1.0 - lam) * _mirror(targets, groups)


@dataclasses.dataclass(frozen=True)
class DeviceAugment:
  """What the jitted steps do to a host batch (static: part of the compiled step)."""
  num_classes: int
  mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
  std: tuple[float, float, float] = (0.5, 0.5, 0.5)
  label_smoothing: float = 0.0
  color_jitter: bool = False     # the data config's colour jitter probability > 0
  random_erasing: bool = False   # its random erasing probability > 0
  mixing: bool = False           # mixup_alpha > 0 or cutmix_alpha > 0

  @classmethod
  def from_config(cls, data_config, num_classes: int) -> 'DeviceAugment':
    c = data_config
    return cls(num_classes=int(num_classes), mean=tuple(float(x) for x in c.mean),
               std=tuple(float(x) for x in c.std), label_smoothing=float(c.label_smoothing),
               color_jitter=float(c.color_jitter) > 0, random_erasing=float(c.random_erasing) > 0,
               mixing=float(c.mixup_alpha) > 0 or float(c.cutmix_alpha) > 0)

  def train(self, batch: dict[str, jax.Array], groups: int = 1) -> dict[str, jax.Array]:
    """Host train batch -> {'videos': float32[B, T, H, W, 3], 'labels', 'targets': float32[B, K]}."""
    videos = batch['videos'].astype(jnp.float32)
    if self.color_jitter:
      videos = color_jitter(videos, batch['color'])
    videos = normalize(videos, self.mean, self.std)
    if self.random_erasing:
      videos = erase(videos, batch['erase_box'], batch['erase_seed'])
    targets = smooth_one_hot(batch['labels'], self.num_classes, self.label_smoothing)
    if self.mixing:
      videos, targets = mix(videos, targets, batch['mix_weight'], batch['mix_box'],
                            batch['mix_lam'], groups)
    return {'videos': videos, 'labels': batch['labels'], 'targets': targets}

  def eval(self, videos: jax.Array) -> jax.Array:
    """uint8 eval / test / predict views -> normalised float32 (any leading shape)."""
    return normalize(videos, self.mean, self.std)

  def eval_batch(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Host eval batch (uint8 videos [B, T, H, W, 3] or [B, V, T, H, W, 3]) -> the eval step's."""
    return {**batch, 'videos': self.eval(batch['videos'])}
