"""Training checkpoints: Orbax CheckpointManager (asynchronous), preemption, resume.

WORKDIR/checkpoints/<step>/
    model/       the model state: parameters and the dropout RNG stream (StandardSave)
    optimizer/   the optimizer state: step count, optax.apply_if_finite's counters around the
                 momenta and gradient-accumulation buffers (a checkpoint from before that wrapper
                 resumes: its state is read into the wrapper, whose counters start at zero)
    ema/         the EMA of the weights, when config.ema.decay > 0 (laps_jax/train/ema.py)
    data/        the grain iterator's position, one JSON file per process (grain's handler)

Kept: the last `keep` steps and, with `best_metric` set (config.checkpoint.best_metric, e.g.
'val_top1'), also the step with the best value of that validation metric (max; min for a loss),
through Orbax's preservation policies (LatestN + BestN). The loop passes the validation metrics
with the save of the step it validated; steps saved without them only count as latest.

Model and optimizer are separate items so that `laps_jax.export` can read the model alone.
Saving is asynchronous: the arrays are copied off the devices, then written in a background
thread while training goes on. The grain iterator state is captured at the call.

Resuming (`restore_intact`) takes the newest checkpoint that restores (or the step
config.checkpoint.restore_step names). Passed over, with a warning each:
  - a numbered folder Orbax did not finalise (no commit_success.txt, e.g. `checkpoints/7/junk.txt`);
  - a damaged checkpoint (a truncated array file, a garbled manifest, a missing
    data/process_0-of-1.json): its restore fails, and the next older one is tried. Bytes changed
    inside an array file that still decodes go unnoticed: the format has no checksums.
Training then moves such folders, and any checkpoint newer than the one it resumes from, to
WORKDIR/checkpoints_set_aside/<step> (kept for a look, never deleted): left in checkpoints/, Orbax
would count them as the latest steps, refuse to save those steps again, and delete them as old
checkpoints. A checkpoint that does not fit the config (other shapes or items) is an error, not
damage. Paths go through etils.epath: a gs:// workdir works as a local one.
"""
import logging

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers
from jax.experimental import multihost_utils
from flax import nnx

from laps_jax import checkpoints as model_checkpoints
from laps_jax import named_params
from laps_jax.train.errors import ConfigError
# Moved to preemption.py; the old name stays importable.
from laps_jax.train.preemption import PreemptionWatcher  # pylint: disable=unused-import

CHECKPOINT_DIR = 'checkpoints'
SET_ASIDE_DIR = 'checkpoints_set_aside'  # passed-over step folders, moved out of Orbax's sight
STATE_ITEMS = ('model', 'optimizer', 'ema')  # the train state's parts, each its own Orbax item


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` that knows the items of a training checkpoint."""

  def __init__(self, workdir: epath.PathLike, *, keep: int, asynchronous: bool = True,
               best_metric: str = '', read_only: bool = False):
    """`read_only`: for evaluation and export, which neither save nor create the directory."""
    self.workdir = model_checkpoints.as_path(workdir)
    self.directory = self.workdir / CHECKPOINT_DIR
    self.best_metric = best_metric
    self.read_only = read_only
    if best_metric:
      # Orbax sorts ascending and keeps the last n: reverse for a metric to minimise.
      lower_is_better = best_metric_mode(best_metric) == 'min'
      metric = lambda metrics: metrics[best_metric]
      policy = checkpoint_managers.AnyPreservationPolicy([
          checkpoint_managers.LatestN(n=keep),
          checkpoint_managers.BestN(get_metric_fn=metric, reverse=lower_is_better, n=1,
                                    keep_checkpoints_without_metrics=False)])
      options = ocp.CheckpointManagerOptions(
          preservation_policy=policy, best_fn=metric, best_mode=best_metric_mode(best_metric),
          create=not read_only, read_only=read_only, enable_async_checkpointing=asynchronous)
    else:
      options = ocp.CheckpointManagerOptions(
          max_to_keep=None if read_only else keep, create=not read_only, read_only=read_only,
          enable_async_checkpointing=asynchronous)
    handlers = {item: ocp.StandardCheckpointHandler() for item in STATE_ITEMS}
    handlers['data'] = grain.checkpoint.CheckpointHandler()
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def finalized_steps(self) -> list[int]:
    """The steps whose folders Orbax finalised, ascending."""
    return sorted(s for s in self.all_steps() if is_finalized(self.directory / str(s)))

  def restore_intact(self, abstract_state: nnx.State, data_iterator=None, *,
                     step: int = -1) -> tuple[int, nnx.State] | None:
    """(step, state) of the newest checkpoint that restores, or of `step` when it is >= 0
    (config.checkpoint.restore_step); None when the directory holds no finalised checkpoint.

    Unfinalised folders and damaged checkpoints are passed over with a warning (see the module
    docstring). Not `read_only` (training), they and every checkpoint newer than the restored
    one are moved to WORKDIR/checkpoints_set_aside. Raises ConfigError for a `step` that is not
    there or does not restore, for a checkpoint that does not fit `abstract_state`, and when no
    checkpoint restores.
    """
    unfinished = [s for s in self.all_steps() if not is_finalized(self.directory / str(s))]
    for s in unfinished:
      logging.warning('Ignoring %s: not a checkpoint Orbax finalised (no commit_success.txt).',
                      self.directory / str(s))
    steps = self.finalized_steps()
    if step < -1 or (step >= 0 and step not in steps):
      raise ConfigError(f'config.checkpoint.restore_step={step}: no checkpoint at that step in '
                        f'{self.directory} (the steps there: {steps})')
    damaged = []
    for candidate in ([step] if step >= 0 else reversed(steps)):
      self._check_fits(candidate, abstract_state)
      try:
        state, error = self.restore(candidate, abstract_state, data_iterator), None
      except Exception as e:  # pylint: disable=broad-except  (TensorStore, JSON, OS errors)
        error = e
      if jax.process_count() > 1:  # each process reads its own shards: all must have succeeded
        failed = multihost_utils.process_allgather(np.int32(error is not None))
        if failed.any() and error is None:
          error = RuntimeError(f'the restore failed on processes {np.flatnonzero(failed).tolist()}')
      if error is not None:
        message = str(error).strip()
        # TensorStore appends a dump of its whole spec to the first line: keep the sentence.
        first = message.splitlines()[0].split(' See full TensorStore details')[0] if message else ''
        reason = f'{type(error).__name__}: {first[:300]}'
        if step >= 0:
          raise ConfigError(f'config.checkpoint.restore_step={step}: the checkpoint in '
                            f'{self.directory / str(step)} is damaged ({reason}); the steps there: '
                            f'{steps}') from None
        logging.warning('The checkpoint %s is damaged and is passed over (%s).',
                        self.directory / str(candidate), reason)
        damaged.append(candidate)
        continue
      if not self.read_only:
        self._set_aside(sorted(set(unfinished) | {s for s in steps if s > candidate}))
      return candidate, state
    if damaged:
      raise ConfigError(f'no checkpoint in {self.directory} restores: every one is damaged '
                        f'(steps {sorted(damaged)}; see the warnings above). Move them away to '
                        'start afresh, or use a new workdir.')
    if not self.read_only:
      self._set_aside(unfinished)
    return None

  def _item_metadata(self, step: int):
    """Orbax's metadata of the checkpoint at `step`; None when unreadable (the restore then
    reports the damage)."""
    try:
      return self.manager.item_metadata(step)
    except Exception:  # pylint: disable=broad-except
      return None

  @staticmethod
  def _restore_targets(abstract_state: nnx.State, items, metadata) -> tuple[dict, bool]:
    """({item: pure-dict target}, whether the optimizer predates optax.apply_if_finite): the
    abstract state's, except the optimizer of a checkpoint saved before the optimizer was
    wrapped (setup.make_optimizer), whose state then sits where the wrapper's `inner_state` is
    now. `metadata`: the checkpoint's (`_item_metadata`)."""
    targets = {item: nnx.to_pure_dict(abstract_state[item]) for item in items}
    optimizer = targets.get('optimizer')
    if optimizer is None or metadata is None or not _has_finite_counters(optimizer):
      return targets, False
    saved = named_params.flatten(metadata.get('optimizer') or {})
    if not saved or any(name.startswith('opt_state/inner_state/') for name in saved):
      return targets, False
    targets['optimizer'] = {**optimizer, 'opt_state': optimizer['opt_state']['inner_state']}
    return targets, True

  def _check_fits(self, step: int, abstract_state: nnx.State) -> None:
    """ConfigError when the checkpoint at `step` holds other items or other parameter names or
    shapes than `abstract_state` (the config changed): not damage, so no older step is tried.
    Unreadable metadata is left for the restore to report as damage."""
    metadata = self._item_metadata(step)
    if metadata is None:
      return
    items = [item for item in STATE_ITEMS if item in abstract_state]
    targets, _ = self._restore_targets(abstract_state, items, metadata)
    for item in items:
      saved = metadata.get(item) if item in metadata else None
      if saved is None:
        problem = f'it has no {item!r} item'
      else:
        wanted = named_params.flatten(targets[item])
        saved = named_params.flatten(saved)
        differ = sorted(set(wanted) ^ set(saved)) or sorted(
            name for name, x in wanted.items()
            if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)  # stored as raw key data
            and tuple(x.shape) != tuple(saved[name].shape))
        if not differ:
          continue
        name = differ[0]
        problem = f'{item} {name!r} ' + (
            'is only in the checkpoint' if name not in wanted else
            "is only in this config's state" if name not in saved else
            f'has shape {tuple(saved[name].shape)}, the config gives {tuple(wanted[name].shape)}'
        ) + (f' (and {len(differ) - 1} more differences)' if len(differ) > 1 else '')
      raise ConfigError(f'the checkpoint {self.directory / str(step)} does not fit this config: '
                        f'{problem}. Resume with the config it was saved with '
                        f'({self.workdir / "config.json"}), or use a new workdir.')

  def _set_aside(self, steps: list[int]) -> None:
    """Moves the folders of `steps` to WORKDIR/checkpoints_set_aside/<step> (process 0; every
    process waits), so that Orbax neither counts, overwrites nor deletes them."""
    if not steps:
      return
    if jax.process_index() == 0:
      target_dir = self.workdir / SET_ASIDE_DIR
      target_dir.mkdir(parents=True, exist_ok=True)
      for s in steps:
        target, n = target_dir / str(s), 1
        while target.exists():  # set aside before: keep both
          target, n = target_dir / f'{s}.{n}', n + 1
        (self.directory / str(s)).rename(target)
        logging.warning('Moved %s to %s: training goes on from an older step and will save this '
                        'step again.', self.directory / str(s), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('laps_jax:checkpoints_set_aside')
    self.manager.reload()

  def best_step(self) -> int | None:
    """The kept step with the best `best_metric`; None without best_metric or without a step
    saved with metrics."""
    if not self.best_metric:
      return None
    scored = [s for s in self.manager.all_steps() if self.manager.metrics(s)]
    return self.manager.best_step() if scored else None

  def save(self, step: int, state: nnx.State, data_iterator=None, metrics: dict | None = None) -> None:
    """Starts an asynchronous save of `state` (and the data iterator position) at `step`;
    `metrics` (the validation of this very step) rank it for the best checkpoint."""
    args = {item: ocp.args.StandardSave(nnx.to_pure_dict(state[item]))
            for item in STATE_ITEMS if item in state}
    if data_iterator is not None:
      args['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    if metrics is not None and self.best_metric and self.best_metric not in metrics:
      raise KeyError(f'config.checkpoint.best_metric={self.best_metric!r} is not among the '
                     f'validation metrics {sorted(metrics)}')
    # force=True: the loop decides when to save (interval, end, preemption).
    self.manager.save(step, args=ocp.args.Composite(**args), force=True,
                      metrics=metrics if self.best_metric else None)

  def restore(self, step: int, abstract_state: nnx.State, data_iterator=None) -> nnx.State:
    """The state saved at `step`, restored straight into the shardings of `abstract_state`
    (a tree of ShapeDtypeStructs on the current mesh, which may differ from the saving mesh).
    Only the items `abstract_state` has are read: the state of an evaluation has no `optimizer`.
    `data_iterator`, if given, is moved to the saved position in place."""
    items = [item for item in STATE_ITEMS if item in abstract_state]
    targets, predates_wrapper = self._restore_targets(abstract_state, items,
                                                      self._item_metadata(step))
    args = {item: ocp.args.StandardRestore(targets[item]) for item in items}
    if data_iterator is not None:
      args['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = dict(self.manager.restore(step, args=ocp.args.Composite(**args)))
    if predates_wrapper:
      restored['optimizer'] = _wrap_in_fresh_finite_counters(
          restored['optimizer'], nnx.to_pure_dict(abstract_state['optimizer']))
      logging.info('The checkpoint at step %d predates the non-finite-update counters '
                   '(optax.apply_if_finite): they start at zero.', step)
    state = jax.tree.map(lambda x: x, abstract_state)  # a copy to fill in
    for item in items:
      nnx.replace_by_pure_dict(state[item], restored[item])
    return state

  def restore_model_arrays(self, step: int | None = None, item: str = 'model') -> dict:
    """The `model` item (or the model part of the `ema` item) of a checkpoint as a nested dict of
    NumPy arrays (for export)."""
    steps = self.finalized_steps()
    step = (steps or [None])[-1] if step is None else step
    if step is None or step not in steps:
      raise FileNotFoundError(f'no checkpoint at step {step} in {self.directory} '
                              f'(steps there: {steps})')
    metadata = self.manager.item_metadata(step)
    if metadata.get(item) is None:
      raise FileNotFoundError(f'the checkpoint at step {step} in {self.directory} has no {item!r} '
                              'item' + (' (the run had config.ema.decay = 0)' if item == 'ema' else ''))
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), metadata[item])
    restored = self.manager.restore(step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(target)}))
    return restored[item]['model'] if item == 'ema' else restored[item]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def is_finalized(step_dir: epath.Path) -> bool:
  """Whether Orbax finalised a step folder: it writes commit_success.txt last, on every file
  system (Orbax's own `is_path_finalized` trusts any non-temporary name on a local disk)."""
  return ocp.path.step.is_path_finalized(
      step_dir, temporary_path_cls=ocp.path.atomicity.CommitFileTemporaryPath)


def has_checkpoint(workdir: epath.PathLike) -> bool:
  """Whether WORKDIR/checkpoints holds a finalised checkpoint (reads only, without a manager)."""
  directory = model_checkpoints.as_path(workdir) / CHECKPOINT_DIR
  return any(is_finalized(path) for path in ocp.path.step.checkpoint_steps_paths(directory))


def _has_finite_counters(optimizer: dict) -> bool:
  opt_state = optimizer.get('opt_state')
  return isinstance(opt_state, dict) and 'inner_state' in opt_state


def _wrap_in_fresh_finite_counters(restored: dict, wrapped_target: dict) -> dict:
  """The restored optimizer of a checkpoint from before optax.apply_if_finite, inside the
  wrapper, with its counters as at the start of a run (no non-finite step seen)."""
  counters = {}
  for name, target in wrapped_target['opt_state'].items():
    if name != 'inner_state':
      value = np.ones if name == 'last_finite' else np.zeros
      counters[name] = jax.device_put(value(target.shape, target.dtype), target.sharding)
  return {**restored, 'opt_state': {**counters, 'inner_state': restored['opt_state']}}


def best_metric_mode(metric: str) -> str:
  """'min' for a loss, 'max' for an accuracy."""
  return 'min' if 'loss' in metric else 'max'
