"""Training and evaluation of one config, top to bottom.

    run(config, workdir)                 dispatches on config.mode:
      'train'   -> train_and_evaluate    train (resuming from WORKDIR/checkpoints if any), validate
                                         every config.eval.every_steps, multi-view test at the end
      'eval'    -> evaluate_only         multi-view test of the latest checkpoint (or init_from)
      'dry_run' -> dry_run               compile only; memory and FLOPs per step

Everything that can be checked before compiling is checked first (config keys, data prepared,
batch and heads against the mesh, parameter shapes against the mesh, init_from present), so a
wrong config fails in seconds with a message that says what to change.

Files in WORKDIR: config.json (the resolved config), checkpoints/ (Orbax), events.out.tfevents.*
(TensorBoard), results.json (final validation and test metrics).
"""
import json
import math
import os
import time

import jax
import ml_collections
from absl import logging
from clu import metric_writers
from clu import periodic_actions
from flax import nnx

from laps_jax import checkpoints as model_checkpoints
from laps_jax import models
from laps_jax.train import checkpointing
from laps_jax.train import dry_run as dry_run_lib
from laps_jax.train import evaluate as evaluate_lib
from laps_jax.train import mesh as mesh_lib
from laps_jax.train import metrics as metrics_lib
from laps_jax.train import optimizer as optimizer_lib
from laps_jax.train import train_state as ts_lib
from laps_jax.train.errors import ConfigError

RESULTS_FILE = 'results.json'
CONFIG_FILE = 'config.json'


def _pipeline():
  """The data pipeline module (imported late: it pulls in TFDS / grain)."""
  from laps_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs `config.mode` in `workdir`; returns the results dict."""
  modes = {'train': train_and_evaluate, 'eval': evaluate_only, 'dry_run': dry_run}
  if config.mode not in modes:
    raise ConfigError(f'config.mode must be one of {sorted(modes)}, got {config.mode!r}')
  return modes[config.mode](config, workdir)


# =============================================================================================
# Checks before anything is compiled
# =============================================================================================
def check_config(config) -> None:
  """Static checks of the config: model and data keys, model/data agreement, run length."""
  try:
    models.validate_config(config.model)
    _pipeline().validate_config(config.data)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  for key in ('num_frames', 'image_size'):
    if config.data[key] != config.model[key]:
      raise ConfigError(f'data.{key}={config.data[key]} differs from model.{key}={config.model[key]}')
  if config.total_steps <= 0 and config.num_epochs <= 0:
    raise ConfigError('set config.num_epochs or config.total_steps to a positive value')


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


def check_mesh(config, mesh) -> None:
  mesh_lib.check_batch(config.batch_size, mesh)
  mesh_lib.check_batch(config.eval.batch_size, mesh, 'config.eval.batch_size')
  mesh_lib.check_batch(config.test.batch_size, mesh, 'config.test.batch_size')
  mesh_lib.check_model_fits(config.model, mesh)


def _prepare_state_template(config, mesh, tx):
  """(init_fn, graphdef, abstract_state) on `mesh`, with the parameter checks done."""
  init_fn = ts_lib.make_init_fn(config.model, tx, config.seed)
  with mesh_lib.activate(mesh, config.axis_rules):
    mesh_lib.check_rules(config.axis_rules, _logical_names(config))
    graphdef, abstract_state = ts_lib.abstract_train_state(init_fn, mesh)
  mesh_lib.check_param_shardings(abstract_state, mesh)
  return init_fn, graphdef, abstract_state


def _logical_names(config) -> set[str]:
  """Logical axis names of the model's parameters (from an abstract build, no mesh needed)."""
  abstract_model = nnx.eval_shape(lambda: models.build(config.model, nnx.Rngs(0)))
  return mesh_lib.logical_axis_names(nnx.state(abstract_model))


# =============================================================================================
# Run length and optimizer
# =============================================================================================
def run_length(config, num_train_examples: int | None) -> tuple[int, float]:
  """(total train steps, train steps per epoch). Without a dataset size (dry run on an
  unprepared dataset) an epoch is taken as one step: only the schedule's numbers change."""
  steps_per_epoch = (num_train_examples / config.batch_size) if num_train_examples else 1.0
  if config.total_steps > 0:
    return int(config.total_steps), steps_per_epoch
  return max(1, math.ceil(config.num_epochs * steps_per_epoch)), steps_per_epoch


def make_optimizer(config, total_steps: int, steps_per_epoch: float):
  accum = config.optimizer.grad_accum_steps
  return optimizer_lib.make_optimizer(config, updates_per_epoch=steps_per_epoch / accum,
                                      total_updates=max(1, total_steps // accum))


# =============================================================================================
# Train state: fresh, from init_from, or restored
# =============================================================================================
def initialise_from(state, graphdef, config):
  """Copies the parameters of the exported model at config.init_from into `state`; the
  classifier is kept freshly initialised when the number of classes differs."""
  saved_config = model_checkpoints.load_config(config.init_from)
  params = model_checkpoints.flatten_params(model_checkpoints.load_params(config.init_from))
  train_state = nnx.merge(graphdef, state)
  current = model_checkpoints.flatten_params(nnx.to_pure_dict(nnx.state(train_state.model, nnx.Param)))
  if saved_config.num_classes != config.model.num_classes:
    head = [name for name in current if name.startswith('head/')
            and current[name].shape != getattr(params.get(name), 'shape', None)]
    logging.info('init_from: %d classes saved, %d wanted: re-initialising %s',
                 saved_config.num_classes, config.model.num_classes, head)
    for name in head:
      params[name] = current[name]
  model_checkpoints.assign_params(train_state.model, params)
  logging.info('Initialised the parameters from %s', config.init_from)
  return nnx.state(train_state)


def _save_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), 'w') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def _write_results(workdir: str, results: dict) -> None:
  if jax.process_index() == 0:
    path = os.path.join(workdir, RESULTS_FILE)
    with open(path, 'w') as f:
      json.dump(results, f, indent=2, sort_keys=True)
    logging.info('Wrote %s', path)


# =============================================================================================
# Training
# =============================================================================================
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it holds checkpoints) and evaluates.

  Returns the results also written to WORKDIR/results.json: the last train metrics, the
  single-view validation and (config.test.at_end) the multi-view test.
  """
  pipeline = _pipeline()
  run_start = time.monotonic()

  # ------------------------------------------------------------------- checks and the data
  check_config(config)
  pipeline.ensure_prepared(config.data)  # builds synthetic data; DatasetNotPreparedError otherwise
  check_init_from(config)
  num_labels = len(pipeline.label_names(config.data))
  if num_labels != config.model.num_classes:
    raise ConfigError(f'the dataset {config.data.name} has {num_labels} classes but '
                      f'model.num_classes={config.model.num_classes}')
  mesh = mesh_lib.make_mesh(config.mesh_shape)
  check_mesh(config, mesh)
  total_steps, steps_per_epoch = run_length(
      config, pipeline.num_examples(config.data, config.data.train_split))
  tx, schedule = make_optimizer(config, total_steps, steps_per_epoch)
  init_fn, graphdef, abstract_state = _prepare_state_template(config, mesh, tx)
  shardings = ts_lib.shardings_of(abstract_state)
  _save_config(config, workdir)
  logging.info('Mesh %s over %d devices (%d processes); %d train steps, %.1f per epoch.',
               dict(mesh.shape), mesh.size, jax.process_count(), total_steps, steps_per_epoch)

  # ------------------------------------------------------------------- state: restore or create
  train_loader = pipeline.make_train_loader(
      config.data, global_batch_size=config.batch_size, seed=config.seed,
      num_classes=config.model.num_classes)
  train_iter = iter(train_loader)
  checkpointer = checkpointing.Checkpointer(
      workdir, keep=config.checkpoint.keep, asynchronous=config.checkpoint.asynchronous)
  start_step = checkpointer.latest_step()
  with mesh_lib.activate(mesh, config.axis_rules):
    if start_step is not None:
      logging.info('Resuming from the checkpoint at step %d in %s', start_step, checkpointer.directory)
      state = checkpointer.restore(start_step, abstract_state, train_iter)
    else:
      start_step = 0
      state = ts_lib.create_train_state(init_fn, shardings)
      if config.init_from:
        state = initialise_from(state, graphdef, config)
    num_params = metrics_lib.log_parameter_overview(state['model'])
  logging.info('%s: %.3f M parameters.', config.model.name, num_params / 1e6)

  # ------------------------------------------------------------------- compiled steps
  train_step = ts_lib.jit_train_step(graphdef, shardings, mesh)
  eval_step = ts_lib.jit_eval_step(graphdef, shardings, mesh, config.test.aggregate)

  def to_global(batch):
    return pipeline.to_global(batch, mesh)

  def validate(state) -> dict:
    loader = pipeline.make_eval_loader(config.data, split=config.data.eval_split,
                                       global_batch_size=config.eval.batch_size, multi_view=False)
    return evaluate_lib.evaluate(eval_step, state, loader, to_global, config.eval.max_batches)

  def test(state) -> dict:
    loader = pipeline.make_eval_loader(config.data, split=config.data.test_split,
                                       global_batch_size=config.test.batch_size, multi_view=True)
    return evaluate_lib.evaluate(eval_step, state, loader, to_global)

  # ------------------------------------------------------------------- metrics and hooks
  writer = metrics_lib.create_writer(workdir)
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=total_steps, writer=writer, every_steps=config.log_every_steps)
  hooks = [report_progress]
  if config.profile_steps > 0 and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(num_profile_steps=config.profile_steps, logdir=workdir))
  buffer = metrics_lib.TrainMetricsBuffer()
  buffer.reset_timer(start_step)
  preemption = checkpointing.PreemptionWatcher()
  accum = config.optimizer.grad_accum_steps
  results: dict = {'model': config.model.name, 'dataset': config.data.name}
  last_train: dict = {}

  def write_train_metrics(step):
    means, timing = buffer.flush()  # raises NonFiniteLossError naming the step
    if not means:
      return
    means['learning_rate'] = float(schedule(max(step - 1, 0) // accum))
    if 'steps_per_sec' in timing:
      means['clips_per_sec'] = timing['steps_per_sec'] * config.batch_size
    writer.write_scalars(step, means)
    last_train.clear()
    last_train.update(means)

  def save_checkpoint(step):
    write_train_metrics(step)  # a non-finite loss stops here, before it can be saved
    checkpointer.save(step, state, train_iter)

  def stop_for_preemption(step):
    if step > 0 and step not in checkpointer.all_steps():
      save_checkpoint(step)
    checkpointer.wait()
    logging.warning('Preempted: saved the checkpoint at step %d; a new run in %s resumes from it.',
                    step, workdir)
    return {'preempted_at_step': step}

  # ------------------------------------------------------------------- the loop
  logging.info('Training from step %d to %d.', start_step, total_steps)
  step = start_step
  try:
    with mesh_lib.activate(mesh, config.axis_rules), metric_writers.ensure_flushes(writer):
      for step in range(start_step + 1, total_steps + 1):
        # Preemption is checked before fetching data: a SIGTERM sent to the whole process group
        # also ends the data workers, so the next batch may never come.
        if preemption.should_stop(step - 1):
          return stop_for_preemption(step - 1)
        try:
          local_batch = next(train_iter)
        except Exception:  # pylint: disable=broad-except
          if preemption.signalled(wait_seconds=5.0):
            return stop_for_preemption(step - 1)
          raise
        with jax.profiler.StepTraceAnnotation('train', step_num=step):
          state, step_metrics = train_step(state, to_global(local_batch))
        buffer.add(step, step_metrics)
        for hook in hooks:
          hook(step)
        is_last = step == total_steps

        if step % config.log_every_steps == 0 or is_last:
          write_train_metrics(step)

        if (config.eval.every_steps > 0 and step % config.eval.every_steps == 0) or is_last:
          with report_progress.timed('eval'):
            val = validate(state)
          writer.write_scalars(step, {f'val_{k}': v for k, v in val.items()})
          results['validation'] = val
          buffer.reset_timer(step)

        if (config.checkpoint.every_steps > 0 and step % config.checkpoint.every_steps == 0) or is_last:
          with report_progress.timed('checkpoint'):
            save_checkpoint(step)

      # ----------------------------------------------------------------- final multi-view test
      if start_step == total_steps:  # nothing left to train: just (re)evaluate
        results['validation'] = validate(state)
      if config.test.at_end:
        with report_progress.timed('test'):
          results['test'] = test(state)
        writer.write_scalars(total_steps, {f'test_{k}': v for k, v in results['test'].items()})
  finally:
    preemption.close()
    checkpointer.close()  # waits for the asynchronous saves

  results.update(step=total_steps, train=last_train, parameters=int(num_params),
                 test_views=config.data.test_clips * config.data.test_crops,
                 wall_seconds=time.monotonic() - run_start)
  logging.info('Results: %s', json.dumps(results, sort_keys=True))
  _write_results(workdir, results)
  return results


# =============================================================================================
# Evaluation only (--config.mode=eval)
# =============================================================================================
def evaluate_only(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Multi-view test (and single-view validation) of the latest checkpoint in `workdir`, or of
  `config.init_from` when the workdir has none. Writes WORKDIR/results.json."""
  pipeline = _pipeline()
  check_config(config)
  pipeline.ensure_prepared(config.data)
  check_init_from(config)
  mesh = mesh_lib.make_mesh(config.mesh_shape)
  check_mesh(config, mesh)
  tx, _ = make_optimizer(config, 1, 1.0)  # only its state's structure matters here
  init_fn, graphdef, abstract_state = _prepare_state_template(config, mesh, tx)
  shardings = ts_lib.shardings_of(abstract_state)
  checkpointer = checkpointing.Checkpointer(workdir, keep=config.checkpoint.keep)
  step = checkpointer.latest_step()
  with mesh_lib.activate(mesh, config.axis_rules):
    if step is not None:
      state = checkpointer.restore(step, abstract_state)
      source = f'{checkpointer.directory} step {step}'
    elif config.init_from:
      state = initialise_from(ts_lib.create_train_state(init_fn, shardings), graphdef, config)
      source = config.init_from
    else:
      raise ConfigError(f'nothing to evaluate: {workdir} has no checkpoints and config.init_from is empty')
    checkpointer.close()
    logging.info('Evaluating %s', source)
    eval_step = ts_lib.jit_eval_step(graphdef, shardings, mesh, config.test.aggregate)

    def to_global(batch):
      return pipeline.to_global(batch, mesh)

    val_loader = pipeline.make_eval_loader(config.data, split=config.data.eval_split,
                                           global_batch_size=config.eval.batch_size, multi_view=False)
    test_loader = pipeline.make_eval_loader(config.data, split=config.data.test_split,
                                            global_batch_size=config.test.batch_size, multi_view=True)
    results = {
        'model': config.model.name, 'dataset': config.data.name, 'source': source, 'step': step,
        'validation': evaluate_lib.evaluate(eval_step, state, val_loader, to_global),
        'test': evaluate_lib.evaluate(eval_step, state, test_loader, to_global),
        'test_views': config.data.test_clips * config.data.test_crops,
    }
  logging.info('Results: %s', json.dumps(results, sort_keys=True))
  _write_results(workdir, results)
  return results


# =============================================================================================
# Dry run (--config.mode=dry_run)
# =============================================================================================
def dry_run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Compiles the train step for the configured mesh without data; reports memory and FLOPs."""
  del workdir
  pipeline = _pipeline()
  check_config(config)
  mesh = mesh_lib.make_mesh(config.mesh_shape)
  mesh_lib.check_batch(config.batch_size, mesh)
  mesh_lib.check_model_fits(config.model, mesh)
  try:
    num_train = pipeline.num_examples(config.data, config.data.train_split)
  except (pipeline.DatasetNotPreparedError, FileNotFoundError):
    num_train = None  # the dry run needs no data; the schedule's numbers do not change the step
  total_steps, steps_per_epoch = run_length(config, num_train)
  tx, _ = make_optimizer(config, total_steps, steps_per_epoch)
  _, graphdef, abstract_state = _prepare_state_template(config, mesh, tx)
  with mesh_lib.activate(mesh, config.axis_rules):
    return dry_run_lib.report(config, mesh, graphdef, abstract_state)
