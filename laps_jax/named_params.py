"""A model's parameters by name: 'blocks/0/mlp/fc1/kernel', and copying named arrays into a model.

The name of a parameter is its path in the nested dict `nnx.to_pure_dict(nnx.state(model,
WEIGHTS))`, '/'-joined. WEIGHTS are the nnx.Params and the nnx.BatchStats (BatchNorm running
averages, models/batch_norm.py): a trained model needs both, so they are saved, imported and
copied together (models without BatchNorm have none). Checkpoints, the weight importers,
`config.init_from`, export and the optimizer's weight-decay mask all use these names, so they are
made here once.
"""
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def path_name(path) -> str:
  """'blocks/0/mlp/fc1/kernel' from a pytree key path.

  Dict keys and list indices give the parts, as strings: the integer keys of a list of blocks
  (nnx) and their string form (read back from a checkpoint) give the same name. Attribute keys are
  skipped: an `nnx.Variable` node adds a trailing `.value` where a tree still holds Variables
  (optax sees that at init).
  """
  parts = []
  for key in path:
    if isinstance(key, jax.tree_util.DictKey):
      parts.append(str(key.key))
    elif isinstance(key, jax.tree_util.SequenceKey):
      parts.append(str(key.idx))
    elif isinstance(key, jax.tree_util.FlattenedIndexKey):
      parts.append(str(key.key))
  return '/'.join(parts)


def flatten(tree) -> dict[str, Any]:
  """{'blocks/0/mlp/fc1/kernel': leaf, ...} of a nested dict (or any pytree) of arrays."""
  return {path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


WEIGHTS = (nnx.Param, nnx.BatchStat)  # an NNX filter: either kind


def of_model(model: nnx.Module) -> dict[str, jax.Array]:
  """{name: value} of the model's WEIGHTS (ShapeDtypeStructs for an abstract model)."""
  return flatten(nnx.to_pure_dict(nnx.state(model, WEIGHTS)))


def copy_into(model: nnx.Module, arrays: Mapping[str, Any]) -> None:
  """Copies `arrays` ({name: array}) into the model's WEIGHTS of those names, in place.

  Parameters not named in `arrays` keep their values. Each copy keeps the parameter's dtype
  (float32 whatever the stored dtype) and its sharding: on a mesh, every process fills only the
  shards it holds (`jax.make_array_from_callback`), so this works on many hosts. The caller checks
  names and shapes first.
  """
  state = nnx.state(model, WEIGHTS)

  def put(path, old):
    name = path_name(path)
    if name not in arrays:
      return old
    new = np.asarray(arrays[name]).astype(old.dtype)
    sharding = getattr(old, 'sharding', None)
    if sharding is None:
      return jnp.asarray(new)
    return jax.make_array_from_callback(old.shape, sharding, lambda index: new[index])

  nnx.replace_by_pure_dict(state, jax.tree_util.tree_map_with_path(put, nnx.to_pure_dict(state)))
  nnx.update(model, state)
