"""Kernelised linear attention (LVT): O_i = φ(q_i)·(Σ_j φ(k_j)ᵀ v_j) / (φ(q_i)·Σ_j φ(k_j) + eps).

φ(x) = ReLU(x) + d**-0.5 keeps every feature positive (d = head dim). The cost is linear in the
sequence length: O(L·d²) per head instead of O(L²·d). Feature fixation (feature_fixation.py)
re-weights φ(q) and φ(k) before this formula, which therefore takes the mapped features.
"""
import jax
import jax.numpy as jnp

LINEAR_ATTENTION_EPS = 1e-6


def kernel_feature_map(x: jax.Array) -> jax.Array:
  """φ(x) = ReLU(x) + d**-0.5 with d = x.shape[-1] (the head dim)."""
  return jax.nn.relu(x) + x.shape[-1] ** -0.5


def linear_attention(q_features: jax.Array, k_features: jax.Array, v: jax.Array,
                     eps: float = LINEAR_ATTENTION_EPS) -> jax.Array:
  """Linear attention on already-mapped features.

  Args:
    q_features, k_features: (batch, L, H, d) non-negative features (φ(q), φ(k), possibly gated).
    v: (batch, L, H, d).
  Returns:
    (batch, L, H, d) in v's dtype; the sums run in float32 (long reductions lose too much in bf16).
  """
  qf, kf, v32 = (z.astype(jnp.float32) for z in (q_features, k_features, v))
  kv = jnp.einsum('blhd,blhe->bhde', kf, v32)                 # Σ_j φ(k_j)ᵀ v_j
  normaliser = jnp.einsum('blhd,bhd->blh', qf, kf.sum(axis=1)) + eps
  out = jnp.einsum('blhd,bhde->blhe', qf, kv) / normaliser[..., None]
  return out.astype(v.dtype)
