"""LVT's feature fixation: a per-token, per-channel sigmoid gate on the kernel features.

For every token and head h (channels h·d … (h+1)·d):
  r = sigmoid(W_g · concat[φ(q_h), φ(k̃_h), ṽ_h] + b_g),  W_g: 3d -> d, shared by all heads,
  q̂ = r_q ⊙ φ(q),  k̂ = r_k ⊙ φ(k̃),
and linear attention then uses q̂, k̂ in place of φ(q), φ(k). One shared gate (r_q = r_k; the
official `pgate`, SSv2 / K600) or two gates fed the same input (`q_gate`, `k_gate`; K400). Because
r varies per channel and per token it re-weights the kernel similarity and attention stays linear.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from laps_jax.models.layers import Linear


class FixationGate(nnx.Module):
  """concat[φ(q), φ(k̃), ṽ] (..., H, 3d) -> r (..., H, d). kernel (3d, d) = PyTorch weight (d, 3d)ᵀ."""

  def __init__(self, head_dim: int, *, dtype, rngs: nnx.Rngs):
    self.linear = Linear(3 * head_dim, head_dim, axes=(None, None), dtype=dtype, rngs=rngs)

  def __call__(self, gate_input: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(self.linear(gate_input))


class FeatureFixation(nnx.Module):
  """(φ(q), φ(k̃), ṽ), each (batch, L, H, d) -> (q̂, k̂), each (batch, L, H, d)."""

  def __init__(self, head_dim: int, *, shared_gate: bool, dtype, rngs: nnx.Rngs):
    self.shared_gate = shared_gate
    if shared_gate:
      self.pgate = FixationGate(head_dim, dtype=dtype, rngs=rngs)
    else:
      self.q_gate = FixationGate(head_dim, dtype=dtype, rngs=rngs)
      self.k_gate = FixationGate(head_dim, dtype=dtype, rngs=rngs)

  def __call__(self, q_features: jax.Array, k_features: jax.Array, v: jax.Array):
    gate_input = jnp.concatenate([q_features, k_features, v.astype(q_features.dtype)], axis=-1)
    if self.shared_gate:
      r_q = r_k = self.pgate(gate_input)
    else:
      r_q, r_k = self.q_gate(gate_input), self.k_gate(gate_input)
    return r_q * q_features, r_k * k_features
