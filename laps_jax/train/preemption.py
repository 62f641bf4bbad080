"""Preemption: on SIGTERM (a scheduler's notice) the run saves the last finished step and exits
with `config.preemption_exit_code`, so that the scheduler starts it again and it resumes there.

One process: a SIGTERM handler sets a flag, which the loop reads before every step.

Several processes: JAX's preemption sync manager (started by `jax.distributed.initialize`;
`jax_enable_preemption_service`, on by default) catches SIGTERM in whichever processes it reaches
(the whole process group, or only one of them), passes the notice on through the coordination
service, and `multihost_utils.reached_preemption_sync_point(step)` turns True at the same step in
every process; so all of them save that step. It must be called at every step by every process.
The data workers ignore SIGTERM (laps_jax/data/worker_lifetime.py), so every process gets its
batches up to the agreed step.

Exit code: DEFAULT_EXIT_CODE = 143 = 128 + SIGTERM, the status a shell (and Kubernetes) reports for
a process that SIGTERM ended. A run killed before it could save is resumable from its last
periodic checkpoint just the same, so one code says "start me again" for both. A run that
finished exits 0 and has written results.json.
"""
import logging
import shlex
import signal
import sys
import threading

import jax
from jax.experimental import multihost_utils

from laps_jax.train.errors import ConfigError

DEFAULT_EXIT_CODE = 143  # 128 + SIGTERM


class PreemptionWatcher:
  """Tells the training loop when to save and stop because the job is being preempted."""

  def __init__(self):
    self._flag = threading.Event()
    self._previous = None
    # Several processes: JAX's own SIGTERM handler is in place; one of ours would replace it.
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del frame
    logging.warning('Received signal %d: saving a checkpoint and stopping.', signum)
    self._flag.set()

  def should_stop(self, step: int) -> bool:
    """Whether to save `step` (the last finished one) and stop; call it at every step."""
    if jax.process_count() > 1:
      return bool(multihost_utils.reached_preemption_sync_point(step))
    return self._flag.is_set()

  def signalled(self, wait_seconds: float = 0.0) -> bool:
    """Whether SIGTERM arrived (waiting up to `wait_seconds` for it): used when fetching a batch
    failed, to tell a preemption from a data error. One process only: with several, the processes
    must stop at the step they agree on (`should_stop`), which needs the batches up to it, so a
    failed fetch is an error there."""
    return self._flag.wait(wait_seconds) if jax.process_count() == 1 else False

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def exit_code(config) -> int:
  """`config.preemption_exit_code`, checked (an exit status is 0..255)."""
  code = config.get('preemption_exit_code', DEFAULT_EXIT_CODE)
  if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
    raise ConfigError(f'config.preemption_exit_code must be an exit status 0..255, got {code!r}')
  return code


def exit_if_preempted(results: dict, config, argv: list[str] | None = None) -> None:
  """After a run: when it was preempted, says how to resume and exits with the preemption code."""
  step = results.get('preempted_at_step')
  if step is None:
    return
  command = shlex.join(['python', *(sys.argv if argv is None else argv)])
  message = (f'PREEMPTED at step {step}: the checkpoint is saved; the same command resumes from '
             f'it: {command}')
  logging.warning(message)
  print(message, file=sys.stderr, flush=True)
  sys.exit(exit_code(config))
