"""Multi-head softmax attention pieces shared by the ViT family.

The q/k/v projection keeps an explicit head axis, kernel (C, 3, H, d): q, k, v are the first,
second and third C channels of a PyTorch `qkv` Linear (C -> 3C) and head h is channels h·d …
(h+1)·d of each, so converting a PyTorch weight is one reshape. The output projection kernel is
(H, d, C): heads merge head-major (channel h·d + e), as in the official code. Every attention
problem goes through `jax.nn.dot_product_attention`, so XLA or cuDNN's fused kernel runs it.
"""
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from laps_jax.models.layers import sharded_param, trunc_normal_02, zeros

ATTENTION_IMPLS = ('xla', 'cudnn', 'auto')


def attend(q: jax.Array, k: jax.Array, v: jax.Array, *, implementation: str = 'xla') -> jax.Array:
  """Softmax attention, scale d**-0.5, no mask. q, k, v: (batch, length, H, d) -> (batch, length, H, d).

  `implementation`: 'xla' (everywhere), 'cudnn' (fused flash attention on NVIDIA GPUs, bf16/fp16),
  'auto' (let JAX choose).
  """
  if implementation not in ATTENTION_IMPLS:
    raise ValueError(f'attention_impl must be one of {ATTENTION_IMPLS}, got {implementation!r}')
  impl = None if implementation == 'auto' else implementation
  return jax.nn.dot_product_attention(q, k, v, implementation=impl)


def make_attend(implementation: str):
  """`attend` with its implementation fixed, for functions that take an `attend` callable."""
  if implementation not in ATTENTION_IMPLS:
    raise ValueError(f'attention_impl must be one of {ATTENTION_IMPLS}, got {implementation!r}')
  return functools.partial(attend, implementation=implementation)


class QKVProjection(nnx.Module):
  """x (..., C) -> q, k, v each (..., H, d). kernel (C, 3, H, d), bias (3, H, d)."""

  def __init__(self, hidden_size: int, num_heads: int, *, dtype, rngs: nnx.Rngs):
    if hidden_size % num_heads:
      raise ValueError(f'hidden_size {hidden_size} is not divisible by num_heads {num_heads}')
    head_dim = hidden_size // num_heads
    self.dtype = dtype
    self.kernel = sharded_param(rngs, trunc_normal_02, (hidden_size, 3, num_heads, head_dim),
                                ('embed', None, 'heads', 'kv'))
    self.bias = sharded_param(rngs, zeros, (3, num_heads, head_dim), (None, 'heads', 'kv'))

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    qkv = jnp.einsum('...c,cshd->...shd', x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    qkv = qkv + self.bias[...].astype(self.dtype)
    return qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]


class HeadsOutProjection(nnx.Module):
  """o (..., H, d) -> (..., C), heads merged head-major. kernel (H, d, C), bias (C,)."""

  def __init__(self, num_heads: int, head_dim: int, hidden_size: int, *, dtype, rngs: nnx.Rngs,
               kernel_init=trunc_normal_02):
    self.dtype = dtype
    self.kernel = sharded_param(rngs, kernel_init, (num_heads, head_dim, hidden_size),
                                ('heads', 'kv', 'embed'))
    self.bias = sharded_param(rngs, zeros, (hidden_size,), ('embed',))

  def __call__(self, o: jax.Array) -> jax.Array:
    y = jnp.einsum('...hd,hdc->...c', o.astype(self.dtype), self.kernel[...].astype(self.dtype))
    return y + self.bias[...].astype(self.dtype)
