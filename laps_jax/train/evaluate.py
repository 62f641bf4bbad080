"""Evaluation over a finite loader: the quick single-view validation and the multi-view test.

Single view: the centre clip, centre crop of each video (`make_eval_loader(multi_view=False)`).
Multi-view (the papers' test protocol): `test_clips` uniformly spaced clips × `test_crops`
crops (left/centre/right along the long side) per video; the views' logits are summed
(`config.test.aggregate`, see `train_state.aggregate_views`) and the sum is scored.

Every process iterates over the same number of batches (the loader pads with mask=False), the
step returns sums over the global batch, and only the sums come to the host.
"""
import time
from typing import Callable, Iterable

import jax
import numpy as np
from absl import logging

from laps_jax.train.metrics import to_host


class Evaluation(dict):
  """{'loss', 'top1', 'top5', 'count'} (floats), and per class: `class_hits` (top-1 hits) and
  `class_count` (videos), float64[K] NumPy arrays (for the per-class table; not in the dict, so
  the dict stays a set of scalars)."""
  class_hits: np.ndarray | None = None
  class_count: np.ndarray | None = None


def evaluate(eval_step: Callable, state, batches: Iterable[dict], to_global: Callable,
             max_batches: int = -1) -> Evaluation:
  """Runs `eval_step(state, global_batch) -> sums` over `batches` (local NumPy batches).

  Returns loss (mean cross-entropy), top1, top5 (fractions) and count (examples scored), with the
  per-class sums as attributes (`Evaluation`). `max_batches` > 0 stops early (a quick look; the
  same on every process).
  """
  start = time.monotonic()
  totals = None
  for i, batch in enumerate(batches):
    if 0 <= max_batches <= i:
      break
    sums = eval_step(state, to_global(batch))
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
  if totals is None:
    raise ValueError('the evaluation split yielded no batches')
  totals = to_host(totals)
  count = float(totals['count'])
  results = Evaluation(loss=float(totals['loss']) / count, top1=float(totals['top1']) / count,
                       top5=float(totals['top5']) / count, count=count)
  if 'class_hits' in totals:
    results.class_hits = np.asarray(totals['class_hits'], np.float64)
    results.class_count = np.asarray(totals['class_count'], np.float64)
  logging.info('Evaluated %d examples in %.1f s.', int(count), time.monotonic() - start)
  return results
