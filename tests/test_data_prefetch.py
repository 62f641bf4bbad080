"""DevicePrefetcher: the batches in order, made ahead, with the consumed batch's iterator state."""

import threading
import time

import jax
import numpy as np
import pytest

from laps_jax.data import to_device


class CountingIterator:
  """Batches {'x': [i]}; its state is the next i (bytes, like grain's DataLoaderIterator)."""

  def __init__(self, stop=None, fail_at=None, delay=0.0):
    self.i, self.stop, self.fail_at, self.delay = 0, stop, fail_at, delay
    self.made = 0

  def __next__(self):
    if self.delay:
      time.sleep(self.delay)
    if self.i == self.stop:
      raise StopIteration
    if self.i == self.fail_at:
      raise RuntimeError('worker died')
    self.i += 1
    self.made += 1
    return {'x': np.array([self.i - 1])}

  def get_state(self):
    return str(self.i).encode()

  def set_state(self, state):
    self.i = int(state.decode())


def test_batches_in_order_made_ahead_and_the_state_of_the_consumed_one():
  source = CountingIterator(stop=10)
  puts = []
  prefetcher = to_device.DevicePrefetcher(source, lambda b: puts.append(1) or jax.device_put(b),
                                          size=2)
  assert prefetcher.get_state() == b'0'
  first = [int(next(prefetcher)['x'][0]) for _ in range(3)]
  assert first == [0, 1, 2]
  deadline = time.time() + 5
  while source.made < 5 and time.time() < deadline:   # 3 consumed + 2 made ahead
    time.sleep(0.01)
  time.sleep(0.2)
  assert source.made == 5
  assert prefetcher.get_state() == b'3'               # not b'5': the consumed batches only
  state = prefetcher.get_state()
  rest = [int(b['x'][0]) for b in prefetcher]
  assert rest == list(range(3, 10))
  prefetcher.set_state(state)                         # a restore: continue after batch 2
  assert [int(b['x'][0]) for b in prefetcher] == list(range(3, 10))


def test_errors_reach_the_consumer_and_waiting_is_counted():
  prefetcher = to_device.DevicePrefetcher(CountingIterator(fail_at=2, delay=0.05), lambda b: b)
  next(prefetcher)
  next(prefetcher)
  with pytest.raises(RuntimeError, match='worker died'):
    next(prefetcher)
  assert prefetcher.take_wait_seconds() > 0.05   # the producer is slower than the consumer
  assert prefetcher.wait_seconds == 0.0
  assert threading.active_count() >= 1


def test_close_stops_the_thread():
  prefetcher = to_device.DevicePrefetcher(CountingIterator(), lambda b: b, size=2)
  next(prefetcher)
  prefetcher.close()
  assert all(t.name != 'device_prefetch' for t in threading.enumerate())
