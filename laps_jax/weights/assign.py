"""Putting converted weights into a model: strict names and shapes, logged re-initialisation.

Converters produce `ConvertedWeights`: a flat {'blocks/0/attn/qkv/kernel': array, ...} dict in
the model's own parameter names and layouts, plus the names of the parameters the source does
not have and that deliberately keep the model's initial values (e.g. a new classifier, the
`time_embed` of a video model started from an image ViT). `assign_converted` checks the dict
against the model's parameter tree, every name and every shape, raises a `WeightImportError`
listing all problems at once, logs what was re-initialised or dropped, and copies the arrays in
(keeping each parameter's float32 dtype and sharding).
"""
import dataclasses
import re

import numpy as np
from absl import logging
from flax import nnx

from laps_jax import named_params
from laps_jax.weights.errors import WeightImportError

# Which config setting decides the shape of a parameter, to point at it when shapes differ.
_SHAPE_HINTS = (
    (r'(^|/)head/(out/)?(kernel|bias)$', 'num_classes'),
    (r'^pos_embed$', 'image_size / patch_size'),
    (r'^patch_embed/kernel$', 'patch_size / hidden_size'),
    (r'^temporal_embed$', 'temporal_embed_frames'),
    (r'^time_embed$', 'num_frames'),
    (r'/mlp/(fc1|fc2|dwconv_kernel|dwconv_bias)', 'mlp_dim'),
    (r'^head/hidden/', 'head_mlp_dim'),
    (r'/(qkv|proj)/', 'hidden_size / num_heads'),
    (r'/fixation/', 'hidden_size / num_heads'),
    (r'(^|/)norm\d?/(scale|bias)$|^cls_token$|^patch_embed/bias$', 'hidden_size'),
)


@dataclasses.dataclass
class ConvertedWeights:
  """Weights in the model's names and layouts.

  params: {flat model name: array}.
  keep_initialised: {flat model name: reason} for parameters the source does not provide.
  dropped: [(source name, reason)] of source entries deliberately not imported.
  notes: other things done on the way (e.g. a position-embedding interpolation), logged.
  origin: {flat model name: source name}, for error messages.
  hints: config settings the source implies (e.g. 'set model.num_classes=400'), added to errors.
  """
  params: dict[str, np.ndarray]
  keep_initialised: dict[str, str] = dataclasses.field(default_factory=dict)
  dropped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)
  origin: dict[str, str] = dataclasses.field(default_factory=dict)
  hints: list[str] = dataclasses.field(default_factory=list)


def flat_param_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
  """{'blocks/0/attn/qkv/kernel': shape, ...} of the model's nnx.Params."""
  return {name: tuple(v.shape) for name, v in named_params.of_model(model).items()}


def _hint(name: str) -> str:
  for pattern, setting in _SHAPE_HINTS:
    if re.search(pattern, name):
      return f'  (check model.{setting})'
  return ''


def shape_mismatches(params: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]],
                     origin: dict[str, str] | None = None, skip: str | None = None) -> list[str]:
  """One message line per parameter of `params` whose shape differs from `expected`'s (names
  `expected` lacks, or matching the regex `skip`, are left out), with the config setting to check."""
  lines = []
  for n in sorted(params.keys() & expected.keys()):
    if tuple(np.shape(params[n])) == tuple(expected[n]) or (skip and re.search(skip, n)):
      continue
    source = f' (from {origin[n]})' if origin and n in origin else ''
    lines.append(f'    {n}: checkpoint {tuple(np.shape(params[n]))}{source}, '
                 f'model {tuple(expected[n])}{_hint(n)}')
  return lines


def check_converted(model: nnx.Module, converted: ConvertedWeights, description: str) -> None:
  """Raises WeightImportError unless `converted` covers exactly the model's parameters with the
  right shapes (parameters in `keep_initialised` excepted)."""
  expected = flat_param_shapes(model)
  given = set(converted.params)
  kept = set(converted.keep_initialised)
  problems = []
  if both := sorted(given & kept):
    problems.append(f'both converted and kept initialised (converter bug): {both}')
  if unknown_kept := sorted(kept - expected.keys()):
    problems.append(f'kept-initialised names the model does not have (converter bug): {unknown_kept}')
  if missing := sorted(expected.keys() - given - kept):
    problems.append(f'model parameters the checkpoint does not provide ({len(missing)}):\n' +
                    '\n'.join(f'    {n} {expected[n]}' for n in missing))
  if leftover := sorted(given - expected.keys()):
    problems.append(f'checkpoint parameters the model does not have ({len(leftover)}):\n' +
                    '\n'.join(f'    {n} {tuple(np.shape(converted.params[n]))}'
                              f'{" from " + converted.origin[n] if n in converted.origin else ""}'
                              for n in leftover))
  if mismatched := shape_mismatches(converted.params, expected, converted.origin):
    problems.append(f'shape mismatches ({len(mismatched)}):\n' + '\n'.join(mismatched))
  if problems:
    hint_text = ''.join(f'\n  hint: {h}' for h in converted.hints)
    raise WeightImportError(f'{description} does not fit the model config:\n  ' + '\n  '.join(problems) +
                            hint_text)


def log_conversion(converted: ConvertedWeights, description: str) -> None:
  """Logs every dropped source entry, every re-initialised parameter and every note."""
  for note in converted.notes:
    logging.info('%s: %s', description, note)
  for name, reason in converted.dropped:
    logging.warning('%s: dropped %s (%s)', description, name, reason)
  for name, reason in sorted(converted.keep_initialised.items()):
    logging.warning('%s: %s initialised as the model does (%s)', description, name, reason)


def assign_converted(model: nnx.Module, converted: ConvertedWeights, description: str) -> None:
  """Checks `converted` against `model` (raising WeightImportError), logs, and copies it in."""
  check_converted(model, converted, description)
  log_conversion(converted, description)
  named_params.copy_into(model, converted.params)  # keep_initialised names keep their values
