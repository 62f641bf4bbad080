"""Clip augmentation (consistency over frames, crops, normalisation) and batch mixing."""

import numpy as np
from PIL import Image
import pytest

from laps_jax.data import augment
from laps_jax.data import mixup
from laps_jax.data import sampling
from laps_jax.data import video_decode


def gradient_frame(height, width, seed=0):
  """A smooth, asymmetric RGB image: red grows to the right, green grows downwards."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width]
  frame = np.stack([255 * x / (width - 1), 255 * y / (height - 1),
                    np.full_like(x, rng.integers(0, 255), dtype=float)], -1)
  return frame.round().astype(np.uint8)


def jpegs(frames, quality=95):
  return [video_decode.encode_jpeg(f, quality) for f in frames]


def options(**overrides):
  base = dict(image_size=32, scale_jitter=(32, 48), flip=False, color_jitter=0.0,
              auto_augment=augment.parse_auto_augment(''), random_erasing=0.0,
              mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
  base.update(overrides)
  return augment.TrainOptions(**base)


def test_every_random_choice_is_shared_by_all_frames():
  """A clip of identical frames stays identical frame to frame under every augmentation."""
  frames = jpegs([gradient_frame(48, 64)] * 6)
  opts = options(flip=True, color_jitter=1.0, auto_augment=augment.parse_auto_augment(
      'rand-m9-n4-mstd0.5'))
  for seed in range(12):
    clip = augment.host_train_clip(frames, np.arange(6), opts, np.random.default_rng(seed))
    assert clip.shape == (6, 32, 32, 3) and clip.dtype == np.float32
    np.testing.assert_array_equal(clip, np.broadcast_to(clip[0], clip.shape))
  aa = options(auto_augment=augment.parse_auto_augment('autoaugment'), flip=True)
  for seed in range(12):
    clip = augment.host_train_clip(frames, np.arange(6), aa, np.random.default_rng(seed))
    np.testing.assert_array_equal(clip, np.broadcast_to(clip[0], clip.shape))


def test_train_clip_is_a_function_of_the_rng_state():
  frames = jpegs([gradient_frame(48, 64, s) for s in range(4)])
  opts = options(flip=True, color_jitter=0.5, random_erasing=0.5,
                 auto_augment=augment.parse_auto_augment('rand-m7-n4'))
  a = augment.host_train_clip(frames, np.arange(4), opts, np.random.default_rng(3))
  b = augment.host_train_clip(frames, np.arange(4), opts, np.random.default_rng(3))
  c = augment.host_train_clip(frames, np.arange(4), opts, np.random.default_rng(4))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_flip_mirrors_some_clips_and_only_when_enabled():
  frames = jpegs([gradient_frame(32, 32)])
  fixed = dict(image_size=32, scale_jitter=(32, 32))  # the crop is the whole frame

  def red_slope(clip):  # > 0: red grows to the right as in the source
    return np.mean(np.diff(clip[0, :, :, 0], axis=1))

  slopes = [red_slope(augment.host_train_clip(frames, [0], options(**fixed, flip=True),
                                              np.random.default_rng(s))) for s in range(40)]
  assert any(s > 0 for s in slopes) and any(s < 0 for s in slopes)
  slopes = [red_slope(augment.host_train_clip(frames, [0], options(**fixed, flip=False),
                                              np.random.default_rng(s))) for s in range(40)]
  assert all(s > 0 for s in slopes)


def test_normalisation_and_a_full_frame_crop_reproduce_the_pixels():
  frame = gradient_frame(32, 32)
  data = jpegs([frame], quality=100)
  mean, std = np.array([0.2, 0.4, 0.6]), np.array([0.5, 0.25, 0.2])
  clip = augment.host_train_clip(data, [0], options(scale_jitter=(32, 32), mean=tuple(mean),
                                                    std=tuple(std)), np.random.default_rng(0))
  decoded = np.asarray(video_decode.decode_jpeg(data[0]), np.float64)
  np.testing.assert_allclose(clip[0], (decoded / 255.0 - mean) / std, atol=1e-5)
  # And the pixels are those of the source frame (up to JPEG error).
  assert np.abs((clip[0] * std + mean) * 255.0 - frame).mean() < 2.0


def test_scale_jitter_crop_is_a_window_of_the_rescaled_frame():
  """The crop equals the same window of the frame resized as a whole (short side = draw)."""
  frame = gradient_frame(48, 64)
  data = jpegs([frame], quality=100)
  opts = options(image_size=24, scale_jitter=(24, 40), mean=(0, 0, 0), std=(1, 1, 1))
  for seed in range(6):
    rng = np.random.default_rng(seed)
    clip = augment.host_train_clip(data, [0], opts, rng) * 255.0
    # Replay the draws of train_clip: short side, then top, then left.
    replay = np.random.default_rng(seed)
    short = int(replay.integers(24, 41))
    new_h, new_w = sampling.resized_size(48, 64, short)
    top = int(replay.integers(0, new_h - 24 + 1))
    left = int(replay.integers(0, new_w - 24 + 1))
    whole = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.BILINEAR), float)
    window = whole[top:top + 24, left:left + 24]
    assert np.abs(clip[0] - window).mean() < 2.0  # 0..255 scale


def test_eval_views_are_the_test_crops_of_the_resized_frames():
  frames = [gradient_frame(48, 72, s) for s in range(10)]
  data = jpegs(frames, quality=100)
  indices = sampling.test_indices(10, 4, 'dense', 2, 2)   # 2 clips of 4 frames
  views = augment.eval_views(data, indices, short_side=32, crop=32, num_crops=3,
                             mean=(0, 0, 0), std=(1, 1, 1)) * 255.0
  assert views.shape == (6, 4, 32, 32, 3)
  new_h, new_w = sampling.resized_size(48, 72, 32)   # (32, 48)
  offsets = sampling.test_crop_offsets(new_h, new_w, 32, 3)
  for k in range(2):
    for c, (top, left) in enumerate(offsets):
      for t, frame_index in enumerate(indices[k]):
        whole = np.asarray(Image.fromarray(frames[frame_index]).resize((new_w, new_h),
                                                                      Image.BILINEAR), float)
        expected = whole[top:top + 32, left:left + 32]
        assert np.abs(views[k * 3 + c, t] - expected).mean() < 2.0
  # Left / centre / right: the red channel (x gradient) increases across the three crops.
  red = views[0, 0, :, :, 0].mean(), views[1, 0, :, :, 0].mean(), views[2, 0, :, :, 0].mean()
  assert red[0] < red[1] < red[2]


def test_random_erasing_uses_one_box_for_all_frames():
  frames = jpegs([gradient_frame(32, 32, s) for s in range(4)])
  plain = augment.host_train_clip(frames, np.arange(4), options(scale_jitter=(32, 32)),
                                  np.random.default_rng(0))
  erased_any = False
  for seed in range(10):
    clip = augment.random_erasing(plain, 1.0, np.random.default_rng(seed))
    changed = np.any(clip != plain, axis=-1)           # [T, H, W]
    if not changed.any():
      continue
    erased_any = True
    for t in range(1, 4):
      np.testing.assert_array_equal(changed[t], changed[0])
    rows, cols = np.where(changed[0])
    box = np.zeros_like(changed[0])
    box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
    np.testing.assert_array_equal(changed[0], box)      # a rectangle
    area = box.sum() / box.size
    assert 0.01 <= area <= 0.34
  assert erased_any
  np.testing.assert_array_equal(augment.random_erasing(plain, 0.0, np.random.default_rng(0)), plain)


def test_color_jitter_off_is_identity_and_on_changes_colours_consistently():
  clip = np.stack([gradient_frame(16, 16)] * 3).astype(np.float32)
  np.testing.assert_array_equal(augment.color_jitter(clip, 0.0, np.random.default_rng(0)), clip)
  changed = 0
  for seed in range(8):
    out = augment.color_jitter(clip, 1.0, np.random.default_rng(seed))
    assert out.min() >= 0 and out.max() <= 255
    np.testing.assert_allclose(out[1], out[0])
    changed += not np.allclose(out, clip, atol=1)
  assert changed == 8


def test_hsv_round_trip():
  rgb = np.random.default_rng(0).uniform(0, 1, size=(50, 3))
  h, s, v = augment._rgb_to_hsv(rgb)
  np.testing.assert_allclose(augment._hsv_to_rgb(h, s, v), rgb, atol=1e-6)


def test_auto_augment_specs():
  policy = augment.parse_auto_augment('rand-m7-n4-mstd0.5-inc1')
  assert (policy.kind, policy.magnitude, policy.num_ops, policy.magnitude_std,
          policy.increasing) == ('rand', 7.0, 4, 0.5, True)
  ops = [op for seed in range(50) for op in policy.sample(np.random.default_rng(seed))]
  assert ops and all(name in augment.OPS for name, _ in ops)
  # Each of the 4 ops is applied with probability 1/2: about 2 per clip on average.
  assert 1.5 < len(ops) / 50 < 2.5
  assert augment.parse_auto_augment('').sample(np.random.default_rng(0)) == []
  assert len(augment.AUTOAUGMENT_IMAGENET) == 25
  for bad in ('rand', 'rand-x3', 'augmix-m3', 'autoaugment-v0'):
    if bad == 'rand':
      assert augment.parse_auto_augment(bad).kind == 'rand'   # timm defaults m9 n2
      continue
    with pytest.raises(ValueError):
      augment.parse_auto_augment(bad)


def test_label_smoothing_targets():
  targets = mixup.smooth_one_hot(np.array([0, 2]), 4, 0.1)
  np.testing.assert_allclose(targets, [[0.925, 0.025, 0.025, 0.025],
                                       [0.025, 0.025, 0.925, 0.025]])
  videos = np.zeros((2, 1, 2, 2, 3), np.float32)
  out, t = mixup.mix_batch(videos, np.array([0, 2]), 4, mixup_alpha=0, cutmix_alpha=0,
                           label_smoothing=0.1, rng=np.random.default_rng(0))
  np.testing.assert_allclose(t, targets)
  np.testing.assert_array_equal(out, videos)   # no mixing: the clips are unchanged


def test_mixup_mixes_clips_and_targets_with_the_same_lambda():
  rng = np.random.default_rng(0)
  videos = rng.normal(size=(4, 2, 4, 4, 3)).astype(np.float32)
  labels = np.array([0, 1, 2, 3])
  out, targets = mixup.mix_batch(videos, labels, 4, mixup_alpha=0.4, cutmix_alpha=0.0,
                                 label_smoothing=0.0, rng=np.random.default_rng(5))
  lam = targets[0, 0]                       # clip 0 is mixed with clip 3
  assert targets[0, 3] == pytest.approx(1 - lam)
  np.testing.assert_allclose(out[0], lam * videos[0] + (1 - lam) * videos[3], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)


def test_cutmix_pastes_one_box_and_lambda_is_its_area():
  videos = np.stack([np.full((3, 16, 16, 3), float(i), np.float32) for i in range(4)])
  labels = np.arange(4)
  for seed in range(10):
    out, targets = mixup.mix_batch(videos, labels, 4, mixup_alpha=0.0, cutmix_alpha=1.0,
                                   label_smoothing=0.0, rng=np.random.default_rng(seed))
    pasted = out[0, :, :, :, 0] == 3.0       # clip 0 receives from clip 3
    np.testing.assert_array_equal(pasted[1], pasted[0])   # same box in every frame
    assert targets[0, 3] == pytest.approx(pasted[0].mean())
    assert targets[0, 0] == pytest.approx(1 - pasted[0].mean())


def test_mixup_and_cutmix_alternate():
  videos = np.stack([np.full((1, 16, 16, 3), float(i), np.float32) for i in range(2)])
  kinds = set()
  for seed in range(30):
    out, _ = mixup.mix_batch(videos, np.arange(2), 2, mixup_alpha=1.0, cutmix_alpha=1.0,
                             label_smoothing=0.0, rng=np.random.default_rng(seed))
    values = np.unique(out[0])
    kinds.add('cutmix' if set(values.tolist()) <= {0.0, 1.0} else 'mixup')
  assert kinds == {'mixup', 'cutmix'}
