"""grain DataLoaders: the infinite, shuffled training loader and the finite evaluation loaders.

Both shard the records over the JAX processes (`ShardByJaxProcess`); b = global batch / number of
processes is the local batch. Batch contents: `laps_jax.data.pipeline`.
"""

from __future__ import annotations

import math
import os

import grain.python as grain
import numpy as np

from laps_jax.data import data_config as data_config_lib
from laps_jax.data import datasets
from laps_jax.data import repeated_augmentation
from laps_jax.data import transforms
from laps_jax.data import worker_lifetime


def num_workers(data_config) -> int:
  """`config.data.num_workers`, with 'auto' = the CPUs this process may use
  (os.sched_getaffinity) shared among the JAX processes of this host, less one for the training
  loop itself (at least 1)."""
  value = data_config.num_workers
  if value != 'auto':
    return int(value)
  cpus = len(os.sched_getaffinity(0))
  return max(1, cpus // processes_on_this_host() - 1)


def processes_on_this_host() -> int:
  """JAX processes sharing this host: what the launcher says (torchrun, SLURM, Open MPI), else 1
  (one process per host, as on TPU VMs and most multi-host GPU set-ups). A launcher that pins
  each process to its own CPUs already shows in sched_getaffinity; then say 1."""
  for name in ('LOCAL_WORLD_SIZE', 'SLURM_NTASKS_PER_NODE', 'OMPI_COMM_WORLD_LOCAL_SIZE'):
    value = os.environ.get(name, '').split('(')[0].split(',')[0]
    if value.isdigit() and int(value) > 0:
      return int(value)
  return 1


def _ready_for_workers(num_workers: int) -> None:
  """grain's worker processes read absl flags; outside an absl app they are not parsed yet."""
  if num_workers > 0:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()


def _read_options(local_batch: int) -> grain.ReadOptions:
  """Record read-ahead per process. grain's default (16 threads, 500 records) is tuned for
  1-10 kB records; a Kinetics record holds every frame of a clip (~4 MB), so 500 would pin ~2 GB
  per worker and spend CPU parsing records far ahead. Two batches ahead keeps the reads hidden."""
  return grain.ReadOptions(num_threads=2, prefetch_buffer_size=max(8, 2 * local_batch))


def _local_batch_size(global_batch_size: int) -> tuple[int, int]:
  """(local batch, process count); the global batch must split evenly over the processes."""
  import jax  # pylint: disable=g-import-not-at-top
  count = jax.process_count()
  if global_batch_size % count:
    raise ValueError(f'global batch size {global_batch_size} is not divisible by the '
                     f'{count} JAX processes')
  return global_batch_size // count, count


def make_train_loader(data_config, *, global_batch_size: int, seed: int, num_classes: int
                      ) -> grain.DataLoader:
  """Infinite, shuffled, augmented training batches of this process's part.

  `iter(loader)` is a grain DataLoaderIterator; its state goes into the training checkpoint
  (`iterator_checkpoint.save_args` / `restore_args`). `num_classes` must match the dataset's
  label count.
  """
  data_config_lib.validate_config(data_config)
  c = data_config
  source = datasets.data_source(c, c.train_split)
  names = datasets.label_names(c)
  if num_classes != len(names):
    raise ValueError(f'num_classes={num_classes} but {c.name} has {len(names)} classes')
  local_batch, _ = _local_batch_size(global_batch_size)
  shard = grain.ShardByJaxProcess(drop_remainder=True)
  sampler = grain.IndexSampler(num_records=len(source), shard_options=shard,
                               shuffle=bool(c.shuffle), num_epochs=None, seed=int(seed))
  clip = transforms.TrainClip(transforms.train_options(c), int(c.num_frames), c.sampling,
                              int(c.frame_stride))
  workers = num_workers(c)
  operations = [
      # num_repeats > 1: k differently augmented clips of each video, adjacent in the batch.
      *repeated_augmentation.clip_batches(clip, local_batch, int(c.num_repeats)),
      transforms.MixBatch(float(c.mixup_alpha), float(c.cutmix_alpha)),
  ]
  if workers > 0:  # the workers end with this process and ignore SIGTERM (worker_lifetime.py)
    operations.insert(0, worker_lifetime.InitWorker())
  _ready_for_workers(workers)
  return grain.DataLoader(data_source=source, sampler=sampler, operations=operations,
                          worker_count=workers, worker_buffer_size=int(c.prefetch),
                          shard_options=shard, read_options=_read_options(local_batch))


def make_eval_loader(data_config, *, split: str, global_batch_size: int, multi_view: bool):
  """Finite batches covering `split` once over all processes; iterate it anew for each
  evaluation (each `iter` starts from the first batch). Single view: centre clip, centre crop;
  multi view: test_clips x test_crops.

  The split is padded to a multiple of the global batch size and split into equal contiguous parts
  per process, so every process yields the same number of full batches; padding rows are zeros
  with mask False. No random augmentation.

  Host memory: the workers make one video's views each (uint8[V, T, S, S, 3], 36 MB for
  laps_vitb's 30 views of 8 x 224^2) and hold at most one ready; the batch is stacked in this
  process. So the buffers grow with num_workers x one video, not num_workers x prefetch x a whole
  batch of videos (`multi_view_buffer_bytes`).
  """
  data_config_lib.validate_config(data_config)
  c = data_config
  source = datasets.data_source(c, split)
  local_batch, _ = _local_batch_size(global_batch_size)
  padded = math.ceil(len(source) / global_batch_size) * global_batch_size
  shard = grain.ShardByJaxProcess(drop_remainder=True)  # padded divides evenly
  part = padded // shard.shard_count
  start = shard.shard_index * part
  views = (grain.MapDataset.source(transforms.PaddedSource(source, padded))[start:start + part]
           .map(transforms.EvalClip(c, multi_view)))
  dataset = views.to_iter_dataset(_read_options(local_batch))
  workers = num_workers(c)
  if workers > 0:
    _ready_for_workers(workers)
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                               per_worker_buffer_size=1),
                                  worker_init_fn=worker_lifetime.worker_init_fn())
  return EvalBatches(dataset, local_batch, from_workers=workers > 0)


class EvalBatches:
  """Batches of `batch_size` elements of a grain dataset, each element copied into a batch array
  allocated once (grain's `batch` would hold the element list and the stacked copy together).
  Iterable any number of times; each pass starts from the first element (and its workers).
  `from_workers`: the elements come from worker processes, in shared memory released after each
  pass (`worker_lifetime.release_shared_memory`, a GC pass: skipped when there is none)."""

  def __init__(self, dataset, batch_size: int, from_workers: bool = False):
    self.dataset, self.batch_size, self.from_workers = dataset, batch_size, from_workers

  def __iter__(self):
    elements = iter(self.dataset)
    try:
      yield from self._batches(elements)
    finally:  # also when the caller stops early (eval.max_batches): end the workers now
      elements.close()
      if self.from_workers:
        worker_lifetime.release_shared_memory()

  def _batches(self, elements):
    while True:
      batch, count = None, 0
      for element in elements:
        if batch is None:
          batch = {k: np.empty((self.batch_size,) + np.shape(v), np.asarray(v).dtype)
                   for k, v in element.items()}
        for key, value in element.items():
          batch[key][count] = value
        count += 1
        del element
        if count == self.batch_size:
          break
      if count == 0:
        return
      yield batch if count == self.batch_size else {k: v[:count] for k, v in batch.items()}


def multi_view_buffer_bytes(data_config, global_batch_size: int, process_count: int = 1) -> dict:
  """Host bytes the multi-view test's buffers hold at most, from their shapes (per process).

  workers: num_workers x (one ready, in shared memory + one being made) videos of V uint8 views;
  batch: the batch being filled, plus the element being copied in; transfer: the previous batch,
  while it is copied to the devices.
  """
  c = data_config
  views = int(c.test_clips) * int(c.test_crops)
  video = views * int(c.num_frames) * int(c.image_size) ** 2 * 3     # uint8
  local_batch = global_batch_size // process_count
  figures = {'video': video, 'workers': num_workers(c) * 2 * video,
             'batch': (local_batch + 1) * video, 'transfer': local_batch * video}
  figures['total'] = figures['workers'] + figures['batch'] + figures['transfer']
  return figures
