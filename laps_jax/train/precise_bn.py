"""Precise BatchNorm: recompute the running averages from many training batches before testing.

The LAPS recipe (its configs: `PRECISE_BN: 200`, `PBN_EPOCH: 1`) calls fvcore's
`update_bn_stats` after every training epoch: with the weights fixed, the model runs forward in
training mode on `num_batches` training batches, and every BatchNorm's running mean and variance
become the plain average, over those batches, of the per-batch mean and (unbiased) variance that
the layer sees. This replaces the exponential moving average of training (momentum 0.1), which
lags behind weights that keep changing. Config: `config.precise_bn.num_batches` (0 = off) and
`config.precise_bn.every_epochs`.

Here a forward pass with every BatchNorm's `momentum` set to 1.0 leaves exactly that batch's
statistics in the layer's `nnx.BatchStat`s; the average over batches is kept on the host side of
the loop (`avg += (batch - avg) / (i + 1)`, fvcore's update), then written into the model. Batch
statistics are taken over the global batch (synchronised BatchNorm, models/batch_norm.py). A model
without BatchNorm is left as it is. Parameters, optimizer state and RNG state do not change.
"""
import math
from typing import Callable, Iterable

import jax
from flax import nnx

from laps_jax.models.batch_norm import BatchNorm


def has_batch_norm(model: nnx.Module) -> bool:
  return any(isinstance(node, BatchNorm) for _, node in nnx.iter_graph(model))


def _batch_statistics_fn(graphdef, prepare: Callable | None):
  """jit(state, batch) -> the BatchStat state holding this batch's mean / unbiased variance."""
  def statistics(state, batch):
    if prepare is not None:
      videos = prepare(batch)
    else:
      videos = batch['videos'] if isinstance(batch, dict) else batch
    model = nnx.merge(graphdef, state)
    model.set_attributes(BatchNorm, momentum=1.0, raise_if_not_found=False)
    model(videos, train=True)
    return nnx.state(model, nnx.BatchStat)
  return jax.jit(statistics)


def update_batch_norm_statistics(model: nnx.Module, batches: Iterable, num_batches: int,
                                 prepare: Callable | None = None) -> int:
  """Sets every BatchNorm's running averages of `model` (in place) to the mean, over the first
  `num_batches` of `batches`, of the batch statistics its layers see in training mode.

  batches: yields dicts with 'videos' float[B, T, H, W, 3] (global arrays on the mesh) or the
  arrays themselves; `prepare(batch) -> videos`, if given, runs first inside the compiled pass
  (the trainer's on-device augmentation of uint8 batches). Returns the number of batches used
  (fewer if `batches` runs out; 0 leaves the model unchanged).
  """
  if num_batches <= 0 or not has_batch_norm(model):
    return 0
  graphdef, state = nnx.split(model)
  statistics = _batch_statistics_fn(graphdef, prepare)
  average, used = None, 0
  for batch in batches:
    if used == num_batches:
      break
    current = statistics(state, batch)
    used += 1
    if average is None:
      average = current
    else:
      average = jax.tree.map(lambda avg, new, n=used: avg + (new - avg) / n, average, current)
  if average is not None:
    nnx.update(model, average)
  return used


def due(step: int, steps_per_epoch: float, every_epochs: int) -> bool:
  """True when train step `step` (1-based) ends an epoch whose number (1-based) is a multiple of
  `every_epochs` (the official `epoch % PBN_EPOCH == 0` after each epoch's training)."""
  if every_epochs < 1:
    raise ValueError(f'config.precise_bn.every_epochs must be >= 1, got {every_epochs}')
  epoch, before = math.floor(step / steps_per_epoch), math.floor((step - 1) / steps_per_epoch)
  return epoch > before and epoch % every_epochs == 0


def update_train_state(graphdef, state: nnx.State, shardings, batches: Iterable, num_batches: int,
                       prepare: Callable | None = None) -> tuple[nnx.State, int]:
  """Precise BN on the model of a split train state (`nnx.split(TrainState)`): returns the new
  state, placed on `shardings` (the train step's), and the number of batches used."""
  train_state = nnx.merge(graphdef, state)
  used = update_batch_norm_statistics(train_state.model, batches, num_batches, prepare)
  return jax.device_put(nnx.state(train_state), shardings), used
