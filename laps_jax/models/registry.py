"""The model registry: `model.name` -> its family (a typed config class and a module class).

Each model file fills the registry in by decorating its top-level module:

  @register(('vit2d', 'laps'), ViTConfig, default_frame_stride=8)
  class VideoViT(nnx.Module): ...

`laps_jax.models` imports every module of its package, so a new family is one new file there
(or, outside the package, one imported file: see tests/toy_model_family.py). The family's frozen
dataclass is the single list of its keys: the user-facing ml_collections `config.model` must hold
exactly its fields (a missing or unknown key is an error that names it), and `typed_config`
turns that ConfigDict (or a dict read from an export's JSON) into the dataclass the module takes.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable, Mapping

import ml_collections
from absl import logging


@dataclasses.dataclass(frozen=True)
class ModelFamily:
  """What the registry knows of one family of models."""
  names: tuple[str, ...]  # the `model.name` values it builds
  config_class: type  # a frozen dataclass; its fields are exactly the family's config keys
  model_class: type  # model_class(typed_config, rngs) -> nnx.Module
  default_frame_stride: int  # the frame stride `predict` uses when no data settings are given
  # The input normalisation (of x / 255) its pretrained weights expect: `predict`'s default when
  # neither flags nor an exported data_config.json give one.
  default_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
  default_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

  @property
  def keys(self) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(self.config_class))


_FAMILIES: dict[str, ModelFamily] = {}


def register(names: str | tuple[str, ...], config_class: type, *, default_frame_stride: int,
             default_mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
             default_std: tuple[float, float, float] = (0.5, 0.5, 0.5)) -> Callable[[type], type]:
  """Class decorator: registers the decorated module class under `names` with `config_class`."""
  names = (names,) if isinstance(names, str) else tuple(names)
  if not dataclasses.is_dataclass(config_class) or 'name' not in {f.name for f in dataclasses.fields(config_class)}:
    raise TypeError(f'{config_class.__name__} must be a dataclass with a `name` field')

  def decorator(model_class: type) -> type:
    family_ = ModelFamily(names, config_class, model_class, default_frame_stride,
                          tuple(default_mean), tuple(default_std))
    for name in names:
      existing = _FAMILIES.get(name)
      if existing is not None and existing.model_class.__qualname__ != model_class.__qualname__:
        raise ValueError(f'model name {name!r} is already registered by {existing.model_class.__qualname__}')
      _FAMILIES[name] = family_
    return model_class

  return decorator


def model_names() -> tuple[str, ...]:
  """Every registered `model.name`, in registration order."""
  return tuple(_FAMILIES)


def family(name: str) -> ModelFamily:
  """The family that builds `model.name == name`; ValueError naming the registered names."""
  if name not in _FAMILIES:
    raise ValueError(f'unknown model.name {name!r}; expected one of {model_names()}')
  return _FAMILIES[name]


def required_keys(name: str) -> tuple[str, ...]:
  """The exact set of model config keys that model `name` takes (its config class's fields)."""
  return family(name).keys


def _plain(value: Any) -> Any:
  """ConfigDict / JSON values -> the dataclass's: lists become tuples (recursively)."""
  if isinstance(value, (list, tuple)):
    return tuple(_plain(v) for v in value)
  return value


def _as_mapping(config) -> Mapping[str, Any]:
  if isinstance(config, ml_collections.ConfigDict):
    return config.to_dict()  # resolves FieldReferences and placeholders to their values
  return dict(config)


def typed_config(config, *, fill_missing: bool = False) -> Any:
  """`config` (the `model` part of a run config: a ConfigDict, a dict, or already the family's
  dataclass) as its family's frozen dataclass. Raises ValueError naming every missing or unknown
  key, and whatever the dataclass's own checks raise.

  fill_missing: take the dataclass default for a missing key (logged) instead of failing. For
  model configs written by an older version (an export's model_config.json), where a key added
  since has a default that keeps the old behaviour; run configs stay strict.
  """
  if dataclasses.is_dataclass(config) and not isinstance(config, type):
    return config
  mapping = _as_mapping(config)
  if 'name' not in mapping:
    raise ValueError(f'model config has no `name`; expected one of {model_names()}')
  family_ = family(mapping['name'])
  expected, present = set(family_.keys), set(mapping)
  problems = []
  missing = sorted(expected - present)
  if missing and fill_missing:
    logging.warning('model config for name=%r has no %s; using the defaults of %s', mapping['name'],
                    missing, family_.config_class.__name__)
    missing = [key for key in missing if not _has_default(family_.config_class, key)]
  if missing:
    problems.append(f'missing keys {missing}')
  if unknown := sorted(present - expected):
    problems.append(f'unknown keys {unknown}')
  if problems:
    raise ValueError(f'model config for name={mapping["name"]!r}: ' + '; '.join(problems))
  return family_.config_class(**{key: _plain(value) for key, value in mapping.items()})


def _has_default(config_class: type, key: str) -> bool:
  field = {f.name: f for f in dataclasses.fields(config_class)}[key]
  return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def to_config_dict(typed) -> ml_collections.ConfigDict:
  """A typed model config as the user-facing ConfigDict (tuples kept as tuples). A None value
  becomes a typed placeholder, so a flag (`--config.model.KEY=8`) can still set it."""
  values = {}
  for field in dataclasses.fields(typed):
    value = getattr(typed, field.name)
    if value is None:
      types = [t for t in typing.get_args(field.type) if t is not type(None)]
      value = ml_collections.config_dict.placeholder(types[0] if len(types) == 1 else object)
    values[field.name] = value
  return ml_collections.ConfigDict(values)


def build(config, rngs):
  """The model that `config` (a model ConfigDict or typed config) describes, freshly initialised.
  What the model's construction rejects (e.g. a leap level that does not divide num_frames) is a
  ConfigError (a ValueError) naming config.model, which the commands print as one line."""
  from laps_jax.train.errors import ConfigError  # pylint: disable=g-import-not-at-top
  typed = typed_config(config)
  try:
    return family(typed.name).model_class(typed, rngs)
  except ValueError as e:
    if isinstance(e, ConfigError):
      raise
    raise ConfigError(f'config.model ({typed.name}): {e}') from e


class SizeVariants:
  """Mixin for a family's config dataclass: named sizes, big_vision's `decode_variant`, typed.

  The class sets `SIZES = {'B': dict(hidden_size=768, ...), ...}`; `variant('B/16', **overrides)`
  is the dataclass with that size, patch size 16 (the part after '/', where the family has a
  `patch_size`), the remaining fields at their defaults and `overrides` on top.
  """
  SIZES: dict[str, dict[str, Any]] = {}

  @classmethod
  def variant(cls, size: str, **overrides):
    base, _, patch = size.partition('/')
    if base not in cls.SIZES:
      raise ValueError(f'{cls.__name__}: unknown size {size!r}; expected one of '
                       f'{sorted(cls.SIZES)} (optionally with "/<patch size>")')
    values = dict(cls.SIZES[base])
    if patch:
      values['patch_size'] = int(patch)
    values.update(overrides)
    return cls(**values)

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)

  def to_config_dict(self) -> ml_collections.ConfigDict:
    return to_config_dict(self)
