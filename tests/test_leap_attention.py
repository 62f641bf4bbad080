"""Leap pairs, the leap reshape and leap attention against independently written rules and loops."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp
from flax import nnx

from laps_jax import models
from laps_jax.models.leap_attention import (group_leap_pairs, leap_attention, leap_pairs, leap_step,
                                            ungroup_leap_pairs)
from laps_jax.models.softmax_attention import attend
from model_configs import tiny_vit


def expected_pairs(num_frames, level):
  """The rule from the paper, written independently: blocks of 2s frames, frame i with i + s."""
  s = num_frames // 2 ** level
  pairs = []
  for start in range(0, num_frames, 2 * s):
    for i in range(start, start + s):
      pairs.append((i, i + s))
  return pairs


@pytest.mark.parametrize('num_frames', [4, 8, 16, 32])
def test_leap_pairs_match_rule_for_every_valid_level(num_frames):
  levels = [l for l in range(1, 6) if num_frames % 2 ** l == 0]
  assert levels[-1] == int(np.log2(num_frames))
  for level in levels:
    pairs = leap_pairs(num_frames, level)
    assert pairs == expected_pairs(num_frames, level)
    # every frame appears exactly once, and partners are s apart
    assert sorted(i for p in pairs for i in p) == list(range(num_frames))
    assert all(b - a == num_frames // 2 ** level for a, b in pairs)


def test_leap_pairs_for_eight_frames_as_in_the_paper():
  assert leap_pairs(8, 1) == [(0, 4), (1, 5), (2, 6), (3, 7)]
  assert leap_pairs(8, 2) == [(0, 2), (1, 3), (4, 6), (5, 7)]
  assert leap_pairs(8, 3) == [(0, 1), (2, 3), (4, 5), (6, 7)]


@pytest.mark.parametrize('num_frames,level', [(8, 4), (6, 2), (12, 3), (4, 0)])
def test_invalid_level_is_a_clear_error(num_frames, level):
  with pytest.raises(ValueError, match='leap level'):
    leap_step(num_frames, level)


def test_invalid_level_fails_at_model_construction():
  with pytest.raises(ValueError, match=r'leap level 3 needs the number of frames to be divisible by 2\*\*3'):
    models.build(tiny_vit('laps', num_frames=4, leap_levels=(1, 3)), nnx.Rngs(0))


def test_group_leap_pairs_puts_partner_frames_in_one_row_and_inverts():
  b, t, l = 2, 8, 3
  frame_id = jnp.broadcast_to(jnp.arange(t)[None, :, None], (b, t, l))
  for level in (1, 2, 3):
    grouped = group_leap_pairs(frame_id, level)
    assert grouped.shape == (b * t // 2, 2 * l)
    rows = [(int(r[0]), int(r[l])) for r in grouped[: t // 2]]
    assert rows == leap_pairs(t, level)
    assert bool(jnp.all(grouped[:, :l] == grouped[:, :1])) and bool(jnp.all(grouped[:, l:] == grouped[:, l:l + 1]))
    x = jax.random.normal(jax.random.key(level), (b, t, l, 2, 5))
    np.testing.assert_array_equal(ungroup_leap_pairs(group_leap_pairs(x, level), t, level), x)


def softmax_attention_loop(q, k, v):
  """Plain NumPy attention of one sequence, per head. q, k, v: (L, H, d)."""
  out = np.zeros_like(q)
  for h in range(q.shape[1]):
    logits = q[:, h] @ k[:, h].T / np.sqrt(q.shape[-1])
    w = np.exp(logits - logits.max(-1, keepdims=True))
    out[:, h] = (w / w.sum(-1, keepdims=True)) @ v[:, h]
  return out


@pytest.mark.parametrize('level', [1, 2, 3])
def test_leap_attention_equals_per_pair_loop(level):
  b, t, l, h, d = 2, 8, 5, 2, 4
  q, k, v = (np.asarray(jax.random.normal(jax.random.key(i), (b, t, l, h, d))) for i in range(3))
  got = np.asarray(leap_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), level, attend))
  want = np.zeros_like(q)
  for bi in range(b):
    for i, j in expected_pairs(t, level):
      cat = lambda z: np.concatenate([z[bi, i], z[bi, j]], axis=0)  # (2L, H, d)
      o = softmax_attention_loop(cat(q), cat(k), cat(v))
      want[bi, i], want[bi, j] = o[:l], o[l:]
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
