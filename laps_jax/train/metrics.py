"""Metric writers, progress hooks, the parameter overview, and host-side handling of per-step
train metrics.

clu's writers and periodic actions are imported where they are made, after
`tensorboard.install()` (clu.metric_writers imports TensorFlow otherwise; see tensorboard.py).

Train metrics stay on the devices until a log or checkpoint step (fetching every step would
stall the asynchronous dispatch); then the buffered steps are fetched together, checked for a
non-finite loss, averaged and written.
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
  """Collects the metrics dicts of consecutive train steps (on device) until `flush`."""

  def __init__(self):
    self._steps: list[int] = []
    self._metrics: list[dict] = []
    self._last_flush_time = time.monotonic()
    self._last_flush_step: int | None = None

  def add(self, step: int, metrics: dict) -> None:
    self._steps.append(step)
    self._metrics.append(metrics)

  def flush(self) -> tuple[dict[str, float], dict[str, float]]:
    """(mean of each metric over the buffered steps, timing: steps/s), and empties the buffer.

    Raises NonFiniteLossError naming the first step whose loss is NaN or infinite.
    """
    if not self._metrics:
      return {}, {}
    values = to_host(self._metrics)
    for step, m in zip(self._steps, values):
      if not math.isfinite(float(m['loss'])):
        raise NonFiniteLossError(
            f'the training loss is {float(m["loss"])} at step {step}; stopping. The last checkpoint '
            'saved before this step is kept (lower the learning rate, or check the data).')
    means = {k: float(np.mean([m[k] for m in values])) for k in values[0]}
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
