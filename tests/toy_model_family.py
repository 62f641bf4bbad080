"""A toy model family, as a researcher would add one: this file and a config entry, nothing else.

`@register` puts the name 'toy_mean' in the registry; its frozen dataclass is the single list of
its config keys. (Inside laps_jax/models/ the package imports the file by itself; out here the
test imports it.)
"""
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from laps_jax.models.layers import Linear, sharded_param, trunc_normal_02
from laps_jax.models.registry import SizeVariants, register


@dataclasses.dataclass(frozen=True)
class ToyConfig(SizeVariants):
  SIZES = {'S': dict(hidden_size=16)}

  name: str = 'toy_mean'
  image_size: int = 16
  num_frames: int = 4
  num_classes: int = 6
  hidden_size: int = 16


@register('toy_mean', ToyConfig, default_frame_stride=4)
class ToyMeanModel(nnx.Module):
  """videos (B, T, H, W, 3) -> per-pixel embedding -> mean over T, H, W -> Linear -> (B, K)."""

  def __init__(self, config: ToyConfig, rngs: nnx.Rngs):
    self.embed = sharded_param(rngs, trunc_normal_02, (3, config.hidden_size), (None, 'embed'))
    self.head = Linear(config.hidden_size, config.num_classes, axes=('embed', 'classes'), rngs=rngs)

  def __call__(self, videos: jax.Array, train: bool = False) -> jax.Array:
    features = jnp.einsum('bthwc,ce->be', videos, self.embed[...]) / jnp.prod(jnp.array(videos.shape[1:4]))
    return self.head(features).astype(jnp.float32)
