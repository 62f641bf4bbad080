"""Training checkpoints: Orbax CheckpointManager (asynchronous), preemption, resume.

WORKDIR/checkpoints/<step>/
    model/       the model state: parameters and the dropout RNG stream (StandardSave)
    optimizer/   the optimizer state: step count, momenta, gradient-accumulation buffers
    data/        the grain iterator's position, one JSON file per process (grain's handler)

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
from jax.experimental import multihost_utils
from flax import nnx

CHECKPOINT_DIR = 'checkpoints'
STATE_ITEMS = ('model', 'optimizer')  # the train state's parts, each its own Orbax item


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` that knows the items of a training checkpoint."""

  def __init__(self, workdir: str, *, keep: int, asynchronous: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=asynchronous)
    handlers = {item: ocp.StandardCheckpointHandler() for item in STATE_ITEMS}
    handlers['data'] = grain.checkpoint.CheckpointHandler()
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: nnx.State, data_iterator=None) -> None:
    """Starts an asynchronous save of `state` (and the data iterator position) at `step`."""
    args = {item: ocp.args.StandardSave(nnx.to_pure_dict(state[item])) for item in STATE_ITEMS}
    if data_iterator is not None:
      args['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    # force=True: the loop decides when to save (interval, end, preemption).
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)

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

  def restore_model_arrays(self, step: int | None = None) -> dict:
    """The `model` item of a checkpoint as a nested dict of NumPy arrays (for export)."""
    step = self.latest_step() if step is None else step
    if step is None or step not in self.all_steps():
      raise FileNotFoundError(f'no checkpoint at step {step} in {self.directory} '
                              f'(steps there: {self.all_steps()})')
    metadata = self.manager.item_metadata(step)['model']
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), metadata)
    restored = self.manager.restore(step, args=ocp.args.Composite(model=ocp.args.StandardRestore(target)))
    return restored['model']

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


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
