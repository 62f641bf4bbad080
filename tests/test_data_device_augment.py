"""The on-device float augmentation matches the NumPy host versions it replaces, on fixed inputs
and the parameters the host draws from fixed seeds."""

import jax
import numpy as np
import pytest

from laps_jax.data import augment
from laps_jax.data import device_augment
from laps_jax.data import mixup


def clips(b=4, t=3, h=12, w=16, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(b, t, h, w, 3), dtype=np.uint8)


def test_normalize_matches_the_host():
  videos = clips()
  mean, std = (0.2, 0.4, 0.6), (0.5, 0.25, 0.2)
  np.testing.assert_allclose(np.asarray(device_augment.normalize(videos, mean, std)),
                             augment.normalize(videos, mean, std), rtol=1e-6, atol=1e-6)


def test_color_jitter_matches_the_host_with_the_same_draws():
  videos = clips(b=6).astype(np.float32)
  params = np.stack([augment.draw_color_jitter(1.0, np.random.default_rng(s)) for s in range(5)]
                    + [augment.draw_color_jitter(0.0, np.random.default_rng(0))])
  assert np.all(params[:5, 3] != 0) and np.array_equal(params[5], [1, 1, 1, 0])
  out = np.asarray(jax.jit(device_augment.color_jitter)(videos, params))
  for i in range(6):
    np.testing.assert_allclose(out[i], augment.apply_color_jitter(videos[i], params[i]),
                               atol=2e-3)   # on the 0..255 scale
  np.testing.assert_allclose(out[5], videos[5], atol=1e-4)   # not applied: unchanged
  # The host's all-in-one `color_jitter` draws the same numbers as `draw_color_jitter`.
  np.testing.assert_allclose(augment.color_jitter(videos[0], 1.0, np.random.default_rng(0)),
                             out[0], atol=2e-3)


def test_random_erasing_fills_the_host_drawn_box_with_unit_noise():
  videos = augment.normalize(clips(b=8, t=2, h=32, w=32), (0.5,) * 3, (0.5,) * 3)
  draws = [augment.draw_erasing(1.0, 32, 32, np.random.default_rng(s)) for s in range(7)]
  draws.append(augment.draw_erasing(0.0, 32, 32, np.random.default_rng(0)))
  boxes = np.stack([box for box, _ in draws])
  seeds = np.array([seed for _, seed in draws], np.uint32)
  out = np.asarray(jax.jit(device_augment.erase)(videos, boxes, seeds))
  noise = []
  for i, (top, left, h, w) in enumerate(boxes.tolist()):
    inside = np.zeros((32, 32), bool)
    inside[top:top + h, left:left + w] = True
    np.testing.assert_array_equal(out[i][:, ~inside], videos[i][:, ~inside])
    assert np.all(out[i][:, inside] != videos[i][:, inside])
    np.testing.assert_array_equal(out[i][0, inside] != out[i][1, inside], True)  # fresh per frame
    noise.append(out[i][:, inside].ravel())
  assert boxes[7].tolist() == [0, 0, 0, 0]
  noise = np.concatenate(noise)
  assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1) < 0.05
  # The same box as the host's random_erasing draws from the same Generator state.
  reference = augment.random_erasing(videos[0], 1.0, np.random.default_rng(0))
  np.testing.assert_array_equal(reference != videos[0], out[0] != videos[0])


@pytest.mark.parametrize('mixup_alpha,cutmix_alpha', [(0.8, 0.0), (0.0, 1.0), (0.0, 0.0)])
@pytest.mark.parametrize('groups', [1, 2])
def test_mix_and_label_smoothing_match_the_host(mixup_alpha, cutmix_alpha, groups):
  videos = augment.normalize(clips(b=8, t=2, h=16, w=16), (0.5,) * 3, (0.5,) * 3)
  labels = np.array([0, 1, 2, 3, 4, 0, 1, 2], np.int32)
  for seed in range(3):
    params = mixup.draw_mix(8, 16, 16, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
                            rng=np.random.default_rng(seed))
    targets = mixup.smooth_one_hot(labels, 5, 0.1)
    expected = mixup.apply_mix(videos, targets, params, groups)
    device_targets = device_augment.smooth_one_hot(labels, 5, 0.1)
    np.testing.assert_allclose(np.asarray(device_targets), targets, rtol=1e-6)
    out = jax.jit(device_augment.mix, static_argnums=5)(
        videos, device_targets, params['mix_weight'], params['mix_box'], params['mix_lam'], groups)
    np.testing.assert_allclose(np.asarray(out[0]), expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out[1]), expected[1], rtol=1e-5, atol=1e-7)
  if groups == 1:   # the host's all-in-one mix_batch draws the same numbers as draw_mix
    host = mixup.mix_batch(videos, labels, 5, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
                           label_smoothing=0.1, rng=np.random.default_rng(2))
    np.testing.assert_allclose(np.asarray(out[0]), host[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out[1]), host[1], rtol=1e-5, atol=1e-7)


def test_partners_mirror_inside_each_group():
  assert mixup.partners(8, 1).tolist() == [7, 6, 5, 4, 3, 2, 1, 0]
  assert mixup.partners(8, 2).tolist() == [3, 2, 1, 0, 7, 6, 5, 4]


def test_train_batch_is_the_host_pipeline_end_to_end():
  """uint8 clips + host draws -> DeviceAugment.train == the all-host NumPy pipeline."""
  b, size = 4, 16
  videos = clips(b=b, t=2, h=size, w=size, seed=3)
  labels = np.array([0, 1, 2, 1], np.int32)
  rngs = [np.random.default_rng(10 + i) for i in range(b)]
  color = np.stack([augment.draw_color_jitter(0.8, r) for r in rngs])
  erasing = [augment.draw_erasing(0.5, size, size, r) for r in rngs]
  mix = mixup.draw_mix(b, size, size, mixup_alpha=0.4, cutmix_alpha=0.0,
                       rng=np.random.default_rng(0))
  batch = {'videos': videos, 'labels': labels, 'color': color,
           'erase_box': np.stack([box for box, _ in erasing]),
           'erase_seed': np.array([seed for _, seed in erasing], np.uint32), **mix}
  aug = device_augment.DeviceAugment(num_classes=3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4),
                                     label_smoothing=0.1, color_jitter=True, random_erasing=True,
                                     mixing=True)
  out = jax.jit(aug.train)(batch)
  device_noise = np.asarray(device_augment.erase(np.zeros((b, 2, size, size, 3), np.float32),
                                                 np.tile([0, 0, size, size], (b, 1)),
                                                 batch['erase_seed']))
  host = []
  for i in range(b):
    clip = augment.apply_color_jitter(videos[i].astype(np.float32), color[i])
    clip = augment.normalize(clip, aug.mean, aug.std)
    host.append(augment.erase_box(clip, batch['erase_box'][i], device_noise[i]))
  host_videos, host_targets = mixup.apply_mix(np.stack(host), mixup.smooth_one_hot(labels, 3, 0.1),
                                              mix)
  np.testing.assert_allclose(np.asarray(out['videos']), host_videos, atol=2e-4)
  np.testing.assert_allclose(np.asarray(out['targets']), host_targets, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(out['labels']), labels)
  plain = device_augment.DeviceAugment(num_classes=3)
  out = jax.jit(plain.train)({'videos': videos, 'labels': labels})
  np.testing.assert_allclose(np.asarray(out['videos']),
                             augment.normalize(videos, (0.5,) * 3, (0.5,) * 3), atol=1e-6)
  np.testing.assert_allclose(np.asarray(out['targets']), np.eye(3)[labels])
