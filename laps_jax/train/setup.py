"""What training, evaluation and the dry run do before they compile: the checks, the mesh, the run
length, the optimizer and the abstract train state, and the state's first values.

Everything that can be checked before compiling is checked here first (config keys, data
prepared, batch and heads against the mesh, parameter shapes against the mesh, init_from
present unless the workdir holds a checkpoint to resume from), so a wrong config fails in seconds
with a message that says what to change.

    set_up(config, mode, workdir) -> Setup   the same sequence for 'train', 'eval' and 'dry_run'
    fresh_state(config, setup)          a new state (with config.init_from's parameters if set)
"""
import dataclasses
import math
import re
from typing import Callable

import jax
import optax
from absl import logging
from flax import nnx

from laps_jax import checkpoints as model_checkpoints
from laps_jax import models
from laps_jax import named_params
from laps_jax.train import checkpointing
from laps_jax.train import mesh as mesh_lib
from laps_jax.train import optimizer as optimizer_lib
from laps_jax.train import train_state as ts_lib
from laps_jax.train.errors import ConfigError
from laps_jax.weights import assign as weights_assign

def data_pipeline():
  """The data pipeline module (imported late: it pulls in TFDS / grain)."""
  from laps_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline


# =============================================================================================
# Checks before anything is compiled
# =============================================================================================
# Sizes and counts that must be > 0 (a key a config does not have is skipped); 0 would divide by
# zero or build an empty model. The model's are checked before its config class's own checks.
POSITIVE_KEYS = (
    'batch_size', 'eval.batch_size', 'test.batch_size', 'optimizer.grad_accum_steps',
    'log_every_steps', 'checkpoint.keep', 'precise_bn.every_epochs',
    'model.num_frames', 'model.image_size', 'model.num_classes', 'model.patch_size',
    'model.patch_stride', 'model.hidden_size', 'model.num_heads', 'model.num_layers',
    'model.mlp_dim', 'model.head_mlp_dim', 'model.stem_channels', 'model.conv_groups',
    'model.temporal_embed_frames', 'model.shift_segment_frames')


def check_config(config) -> None:
  """Static checks of the config: sizes and counts positive, model and data keys, model/data
  agreement, run length."""
  for path in POSITIVE_KEYS:
    section, _, key = path.rpartition('.')
    holder = config.get(section) if section else config
    if holder is None or key not in holder or holder[key] is None:
      continue  # not this config's (or a None placeholder: derived when the model is built)
    if isinstance(holder[key], bool) or not isinstance(holder[key], (int, float)) or holder[key] <= 0:
      raise ConfigError(f'config.{path} must be a positive number, got {holder[key]!r}')
  mesh_shape = tuple(config.mesh_shape)
  if not all(isinstance(s, int) and not isinstance(s, bool) for s in mesh_shape):
    raise ConfigError(f'config.mesh_shape must be integers (data, fsdp, tensor), got {mesh_shape}')
  try:
    models.validate_config(config.model)
    data_pipeline().validate_config(config.data)
    optimizer_lib.make_optimizer(config, updates_per_epoch=1.0, total_updates=1)  # names, ranges
  except ValueError as e:
    raise ConfigError(str(e)) from None
  best = config.get('checkpoint', {}).get('best_metric', '')
  if best and not re.fullmatch(r'val_(ema_)?(top1|top5|loss)', best):
    raise ConfigError("config.checkpoint.best_metric must be '' or a validation metric: val_top1, "
                      f'val_top5, val_loss or val_ema_top1, val_ema_top5, val_ema_loss; got {best!r}')
  if best.startswith('val_ema_') and not config.get('ema', {}).get('decay', 0.0) > 0:
    raise ConfigError(f'config.checkpoint.best_metric={best!r} needs the EMA: set config.ema.decay > 0')
  for key in ('num_frames', 'image_size'):
    if config.data[key] != config.model[key]:
      raise ConfigError(f'data.{key}={config.data[key]} differs from model.{key}={config.model[key]}')
  if config.total_steps <= 0 and config.num_epochs <= 0:
    raise ConfigError('set config.num_epochs or config.total_steps to a positive value')


def check_data(config) -> None:
  """The data is prepared (synthetic data is built here) and has model.num_classes labels."""
  pipeline = data_pipeline()
  pipeline.ensure_prepared(config.data)  # DatasetNotPreparedError says how to prepare it
  num_labels = len(pipeline.label_names(config.data))
  if num_labels != config.model.num_classes:
    raise ConfigError(f'the dataset {config.data.name} has {num_labels} classes but '
                      f'model.num_classes={config.model.num_classes}')


def check_init_from(config) -> None:
  """config.init_from, when set, must be an exported model (FileNotFoundError says how to make one)."""
  if not config.init_from:
    return
  try:
    saved = model_checkpoints.load_config(config.init_from)
  except FileNotFoundError as e:
    raise FileNotFoundError(
        f'config.init_from: {e}. Convert pretrained weights with `python -m laps_jax.convert`, '
        'export a run with `python -m laps_jax.export`, or set --config.init_from= to start from '
        'scratch.') from None
  if saved.name != config.model.name:
    logging.warning('init_from holds a %r model; this run builds %r', saved.name, config.model.name)


def check_mesh(config, mesh, *, eval_batches: bool = True) -> None:
  """The batch sizes split over the mesh (the evaluation ones only if `eval_batches`), and the
  heads over its tensor axis."""
  mesh_lib.check_batch(config.batch_size, mesh)
  if eval_batches:
    mesh_lib.check_batch(config.eval.batch_size, mesh, 'config.eval.batch_size')
    mesh_lib.check_batch(config.test.batch_size, mesh, 'config.test.batch_size')
  mesh_lib.check_model_fits(config.model, mesh)


# =============================================================================================
# Run length and optimizer
# =============================================================================================
def run_length(config, num_train_examples: int | None) -> tuple[int, float]:
  """(total train steps, train steps per epoch). An epoch is every video seen once: with
  repeated augmentation (data.num_repeats = k) a batch holds batch_size / k videos. Without a
  dataset size (dry run on an unprepared dataset) an epoch is taken as one step: only the
  schedule's numbers change. The total is rounded up to whole optimizer updates (a multiple of
  optimizer.grad_accum_steps, logged): leftover micro-steps would be computed for nothing and
  leave a half-filled accumulator in the final checkpoint."""
  videos_per_step = config.batch_size / config.data.get('num_repeats', 1)
  steps_per_epoch = (num_train_examples / videos_per_step) if num_train_examples else 1.0
  if config.total_steps > 0:
    total_steps = int(config.total_steps)
  else:
    total_steps = max(1, math.ceil(config.num_epochs * steps_per_epoch))
  accum = config.optimizer.grad_accum_steps
  if total_steps % accum:
    rounded = math.ceil(total_steps / accum) * accum
    logging.warning('%d train steps are not whole updates of optimizer.grad_accum_steps=%d '
                    'micro-steps: training %d steps (%d updates).', total_steps, accum, rounded,
                    rounded // accum)
    total_steps = rounded
  return total_steps, steps_per_epoch


def make_optimizer(config, total_steps: int, steps_per_epoch: float):
  """(tx, schedule); the schedule counts optimizer updates (one per grad_accum_steps steps).

  The optimizer is wrapped in `optax.apply_if_finite`, outside the accumulation, so that a
  micro-batch with a non-finite gradient never reaches the update nor the accumulator. With
  config.skip_nonfinite_updates = N > 0 it drops such micro-steps (N in a row, and the loop
  stops: metrics.TrainMetricsBuffer); with 0 (max_consecutive_errors=0) it applies every update
  as if unwrapped. Wrapped either way, the optimizer state has one structure, so a run can turn
  skipping on when it resumes."""
  accum = config.optimizer.grad_accum_steps
  tx, schedule = optimizer_lib.make_optimizer(config, updates_per_epoch=steps_per_epoch / accum,
                                              total_updates=max(1, total_steps // accum))
  skip = max(0, int(config.get('skip_nonfinite_updates', 0)))
  return optax.apply_if_finite(tx, max_consecutive_errors=skip), schedule


def _num_train_examples(config, *, required: bool) -> int | None:
  pipeline = data_pipeline()
  try:
    return pipeline.num_examples(config.data, config.data.train_split)
  except (pipeline.DatasetNotPreparedError, FileNotFoundError):
    if required:
      raise
    return None  # the dry run needs no data; the schedule's numbers do not change the step


# =============================================================================================
# The shared set-up
# =============================================================================================
@dataclasses.dataclass(frozen=True)
class Setup:
  """What a mode has once the checks pass, before anything is compiled or allocated.

  `schedule` is None and `total_steps` 0 for 'eval', which trains nothing and builds no
  optimizer: its state is the model alone (see `set_up`).
  """
  mesh: jax.sharding.Mesh
  total_steps: int
  steps_per_epoch: float
  schedule: optax.Schedule | None
  init_fn: Callable[[], ts_lib.TrainState]  # builds a fresh TrainState (under the mesh)
  graphdef: nnx.GraphDef
  abstract_state: nnx.State  # ShapeDtypeStructs with NamedShardings on `mesh`

  @property
  def shardings(self):
    return ts_lib.shardings_of(self.abstract_state)


def set_up(config, mode: str, workdir: str | None = None) -> Setup:
  """The checks, the mesh, the run length, the optimizer and the abstract state of `mode`.

  'train' and 'eval' need the data prepared, and check init_from unless `workdir` holds a
  checkpoint (a resumed run neither checks nor reads init_from). The dry run compiles the train
  step without data: a missing dataset only makes an epoch one step, and only the train batch is
  checked against the mesh. 'eval' builds no optimizer: its state template is a TrainState
  without one, and the checkpointer then restores only the checkpoint's `model` item (Orbax
  restores a subset of a checkpoint's items), so nothing about the optimizer needs to be known.
  """
  check_config(config)
  if mode != 'dry_run':
    check_data(config)
    if not (workdir and checkpointing.has_checkpoint(workdir)):
      check_init_from(config)
  mesh = mesh_lib.make_mesh(config.mesh_shape)
  check_mesh(config, mesh, eval_batches=mode != 'dry_run')
  tx = schedule = None
  total_steps, steps_per_epoch = 0, 0.0
  if mode != 'eval':
    total_steps, steps_per_epoch = run_length(
        config, _num_train_examples(config, required=mode == 'train'))
    tx, schedule = make_optimizer(config, total_steps, steps_per_epoch)
  init_fn = ts_lib.make_init_fn(config.model, tx, config.seed, config.get('ema'))
  with mesh_lib.activate(mesh, config.axis_rules):
    mesh_lib.check_rules(config.axis_rules, _logical_names(config))
    graphdef, abstract_state = ts_lib.abstract_train_state(init_fn, mesh)
  mesh_lib.check_param_shardings(abstract_state, mesh)
  return Setup(mesh, total_steps, steps_per_epoch, schedule, init_fn, graphdef, abstract_state)


def _logical_names(config) -> set[str]:
  """Logical axis names of the model's parameters (from an abstract build, no mesh needed)."""
  abstract_model = nnx.eval_shape(lambda: models.build(config.model, nnx.Rngs(0)))
  return mesh_lib.logical_axis_names(nnx.state(abstract_model))


# =============================================================================================
# The state's first values: fresh, or from config.init_from
# =============================================================================================
def fresh_state(config, setup: Setup) -> nnx.State:
  """A newly initialised state, sharded, with config.init_from's parameters when it is set.
  Call under `mesh_lib.activate`."""
  state = ts_lib.create_train_state(setup.init_fn, setup.shardings)
  return initialise_from(state, setup.graphdef, config) if config.init_from else state


def initialise_from(state, graphdef, config):
  """Copies the parameters of the exported model at config.init_from into `state`, checked and
  logged as the weight importers do; the classifier is kept freshly initialised when the number
  of classes differs."""
  saved_config = model_checkpoints.load_config(config.init_from)
  converted = weights_assign.ConvertedWeights(
      params=named_params.flatten(model_checkpoints.load_params(config.init_from)))
  train_state = nnx.merge(graphdef, state)
  if saved_config.num_classes != config.model.num_classes:
    reason = (f'init_from has {saved_config.num_classes} classes, '
              f'model.num_classes={config.model.num_classes}')
    for name, shape in weights_assign.flat_param_shapes(train_state.model).items():
      saved = converted.params.get(name)
      if name.startswith('head/') and shape != getattr(saved, 'shape', None):
        converted.params.pop(name, None)
        converted.keep_initialised[name] = reason
  weights_assign.assign_converted(train_state.model, converted, f'config.init_from={config.init_from}')
  logging.info('Initialised the parameters from %s', config.init_from)
  return nnx.state(train_state)
