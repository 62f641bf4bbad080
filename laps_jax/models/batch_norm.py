"""BatchNorm over the channel axis, with PyTorch's `nn.BatchNorm2d` semantics (Visformer's norm).

  train:  y = (x - mean_B) / sqrt(var_B + eps) * scale + bias, where mean_B and var_B (biased) are
          taken over every axis but the last, i.e. over all B·T frames and H·W positions of the
          batch. Under `jax.jit` with a batch sharded over devices the reduction runs over the
          global array, so this is synchronised BatchNorm across devices (and hosts) with no
          extra code: every device normalises with the statistics of the whole global batch.
          The running averages move towards the batch statistics:
            mean <- (1 - momentum) · mean + momentum · mean_B
            var  <- (1 - momentum) · var  + momentum · var_B · n / (n - 1)   (unbiased, as PyTorch)
          momentum 0.1 is PyTorch's convention (= flax's momentum 0.9).
  eval:   y = (x - mean) / sqrt(var + eps) * scale + bias with the running averages.

scale / bias are `nnx.Param`s; mean / var are `nnx.BatchStat`s, so they are not differentiated,
are not touched by the optimizer, and travel in the train state (checkpointed, exported) apart
from the parameters. Statistics are computed in float32 whatever the compute dtype.
Precise BN (laps_jax/train/precise_bn.py) sets `momentum = 1.0` for one forward pass to read
the statistics of one batch.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from laps_jax.models.layers import at_use, ones, sharded_param, zeros

PYTORCH_MOMENTUM = 0.1
PYTORCH_EPS = 1e-5


class BatchNorm(nnx.Module):
  """x (..., C) -> (..., C), normalised per channel (the last axis)."""

  def __init__(self, features: int, *, rngs: nnx.Rngs, axis_name: str | None = 'embed',
               momentum: float = PYTORCH_MOMENTUM, epsilon: float = PYTORCH_EPS):
    self.momentum = momentum
    self.epsilon = epsilon
    self.scale = sharded_param(rngs, ones, (features,), (axis_name,))
    self.bias = sharded_param(rngs, zeros, (features,), (axis_name,))
    mesh_active = not jax.sharding.get_abstract_mesh().empty
    self.mean = nnx.BatchStat(jnp.zeros((features,), jnp.float32), out_sharding=(axis_name,),
                              eager_sharding=mesh_active)
    self.var = nnx.BatchStat(jnp.ones((features,), jnp.float32), out_sharding=(axis_name,),
                             eager_sharding=mesh_active)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x32 = x.astype(jnp.float32)
    if train:
      axes = tuple(range(x.ndim - 1))
      mean = x32.mean(axes)
      var = jnp.square(x32 - mean).mean(axes)  # biased: what normalises the batch
      n = x32.size // x32.shape[-1]
      unbiased = var * (n / max(n - 1, 1))
      m = self.momentum
      self.mean[...] = (1.0 - m) * self.mean[...] + m * jax.lax.stop_gradient(mean)
      self.var[...] = (1.0 - m) * self.var[...] + m * jax.lax.stop_gradient(unbiased)
    else:
      mean, var = self.mean[...], self.var[...]
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
    return (y * at_use(self.scale) + at_use(self.bias)).astype(x.dtype)
