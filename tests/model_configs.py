"""Tiny model configs shared by the model tests (every key the builder requires)."""
import ml_collections


def tiny_vit(name: str = 'laps', **overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(dict(
      name=name, image_size=16, patch_size=8, hidden_size=32, num_layers=4, num_heads=4, mlp_dim=64,
      num_frames=8, num_classes=5, dropout_rate=0.0, drop_path_rate=0.0, attention_impl='xla',
      dtype='float32', remat=False,
      leap_levels=(1, 2, 3, 1) if name == 'laps' else (None,), shift_div=4 if name == 'laps' else 0))
  config.update(overrides)
  return config


def tiny_lvt(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(dict(
      name='lvt', image_size=32, patch_size=16, hidden_size=64, num_layers=2, num_heads=4, mlp_dim=128,
      num_frames=8, num_classes=5, dropout_rate=0.0, drop_path_rate=0.0, attention_impl='xla',
      dtype='float32', remat=False, patch_stride=14, patch_padding=8, fixation=True, shared_gate=False,
      temporal_shift_div=8, spatial_shift=True, head_mlp_dim=32, head_dropout_rate=0.5,
      temporal_embed_frames=8, shift_segment_frames=8))
  config.update(overrides)
  return config
