"""Models built by name from a config: `build(config.model, rngs)`.

Names: 'vit2d', 'laps', 'joint', 'divided' (the ViT family, vit.py) and 'lvt' (lvt.py). The
ablations are settings of 'laps': LA only = shift_div 0; P-Shift only = leap_levels (None,).
"""
from flax import nnx

from laps_jax.models.lvt import LVT
from laps_jax.models.vit import VIT_FAMILY, VideoViT

COMMON_KEYS = ('name', 'image_size', 'patch_size', 'hidden_size', 'num_layers', 'num_heads', 'mlp_dim',
               'num_frames', 'num_classes', 'dropout_rate', 'drop_path_rate', 'attention_impl', 'dtype',
               'remat')
VIT_KEYS = ('leap_levels', 'shift_div')
LVT_KEYS = ('patch_stride', 'patch_padding', 'fixation', 'shared_gate', 'temporal_shift_div', 'spatial_shift',
            'head_mlp_dim', 'head_dropout_rate', 'temporal_embed_frames', 'shift_segment_frames')
MODEL_NAMES = VIT_FAMILY + ('lvt',)


def required_keys(name: str) -> tuple[str, ...]:
  """The exact set of model config keys that model `name` takes."""
  if name in VIT_FAMILY:
    return COMMON_KEYS + VIT_KEYS
  if name == 'lvt':
    return COMMON_KEYS + LVT_KEYS
  raise ValueError(f'unknown model.name {name!r}; expected one of {MODEL_NAMES}')


def validate_config(config) -> None:
  """Raises ValueError naming every missing or unknown key of a model config."""
  if 'name' not in config:
    raise ValueError(f'model config has no `name`; expected one of {MODEL_NAMES}')
  expected = set(required_keys(config.name))
  present = set(config.keys())
  problems = []
  if missing := sorted(expected - present):
    problems.append(f'missing keys {missing}')
  if unknown := sorted(present - expected):
    problems.append(f'unknown keys {unknown}')
  if problems:
    raise ValueError(f'model config for name={config.name!r}: ' + '; '.join(problems))


def build(config, rngs: nnx.Rngs) -> nnx.Module:
  """The model that `config` (the `model` part of a run config) describes, freshly initialised."""
  validate_config(config)
  if config.name == 'lvt':
    return LVT(config, rngs)
  return VideoViT(config, rngs)
