"""PyTorch weight layouts -> this project's layouts (pure NumPy functions, one per kind).

  nn.Linear weight (out, in)                      -> kernel (in, out)                 `linear_kernel`
  nn.Conv2d weight (out, in, kh, kw)              -> HWIO (kh, kw, in, out)           `conv_kernel`
    (the depthwise conv (M, 1, 3, 3) -> (3, 3, 1, M) is the same rule)
  fused qkv Linear weight (3C, C)                 -> (C, 3, H, d)                     `qkv_kernel`
    (.T gives (C, 3C); the 3C outputs read as (3, H, d): q, k, v, then head-major channels)
  fused qkv bias (3C,)                            -> (3, H, d)                        `qkv_bias`
  output projection weight (C, C) (in = H·d head-major) -> (H, d, C)                  `heads_out_kernel`
"""
import numpy as np


def linear_kernel(weight: np.ndarray) -> np.ndarray:
  if weight.ndim != 2:
    raise ValueError(f'a Linear weight is 2-D, got shape {weight.shape}')
  return weight.T


def conv_kernel(weight: np.ndarray) -> np.ndarray:
  if weight.ndim != 4:
    raise ValueError(f'a Conv2d weight is 4-D, got shape {weight.shape}')
  return weight.transpose(2, 3, 1, 0)


def qkv_kernel(num_heads: int):
  def transform(weight: np.ndarray) -> np.ndarray:
    three_c, c = weight.shape
    if three_c != 3 * c or c % num_heads:
      raise ValueError(f'a fused qkv weight (3C, C) with C divisible by num_heads={num_heads}, '
                       f'got {weight.shape}')
    return weight.T.reshape(c, 3, num_heads, c // num_heads)
  return transform


def qkv_bias(num_heads: int):
  def transform(bias: np.ndarray) -> np.ndarray:
    if bias.ndim != 1 or bias.shape[0] % (3 * num_heads):
      raise ValueError(f'a fused qkv bias (3C,) with C divisible by num_heads={num_heads}, got {bias.shape}')
    return bias.reshape(3, num_heads, -1)
  return transform


def heads_out_kernel(num_heads: int):
  def transform(weight: np.ndarray) -> np.ndarray:
    c_out, c_in = weight.shape
    if c_in % num_heads:
      raise ValueError(f'an output projection (C, C) with C divisible by num_heads={num_heads}, '
                       f'got {weight.shape}')
    return weight.T.reshape(num_heads, c_in // num_heads, c_out)
  return transform
