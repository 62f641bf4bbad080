"""LVT's neighbourhood association: shifts of k and v (never q) before linear attention.

Both shifts count channels over the concatenated heads (index head·d + e), not per head.
  - `temporal_shift` (spatial pass): channels [0, C/div) from frame t+1, [C/div, 2C/div) from frame
    t-1, zero at the clip ends; optionally inside segments of `segment_frames` frames (the official
    Kinetics configs' quirk: zero fill at every segment boundary too).
  - `spatial_shift` (temporal pass): fold = C // 16 channels per direction, the eight folds in order
    take (h+1,w), (h-1,w), (h,w+1), (h,w-1), (h-1,w-1), (h+1,w+1), (h-1,w+1), (h+1,w-1); channels
    >= 8·fold stay. Border quirk of the official code, kept on purpose: where the neighbour falls
    outside the grid, the four axis-aligned folds read zero but the four diagonal folds keep the
    token's own value (the official code copies every channel from 4·fold on before it overwrites
    the diagonal folds' interior).
"""
import jax
import jax.numpy as jnp


def temporal_shift(x: jax.Array, div: int, segment_frames: int | None = None) -> jax.Array:
  """x (B, T, N, C) -> (B, T, N, C), shifted along T in two folds of C // div channels."""
  if div == 0:
    return x
  b, t, n, c = x.shape
  segment_frames = segment_frames or t
  if t % segment_frames:
    raise ValueError(f'shift_segment_frames={segment_frames} does not divide the {t} frames of the clip')
  fold = c // div
  x = x.reshape(b * (t // segment_frames), segment_frames, n, c)
  zero = jnp.zeros_like(x[:, :1, :, :fold])
  from_next = jnp.concatenate([x[:, 1:, :, :fold], zero], axis=1)
  from_prev = jnp.concatenate([zero, x[:, :-1, :, fold:2 * fold]], axis=1)
  out = jnp.concatenate([from_next, from_prev, x[..., 2 * fold:]], axis=-1)
  return out.reshape(b, t, n, c)


def _take_neighbour(grid: jax.Array, dh: int, dw: int, border_fill: jax.Array | None) -> jax.Array:
  """out[h, w] = grid[h + dh, w + dw] on a (..., Hg, Wg, c) grid; outside the grid: zero, or the
  matching entries of `border_fill` when given."""
  hg, wg = grid.shape[-3:-1]
  padded = jnp.pad(grid, [(0, 0)] * (grid.ndim - 3) + [(1, 1), (1, 1), (0, 0)])
  shifted = padded[..., 1 + dh:1 + dh + hg, 1 + dw:1 + dw + wg, :]
  if border_fill is None:
    return shifted
  rows = jnp.arange(hg) + dh
  cols = jnp.arange(wg) + dw
  inside = ((rows >= 0) & (rows < hg))[:, None] & ((cols >= 0) & (cols < wg))[None, :]
  return jnp.where(inside[:, :, None], shifted, border_fill)


# (dh, dw, keeps own value at the border) for the eight folds, in the official order.
SPATIAL_SHIFT_FOLDS = (
    (1, 0, False), (-1, 0, False), (0, 1, False), (0, -1, False),
    (-1, -1, True), (1, 1, True), (-1, 1, True), (1, -1, True),
)


def spatial_shift(x: jax.Array, grid_size: tuple[int, int]) -> jax.Array:
  """x (B, T, N, C) with N = Hg·Wg tokens in row-major order -> (B, T, N, C), 8-neighbour shift."""
  b, t, n, c = x.shape
  hg, wg = grid_size
  if hg * wg != n:
    raise ValueError(f'spatial shift: a {hg}x{wg} grid does not hold {n} tokens')
  fold = c // 16
  grid = x.reshape(b, t, hg, wg, c)
  pieces = []
  for i, (dh, dw, keeps_own) in enumerate(SPATIAL_SHIFT_FOLDS):
    channels = grid[..., i * fold:(i + 1) * fold]
    pieces.append(_take_neighbour(channels, dh, dw, channels if keeps_own else None))
  pieces.append(grid[..., 8 * fold:])
  return jnp.concatenate(pieces, axis=-1).reshape(b, t, n, c)
