"""Resizing a ViT's 2D position embedding to another token grid (another resolution or patch grid).

The prefix tokens (the cls token) keep their embedding; the grid part (1, H·W, C) is viewed as an
H×W image with C channels and resized bilinearly. The interpolation is exactly PyTorch's
`F.interpolate(mode='bilinear', align_corners=False)` without antialiasing (the rule of the timm
version the LAPS code ships): output pixel i samples the input at (i + 0.5)·H/H' − 0.5, clamped at
0, between its two neighbours. Same size in, same array out.
"""
import math

import numpy as np


def linear_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
  """(size_out, size_in) matrix A with A @ x = linear resize of x along one axis (half-pixel
  centres, edge clamp, no antialiasing). The identity when size_in == size_out."""
  scale = size_in / size_out
  src = np.maximum((np.arange(size_out) + 0.5) * scale - 0.5, 0.0)
  lower = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
  upper = np.minimum(lower + 1, size_in - 1)
  frac = src - lower
  matrix = np.zeros((size_out, size_in), np.float64)
  rows = np.arange(size_out)
  np.add.at(matrix, (rows, lower), 1.0 - frac)
  np.add.at(matrix, (rows, upper), frac)
  return matrix


def resize_grid(grid: np.ndarray, new_size: tuple[int, int]) -> np.ndarray:
  """grid (H, W, C) -> (H', W', C), bilinear, in float64 then back to grid's dtype."""
  h, w, _ = grid.shape
  rows = linear_resize_matrix(h, new_size[0])
  cols = linear_resize_matrix(w, new_size[1])
  out = np.einsum('ah,bw,hwc->abc', rows, cols, grid.astype(np.float64))
  return out.astype(grid.dtype)


def grid_side(num_tokens: int) -> int:
  """The side of a square grid of `num_tokens`; ValueError if it is not square."""
  side = math.isqrt(num_tokens)
  if side * side != num_tokens:
    raise ValueError(f'{num_tokens} position-embedding tokens do not form a square grid')
  return side


def resize_pos_embed(pos_embed: np.ndarray, new_grid: tuple[int, int], num_prefix_tokens: int = 1) -> np.ndarray:
  """pos_embed (1, P + H·W, C) from a square H×W grid -> (1, P + H'·W', C) for `new_grid` (H', W').

  P = num_prefix_tokens (1: the cls token) keep their embedding. Grids are row-major (h, w).
  """
  if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
    raise ValueError(f'expected a position embedding of shape (1, tokens, C), got {pos_embed.shape}')
  prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[0, num_prefix_tokens:]
  side = grid_side(grid.shape[0])
  if (side, side) == tuple(new_grid):
    return pos_embed
  resized = resize_grid(grid.reshape(side, side, -1), new_grid)
  return np.concatenate([prefix, resized.reshape(1, new_grid[0] * new_grid[1], -1)], axis=1)
