"""Position-embedding interpolation (laps_jax/weights/posembed.py)."""
import numpy as np
import pytest

from laps_jax.weights.posembed import linear_resize_matrix, resize_grid, resize_pos_embed


def test_same_size_is_the_identity():
  pos = np.random.default_rng(0).normal(size=(1, 1 + 14 * 14, 8)).astype(np.float32)
  np.testing.assert_array_equal(resize_pos_embed(pos, (14, 14)), pos)
  np.testing.assert_array_equal(linear_resize_matrix(7, 7), np.eye(7))


@pytest.mark.parametrize('new_side', [24, 10])  # 224 -> 384 (14 -> 24) and a downsizing
def test_shape_cls_token_and_smoothness(new_side):
  side, channels = 14, 3
  h, w = np.meshgrid(np.linspace(0, 1, side), np.linspace(0, 1, side), indexing='ij')
  smooth = np.stack([np.sin(3 * h + w), np.cos(2 * w), h * w], axis=-1)  # (14, 14, 3), smooth
  pos = np.concatenate([np.full((1, 1, channels), 7.0), smooth.reshape(1, side * side, channels)], axis=1)
  out = resize_pos_embed(pos, (new_side, new_side))
  assert out.shape == (1, 1 + new_side * new_side, channels)
  np.testing.assert_array_equal(out[0, 0], 7.0)                     # the cls embedding is kept
  grid = out[0, 1:].reshape(new_side, new_side, channels)
  # Bilinear weights are convex: the values stay within the input's range ...
  assert grid.min() >= smooth.min() - 1e-12 and grid.max() <= smooth.max() + 1e-12
  # ... and neighbouring outputs, side/new_side input cells apart, differ no more than the piecewise
  # linear interpolant allows over that distance (no ringing, no jumps).
  max_step_in = max(np.abs(np.diff(smooth, axis=0)).max(), np.abs(np.diff(smooth, axis=1)).max())
  bound = max_step_in * max(1.0, side / new_side) + 1e-12
  assert np.abs(np.diff(grid, axis=0)).max() <= bound
  assert np.abs(np.diff(grid, axis=1)).max() <= bound


@pytest.mark.parametrize('size_in, size_out', [(4, 6), (14, 24), (24, 14), (7, 3)])
def test_equals_pytorch_bilinear(size_in, size_out):
  torch = pytest.importorskip('torch')
  grid = np.random.default_rng(1).normal(size=(size_in, size_in, 5))
  ours = resize_grid(grid, (size_out, size_out))
  theirs = torch.nn.functional.interpolate(torch.tensor(grid).permute(2, 0, 1)[None], size=(size_out, size_out),
                                           mode='bilinear', align_corners=False)[0].permute(1, 2, 0).numpy()
  np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_non_square_grid_is_refused():
  with pytest.raises(ValueError, match='square'):
    resize_pos_embed(np.zeros((1, 1 + 12, 4)), (4, 4))
