"""Training checkpoints: Orbax CheckpointManager (asynchronous), preemption, resume.

WORKDIR/checkpoints/<step>/
    model/       the model state: parameters and the dropout RNG stream (StandardSave)
    optimizer/   the optimizer state: step count, momenta, gradient-accumulation buffers
    ema/         the EMA of the weights, when config.ema.decay > 0 (laps_jax/train/ema.py)
    data/        the grain iterator's position, one JSON file per process (grain's handler)

Kept: the last `keep` steps and, with `best_metric` set (config.checkpoint.best_metric, e.g.
'val_top1'), also the step with the best value of that validation metric (max; min for a loss),
through Orbax's preservation policies (LatestN + BestN). The loop passes the validation metrics
with the save of the step it validated; steps saved without them only count as latest.

Model and optimizer are separate items so that `laps_jax.export` can read the model alone.
Saving is asynchronous: the arrays are copied off the devices, then written in a background
thread while training goes on. The grain iterator state is captured at the call.
"""
import logging
import os
import signal
import threading

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers
from jax.experimental import multihost_utils
from flax import nnx

CHECKPOINT_DIR = 'checkpoints'
STATE_ITEMS = ('model', 'optimizer', 'ema')  # the train state's parts, each its own Orbax item


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` that knows the items of a training checkpoint."""

  def __init__(self, workdir: str, *, keep: int, asynchronous: bool = True, best_metric: str = ''):
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
    self.best_metric = best_metric
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
          create=True, enable_async_checkpointing=asynchronous)
    else:
      options = ocp.CheckpointManagerOptions(
          max_to_keep=keep, create=True, enable_async_checkpointing=asynchronous)
    handlers = {item: ocp.StandardCheckpointHandler() for item in STATE_ITEMS}
    handlers['data'] = grain.checkpoint.CheckpointHandler()
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

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
    args = {item: ocp.args.StandardRestore(nnx.to_pure_dict(abstract_state[item])) for item in items}
    if data_iterator is not None:
      args['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    state = jax.tree.map(lambda x: x, abstract_state)  # a copy to fill in
    for item in items:
      nnx.replace_by_pure_dict(state[item], restored[item])
    return state

  def restore_model_arrays(self, step: int | None = None, item: str = 'model') -> dict:
    """The `model` item (or the model part of the `ema` item) of a checkpoint as a nested dict of
    NumPy arrays (for export)."""
    step = self.latest_step() if step is None else step
    if step is None or step not in self.all_steps():
      raise FileNotFoundError(f'no checkpoint at step {step} in {self.directory} '
                              f'(steps there: {self.all_steps()})')
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


def best_metric_mode(metric: str) -> str:
  """'min' for a loss, 'max' for an accuracy."""
  return 'min' if 'loss' in metric else 'max'


class PreemptionWatcher:
  """Tells the loop when to save and stop because the job is being preempted (SIGTERM).

  One process: a SIGTERM handler sets a flag. Several processes: JAX's preemption service
  (started by `jax.distributed.initialize`) hears the signal and picks a step at which all
  processes agree to stop, so every process saves the same step.
  """

  def __init__(self):
    self._flag = threading.Event()
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del frame
    logging.warning('Received signal %d: saving a checkpoint and stopping.', signum)
    self._flag.set()

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      return bool(multihost_utils.reached_preemption_sync_point(step))
    return self._flag.is_set()

  def signalled(self, wait_seconds: float = 0.0) -> bool:
    """Whether SIGTERM arrived (waiting up to `wait_seconds` for it): used when the data
    workers died, to tell a preemption of the whole process group from a real data error."""
    return self._flag.wait(wait_seconds) if jax.process_count() == 1 else False

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
