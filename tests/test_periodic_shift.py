"""Periodic Shift against a loop over batch, frames, tokens and heads with zero fill."""
import numpy as np
import pytest
import jax

from laps_jax.models.periodic_shift import periodic_shift


def periodic_shift_loop(o, shift_div):
  b, t, l, h, d = o.shape
  fold = d // shift_div
  out = o.copy()
  for bi in range(b):
    for ti in range(t):
      for hi in range(h):
        nxt = o[bi, ti + 1, :, hi, :fold] if ti + 1 < t else 0.0
        prv = o[bi, ti - 1, :, hi, fold:2 * fold] if ti - 1 >= 0 else 0.0
        out[bi, ti, :, hi, :fold] = nxt
        out[bi, ti, :, hi, fold:2 * fold] = prv
  return out


@pytest.mark.parametrize('shift_div', [4, 8, 2])
def test_periodic_shift_equals_loop(shift_div):
  o = np.asarray(jax.random.normal(jax.random.key(0), (2, 5, 3, 3, 8)))
  np.testing.assert_array_equal(np.asarray(periodic_shift(o, shift_div)), periodic_shift_loop(o, shift_div))


def test_shift_is_per_head_not_over_the_merged_width():
  """Head 1's first fold must move in time; a plain shift over C/4 of the merged width would leave it."""
  t, h, d = 4, 2, 8
  o = np.arange(t, dtype=np.float32)[None, :, None, None, None] * np.ones((1, t, 1, h, d), np.float32)
  out = np.asarray(periodic_shift(o, 4))
  np.testing.assert_array_equal(out[0, :, 0, 1, 0], [1, 2, 3, 0])   # head 1, fold 0: from t+1, zero at end
  np.testing.assert_array_equal(out[0, :, 0, 1, 2], [0, 0, 1, 2])   # head 1, fold 1: from t-1, zero at start
  np.testing.assert_array_equal(out[0, :, 0, 1, 4:], o[0, :, 0, 1, 4:])  # untouched channels


def test_shift_div_zero_is_identity():
  o = np.ones((1, 3, 2, 2, 4), np.float32)
  assert periodic_shift(o, 0) is o
