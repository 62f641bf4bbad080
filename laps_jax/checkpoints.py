"""The exported-model format: an Orbax checkpoint of a model's parameters plus its config as JSON.

    DIRECTORY/
      params/             Orbax (StandardCheckpointer) checkpoint of the nnx.Param values (and
                          BatchNorm running averages, nnx.BatchStat, where the model has them) as a
                          nested dict, e.g. {'blocks': {0: {'attn': {'qkv': {'kernel': ...}}}}}
      model_config.json   the `config.model` ConfigDict the model was built from

Written by `laps_jax.export` (from a training run), the weight converters (`laps_jax.convert`) and
`save_model`; read by `load_model`, by `config.init_from` in training and by `laps_jax.predict`.
No optimizer state, no RNG state: a model to evaluate or fine-tune.
"""
import json

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from laps_jax import named_params

PARAMS_DIR = 'params'
CONFIG_FILE = 'model_config.json'


def as_path(path: epath.PathLike) -> epath.Path:
  """`path` as an etils Path: a local path made absolute (Orbax wants absolute paths), a URL
  (gs://bucket/run, ...) left exactly as given, so that every reader and writer (Orbax, the JSON
  files) goes through the same file system layer."""
  path = epath.Path(path)
  return path if '://' in str(path) else path.absolute()


def _model_config(config) -> ml_collections.ConfigDict:
  """Accepts the model config or a whole run config (then its `.model`)."""
  if 'name' not in config and 'model' in config:
    config = config.model
  return config


def save_model(directory: str, model: nnx.Module, config, *, dtype: str | None = None) -> None:
  """Writes `model`'s parameters and `config` (the model config, or a run config holding one).

  Args:
    directory: created if missing; must not already hold an exported model.
    model: an nnx model built by `laps_jax.models.build` (sharded arrays are fine: every process
      of a multi-host run must call this).
    config: `config.model` (or the run config).
    dtype: cast the floating-point parameters (e.g. 'bfloat16') to halve the files; None keeps
      float32. Models compute in `config.dtype` whatever the storage type.
  """
  config = _model_config(config)
  params = nnx.to_pure_dict(nnx.state(model, named_params.WEIGHTS))  # BatchNorm statistics too
  save_params(directory, params, config, dtype=dtype)


def save_params(directory: str, params: dict, config, *, dtype: str | None = None) -> None:
  """Like `save_model`, from a nested dict of parameter arrays (what converters produce)."""
  config = _model_config(config)
  directory = as_path(directory)
  if dtype is not None:
    params = jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / PARAMS_DIR, params)
    checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))


def lists_to_tuples(value):
  """JSON has no tuples; configs use them (leap_levels, ...)."""
  if isinstance(value, list):
    return tuple(lists_to_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: lists_to_tuples(v) for k, v in value.items()}
  return value


def load_config(directory: str) -> ml_collections.ConfigDict:
  """The model config saved next to the parameters."""
  path = as_path(directory) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f'{directory} is not an exported model: {CONFIG_FILE} is missing '
                            '(export a training run with `python -m laps_jax.export`)')
  return ml_collections.ConfigDict(lists_to_tuples(json.loads(path.read_text())))


def load_params(directory: str) -> dict:
  """The saved parameters as a nested dict of NumPy arrays (on the host, in the saved dtype)."""
  path = as_path(directory) / PARAMS_DIR
  if not path.is_dir():
    raise FileNotFoundError(f'{directory} is not an exported model: {PARAMS_DIR}/ is missing')
  with ocp.StandardCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path).item_metadata.tree
    # ShapeDtypeStructs without a sharding restore as NumPy arrays, whatever mesh wrote them.
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), metadata)
    return checkpointer.restore(path, target)


def load_model(directory: str, *, seed: int = 0) -> tuple[nnx.Module, ml_collections.ConfigDict]:
  """(model, model_config) from an exported directory, on the default device, float32 params.

  Non-parameter state (dropout RNG streams) is fresh from `seed`.
  """
  from laps_jax import models  # pylint: disable=g-import-not-at-top  (models import jax config)
  # An export of an older version may lack keys added since (their defaults keep its behaviour).
  config = models.typed_config(load_config(directory), fill_missing=True).to_config_dict()
  params = load_params(directory)
  model = models.build(config, nnx.Rngs(params=seed, dropout=seed + 1))
  assign_params(model, params)
  return model, config


# The names `flatten_params(tree) -> {'blocks/0/mlp/fc1/kernel': array}` stay public here.
flatten_params = named_params.flatten


def assign_params(model: nnx.Module, params: dict) -> None:
  """Copies a nested dict of arrays into `model`'s nnx.Params, checking names and shapes, keeping
  each parameter's dtype (float32) and sharding (a sharded model gets sharded arrays)."""
  flat_current, flat_new = named_params.of_model(model), named_params.flatten(params)
  if missing := sorted(flat_current.keys() - flat_new.keys()):
    raise ValueError(f'the saved parameters lack {missing[:5]}{" ..." if len(missing) > 5 else ""}')
  if unknown := sorted(flat_new.keys() - flat_current.keys()):
    raise ValueError(f'the saved parameters have unknown {unknown[:5]}{" ..." if len(unknown) > 5 else ""}')
  for name, value in flat_new.items():
    if tuple(value.shape) != tuple(flat_current[name].shape):
      raise ValueError(f'{name}: saved shape {tuple(value.shape)}, model shape {flat_current[name].shape}')
  named_params.copy_into(model, flat_new)
