"""Host batches -> global jax.Arrays on the mesh, split over the batch axes, fetched ahead.

`to_global` copies one local batch; `DevicePrefetcher` keeps `size` batches already on the
devices, copied by a background thread while the current step computes, and counts the time the
training loop still waits for data (`data_wait_fraction` in the train metrics).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterator, Mapping

import numpy as np

from laps_jax.data import worker_lifetime


def to_global(batch: Mapping[str, np.ndarray], mesh, batch_axes=None) -> dict:
  """Local batch parts of all processes -> global jax.Arrays sharded on `batch_axes` (dim 0).

  `batch_axes` defaults to `laps_jax.train.mesh.BATCH_AXES`. Mesh axes named in it but absent
  from `mesh` are ignored (a mesh without 'fsdp' is fine). The global batch is the concatenation
  of the processes' parts in process order.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from laps_jax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  batch_axes = mesh_lib.BATCH_AXES if batch_axes is None else batch_axes
  axes = tuple(a for a in batch_axes if a in mesh.axis_names)
  spec = jax.sharding.PartitionSpec(axes if axes else None)
  sharding = jax.sharding.NamedSharding(mesh, spec)
  return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for key, value in batch.items()}


class _Failed:
  def __init__(self, error: BaseException):
    self.error = error


_END = object()


class _ClosedIterator:
  """What a closed DevicePrefetcher iterates: nothing, and says so."""

  def __next__(self):
    raise RuntimeError('this DevicePrefetcher is closed')

  def set_state(self, state):
    raise RuntimeError('this DevicePrefetcher is closed')


class DevicePrefetcher:
  """Iterates `put(batch)` for the batches of `iterator`, `size` of them made ahead by a thread.

  Checkpointing: `get_state()` is the host iterator's state right after the batch that `next`
  returned last (not after the ones made ahead), and `set_state` restarts from a state, so the
  object can stand in for the grain iterator in `grain.checkpoint.CheckpointSave / Restore` and a
  resumed run continues exactly. An error of the host iterator (e.g. its workers ended by a
  preemption signal) is raised by `next`.

  `wait_seconds` adds up the time `next` blocked: with `size` batches ready it stays near 0; an
  input-bound loop spends its time there.
  """

  def __init__(self, iterator: Iterator[dict], put: Callable[[dict], dict], size: int = 2):
    self._iterator, self._put, self._size = iterator, put, max(1, int(size))
    self._state = iterator.get_state() if hasattr(iterator, 'get_state') else None
    self._queue: queue.Queue | None = None
    self._thread: threading.Thread | None = None
    self._stop = threading.Event()
    self.wait_seconds = 0.0

  def _produce(self, out: queue.Queue, slots: threading.Semaphore, stop: threading.Event
               ) -> None:
    while not stop.is_set():
      if not slots.acquire(timeout=0.1):   # at most `size` batches made ahead
        continue
      try:
        batch = next(self._iterator)
        state = self._iterator.get_state() if hasattr(self._iterator, 'get_state') else None
        item = (self._put(batch), state)
      except StopIteration:
        item = _END
      except BaseException as e:  # pylint: disable=broad-except  (delivered to the consumer)
        item = _Failed(e)
      out.put(item)
      if not isinstance(item, tuple):
        return

  def _start(self) -> None:
    self._stop = threading.Event()
    self._queue = queue.Queue()
    self._slots = threading.Semaphore(self._size)
    self._thread = threading.Thread(target=self._produce,
                                    args=(self._queue, self._slots, self._stop),
                                    name='device_prefetch', daemon=True)
    self._thread.start()

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._thread is None:
      self._start()
    start = time.perf_counter()
    item = self._queue.get()
    self.wait_seconds += time.perf_counter() - start
    self._slots.release()
    if item is _END:
      self._thread = None
      raise StopIteration
    if isinstance(item, _Failed):
      self._thread = None
      raise item.error
    batch, self._state = item
    return batch

  def take_wait_seconds(self) -> float:
    """The wait added up since the last call (and resets it)."""
    wait, self.wait_seconds = self.wait_seconds, 0.0
    return wait

  def close(self) -> None:
    """Stops the thread and ends the host iterator (its worker processes, their shared memory)
    now, not at exit: the batches made ahead may hold shared memory, which multiprocessing's
    resource_tracker would report as leaked."""
    self._stop_thread()
    self._queue = None
    # grain's DataLoaderIterator has no close() (grain 0.2); the dataset iterator inside has.
    host = getattr(self._iterator, '_iterator', self._iterator)
    if callable(getattr(host, 'close', None)):
      host.close()
    # grain's iterators keep the elements they had fetched ahead (shared memory with workers) until
    # they are freed: drop ours now, not when the caller drops this object (`get_state` still works).
    self._iterator = _ClosedIterator()
    worker_lifetime.release_shared_memory()

  def _stop_thread(self) -> None:
    """Stops the thread (the batches made ahead are dropped; the state stays the consumed one)."""
    if self._thread is not None:
      self._stop.set()
      self._thread.join(timeout=10.0)
      self._thread = None

  # grain.checkpoint handler interface (bytes state, as grain's DataLoaderIterator).
  def get_state(self):
    return self._state

  def set_state(self, state) -> None:
    self._stop_thread()
    self._iterator.set_state(state)
    self._state = state

  def start_prefetch(self) -> None:
    if hasattr(self._iterator, 'start_prefetch'):
      self._iterator.start_prefetch()
