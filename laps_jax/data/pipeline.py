"""The input pipeline: prepared TFDS video datasets -> grain loaders -> global jax.Arrays.

`config.data` keys (an ml_collections ConfigDict; `validate_config` demands exactly these):

  name             TFDS name: 'synthetic_motion' | 'kinetics400' | 'kinetics600' | 'kinetics700' |
                   'ssv2'.
  data_dir         str: the folder of prepared datasets (`~` is expanded). `synthetic_motion` is
                   generated there on first use; the others must be prepared once with
                   `python -m laps_jax.data.prepare --dataset=NAME --manual_dir=DIR --data_dir=DATA_DIR`.
  train_split      split for training ('train').
  eval_split       split for the periodic single-view evaluation ('validation').
  test_split       split for the final multi-view test ('validation' for Kinetics / SSv2, whose
                   test labels are not public; 'test' when a labelled Kinetics test CSV was given).
  num_frames       T, frames per clip (LAPS 8, LVT 16).
  frame_stride     dense sampling: distance between sampled frames (LAPS 8, LVT 16 on Kinetics).
  sampling         'dense' (T frames `frame_stride` apart) | 'segment' (TSN: one frame per each of
                   T equal segments; SSv2). Details and short videos: `laps_jax.data.sampling`.
  image_size       S, side of the square crop fed to the model (224).
  scale_jitter     (min, max): training short side drawn uniformly from these integers before the
                   random S x S crop ((256, 320) LVT, (224, 360) LAPS); min >= image_size.
  test_short_side  evaluation short side before the crops (224 LAPS / LVT); >= image_size.
  flip             bool: random horizontal flip in training. False for SSv2, where left/right is
                   part of the label.
  color_jitter     probability of each of brightness / contrast / saturation / hue jitter (0 = off;
                   LAPS 0.1).
  auto_augment     '' | 'autoaugment' (ImageNet policy) | RandAugment spec 'rand-m7-n4[-mstd0.5]
                   [-inc1]'; the same ops on every frame of a clip (`laps_jax.data.augment`).
  random_erasing   probability of erasing one box, the same in every frame (0 = off; LVT SSv2 0.5).
  mixup_alpha      Beta(alpha, alpha) mixup at batch level (0 = off; LVT Kinetics 0.4).
  cutmix_alpha     Beta(alpha, alpha) cutmix at batch level (0 = off); with mixup, one of the two
                   per batch, each with probability 1/2.
  label_smoothing  eps of the soft targets (LAPS 0.1, LVT 0.3).
  mean, std        3-tuples, normalisation (x / 255 - mean) / std (0.5 / 0.5 for the papers' ViTs).
  test_clips       K, clips per video in multi-view evaluation (LAPS 10, LVT 4 Kinetics / 2 SSv2).
  test_crops       1 (centre) or 3 (left / centre / right, or top / centre / bottom for portrait).
  num_workers      grain worker processes decoding and augmenting (0 = in the main process).
  prefetch         batches each worker prepares ahead (grain per-worker buffer size, >= 1).
  shuffle          bool: shuffle the training records (reshuffled every epoch).

Batches (dict of NumPy arrays; b = global batch / number of JAX processes):
  train: videos float32[b, T, S, S, 3] (normalised, channels last), labels int32[b],
         targets float32[b, K] (soft targets after label smoothing and mixup / cutmix).
  eval:  videos float32[b, T, S, S, 3] (single view) or float32[b, V, T, S, S, 3] with
         V = test_clips * test_crops (view v = clip (v // test_crops), crop (v % test_crops)),
         labels int32[b], mask bool[b] (False on padding rows).

Determinism and resumption. The train loader is a grain DataLoader over `tfds.data_source`
(random access to ArrayRecord), an IndexSampler with `num_epochs=None` (infinite, reshuffled per
epoch from `seed`), sharded with `ShardByJaxProcess` so each JAX process reads only its part. Every
record gets its own NumPy Generator from grain (derived from the seed and the record's global
position), so the batches are a pure function of (dataset, config, seed, process count,
num_workers). The iterator's state is a small JSON (positions per worker); save it with the
training checkpoint through grain's Orbax handler and a resumed run sees exactly the batches it
would have seen (with the same num_workers; grain checks it):

    import grain, orbax.checkpoint as ocp
    train_iter = iter(pipeline.make_train_loader(cfg.data, global_batch_size=B, seed=s,
                                                 num_classes=K))
    manager = ocp.CheckpointManager(workdir)
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(train_state),
        data_iter=grain.checkpoint.CheckpointSave(train_iter)))      # = pipeline.iterator_save_args
    # ... later, in a fresh process:
    train_iter = iter(pipeline.make_train_loader(...same arguments...))
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_train_state),
        data_iter=grain.checkpoint.CheckpointRestore(train_iter)))  # = pipeline.iterator_restore_args
    # train_iter now continues where the saved one stopped (restore sets its state in place).

Each process writes `process_<i>-of-<n>.json` in the `data_iter` item folder.

Evaluation loaders are finite: the split is padded to a multiple of the global batch size, split
into equal contiguous parts per process, so every process yields the same number of full batches;
padding rows are zeros with mask False. No random augmentation.

Throughput (experiments/data_throughput.py): the per-clip work is JPEG decoding of the T sampled
frames plus resize / crop: ~38 clips of 8 x 224^2 per CPU-second from 340x256 Kinetics-format
sources (3.2x what decoding the mp4 with PyAV every step gives) and ~575 synthetic_motion clips of
8 x 32^2. Use num_workers >= 1 so the work overlaps with the training step (on a 2-core machine
num_workers=1 or 2, prefetch=2); grain starts its workers with `spawn`, so the training script
needs the usual `if __name__ == '__main__':` guard (absl's app.run provides it). Memory per worker ~ prefetch batches of
b * T * S * S * 3 * 4 bytes (shared memory), e.g. 32 x 8 x 224^2 x 3 x 4 = 154 MB per batch.
Multi-view eval batches are V times larger: choose a smaller eval batch.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
from typing import Any, Mapping

import grain.python as grain
import numpy as np

from laps_jax.data import augment
from laps_jax.data import mixup
from laps_jax.data import registry
from laps_jax.data import sampling

log = logging.getLogger(__name__)

CONFIG_KEYS = (
    'name', 'data_dir', 'train_split', 'eval_split', 'test_split', 'num_frames', 'frame_stride',
    'sampling', 'image_size', 'scale_jitter', 'test_short_side', 'flip', 'color_jitter',
    'auto_augment', 'random_erasing', 'mixup_alpha', 'cutmix_alpha', 'label_smoothing', 'mean',
    'std', 'test_clips', 'test_crops', 'num_workers', 'prefetch', 'shuffle',
)

PREPARE_COMMAND = ('python -m laps_jax.data.prepare --dataset={name} --manual_dir=DIR '
                   '--data_dir={data_dir}')


class DatasetNotPreparedError(RuntimeError):
  """The dataset is not in data_dir; the message holds the command that prepares it."""


def default_config():
  """A complete `config.data` for the synthetic demo (8 frames at stride 2, 32 px crops)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(dict(
      name='synthetic_motion', data_dir='~/tensorflow_datasets', train_split='train',
      eval_split='validation', test_split='validation', num_frames=8, frame_stride=2,
      sampling='dense', image_size=32, scale_jitter=(32, 40), test_short_side=32, flip=False,
      color_jitter=0.0, auto_augment='', random_erasing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0,
      label_smoothing=0.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), test_clips=2, test_crops=3,
      num_workers=1, prefetch=2, shuffle=True))


# ----------------------------------------------------------------------------------------------
# Config.
# ----------------------------------------------------------------------------------------------

def _keys(config) -> set[str]:
  return set(config.keys())


def validate_config(data_config) -> None:
  """Raises ValueError naming every missing or unknown key, or the first bad value."""
  keys = _keys(data_config)
  missing = sorted(set(CONFIG_KEYS) - keys)
  unknown = sorted(keys - set(CONFIG_KEYS))
  if missing or unknown:
    raise ValueError(f'config.data: missing keys {missing}, unknown keys {unknown} '
                     f'(expected exactly {list(CONFIG_KEYS)}; documented in {__name__})')
  c = data_config

  def check(condition, message):
    if not condition:
      raise ValueError(f'config.data.{message}')

  check(c.name in registry.BUILDERS, f'name: {c.name!r} is not one of {sorted(registry.BUILDERS)}')
  check(isinstance(c.data_dir, str) and c.data_dir, 'data_dir: a non-empty path is needed')
  check(c.sampling in ('dense', 'segment'), f"sampling: 'dense' or 'segment', got {c.sampling!r}")
  check(int(c.num_frames) >= 1, f'num_frames: >= 1, got {c.num_frames}')
  check(int(c.frame_stride) >= 1, f'frame_stride: >= 1, got {c.frame_stride}')
  check(int(c.image_size) >= 1, f'image_size: >= 1, got {c.image_size}')
  check(len(tuple(c.scale_jitter)) == 2 and
        int(c.image_size) <= int(c.scale_jitter[0]) <= int(c.scale_jitter[1]),
        f'scale_jitter: (min, max) with image_size <= min <= max, got {c.scale_jitter}')
  check(int(c.test_short_side) >= int(c.image_size),
        f'test_short_side: >= image_size, got {c.test_short_side}')
  for key in ('color_jitter', 'random_erasing'):
    check(0.0 <= float(c[key]) <= 1.0, f'{key}: a probability in [0, 1], got {c[key]}')
  for key in ('mixup_alpha', 'cutmix_alpha'):
    check(float(c[key]) >= 0.0, f'{key}: >= 0, got {c[key]}')
  check(0.0 <= float(c.label_smoothing) < 1.0,
        f'label_smoothing: in [0, 1), got {c.label_smoothing}')
  for key in ('mean', 'std'):
    check(len(tuple(c[key])) == 3, f'{key}: 3 values (R, G, B), got {c[key]}')
  check(all(float(s) > 0 for s in c.std), f'std: > 0, got {c.std}')
  check(int(c.test_clips) >= 1, f'test_clips: >= 1, got {c.test_clips}')
  check(int(c.test_crops) in (1, 3), f'test_crops: 1 or 3, got {c.test_crops}')
  check(int(c.num_workers) >= 0, f'num_workers: >= 0, got {c.num_workers}')
  check(int(c.prefetch) >= 1, f'prefetch: >= 1, got {c.prefetch}')
  try:
    augment.parse_auto_augment(c.auto_augment)
  except ValueError as e:
    raise ValueError(f'config.data.auto_augment: {e}') from None


# ----------------------------------------------------------------------------------------------
# Datasets on disk.
# ----------------------------------------------------------------------------------------------

def _builder(data_config):
  return registry.get_builder(data_config.name, data_config.data_dir)


def _not_prepared_error(data_config) -> DatasetNotPreparedError:
  command = PREPARE_COMMAND.format(name=data_config.name,
                                   data_dir=os.path.expanduser(data_config.data_dir))
  return DatasetNotPreparedError(
      f'dataset {data_config.name!r} is not prepared in {data_config.data_dir}. Prepare it once '
      f'with\n  {command}\nwhere DIR holds the downloaded videos and annotations (layout: '
      f'{registry.MODULES[data_config.name]}).')


def ensure_prepared(data_config) -> None:
  """Generates `synthetic_motion` when missing; any other missing dataset raises
  DatasetNotPreparedError with the prepare command.

  Safe to call from several local processes at once (a file lock serialises the generation).
  """
  builder = _builder(data_config)
  if builder.is_prepared():
    return
  if data_config.name != 'synthetic_motion':
    raise _not_prepared_error(data_config)
  from laps_jax.data import prepare  # pylint: disable=g-import-not-at-top
  data_dir = os.path.expanduser(data_config.data_dir)
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, '.synthetic_motion.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if not _builder(data_config).is_prepared():
        log.info('generating synthetic_motion in %s (a few seconds)', data_dir)
        prepare.prepare('synthetic_motion', data_dir)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _prepared_builder(data_config):
  builder = _builder(data_config)
  if not builder.is_prepared():
    raise _not_prepared_error(data_config)
  return builder


def _split_info(builder, split: str):
  if split not in builder.info.splits:
    raise ValueError(f'{builder.name} has no split {split!r}; it has '
                     f'{sorted(builder.info.splits.keys())}')
  return builder.info.splits[split]


def num_examples(data_config, split: str) -> int:
  """Examples in `split` of the prepared dataset (all processes together)."""
  return _split_info(_prepared_builder(data_config), split).num_examples


def label_names(data_config) -> list[str]:
  """Class names, index = label id."""
  return list(_prepared_builder(data_config).info.features['label'].names)


def _data_source(data_config, split: str):
  builder = _prepared_builder(data_config)
  _split_info(builder, split)
  return builder.as_data_source(split)


# ----------------------------------------------------------------------------------------------
# grain transforms (picklable: they run in the worker processes).
# ----------------------------------------------------------------------------------------------

def _train_options(c) -> augment.TrainOptions:
  return augment.TrainOptions(
      image_size=int(c.image_size), scale_jitter=(int(c.scale_jitter[0]), int(c.scale_jitter[1])),
      flip=bool(c.flip), color_jitter=float(c.color_jitter),
      auto_augment=augment.parse_auto_augment(c.auto_augment),
      random_erasing=float(c.random_erasing), mean=tuple(float(x) for x in c.mean),
      std=tuple(float(x) for x in c.std))


class TrainClip(grain.RandomMapTransform):
  """Stored example -> {'videos': float32[T, S, S, 3], 'labels': int32} (random clip + augment)."""

  def __init__(self, options: augment.TrainOptions, num_frames: int, sampling_mode: str,
               stride: int):
    self.options, self.num_frames = options, num_frames
    self.sampling_mode, self.stride = sampling_mode, stride

  def random_map(self, example: Mapping[str, Any], rng: np.random.Generator) -> dict:
    frames = example['frames']
    indices = sampling.train_indices(len(frames), self.num_frames, self.sampling_mode,
                                     self.stride, rng)
    return {'videos': augment.train_clip(frames, indices, self.options, rng),
            'labels': np.int32(example['label'])}


class MixBatch(grain.RandomMapTransform):
  """Batch -> batch with soft `targets` float32[b, K] (label smoothing, mixup / cutmix)."""

  def __init__(self, num_classes: int, mixup_alpha: float, cutmix_alpha: float,
               label_smoothing: float):
    self.num_classes = num_classes
    self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
    self.label_smoothing = label_smoothing

  def random_map(self, batch: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict:
    videos, targets = mixup.mix_batch(
        batch['videos'], batch['labels'], self.num_classes, mixup_alpha=self.mixup_alpha,
        cutmix_alpha=self.cutmix_alpha, label_smoothing=self.label_smoothing, rng=rng)
    return {'videos': videos, 'labels': batch['labels'], 'targets': targets}


class EvalClip(grain.MapTransform):
  """Stored example (or padding) -> {'videos', 'labels', 'mask'}; deterministic views."""

  def __init__(self, c, multi_view: bool):
    self.num_frames, self.stride = int(c.num_frames), int(c.frame_stride)
    self.sampling_mode = c.sampling
    self.num_clips = int(c.test_clips) if multi_view else 1
    self.num_crops = int(c.test_crops) if multi_view else 1
    self.multi_view = multi_view
    self.short_side, self.crop = int(c.test_short_side), int(c.image_size)
    self.mean, self.std = tuple(c.mean), tuple(c.std)

  def _shape(self) -> tuple[int, ...]:
    clip = (self.num_frames, self.crop, self.crop, 3)
    return (self.num_clips * self.num_crops,) + clip if self.multi_view else clip

  def map(self, example: Mapping[str, Any]) -> dict:
    if example.get('padding', False):
      return {'videos': np.zeros(self._shape(), np.float32), 'labels': np.int32(0),
              'mask': np.bool_(False)}
    frames = example['frames']
    indices = sampling.test_indices(len(frames), self.num_frames, self.sampling_mode, self.stride,
                                    self.num_clips)
    views = augment.eval_views(frames, indices, self.short_side, self.crop, self.num_crops,
                               self.mean, self.std)
    return {'videos': views if self.multi_view else views[0],
            'labels': np.int32(example['label']), 'mask': np.bool_(True)}


class PaddedSource:
  """A random-access source of `length` >= len(source) records; the extra ones are padding."""

  def __init__(self, source, length: int):
    self.source, self.length = source, length

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int):
    if index < len(self.source):
      return self.source[index]
    return {'padding': True}

  def __repr__(self) -> str:
    return f'PaddedSource({self.source!r}, length={self.length})'


# ----------------------------------------------------------------------------------------------
# Loaders.
# ----------------------------------------------------------------------------------------------

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
  """Infinite, shuffled, augmented training batches of this process's part (module doc).

  `iter(loader)` is a grain DataLoaderIterator; its state goes into the training checkpoint
  (`iterator_save_args` / `iterator_restore_args`). `num_classes` sizes `targets` and must match
  the dataset's label count.
  """
  validate_config(data_config)
  c = data_config
  source = _data_source(c, c.train_split)
  names = label_names(c)
  if num_classes != len(names):
    raise ValueError(f'num_classes={num_classes} but {c.name} has {len(names)} classes')
  local_batch, _ = _local_batch_size(global_batch_size)
  shard = grain.ShardByJaxProcess(drop_remainder=True)
  sampler = grain.IndexSampler(num_records=len(source), shard_options=shard,
                               shuffle=bool(c.shuffle), num_epochs=None, seed=int(seed))
  operations = [
      TrainClip(_train_options(c), int(c.num_frames), c.sampling, int(c.frame_stride)),
      grain.Batch(local_batch, drop_remainder=True),
      MixBatch(num_classes, float(c.mixup_alpha), float(c.cutmix_alpha),
               float(c.label_smoothing)),
  ]
  _ready_for_workers(int(c.num_workers))
  return grain.DataLoader(data_source=source, sampler=sampler, operations=operations,
                          worker_count=int(c.num_workers), worker_buffer_size=int(c.prefetch),
                          shard_options=shard, read_options=_read_options(local_batch))


def make_eval_loader(data_config, *, split: str, global_batch_size: int, multi_view: bool
                     ) -> grain.DataLoader:
  """Finite batches covering `split` once over all processes (module doc); iterate it anew for
  each evaluation. Single view: centre clip, centre crop; multi view: test_clips x test_crops."""
  validate_config(data_config)
  c = data_config
  source = _data_source(c, split)
  local_batch, _ = _local_batch_size(global_batch_size)
  padded = math.ceil(len(source) / global_batch_size) * global_batch_size
  shard = grain.ShardByJaxProcess(drop_remainder=True)  # padded divides evenly
  sampler = grain.IndexSampler(num_records=padded, shard_options=shard, shuffle=False,
                               num_epochs=1, seed=None)
  operations = [EvalClip(c, multi_view), grain.Batch(local_batch, drop_remainder=False)]
  _ready_for_workers(int(c.num_workers))
  return grain.DataLoader(data_source=PaddedSource(source, padded), sampler=sampler,
                          operations=operations, worker_count=int(c.num_workers),
                          worker_buffer_size=int(c.prefetch), shard_options=shard,
                          read_options=_read_options(local_batch))


def iterator_save_args(iterator):
  """Orbax args that save a train iterator's state (grain.checkpoint.CheckpointSave)."""
  import grain as grain_root  # pylint: disable=g-import-not-at-top
  return grain_root.checkpoint.CheckpointSave(iterator)


def iterator_restore_args(iterator):
  """Orbax args that restore into `iterator` in place (grain.checkpoint.CheckpointRestore)."""
  import grain as grain_root  # pylint: disable=g-import-not-at-top
  return grain_root.checkpoint.CheckpointRestore(iterator)


def to_global(batch: Mapping[str, np.ndarray], mesh, batch_axes=('data', 'fsdp')) -> dict:
  """Local batch parts of all processes -> global jax.Arrays sharded on `batch_axes` (dim 0).

  Mesh axes named in `batch_axes` but absent from `mesh` are ignored (a mesh without 'fsdp' is
  fine). The global batch is the concatenation of the processes' parts in process order.
  """
  import jax  # pylint: disable=g-import-not-at-top
  axes = tuple(a for a in batch_axes if a in mesh.axis_names)
  spec = jax.sharding.PartitionSpec(axes if axes else None)
  sharding = jax.sharding.NamedSharding(mesh, spec)
  return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for key, value in batch.items()}
