"""Models built by name from a config: `build(config.model, rngs)`.

Every module of this package is imported here, and each model file registers its family
(registry.py): the ViT family 'vit2d', 'laps', 'joint', 'divided' (vit.py), 'lvt' (lvt.py) and
'visformer' (visformer.py).
Adding a family is one new file that calls `registry.register`. The ablations are settings:
LA only = shift_div 0; P-Shift only = leap_levels (None,) (per stage for Visformer).
"""
import importlib
import pkgutil

from laps_jax.models.registry import (ModelFamily, build, family, model_names, register, required_keys,
                                      typed_config)

from laps_jax.models.vit import VIT_FAMILY, VideoViT, ViTConfig  # noqa: I001  (first: names in this order)
from laps_jax.models.lvt import LVT, LVTConfig

for _module in pkgutil.iter_modules(__path__):  # every other family file registers itself on import
  importlib.import_module(f'{__name__}.{_module.name}')

MODEL_NAMES = model_names()  # the names registered by this package's files


def validate_config(config) -> None:
  """Raises ValueError naming every missing or unknown key of a model config (or a bad value)."""
  typed_config(config)
