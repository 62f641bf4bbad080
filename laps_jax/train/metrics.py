"""Metric writers, progress hooks, the parameter overview, and host-side handling of per-step
train metrics.

clu's writers and periodic actions are imported where they are made, after
`tensorboard.install()` (clu.metric_writers imports TensorFlow otherwise; see tensorboard.py).

Train metrics stay on the devices until a log or checkpoint step (fetching every step would
stall the asynchronous dispatch); then the buffered steps are fetched together, checked for a
non-finite loss, averaged and written. With config.skip_nonfinite_updates = N > 0 the steps the
train step skipped (non-finite loss or gradients) are counted instead (`skipped_updates`, left
out of the means) and the run stops after N in a row.
"""
import math
import time

import jax
import numpy as np
from clu import parameter_overview
from flax import nnx

from laps_jax.train import tensorboard
from laps_jax.train.errors import NonFiniteLossError


def create_writer(workdir: str):
  """A clu MetricWriter: TensorBoard event files in `workdir` plus the log (process 0); only the
  log elsewhere."""
  tensorboard.install()
  from clu import metric_writers  # pylint: disable=g-import-not-at-top  (after install())
  return metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)


def create_hooks(writer, *, num_train_steps: int, every_steps: int, profile_steps: int, logdir: str,
                 profile_first_step: int = 10):
  """(report_progress, hooks): clu's periodic actions of the train loop. `report_progress` writes
  steps/s and the time spent in its `timed(...)` sections (evaluation, checkpoints); on process 0
  and with `profile_steps` > 0 one profile of that many steps, from `profile_first_step` on, goes
  to `logdir` (clu's `Profile` would otherwise trace again every hour: every_secs=3600)."""
  tensorboard.install()
  from clu import periodic_actions  # pylint: disable=g-import-not-at-top  (after install())
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=num_train_steps, writer=writer, every_steps=every_steps)
  hooks = [report_progress]
  if profile_steps > 0 and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(
        num_profile_steps=profile_steps, profile_duration_ms=None, first_profile=profile_first_step,
        every_steps=None, every_secs=None, logdir=logdir))
  return report_progress, hooks


def log_parameter_overview(model_state: nnx.State) -> int:
  """Logs a table of every parameter (shape, size, mean, std, sharding); returns the count."""
  params = nnx.to_pure_dict(nnx.filter_state(model_state, nnx.Param))
  # 'global': the arrays are sharded; every process computes the statistics together.
  parameter_overview.log_parameter_overview(params, include_stats='global', jax_logging_process=0)
  return parameter_overview.count_parameters(params)


def to_host(tree):
  """Fully replicated global arrays -> NumPy (works on every process of a multi-host run)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


class TrainMetricsBuffer:
  """Collects the metrics dicts of consecutive train steps (on device) until `flush`.

  `max_skipped_in_a_row`: config.skip_nonfinite_updates (0: the first non-finite loss stops).
  `resume_hint()`: what the NonFiniteLossError adds: the checkpoint to resume from.
  """

  def __init__(self, max_skipped_in_a_row: int = 0, resume_hint=lambda: ''):
    self._max_skipped = max_skipped_in_a_row
    self._skipped_in_a_row = 0  # carried over flushes
    self._resume_hint = resume_hint
    self._steps: list[int] = []
    self._metrics: list[dict] = []
    self._last_flush_time = time.monotonic()
    self._last_flush_step: int | None = None

  def add(self, step: int, metrics: dict) -> None:
    self._steps.append(step)
    self._metrics.append(metrics)

  def flush(self) -> tuple[dict[str, float], dict[str, float]]:
    """(mean of each metric over the buffered steps, timing: steps/s), and empties the buffer.

    Raises NonFiniteLossError naming the first step whose loss is NaN or infinite (or, skipping,
    the step that made max_skipped_in_a_row skipped steps in a row).
    """
    if not self._metrics:
      return {}, {}
    values, kept = to_host(self._metrics), []
    for step, m in zip(self._steps, values):
      if self._max_skipped > 0 and 'skipped_updates' in m:
        skipped = bool(m['skipped_updates'])
        self._skipped_in_a_row = self._skipped_in_a_row + 1 if skipped else 0
        if self._skipped_in_a_row >= self._max_skipped:
          raise NonFiniteLossError(
              f'{self._skipped_in_a_row} updates in a row had a non-finite loss or gradient '
              f'(config.skip_nonfinite_updates={self._max_skipped}) at step {step}; stopping. '
              + self._resume_hint())
        if skipped:
          continue
      elif not math.isfinite(float(m['loss'])):
        raise NonFiniteLossError(
            f'the training loss is {float(m["loss"])} at step {step}; stopping. '
            + self._resume_hint())
      kept.append(m)
    means = {k: float(np.mean([m[k] for m in kept])) for k in values[0] if kept}
    if 'skipped_updates' in values[0]:  # a count over the flushed steps, not a mean
      means['skipped_updates'] = float(sum(m['skipped_updates'] for m in values))
    now = time.monotonic()
    timing = {}
    if self._last_flush_step is not None:
      steps = self._steps[-1] - self._last_flush_step
      timing['steps_per_sec'] = steps / max(now - self._last_flush_time, 1e-9)
    self._last_flush_time, self._last_flush_step = now, self._steps[-1]
    self._steps, self._metrics = [], []
    return means, timing

  def reset_timer(self, step: int) -> None:
    """Restart the steps/s clock (after an evaluation or a checkpoint pause)."""
    self._last_flush_time, self._last_flush_step = time.monotonic(), step
