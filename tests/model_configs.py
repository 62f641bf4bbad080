"""Tiny model configs shared by the model tests, from the families' typed configs (every key the
builder requires). Overrides are applied to the ConfigDict, so a test can still build a config the
model must reject."""
import ml_collections

from laps_jax.models.lvt import LVTConfig
from laps_jax.models.vit import ViTConfig

_TINY = dict(num_frames=8, num_classes=5, attention_impl='xla', dtype='float32')


def tiny_vit(name: str = 'laps', **overrides) -> ml_collections.ConfigDict:
  """Width 32, 4 blocks of 4 heads, 8 frames of 16², patches of 8 (laps: the paper's levels/shift)."""
  config = ViTConfig.variant('Mu/8', name=name, image_size=16, hidden_size=32, mlp_dim=64,
                             **_TINY).to_config_dict()
  config.update(overrides)
  return config


def tiny_lvt(**overrides) -> ml_collections.ConfigDict:
  """Width 64, 2 blocks of 4 heads, 8 frames of 32², LVT's overlapping 16/14/8 patches."""
  config = LVTConfig.variant('base', image_size=32, hidden_size=64, num_layers=2, num_heads=4, mlp_dim=128,
                             head_mlp_dim=32, head_dropout_rate=0.5, temporal_embed_frames=8,
                             shift_segment_frames=8, **_TINY).to_config_dict()
  config.update(overrides)
  return config
