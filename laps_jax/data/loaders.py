"""grain DataLoaders: the infinite, shuffled training loader and the finite evaluation loaders.

Both shard the records over the JAX processes (`ShardByJaxProcess`); b = global batch / number of
processes is the local batch. Batch contents: `laps_jax.data.pipeline`.
"""

from __future__ import annotations

import math

import grain.python as grain

from laps_jax.data import data_config as data_config_lib
from laps_jax.data import datasets
from laps_jax.data import transforms


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
  (`iterator_checkpoint.save_args` / `restore_args`). `num_classes` sizes `targets` and must match
  the dataset's label count.
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
  operations = [
      transforms.TrainClip(transforms.train_options(c), int(c.num_frames), c.sampling,
                           int(c.frame_stride)),
      grain.Batch(local_batch, drop_remainder=True),
      transforms.MixBatch(num_classes, float(c.mixup_alpha), float(c.cutmix_alpha),
                          float(c.label_smoothing)),
  ]
  _ready_for_workers(int(c.num_workers))
  return grain.DataLoader(data_source=source, sampler=sampler, operations=operations,
                          worker_count=int(c.num_workers), worker_buffer_size=int(c.prefetch),
                          shard_options=shard, read_options=_read_options(local_batch))


def make_eval_loader(data_config, *, split: str, global_batch_size: int, multi_view: bool
                     ) -> grain.DataLoader:
  """Finite batches covering `split` once over all processes; iterate it anew for each
  evaluation. Single view: centre clip, centre crop; multi view: test_clips x test_crops.

  The split is padded to a multiple of the global batch size and split into equal contiguous parts
  per process, so every process yields the same number of full batches; padding rows are zeros
  with mask False. No random augmentation.
  """
  data_config_lib.validate_config(data_config)
  c = data_config
  source = datasets.data_source(c, split)
  local_batch, _ = _local_batch_size(global_batch_size)
  padded = math.ceil(len(source) / global_batch_size) * global_batch_size
  shard = grain.ShardByJaxProcess(drop_remainder=True)  # padded divides evenly
  sampler = grain.IndexSampler(num_records=padded, shard_options=shard, shuffle=False,
                               num_epochs=1, seed=None)
  operations = [transforms.EvalClip(c, multi_view), grain.Batch(local_batch, drop_remainder=False)]
  _ready_for_workers(int(c.num_workers))
  return grain.DataLoader(data_source=transforms.PaddedSource(source, padded), sampler=sampler,
                          operations=operations, worker_count=int(c.num_workers),
                          worker_buffer_size=int(c.prefetch), shard_options=shard,
                          read_options=_read_options(local_batch))
