"""Multi-head softmax attention pieces shared by the ViT family.

The q/k/v projection keeps an explicit head axis, kernel (C, 3, H, d): q, k, v are the first,
second and third C channels of a PyTorch `qkv` Linear (C -> 3C) and head h is channels h·d …
(h+1)·d of each, so converting a PyTorch weight is one reshape. The output projection kernel is
(H, d, C): heads merge head-major (channel h·d + e), as in the official code. Every attention
problem goes through `attend`: cuDNN's fused kernel (`jax.nn.dot_product_attention`) or the
written-out XLA attention (`xla_attention`); `model.attention_impl='auto'` picks cuDNN's wherever
its conditions hold (`choose_implementation`).
"""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from absl import logging
from flax import nnx

from laps_jax.models.layers import (at_use, constrain, constrain_batch, is_split, matmul, sharded_param,
                                    trunc_normal_02, zeros)

ATTENTION_IMPLS = ('xla', 'cudnn', 'auto')
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)  # cuDNN's fused (flash) attention: half precision only

_logged_choices: set[tuple] = set()  # (pattern, choice, shapes): each logged once per process


@dataclasses.dataclass(frozen=True)
class Accelerator:
  """What the attention choice depends on: 'cpu' | 'cuda' (NVIDIA) | 'rocm' | 'tpu' | ..., and the
  CUDA compute capability (major, minor) when `platform == 'cuda'`."""
  platform: str
  compute_capability: tuple[int, int] | None = None


def current_accelerator() -> Accelerator:
  """The accelerator jit traces for (the default backend's first device)."""
  device = jax.devices()[0]
  if device.platform != 'gpu':
    return Accelerator(device.platform)
  if 'rocm' in device.client.platform_version.lower():
    return Accelerator('rocm')
  capability = getattr(device, 'compute_capability', None)
  major_minor = tuple(int(x) for x in str(capability).split('.')[:2]) if capability else None
  return Accelerator('cuda', major_minor)


def cudnn_unsupported_reason(accelerator: Accelerator, dtype, head_dim: int, q_len: int,
                             kv_len: int) -> str | None:
  """Why cuDNN's fused attention cannot run this problem (None: it can).

  The conditions of `jax.nn.dot_product_attention(implementation='cudnn')` in jax 0.10 for
  attention without bias or mask: an NVIDIA GPU, bfloat16 / float16, head dim a multiple of 8 and
  at most 128 (256 from Hopper, compute capability 9.0, on), any sequence lengths >= 1.
  """
  if accelerator.platform != 'cuda':
    return f'not an NVIDIA GPU (platform {accelerator.platform!r})'
  if jnp.dtype(dtype) not in [jnp.dtype(d) for d in CUDNN_DTYPES]:
    return f'dtype {jnp.dtype(dtype).name} (cuDNN needs bfloat16 or float16: set model.dtype)'
  max_head_dim = 256 if (accelerator.compute_capability or (0, 0)) >= (9, 0) else 128
  if head_dim % 8 or head_dim > max_head_dim:
    return f'head dim {head_dim} (cuDNN needs a multiple of 8, at most {max_head_dim})'
  if q_len < 1 or kv_len < 1:
    return f'empty sequence (lengths {q_len}, {kv_len})'
  return None


def choose_implementation(requested: str, accelerator: Accelerator, dtype, head_dim: int,
                          q_len: int, kv_len: int) -> str:
  """'xla' or 'cudnn' for one attention problem, from `model.attention_impl` = `requested`.

  'auto': cuDNN's fused kernel wherever it can run (see `cudnn_unsupported_reason`), XLA elsewhere.
  'cudnn': cuDNN or a ValueError that says why and names the config key. 'xla': XLA.
  """
  if requested not in ATTENTION_IMPLS:
    raise ValueError(f'model.attention_impl must be one of {ATTENTION_IMPLS}, got {requested!r}')
  if requested == 'xla':
    return 'xla'
  reason = cudnn_unsupported_reason(accelerator, dtype, head_dim, q_len, kv_len)
  if requested == 'cudnn' and reason:
    raise ValueError(f"model.attention_impl='cudnn' cannot run here: {reason}. Use "
                     "model.attention_impl='auto' (cuDNN where it can run, XLA elsewhere) or 'xla'.")
  return 'xla' if reason else 'cudnn'


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float) -> jax.Array:
  """softmax(q·kᵀ · scale) · v written out, logits and softmax in float32. (b, len, H, d) -> same.

  The same function as `jax.nn.dot_product_attention(implementation='xla')`, with its backward
  written out (`_attention_fwd` / `_attention_bwd`): the heads move in front (b, H, len, d), so every
  product is a plain batched matmul, and the gradient is the textbook one,
  dS = P ∘ (dP − rowsum(dP ∘ P)), from the saved probabilities. Autodiff of the forward instead
  differentiates the softmax's division (an extra pass over the (len, len) logits) and, on XLA:CPU,
  materialises a broadcast of the scale into the logits fusion; this form runs forward + backward
  ~1.2× faster on one core, at PyTorch's speed (experiments/xla_cpu_repro.py). When nothing
  differentiates it, the forward normalises the output instead of the probabilities
  (`_attention_primal`).
  """
  return _attention(q, k, v, float(scale))


def _scale_is_exact(scale: float) -> bool:
  """Multiplying by a power of two is exact: q · scale then equals scaling the logits bit for bit."""
  return math.frexp(scale)[0] == 0.5


def _heads_first_logits(q, k, v, scale):
  """q, k, v (b, len, H, d) -> (b, H, len, d) each, and the float32 logits (b, H, q, k)."""
  qh, kh, vh = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
  if _scale_is_exact(scale):  # scale the (len, d) queries, not the (len, len) logits
    logits = jnp.einsum('bhqd,bhkd->bhqk', qh * jnp.asarray(scale, qh.dtype), kh,
                        preferred_element_type=jnp.float32)
  else:
    logits = jnp.einsum('bhqd,bhkd->bhqk', qh, kh, preferred_element_type=jnp.float32) * scale
  return qh, kh, vh, logits


def _attention_primal(q, k, v, scale):
  """The forward when nothing differentiates it (evaluation, inference): the softmax's division
  moves behind the second product, onto the (q, d) output instead of the (q, k) matrix, one pass
  fewer over the largest array (forward −15 % on one core; equal within float32 rounding)."""
  _, _, vh, logits = _heads_first_logits(q, k, v, scale)
  unnormalised = jnp.exp(logits - logits.max(axis=-1, keepdims=True))
  inverse_sum = 1.0 / unnormalised.sum(axis=-1, keepdims=True)  # (b, H, q, 1)
  out = jnp.matmul(unnormalised.astype(v.dtype), vh) * inverse_sum.astype(v.dtype)
  return out.transpose(0, 2, 1, 3)


def _attention_fwd(q, k, v, scale):
  """The forward under differentiation: keeps the normalised probabilities for the backward."""
  qh, kh, vh, logits = _heads_first_logits(q, k, v, scale)
  probs = jax.nn.softmax(logits, axis=-1)  # (b, H, q, k) float32
  out = jnp.einsum('bhqk,bhkd->bhqd', probs.astype(v.dtype), vh)
  return out.transpose(0, 2, 1, 3), (qh, kh, vh, probs)


def _attention_bwd(scale, residuals, g):
  qh, kh, vh, probs = residuals
  gh = g.transpose(0, 2, 1, 3)  # (b, H, q, d)
  # dv and dk contract over the queries. As (d, q) × (q, k) products on small transposed copies of
  # the (q, d) operands they are plain GEMMs; contracting the (q, k) matrix over its rows instead
  # ran 1.3–1.65× slower on XLA:CPU at 394–1576 tokens (experiments/xla_cpu_repro.py).
  dv_t = jnp.matmul(jnp.swapaxes(gh, 2, 3), probs.astype(gh.dtype))  # (b, H, d, k)
  dprobs = jnp.einsum('bhqd,bhkd->bhqk', gh, vh, preferred_element_type=jnp.float32)
  dlogits = probs * (dprobs - jnp.sum(dprobs * probs, axis=-1, keepdims=True))
  dlogits = (dlogits * scale).astype(qh.dtype)  # through the scale: d(q·kᵀ·scale)
  dq = jnp.einsum('bhqk,bhkd->bhqd', dlogits, kh)
  dk_t = jnp.matmul(jnp.swapaxes(qh, 2, 3), dlogits)  # (b, H, d, k)
  back = lambda z: z.transpose(0, 2, 1, 3)  # (b, H, len, d) -> (b, len, H, d)
  back_t = lambda z: z.transpose(0, 3, 1, 2)  # (b, H, d, len) -> (b, len, H, d)
  return back(dq), back_t(dk_t), back_t(dv_t)


_attention = jax.custom_vjp(_attention_primal, nondiff_argnums=(3,))
_attention.defvjp(_attention_fwd, _attention_bwd)


def _dot_product_attention(q, k, v, *, implementation: str, scale: float | None) -> jax.Array:
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  if implementation == 'xla':
    return xla_attention(q, k, v, scale)
  return jax.nn.dot_product_attention(q, k, v, scale=scale, implementation=implementation)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, *, implementation: str = 'xla',
           pattern: str = 'attention', scale: float | None = None) -> jax.Array:
  """Softmax attention, no mask. q, k, v: (batch, length, H, d) -> (batch, length, H, d).

  `implementation` is `model.attention_impl`: 'xla' (everywhere), 'cudnn' (fused flash attention
  on NVIDIA GPUs, bf16/fp16), 'auto' (cuDNN wherever its conditions hold, else XLA). The choice is
  made here, at trace time, from the platform, dtype and shapes, and logged once per `pattern`
  (the caller's name for the token pattern: 'frame', 'leap', 'joint', 'temporal').
  `scale`: the logit scale, d**-0.5 when None.
  """
  choice = choose_implementation(implementation, current_accelerator(), q.dtype, q.shape[-1],
                                 q.shape[1], k.shape[1])
  key = (pattern, implementation, choice, q.shape, k.shape, jnp.dtype(q.dtype).name)
  if key not in _logged_choices:
    _logged_choices.add(key)
    logging.info('attention %s: model.attention_impl=%r -> %s (q %s, kv %s, %s)', pattern,
                 implementation, choice, q.shape, k.shape, jnp.dtype(q.dtype).name)
  pin = lambda z: constrain(z, ('batch', None, 'heads', None))  # batch over data×fsdp, heads over tensor
  return pin(_dot_product_attention(pin(q), pin(k), pin(v), implementation=choice, scale=scale))


def make_attend(implementation: str, pattern: str = 'attention'):
  """`attend` with its implementation and pattern name fixed, for functions that take an
  `attend` callable."""
  if implementation not in ATTENTION_IMPLS:
    raise ValueError(f'model.attention_impl must be one of {ATTENTION_IMPLS}, got {implementation!r}')
  return functools.partial(attend, implementation=implementation, pattern=pattern)


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
    kernel = at_use(self.kernel, self.dtype)  # (C, 3, H, d)
    # tokens flattened to one axis: the kernel's gradient then contracts over a single axis and
    # XLA:CPU needs no transposed copy of the activations (experiments/xla_cpu_repro.py)
    tokens = x.reshape(-1, x.shape[-1]).astype(self.dtype)
    if is_split('heads'):  # the head axis stays its own, so it can stay split over `tensor`
      qkv = jnp.einsum('mc,cshd->mshd', tokens, kernel)
    else:  # one (C, 3·H·d) matmul: on XLA:CPU no transposed copies of the kernel or of dqkv
      qkv = matmul(tokens, kernel.reshape(kernel.shape[0], -1))
    qkv = qkv.reshape(*x.shape[:-1], *kernel.shape[1:]) + at_use(self.bias, self.dtype)
    qkv = constrain(qkv, ('batch',) + (None,) * (qkv.ndim - 3) + ('heads', None))  # (B, ..., 3, H, d)
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
    kernel = at_use(self.kernel, self.dtype)  # (H, d, C)
    h, d, c = kernel.shape
    # tokens flattened to one axis (see QKVProjection); heads merge head-major (channel h·d + e)
    y = jnp.einsum('mhd,hdc->mc', o.reshape(-1, h, d).astype(self.dtype), kernel)
    return constrain_batch(y.reshape(*o.shape[:-2], c) + at_use(self.bias, self.dtype))
