"""Leap Attention (LAPS, Zhang et al. 2022): attention within pairs of frames a fixed leap apart.

At level l the leap step is s = T // 2**l. The frame axis is viewed as (T // (2s), 2, s): the
size-2 axis is the pair, so frame i pairs with frame i + s inside each block of 2s frames.
For T = 8: l=1 pairs (0,4)(1,5)(2,6)(3,7); l=2 (0,2)(1,3)(4,6)(5,7); l=3 (0,1)(2,3)(4,5)(6,7).
Each pair attends over its 2N tokens as one ordinary attention problem, so the cost is 2·T·N²
instead of T·N² (per frame) or T²·N² (joint).
"""
import jax
import jax.numpy as jnp


def leap_step(num_frames: int, level: int) -> int:
  """The leap step s = T // 2**level; raises ValueError unless 2**level divides T and level >= 1."""
  if not isinstance(level, int) or level < 1:
    raise ValueError(f'leap level must be an integer >= 1 (or None for per-frame attention), got {level!r}')
  if num_frames % (2 ** level):
    raise ValueError(f'leap level {level} needs the number of frames to be divisible by '
                     f'2**{level} = {2 ** level}, but num_frames = {num_frames}')
  return num_frames // (2 ** level)


def leap_pairs(num_frames: int, level: int) -> list[tuple[int, int]]:
  """The frame pairs (i, i + s) that attend together at `level`, in the order they are grouped."""
  s = leap_step(num_frames, level)
  frames = jnp.arange(num_frames).reshape(num_frames // (2 * s), 2, s).transpose(0, 2, 1)
  return [(int(a), int(b)) for a, b in frames.reshape(-1, 2)]


def group_leap_pairs(x: jax.Array, level: int) -> jax.Array:
  """(B, T, L, ...) -> (B * T // 2, 2 * L, ...): one row per leap pair, the two frames' tokens
  concatenated (first frame of the pair first)."""
  b, t, l = x.shape[:3]
  rest = x.shape[3:]
  s = leap_step(t, level)
  x = x.reshape(b, t // (2 * s), 2, s, l, *rest)
  x = jnp.moveaxis(x, 2, 3)  # (B, T/2s, s, 2, L, ...)
  return x.reshape(b * (t // 2), 2 * l, *rest)


def ungroup_leap_pairs(y: jax.Array, num_frames: int, level: int) -> jax.Array:
  """Inverse of `group_leap_pairs`: (B * T // 2, 2 * L, ...) -> (B, T, L, ...)."""
  t = num_frames
  s = leap_step(t, level)
  l = y.shape[1] // 2
  rest = y.shape[2:]
  y = y.reshape(-1, t // (2 * s), s, 2, l, *rest)
  y = jnp.moveaxis(y, 3, 2)  # (B, T/2s, 2, s, L, ...)
  return y.reshape(-1, t, l, *rest)


def leap_attention(q: jax.Array, k: jax.Array, v: jax.Array, level: int, attend) -> jax.Array:
  """Attention inside leap pairs.

  Args:
    q, k, v: (B, T, L, H, d) per-frame queries, keys and values (L tokens per frame).
    level: the leap level (>= 1).
    attend: softmax attention on (batch, length, H, d) problems, e.g. `softmax_attention.attend`.
  Returns:
    (B, T, L, H, d): each frame's output from attending over its own and its partner's tokens.
  """
  t = q.shape[1]
  out = attend(group_leap_pairs(q, level), group_leap_pairs(k, level), group_leap_pairs(v, level))
  return ungroup_leap_pairs(out, t, level)
