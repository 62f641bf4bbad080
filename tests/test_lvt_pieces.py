"""LVT's shifts, linear attention and feature fixation against loops and explicit formulas."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp
from flax import nnx

from laps_jax.models.feature_fixation import FeatureFixation
from laps_jax.models.linear_attention import kernel_feature_map, linear_attention
from laps_jax.models.neighbourhood_shift import spatial_shift, temporal_shift


def temporal_shift_loop(x, div, segment):
  b, t, n, c = x.shape
  fold = c // div
  out = x.copy()
  for ti in range(t):
    seg_start = (ti // segment) * segment
    nxt, prv = ti + 1, ti - 1
    out[:, ti, :, :fold] = x[:, nxt, :, :fold] if nxt < seg_start + segment else 0.0
    out[:, ti, :, fold:2 * fold] = x[:, prv, :, fold:2 * fold] if prv >= seg_start else 0.0
  return out


@pytest.mark.parametrize('div,segment', [(8, 6), (4, 6), (8, 3), (8, 2)])
def test_temporal_shift_equals_loop_with_segments(div, segment):
  x = np.asarray(jax.random.normal(jax.random.key(1), (2, 6, 3, 16)))
  np.testing.assert_array_equal(np.asarray(temporal_shift(x, div, segment)), temporal_shift_loop(x, div, segment))


def test_temporal_shift_segment_must_divide_clip():
  with pytest.raises(ValueError, match='shift_segment_frames=4 does not divide'):
    temporal_shift(np.zeros((1, 6, 2, 8), np.float32), 8, 4)


def spatial_shift_loop(x, hg, wg):
  """Written from the official code's description: axis folds zero-filled, diagonal folds keep own."""
  b, t, n, c = x.shape
  fold = c // 16
  grid = x.reshape(b, t, hg, wg, c)
  out = grid.copy()
  neighbours = [(1, 0), (-1, 0), (0, 1), (0, -1), (-1, -1), (1, 1), (-1, 1), (1, -1)]
  for f, (dh, dw) in enumerate(neighbours):
    ch = slice(f * fold, (f + 1) * fold)
    for i in range(hg):
      for j in range(wg):
        si, sj = i + dh, j + dw
        if 0 <= si < hg and 0 <= sj < wg:
          out[:, :, i, j, ch] = grid[:, :, si, sj, ch]
        elif f < 4:
          out[:, :, i, j, ch] = 0.0
        # diagonal folds (f >= 4): keep the token's own value at the border
  return out.reshape(b, t, n, c)


@pytest.mark.parametrize('hg,wg,c', [(4, 4, 32), (3, 5, 48), (2, 2, 16)])
def test_spatial_shift_equals_loop_with_border_quirk(hg, wg, c):
  x = np.asarray(jax.random.normal(jax.random.key(2), (2, 2, hg * wg, c)))
  got = np.asarray(spatial_shift(x, (hg, wg)))
  np.testing.assert_array_equal(got, spatial_shift_loop(x, hg, wg))
  fold = c // 16
  grid, out = x.reshape(2, 2, hg, wg, c), got.reshape(2, 2, hg, wg, c)
  assert np.all(out[:, :, hg - 1, :, :fold] == 0)                      # (h+1, w) past the bottom: zero
  np.testing.assert_array_equal(out[:, :, 0, 0, 4 * fold:5 * fold], grid[:, :, 0, 0, 4 * fold:5 * fold])  # diagonal keeps own


def test_kernel_feature_map():
  x = jnp.array([[-1.0, 0.0, 2.0, -3.0]])
  np.testing.assert_allclose(kernel_feature_map(x), [[0.5, 0.5, 2.5, 0.5]])


def test_linear_attention_equals_quadratic_form():
  b, l, h, d = 2, 7, 3, 4
  qf, kf = (kernel_feature_map(jax.random.normal(jax.random.key(i), (b, l, h, d))) for i in (3, 4))
  v = jax.random.normal(jax.random.key(5), (b, l, h, d))
  got = np.asarray(linear_attention(qf, kf, v))
  want = np.zeros((b, l, h, d))
  for bi in range(b):
    for hi in range(h):
      scores = np.asarray(qf[bi, :, hi]) @ np.asarray(kf[bi, :, hi]).T      # φ(Q)φ(K)ᵀ, (L, L)
      want[bi, :, hi] = scores @ np.asarray(v[bi, :, hi]) / (scores.sum(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('shared', [False, True])
def test_feature_fixation_equals_explicit_gate(shared):
  b, l, h, d = 2, 3, 2, 4
  fix = FeatureFixation(d, shared_gate=shared, dtype=jnp.float32, rngs=nnx.Rngs(0))
  qf, kf = (kernel_feature_map(jax.random.normal(jax.random.key(i), (b, l, h, d))) for i in (6, 7))
  v = jax.random.normal(jax.random.key(8), (b, l, h, d))
  q_hat, k_hat = fix(qf, kf, v)
  gates = [fix.pgate, fix.pgate] if shared else [fix.q_gate, fix.k_gate]
  sig = lambda z: 1 / (1 + np.exp(-z))
  for bi in range(b):
    for li in range(l):
      for hi in range(h):
        inp = np.concatenate([qf[bi, li, hi], kf[bi, li, hi], v[bi, li, hi]])   # (3d,)
        r = [sig(inp @ np.asarray(g.linear.kernel[...]) + np.asarray(g.linear.bias[...])) for g in gates]
        np.testing.assert_allclose(q_hat[bi, li, hi], r[0] * np.asarray(qf[bi, li, hi]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(k_hat[bi, li, hi], r[1] * np.asarray(kf[bi, li, hi]), rtol=1e-5, atol=1e-6)
  if shared:
    assert not hasattr(fix, 'q_gate')
