"""The data-loader workers end with the process that started them and leave SIGTERM to it.

grain starts its workers with multiprocessing's `spawn`. They stop when the loader is closed or
the main process exits normally, but a kill -9 (or the OOM killer) of the main process tells them
nothing: they would live on with parent 1, and keep the multiprocessing `resource_tracker` alive
too (it exits only once every process holding its pipe has gone). So a thread in each worker waits
on `multiprocessing.parent_process()`'s sentinel (a pipe whose other end only the parent holds:
it closes when the parent process ends, however it ends) and then ends the worker; the tracker
sees its pipe close, unlinks the shared memory left over and exits. (Not Linux's
PR_SET_PDEATHSIG: it fires when the *thread* that started the worker ends, and grain starts
workers from its own threads.)

A preemption notice (SIGTERM) goes to the whole process group. The workers ignore it: the main
process decides when to stop (laps_jax/train/preemption.py), and with several processes it must
keep fetching batches until they agree on the step to save at. They still end with the loader
(grain's close joins them, then SIGKILLs) or with their parent (above).

What the workers hand over lives in shared memory, unlinked when the main process frees it:
`release_shared_memory` makes that happen when a loader ends, not at exit.

`worker_init_fn` is for `IterDataset.mp_prefetch`; grain's `DataLoader` takes no initializer,
so its pipeline carries `InitWorker`, an identity transform that runs the same on unpickling in
a worker (grain unpickles the pipeline once per worker, before the first element).
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import threading

import grain.multiprocessing as grain_multiprocessing
import grain.python as grain


def init_worker(parent_pid: int) -> None:
  """In a worker of `parent_pid`: end with it, ignore SIGTERM. Elsewhere (the main process, a
  copy unpickled in the same process): nothing."""
  parent = multiprocessing.parent_process()
  if parent is None or parent.pid != parent_pid:
    return
  if threading.current_thread() is threading.main_thread():  # where signal handlers are set
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
  threading.Thread(target=_exit_with, args=(parent,), name='exit_with_parent', daemon=True).start()


def _exit_with(parent) -> None:
  parent.join()  # returns once the parent process has ended (also if it already has)
  os._exit(1)  # pylint: disable=protected-access  (no clean-up to run: the loader is gone)


def worker_init_fn():
  """For `mp_prefetch(worker_init_fn=...)`: `init_worker` for workers of this process."""
  parent_pid = os.getpid()
  return lambda worker_index, worker_count: init_worker(parent_pid)


class InitWorker(grain.MapTransform):
  """An identity transform for grain's DataLoader pipeline; `init_worker` when unpickled in a
  worker of the process that made it."""

  def __init__(self):
    self.parent_pid = os.getpid()

  def __setstate__(self, state):
    self.__dict__.update(state)
    init_worker(self.parent_pid)

  def map(self, element):
    return element


def release_shared_memory(timeout_s: float = 10.0) -> None:
  """Unlinks now the shared memory that finished loader iterators still hold (call it when one ends).

  What a worker hands over is a shared-memory block, unlinked when the main process frees the
  array. grain 0.2.18 delays that twice: (1) its thread prefetch keeps the exception that ended
  the iteration, whose traceback holds the producer frame and so the last element, in a reference
  cycle that only the cyclic GC frees; (2) it unlinks on a background thread. Blocks still held or
  queued at exit are what multiprocessing's resource_tracker reports as "leaked shared_memory
  objects" (the tracker then unlinks them). So: one GC pass, then wait until that thread has done
  what is queued (it runs in order: a no-op queued behind them ends last).
  """
  gc.collect()
  deleter = getattr(grain_multiprocessing.SharedMemoryArray, '_del_thread_pool', None)
  if deleter is not None:  # None until a loader with workers has run; absent in other grain versions
    deleter.apply_async(int).wait(timeout_s)
