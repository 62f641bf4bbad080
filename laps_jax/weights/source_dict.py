"""Reading a checkpoint's flat name -> array dict while keeping count of what was used.

Every converter reads the source through a `SourceDict`: `take` the keys it maps, `drop` the
keys it deliberately leaves out (with the reason, which is logged). `finish()` then raises a
`WeightImportError` listing every key that was needed but missing and every key left over:
nothing in a checkpoint is skipped silently.
"""
import re
from typing import Callable

import numpy as np

from laps_jax.weights.assign import shape_mismatches
from laps_jax.weights.errors import WeightImportError


def describe_shape(array) -> str:
  return str(tuple(np.shape(array)))


class SourceDict:
  """A flat {name: array} checkpoint, consumed key by key.

  Args:
    tensors: {source name: array} (NumPy arrays).
    description: what the checkpoint is (file name and format), for messages.
    expected_shapes: {model parameter name: shape}, to show the shape a missing key would fill.
  """

  def __init__(self, tensors: dict[str, np.ndarray], description: str,
               expected_shapes: dict[str, tuple[int, ...]] | None = None):
    self._expected_shapes = expected_shapes or {}
    self._tensors = dict(tensors)
    self._unused = set(self._tensors)
    self.description = description
    self.missing: list[str] = []        # 'name (needed for ...)'
    self.bad_shapes: list[str] = []     # 'name (shape): why'
    self.dropped: list[tuple[str, str]] = []  # (name, reason)

  def keys(self) -> list[str]:
    return sorted(self._tensors)

  def __contains__(self, name: str) -> bool:
    return name in self._tensors

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(np.shape(self._tensors[name]))

  def peek(self, name: str) -> np.ndarray:
    """The array without marking it used (to read a size off it)."""
    return np.asarray(self._tensors[name])

  def take(self, name: str, transform: Callable[[np.ndarray], np.ndarray] = lambda x: x,
           *, needed_for: str = '') -> np.ndarray | None:
    """`transform(array)` of source key `name`, marked used; None (and recorded) if it is missing
    or its shape does not allow the transform."""
    if name not in self._tensors:
      shape = self._expected_shapes.get(needed_for)
      self.missing.append(f'{name}' + (f'  (needed for {needed_for}' if needed_for else '') +
                          (f' {shape})' if shape else ')' if needed_for else ''))
      return None
    self._unused.discard(name)
    array = np.asarray(self._tensors[name])
    try:
      return np.asarray(transform(array))
    except ValueError as e:  # a reshape that does not fit
      self.bad_shapes.append(f'{name} {describe_shape(array)}: {e}')
      return None

  def drop(self, name: str, reason: str) -> None:
    """Marks `name` as deliberately not imported; the reason is logged."""
    if name in self._tensors:
      self._unused.discard(name)
      self.dropped.append((name, reason))

  def drop_matching(self, predicate: Callable[[str], bool], reason: str) -> None:
    for name in sorted(self._unused):
      if predicate(name):
        self.drop(name, reason)

  def finish(self, hints: list[str] = (), params: dict[str, np.ndarray] | None = None,
             origin: dict[str, str] | None = None, adapted: str | None = None) -> None:
    """Raises WeightImportError listing missing keys, left-over keys and shape problems.

    `params` / `origin`: what the converter collected (our names), so that when the checkpoint
    also lacks or has extra keys (e.g. another depth) the same message lists the shapes that do
    not fit the model (e.g. another width), not one after the other is fixed. `adapted`: a regex
    of names the converter still adapts after this (e.g. an interpolated pos_embed), left out.
    """
    problems = []
    if self.missing:
      problems.append(f'missing in the checkpoint ({len(self.missing)}):\n' +
                      '\n'.join(f'    {m}' for m in self.missing))
    if self._unused:
      problems.append(f'left over in the checkpoint, not used by the model ({len(self._unused)}):\n' +
                      '\n'.join(f'    {n} {describe_shape(self._tensors[n])}' for n in sorted(self._unused)))
    if self.bad_shapes:
      problems.append(f'shapes that do not fit ({len(self.bad_shapes)}):\n' +
                      '\n'.join(f'    {b}' for b in self.bad_shapes))
    if problems and params and self._expected_shapes:
      if mismatched := shape_mismatches(params, self._expected_shapes, origin, skip=adapted):
        problems.append(f'shape mismatches ({len(mismatched)}):\n' + '\n'.join(mismatched))
    if problems:
      hint_text = ''.join(f'\n  hint: {h}' for h in hints)
      raise WeightImportError(f'{self.description} does not fit the model config:\n  ' +
                              '\n  '.join(problems) + hint_text)


def block_count_hints(names: list[str], block_pattern: str, config) -> list[str]:
  """A hint when the checkpoint's number of blocks (distinct indices matched by `block_pattern`,
  a regex with one group) differs from model.num_layers."""
  indices = {int(m.group(1)) for n in names if (m := re.match(block_pattern, n))}
  if indices and len(indices) != config.num_layers:
    return [f'the checkpoint has {len(indices)} blocks, the model config num_layers={config.num_layers}']
  return []


class ParamCollector:
  """Collects converted parameters from a `SourceDict`: `collect(theirs, ours, transform)`.

  params: {our flat name: array}; origin: {our flat name: source name} (for messages). Source
  names are read under `prefix` (e.g. 'module.base_model.' or an optimizer-state prefix).
  """

  def __init__(self, source: SourceDict, prefix: str = ''):
    self.source = source
    self.prefix = prefix
    self.params: dict[str, np.ndarray] = {}
    self.origin: dict[str, str] = {}

  def __call__(self, name: str, ours: str, transform: Callable[[np.ndarray], np.ndarray] = lambda x: x) -> None:
    value = self.source.take(self.prefix + name, transform, needed_for=ours)
    if value is not None:
      self.params[ours] = value
      self.origin[ours] = self.prefix + name
