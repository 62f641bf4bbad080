"""Training and evaluation of one config, top to bottom.

    run(config, workdir)                 dispatches on config.mode:
      'train'   -> train_and_evaluate    train (resuming from WORKDIR/checkpoints if any), validate
                                         every config.eval.every_steps, multi-view test at the end
      'eval'    -> evaluate_only         multi-view test of the latest checkpoint (or init_from;
                                         config.checkpoint.restore_step picks another)
      'dry_run' -> dry_run               compile only; memory and FLOPs per step

Each mode starts with the same `setup.set_up(config, mode, workdir)`: every check that can run
before compiling, the mesh, the optimizer and the abstract state (see setup.py).

Files in WORKDIR: config.json (the resolved config), checkpoints/ (Orbax), events.out.tfevents.*
(TensorBoard), results.json (the training run's final validation and test metrics),
eval_results.json (those of --config.mode=eval, which leaves results.json alone), and
checkpoints_set_aside/ (damaged or unfinished checkpoint folders a resumed run passed over; see
checkpointing.py). WORKDIR may be a URL (gs://...): every file goes through etils.epath.
"""
import functools
import json
import time

import jax
import numpy as np
import ml_collections
from absl import logging

from laps_jax import checkpoints as model_checkpoints
from laps_jax.train import checkpointing
from laps_jax.train import dry_run as dry_run_lib
from laps_jax.train import ema as ema_lib
from laps_jax.train import evaluate as evaluate_lib
from laps_jax.train import mesh as mesh_lib
from laps_jax.train import compilation_cache
from laps_jax.train import metrics as metrics_lib
from laps_jax.train import precise_bn
from laps_jax.train import preemption as preemption_lib
from laps_jax.train import setup as setup_lib
from laps_jax.train import summaries
from laps_jax.train import train_state as ts_lib
from laps_jax.train.errors import ConfigError
# Public here too, where the tests and notebooks have always found them.
from laps_jax.train.setup import check_config, check_init_from, initialise_from  # pylint: disable=unused-import

RESULTS_FILE = 'results.json'
EVAL_RESULTS_FILE = 'eval_results.json'  # --config.mode=eval: the training run's results stay
CONFIG_FILE = 'config.json'


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs `config.mode` in `workdir`; returns the results dict."""
  modes = {'train': train_and_evaluate, 'eval': evaluate_only, 'dry_run': dry_run}
  if config.mode not in modes:
    raise ConfigError(f'config.mode must be one of {sorted(modes)}, got {config.mode!r}')
  compilation_cache.enable(config.get('compilation_cache_dir', 'auto'))
  return modes[config.mode](config, workdir)


# =============================================================================================
# Training (--config.mode=train)
# =============================================================================================
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it holds checkpoints) and evaluates.

  Returns the results also written to WORKDIR/results.json: the last train metrics, the
  single-view validation and (config.test.at_end) the multi-view test. A preempted run returns
  {'preempted_at_step': step} and writes no results; main.py then exits with
  config.preemption_exit_code (laps_jax/train/preemption.py).
  """
  run_start = time.monotonic()
  setup = setup_lib.set_up(config, 'train', workdir)
  _save_config(config, workdir)
  logging.info('Mesh %s over %d devices (%d processes); %d train steps, %.1f per epoch.',
               dict(setup.mesh.shape), setup.mesh.size, jax.process_count(), setup.total_steps,
               setup.steps_per_epoch)
  loop = TrainLoop(config, workdir, setup)
  try:
    with mesh_lib.activate(setup.mesh, config.axis_rules):
      if (preempted := loop.train()) is not None:
        return preempted
      loop.evaluate_at_end()
  finally:
    loop.close()
  results = loop.results(wall_seconds=time.monotonic() - run_start)
  _write_results(workdir, RESULTS_FILE, results)
  return results


class TrainLoop:
  """One training run after the set-up: its state, data, writers and checkpoints, and one method
  for each thing the loop does. `train` is the loop itself."""

  def __init__(self, config, workdir: str, setup: setup_lib.Setup):
    self.config, self.workdir, self.setup = config, workdir, setup
    pipeline = setup_lib.data_pipeline()
    # uint8 batches, copied to the devices two steps ahead by a thread (its state is the consumed
    # batch's: checkpoints resume exactly); the float augmentation runs in the step.
    self.train_iter = pipeline.DevicePrefetcher(
        iter(pipeline.make_train_loader(config.data, global_batch_size=config.batch_size,
                                        seed=config.seed, num_classes=config.model.num_classes)),
        put=lambda batch: pipeline.to_global(batch, setup.mesh), size=2)
    self.checkpointer = checkpointing.Checkpointer(
        workdir, keep=config.checkpoint.keep, asynchronous=config.checkpoint.asynchronous,
        best_metric=config.checkpoint.get('best_metric', ''))
    try:
      with mesh_lib.activate(setup.mesh, config.axis_rules):
        self.start_step, self.state = self._restore_or_create()
    except BaseException:  # e.g. a ConfigError about the checkpoints: end the loader's workers
      self.train_iter.close()
      self.checkpointer.close()
      raise
    with mesh_lib.activate(setup.mesh, config.axis_rules):
      self.num_params = metrics_lib.log_parameter_overview(self.state['model'])
    logging.info('%s: %.3f M parameters.', config.model.name, self.num_params / 1e6)
    augment = _device_augment(config)
    skip_nonfinite = int(config.get('skip_nonfinite_updates', 0))
    self.train_step = ts_lib.jit_train_step(
        setup.graphdef, setup.shardings, setup.mesh,
        functools.partial(augment.train, groups=mesh_lib.batch_shards(setup.mesh)),
        skip_nonfinite=skip_nonfinite > 0)
    self.eval_step = ts_lib.jit_eval_step(setup.graphdef, setup.shardings, setup.mesh,
                                          config.test.aggregate, augment.eval_batch)
    self.eval_step_ema = _ema_eval_step(config, setup)  # None without config.ema
    self.writer = metrics_lib.create_writer(workdir)
    summaries.write_config(self.writer, config)
    self.report_progress, self.hooks = metrics_lib.create_hooks(
        self.writer, num_train_steps=setup.total_steps, every_steps=config.log_every_steps,
        profile_steps=config.profile_steps, logdir=workdir,
        profile_first_step=config.get('profile_first_step', 10))
    self.buffer = metrics_lib.TrainMetricsBuffer(skip_nonfinite, resume_hint=self._resume_hint)
    self.buffer.reset_timer(self.start_step)
    self.wait_since = time.monotonic()  # data_wait_fraction: wait / wall time since then
    self.in_flight = None  # the metrics of the step still running on the devices
    self.preemption = preemption_lib.PreemptionWatcher()
    self.validation: dict | None = None  # the latest single-view validation
    self.validation_ema: dict | None = None
    self.validated_step: int | None = None
    self.test: dict | None = None
    self.test_ema: dict | None = None
    self.last_train: dict = {}  # the latest written train metrics

  def _restore_or_create(self) -> tuple[int, object]:
    """(step, state): the latest intact checkpoint, or config.checkpoint.restore_step's (data
    position included; checkpointing.Checkpointer.restore_intact), else a fresh state."""
    restored = self.checkpointer.restore_intact(
        self.setup.abstract_state, self.train_iter,
        step=self.config.checkpoint.get('restore_step', -1))
    if restored is None:
      return 0, setup_lib.fresh_state(self.config, self.setup)
    logging.info('Resuming from the checkpoint at step %d in %s', restored[0],
                 self.checkpointer.directory)
    return restored

  def _resume_hint(self) -> str:
    """Where a stopped run can resume: the last saved checkpoint (for NonFiniteLossError)."""
    steps = self.checkpointer.all_steps()
    if not steps:
      return f'No checkpoint was saved yet in {self.workdir}.'
    return (f'The last checkpoint is step {max(steps)} in {self.checkpointer.directory}: the same '
            f'command with --workdir={self.workdir} resumes from it (lower the learning rate, '
            'check the data, or set --config.skip_nonfinite_updates=N to skip such updates).')

  # ------------------------------------------------------------------------------ the loop
  def train(self) -> dict | None:
    """Trains from the start step to the last; None, or {'preempted_at_step': step}."""
    config, total_steps = self.config, self.setup.total_steps
    logging.info('Training from step %d to %d.', self.start_step, total_steps)
    for step in range(self.start_step + 1, total_steps + 1):
      batch = self._next_batch_unless_preempted(step)
      if batch is None:
        return self._stop_for_preemption(step - 1)
      self._train_step(step, batch)
      is_last = step == total_steps
      if _due(step, config.log_every_steps) or is_last:
        self._write_train_metrics(step)
      if self._precise_bn_due(step, is_last):
        with self.report_progress.timed('precise_bn'):
          self._precise_bn(step)
      if _due(step, config.eval.every_steps) or is_last:
        with self.report_progress.timed('eval'):
          self._validate(step)
      if (_due(step, config.checkpoint.every_steps) or is_last or
          (self.checkpointer.best_metric and self.validated_step == step)):
        with self.report_progress.timed('checkpoint'):
          self._save_checkpoint(step)
    return None

  def _next_batch_unless_preempted(self, step: int) -> dict | None:
    """The next local batch, or None when the job is being preempted (checked at every step, by
    every process: preemption.py). Our data workers ignore SIGTERM; should a fetch still fail
    right after one, a single process tells that from a real data error."""
    if self.preemption.should_stop(step - 1):
      return None
    try:
      return next(self.train_iter)
    except Exception:  # pylint: disable=broad-except
      if self.preemption.signalled(wait_seconds=5.0):
        return None
      raise

  def _train_step(self, step: int, batch: dict) -> None:
    """One step on a batch already on the devices (uint8 clips and the augmentation's numbers)."""
    if step == self.start_step + 1 and self.start_step == 0:
      first_shard = {'videos': np.asarray(batch['videos'].addressable_shards[0].data)}
      summaries.write_input_clips(self.writer, step, first_shard, self.config.data,
                                  self.config.tensorboard.input_clips)
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      self.state, step_metrics = self.train_step(self.state, batch)
    # At most one step queued behind the running one, so the time the loop then waits for the
    # next batch is time the devices would wait too (data_wait_fraction).
    jax.block_until_ready(self.in_flight)
    self.in_flight = step_metrics
    self.buffer.add(step, step_metrics)
    for hook in self.hooks:
      hook(step)

  def _write_train_metrics(self, step: int) -> None:
    """Means of the buffered steps' metrics, the learning rate and clips/s, to the writer."""
    means, timing = self.buffer.flush()  # raises NonFiniteLossError naming the step
    if not means:
      return
    accum = self.config.optimizer.grad_accum_steps
    means['learning_rate'] = float(self.setup.schedule(max(step - 1, 0) // accum))
    if 'steps_per_sec' in timing:
      means['clips_per_sec'] = timing['steps_per_sec'] * self.config.batch_size
    now = time.monotonic()
    means['data_wait_fraction'] = self.train_iter.take_wait_seconds() / max(now - self.wait_since,
                                                                            1e-9)
    self.wait_since = now
    means.update(summaries.device_memory())  # where the backend reports it
    self.writer.write_scalars(step, means)
    self.last_train = means

  def _precise_bn_due(self, step: int, is_last: bool) -> bool:
    pbn = self.config.get('precise_bn')
    return bool(pbn and pbn.num_batches > 0 and
                (is_last or precise_bn.due(step, self.setup.steps_per_epoch, pbn.every_epochs)))

  def _precise_bn(self, step: int) -> None:
    """Recomputes the BatchNorm running averages from `config.precise_bn.num_batches` batches of
    a second training loader (the train iterator keeps its position; train/precise_bn.py)."""
    config, pipeline, setup = self.config, setup_lib.data_pipeline(), self.setup
    loader = pipeline.make_train_loader(config.data, global_batch_size=config.batch_size,
                                        seed=config.seed + step, num_classes=config.model.num_classes)
    batches = (pipeline.to_global(batch, setup.mesh) for batch in loader)
    augment, groups = _device_augment(config), mesh_lib.batch_shards(setup.mesh)
    with mesh_lib.activate(setup.mesh, config.axis_rules):
      self.state, used = precise_bn.update_train_state(
          setup.graphdef, self.state, setup.shardings, batches, config.precise_bn.num_batches,
          prepare=lambda batch: augment.train(batch, groups=groups)['videos'])
    batches.close()  # ends the loader (and its workers) now
    logging.info('Precise BN at step %d: BatchNorm statistics of %d training batches.', step, used)

  def _validate(self, step: int) -> None:
    self.validation, self.validation_ema = self._evaluate_both('validation')
    self.validated_step = step
    self.writer.write_scalars(step, self._validation_scalars())
    self.buffer.reset_timer(step)
    self.wait_since = time.monotonic()  # the evaluation's time is not the loop's

  def _evaluate_both(self, which: str) -> tuple[dict, dict | None]:
    max_batches = self.config.eval.max_batches if which == 'validation' else -1
    return evaluate_raw_and_ema(self.config, self.setup.mesh, self.eval_step, self.eval_step_ema,
                                self.state, which, max_batches)

  def _validation_scalars(self) -> dict:
    """val_* (and val_ema_*) of the latest validation."""
    return _prefixed('val', self.validation, self.validation_ema)

  def _save_checkpoint(self, step: int) -> None:
    self._write_train_metrics(step)  # a non-finite loss stops here, before it can be saved
    metrics = self._validation_scalars() if self.validated_step == step else None
    self.checkpointer.save(step, self.state, self.train_iter, metrics=metrics)

  def _stop_for_preemption(self, step: int) -> dict:
    if step > 0 and step not in self.checkpointer.all_steps():
      self._save_checkpoint(step)
    self.checkpointer.wait()
    logging.warning('Preempted: saved the checkpoint at step %d; a new run in %s resumes from it.',
                    step, self.workdir)
    return {'preempted_at_step': step}

  # ------------------------------------------------------------------------------ the end
  def evaluate_at_end(self) -> None:
    """The multi-view test (config.test.at_end); a run with nothing left to train validates too."""
    if self.start_step == self.setup.total_steps:
      self.validation, self.validation_ema = self._evaluate_both('validation')
    if self.config.test.at_end:
      with self.report_progress.timed('test'):
        self.test, self.test_ema = self._evaluate_both('test')
      step = self.setup.total_steps
      self.writer.write_scalars(step, _prefixed('test', self.test, self.test_ema))
      if self.config.tensorboard.per_class:
        names = _class_names(self.config)
        summaries.write_per_class(self.writer, step, self.test, 'test_per_class_top1', names)
        summaries.write_per_class(self.writer, step, self.test_ema, 'test_ema_per_class_top1', names)

  def close(self) -> None:
    """Flushes the writer and waits for the asynchronous checkpoint saves."""
    try:
      self.train_iter.close()
      self.writer.flush()
    finally:
      self.preemption.close()
      self.checkpointer.close()

  def results(self, wall_seconds: float) -> dict:
    results = {'model': self.config.model.name, 'dataset': self.config.data.name,
               'step': self.setup.total_steps, 'train': self.last_train,
               'parameters': int(self.num_params), 'test_views': _test_views(self.config),
               'wall_seconds': wall_seconds}
    for key in ('validation', 'validation_ema', 'test', 'test_ema'):
      if getattr(self, key) is not None:
        results[key] = getattr(self, key)
    if self.checkpointer.best_metric:
      results['best_checkpoint_step'] = self.checkpointer.best_step()
    return results


def _due(step: int, every_steps: int) -> bool:
  return every_steps > 0 and step % every_steps == 0


def _prefixed(prefix: str, raw: dict, ema: dict | None) -> dict:
  """{prefix_k: v} of the raw weights' metrics and {prefix_ema_k: v} of the EMA's."""
  scalars = {f'{prefix}_{k}': v for k, v in raw.items()}
  if ema is not None:
    scalars.update({f'{prefix}_ema_{k}': v for k, v in ema.items()})
  return scalars


def _ema_eval_step(config, setup: setup_lib.Setup):
  """The eval step on the EMA weights, or None when the state has no EMA."""
  if not ema_lib.has_ema(setup.abstract_state):
    return None
  return ts_lib.jit_eval_step(setup.graphdef, setup.shardings, setup.mesh, config.test.aggregate,
                              _device_augment(config).eval_batch, weights_view=ema_lib.as_model)


def _device_augment(config):
  """The float part of the input pipeline, compiled into the steps: normalisation, colour jitter,
  random erasing, mixup / cutmix, label smoothing (laps_jax.data.device_augment)."""
  return setup_lib.data_pipeline().DeviceAugment.from_config(config.data, config.model.num_classes)


def _class_names(config) -> list[str] | None:
  try:
    return list(setup_lib.data_pipeline().label_names(config.data))
  except Exception:  # pylint: disable=broad-except  (the table then numbers the classes)
    return None


# =============================================================================================
# Evaluation: in training, and alone (--config.mode=eval)
# =============================================================================================
def evaluate_split(config, mesh, eval_step, state, which: str, max_batches: int = -1) -> dict:
  """'validation': the single-view evaluation of config.data.eval_split; 'test': the multi-view
  test of config.data.test_split. `max_batches` > 0 stops early."""
  pipeline = setup_lib.data_pipeline()
  split, batch_size, multi_view = {
      'validation': (config.data.eval_split, config.eval.batch_size, False),
      'test': (config.data.test_split, config.test.batch_size, True),
  }[which]
  loader = pipeline.make_eval_loader(config.data, split=split, global_batch_size=batch_size,
                                     multi_view=multi_view)
  return evaluate_lib.evaluate(eval_step, state, loader,
                               lambda batch: pipeline.to_global(batch, mesh), max_batches)


def evaluate_raw_and_ema(config, mesh, eval_step, eval_step_ema, state, which: str,
                         max_batches: int = -1) -> tuple[dict, dict | None]:
  """(raw weights, EMA weights or None when `eval_step_ema` is None) on `which` split."""
  raw = evaluate_split(config, mesh, eval_step, state, which, max_batches)
  ema = None if eval_step_ema is None else evaluate_split(config, mesh, eval_step_ema, state, which,
                                                          max_batches)
  return raw, ema


def evaluate_only(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Multi-view test (and single-view validation) of the latest intact checkpoint in `workdir`
  (config.checkpoint.restore_step: that step), or of `config.init_from` when the workdir has none.
  Writes WORKDIR/eval_results.json (the training run's results.json is left alone)."""
  setup = setup_lib.set_up(config, 'eval', workdir)
  with mesh_lib.activate(setup.mesh, config.axis_rules):
    state, source, step = _state_to_evaluate(config, workdir, setup)
    logging.info('Evaluating %s', source)
    eval_step = ts_lib.jit_eval_step(setup.graphdef, setup.shardings, setup.mesh, config.test.aggregate,
                                     _device_augment(config).eval_batch)
    # The EMA of a checkpoint (a fresh state from init_from has no average yet).
    eval_step_ema = _ema_eval_step(config, setup) if step is not None else None
    results = {'model': config.model.name, 'dataset': config.data.name, 'source': source, 'step': step}
    for which in ('validation', 'test'):
      results[which], ema = evaluate_raw_and_ema(config, setup.mesh, eval_step, eval_step_ema, state, which)
      if ema is not None:
        results[f'{which}_ema'] = ema
    results['test_views'] = _test_views(config)
  _write_results(workdir, EVAL_RESULTS_FILE, results)
  return results


def _state_to_evaluate(config, workdir: str, setup: setup_lib.Setup):
  """(state, where it came from, step or None): the model of the latest intact checkpoint (or of
  config.checkpoint.restore_step), else init_from. Reads only: a mistyped workdir stays absent."""
  checkpointer = checkpointing.Checkpointer(workdir, keep=config.checkpoint.keep, read_only=True)
  try:
    restored = checkpointer.restore_intact(setup.abstract_state,
                                           step=config.checkpoint.get('restore_step', -1))
  finally:
    checkpointer.close()
  if restored is not None:
    step, state = restored
    return state, f'{checkpointer.directory} step {step}', step
  if config.init_from:
    return setup_lib.fresh_state(config, setup), config.init_from, None
  raise ConfigError(f'nothing to evaluate: the workdir {workdir} has no checkpoints '
                    f'({checkpointer.directory}) and config.init_from is empty')


def _test_views(config) -> int:
  return config.data.test_clips * config.data.test_crops


# =============================================================================================
# Dry run (--config.mode=dry_run)
# =============================================================================================
def dry_run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Compiles the train step for the configured mesh without data; reports memory and FLOPs."""
  del workdir
  setup = setup_lib.set_up(config, 'dry_run')
  with mesh_lib.activate(setup.mesh, config.axis_rules):
    return dry_run_lib.report(config, setup.mesh, setup.graphdef, setup.abstract_state)


# =============================================================================================
# Files in WORKDIR
# =============================================================================================
def _save_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    path = model_checkpoints.as_path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2, sort_keys=True))


def _write_results(workdir: str, name: str, results: dict) -> None:
  logging.info('Results: %s', json.dumps(results, sort_keys=True))
  if jax.process_index() == 0:
    path = model_checkpoints.as_path(workdir) / name
    path.write_text(json.dumps(results, indent=2, sort_keys=True))
    logging.info('Wrote %s', path)
