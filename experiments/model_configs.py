"""The papers' model sizes as complete model ConfigDicts, shared by the experiment scripts.

The sizes come from the model families' typed configs (`ViTConfig.variant`, `LVTConfig.variant`);
this file only names the experiment sizes:

  base     : ViT-B/16 (LVT: its own published backbone, LVTConfig 'base')
  large    : ViT-L/16
  small    : ViT-S/16
  tiny     : ViT-Ti/16 with 4 layers (width 192, 3 heads of 64): a CPU-sized model for benchmarks
  micro    : the demo's 'Mu' width (64) with 2 layers and 2 heads, for tests that must run in seconds

`model_config(name, size, frames, image_size)` gives one; `PAPER_ROWS` lists the rows of the
FLOPs/params table with the published figures they are compared with.
"""
from __future__ import annotations

import dataclasses

import ml_collections

from laps_jax.models import family
from laps_jax.models.lvt import LVTConfig
from laps_jax.models.vit import ViTConfig

# experiment size -> (ViT size variant, changes to it)
SIZES = {
    'micro': ('Mu/16', dict(num_layers=2, num_heads=2)),  # tests only
    'tiny': ('Ti/16', dict(num_layers=4)),
    'small': ('S/16', {}),
    'base': ('B/16', {}),
    'large': ('L/16', {}),
}
# experiment size -> the size name other families use (e.g. Visformer's 'Ti', 'S')
FAMILY_SIZE_NAMES = {'micro': 'Mu', 'tiny': 'Ti', 'small': 'S', 'base': 'B', 'large': 'L'}
_BACKBONE_KEYS = ('hidden_size', 'num_layers', 'num_heads', 'mlp_dim', 'patch_size')


def model_config(name: str, size: str = 'base', *, frames: int = 8, image_size: int = 224,
                 num_classes: int = 400, dtype: str = 'float32', attention_impl: str = 'xla',
                 remat: bool | str = False) -> ml_collections.ConfigDict:
  """A complete model config for `name` ('vit2d', 'laps', 'joint', 'divided', 'lvt') at `size`.

  Dropout and drop-path are 0 (they change no FLOP count and make timings noisier). For 'lvt'
  the size 'base' means LVT's own backbone; other sizes take the ViT size's width, depth and heads
  on LVT's Kinetics-400 setting.
  """
  if size not in SIZES:
    raise ValueError(f'unknown size {size!r}; expected one of {sorted(SIZES)}')
  common = dict(image_size=image_size, num_frames=frames, num_classes=num_classes,
                attention_impl=attention_impl, dtype=dtype, remat=remat)
  vit_size, changes = SIZES[size]
  config_class = family(name).config_class
  if config_class not in (ViTConfig, LVTConfig):  # another family: its own size of that name
    own = FAMILY_SIZE_NAMES[size]
    if own not in config_class.SIZES:
      raise ValueError(f'{config_class.__name__} has no {size!r} size ({own!r}); it has {sorted(config_class.SIZES)}')
    return config_class.variant(own, **common).to_config_dict()
  if config_class is LVTConfig:
    if size != 'base':
      vit = ViTConfig.variant(vit_size, **changes)
      common.update({key: getattr(vit, key) for key in _BACKBONE_KEYS})
    return LVTConfig.variant('base', **common).to_config_dict()
  return ViTConfig.variant(vit_size, name=name, **changes, **common).to_config_dict()


@dataclasses.dataclass(frozen=True)
class PaperRow:
  """One row of the FLOPs/params table: a model at a paper's size and what was published for it."""
  label: str
  name: str
  size: str
  frames: int
  image_size: int
  published_gmacs: float | None = None
  published_params_m: float | None = None
  source: str = ''
  overrides: tuple[tuple[str, object], ...] = ()  # (key, value) pairs set on the model config

  def config(self, num_classes: int = 400) -> ml_collections.ConfigDict:
    config = model_config(self.name, self.size, frames=self.frames, image_size=self.image_size,
                          num_classes=num_classes)
    for key, value in self.overrides:
      config[key] = value
    return config


_ZOO = 'LAPS MODEL_ZOO.md (fvcore)'
_NO_LEAP = ((None,), (None,))
_VIS_2D = (('leap_levels', _NO_LEAP), ('shift_div', 0))
_VIS_LAPS_32 = (('leap_levels', ((1, 2, 3, 4), (5, 1, 2, 3))),)  # visformer_LAPS_32x8_{320,360}.yaml

PAPER_ROWS = (
    PaperRow('ViT-B/16 2D (TSN)', 'vit2d', 'base', 8, 224, 140.51, 86.106, 'LAPS paper (fvcore)'),
    PaperRow('ViT-B/16 LAPS', 'laps', 'base', 8, 224, 146.23, 86.106, 'LAPS paper (fvcore)'),
    PaperRow('ViT-B/16 2D (TSN)', 'vit2d', 'base', 16, 224),
    PaperRow('ViT-B/16 LAPS', 'laps', 'base', 16, 224),
    PaperRow('ViT-B/16 2D (TSN)', 'vit2d', 'base', 8, 384),
    PaperRow('ViT-B/16 LAPS', 'laps', 'base', 8, 384),
    PaperRow('ViT-L/16 2D (TSN)', 'vit2d', 'large', 8, 384),
    PaperRow('ViT-L/16 LAPS', 'laps', 'large', 8, 384),
    PaperRow('ViT-B/16 joint (ViViT-1)', 'joint', 'base', 8, 224),
    PaperRow('ViT-B/16 divided (TimeSformer)', 'divided', 'base', 8, 224),
    # docs/DESIGN.md's "about 254 GMACs, 52.1 M" is the one-gate LVT (`pgate`, the SSv2/K600 setting);
    # the K400 setting has two gates (q_gate, k_gate): +0.296 M parameters, +10.9 GMACs at 16×224.
    PaperRow('LVT (shared gate)', 'lvt', 'base', 16, 224, 254.0, 52.1, 'DESIGN.md 1.2 (own count, "about")',
             overrides=(('shared_gate', True),)),
    PaperRow('LVT (two gates, K400)', 'lvt', 'base', 16, 224),
    # Visformer-S (LAPS MODEL_ZOO.md, fvcore): the ablations are settings of the one name.
    PaperRow('Visformer-S 2D', 'visformer', 'small', 8, 224, 39.074, 39.758, _ZOO, overrides=_VIS_2D),
    PaperRow('Visformer-S P-Shift only', 'visformer', 'small', 8, 224, 39.074, 39.758, _ZOO,
             overrides=(('leap_levels', _NO_LEAP),)),
    PaperRow('Visformer-S LA only', 'visformer', 'small', 8, 224, 40.136, 39.758, _ZOO, overrides=(('shift_div', 0),)),
    PaperRow('Visformer-S LAPS', 'visformer', 'small', 8, 224, 40.136, 39.758, _ZOO),
    PaperRow('Visformer-S Base3D (joint)', 'visformer', 'small', 8, 224, 46.509, 39.758, _ZOO,
             overrides=_VIS_2D + (('temporal_attention', 'joint'),)),
    PaperRow('Visformer-S PlainShift', 'visformer', 'small', 8, 224, 39.074, 39.758, _ZOO,
             overrides=(('leap_levels', _NO_LEAP), ('shift_kind', 'plain'))),
    PaperRow('Visformer-S LAPS', 'visformer', 'small', 32, 224, overrides=_VIS_LAPS_32),
    PaperRow('Visformer-S 2D', 'visformer', 'small', 32, 320, overrides=_VIS_2D),
    PaperRow('Visformer-S LAPS', 'visformer', 'small', 32, 320, overrides=_VIS_LAPS_32),
    PaperRow('Visformer-S LAPS', 'visformer', 'small', 32, 360, overrides=_VIS_LAPS_32),
)
