"""The papers' model sizes as complete model ConfigDicts, shared by the experiment scripts.

Every config holds exactly the keys of its family (`laps_jax.models.required_keys(name)`), so
`laps_jax.models.build(config, rngs)` accepts it as is. Sizes:

  ViT-B/16 : width 768, 12 layers, 12 heads, MLP 3072 (LAPS: 8×224, 16×224, 8×384)
  ViT-L/16 : width 1024, 24 layers, 16 heads, MLP 4096 (LAPS: 8×384)
  LVT      : width 512, 12 layers, 8 heads, MLP 2048, overlapping 16/14/8 patches, 16×224
  tiny     : a CPU-sized ViT/LVT (width 192, 4 layers, 3 heads of 64) for CPU benchmarks
  micro    : width 64, 2 layers, for tests that must run in seconds

`model_config(name, size, frames, image_size)` gives one; `PAPER_ROWS` lists the rows of the
FLOPs/params table with the published figures they are compared with.
"""
from __future__ import annotations

import dataclasses

import ml_collections

from laps_jax.models import required_keys

# name -> hidden_size, num_layers, num_heads, mlp_dim, patch_size
SIZES = {
    'micro': dict(hidden_size=64, num_layers=2, num_heads=2, mlp_dim=128, patch_size=16),  # tests only
    'tiny': dict(hidden_size=192, num_layers=4, num_heads=3, mlp_dim=768, patch_size=16),
    'small': dict(hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536, patch_size=16),
    'base': dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072, patch_size=16),
    'large': dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096, patch_size=16),
    # LVT's own backbone (DESIGN.md 1.2): not ViT-B.
    'lvt': dict(hidden_size=512, num_layers=12, num_heads=8, mlp_dim=2048, patch_size=16),
}

LAPS_LEAP_LEVELS = (1, 2, 3, 1)  # block k uses LAPS_LEAP_LEVELS[k % 4]
LAPS_SHIFT_DIV = 4


def model_config(name: str, size: str = 'base', *, frames: int = 8, image_size: int = 224,
                 num_classes: int = 400, dtype: str = 'float32', attention_impl: str = 'xla',
                 remat: bool = False) -> ml_collections.ConfigDict:
  """A complete model config for `name` ('vit2d', 'laps', 'joint', 'divided', 'lvt') at `size`.

  Dropout and drop-path are 0 (they change no FLOP count and make timings noisier). For 'lvt'
  the size 'base' means LVT's own backbone (SIZES['lvt']); other sizes keep 64-channel heads.
  """
  if name == 'lvt' and size == 'base':
    size = 'lvt'
  if size not in SIZES:
    raise ValueError(f'unknown size {size!r}; expected one of {sorted(SIZES)}')
  c = ml_collections.ConfigDict()
  c.name = name
  c.image_size = image_size
  c.num_frames = frames
  c.num_classes = num_classes
  c.dropout_rate = 0.0
  c.drop_path_rate = 0.0
  c.attention_impl = attention_impl
  c.dtype = dtype
  c.remat = remat
  for key, value in SIZES[size].items():
    c[key] = value
  if name == 'lvt':
    # The Kinetics-400 setting of the official code, with the clean defaults for the two quirks
    # (one temporal-embedding slot per frame, one shift segment per clip).
    c.patch_stride = 14
    c.patch_padding = 8
    c.fixation = True
    c.shared_gate = False
    c.temporal_shift_div = 8
    c.spatial_shift = True
    c.head_mlp_dim = 768
    c.head_dropout_rate = 0.0
    c.temporal_embed_frames = frames
    c.shift_segment_frames = frames
  else:
    c.leap_levels = LAPS_LEAP_LEVELS if name == 'laps' else (None,)
    c.shift_div = LAPS_SHIFT_DIV if name == 'laps' else 0
  expected = set(required_keys(name))
  if set(c.keys()) != expected:  # keeps this file honest when the models gain a key
    raise AssertionError(f'model_config({name!r}) keys differ from required_keys: '
                         f'missing {sorted(expected - set(c.keys()))}, extra {sorted(set(c.keys()) - expected)}')
  return c


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
    # DESIGN.md's "about 254 GMACs, 52.1 M" is the one-gate LVT (`pgate`, the SSv2/K600 setting);
    # the K400 setting has two gates (q_gate, k_gate): +0.296 M parameters, +10.9 GMACs at 16×224.
    PaperRow('LVT (shared gate)', 'lvt', 'base', 16, 224, 254.0, 52.1, 'DESIGN.md 1.2 (own count, "about")',
             overrides=(('shared_gate', True),)),
    PaperRow('LVT (two gates, K400)', 'lvt', 'base', 16, 224),
)
