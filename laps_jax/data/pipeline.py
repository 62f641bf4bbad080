"""The input pipeline's entry point: prepared TFDS video datasets -> grain loaders -> global
jax.Arrays. The pieces live in one module per job; this module gathers their public names.

  data_config          `CONFIG_KEYS` (each key documented there), `validate_config`
  datasets             `ensure_prepared` (generates synthetic_motion under a file lock),
                       `num_examples`, `label_names`, `DatasetNotPreparedError`
  transforms           the grain transforms (`TrainClip`, `MixBatch`, `EvalClip`, `PaddedSource`)
  loaders              `make_train_loader`, `make_eval_loader`
  iterator_checkpoint  Orbax args for the train iterator (`iterator_save_args` / `..._restore_args`)
  to_device            `to_global`: local batches -> global jax.Arrays split over mesh.BATCH_AXES

Batches (dict of NumPy arrays; b = global batch / number of JAX processes). The host ships uint8
clips and the random numbers of the float augmentation; the jitted steps do the float work
(`device_augment.DeviceAugment`: colour jitter, normalisation, random erasing, mixup / cutmix,
label smoothing), so a clip costs 1 byte a pixel on the way, not 4:
  train: videos uint8[b, T, S, S, 3] (cropped, resized, flipped, RandAugment'ed; channels last),
         labels int32[b], color float32[b, 4], erase_box int32[b, 4], erase_seed uint32[b],
         mix_weight float32[b], mix_box int32[b, 4], mix_lam float32[b].
  eval:  videos uint8[b, T, S, S, 3] (single view) or uint8[b, V, T, S, S, 3] with
         V = test_clips * test_crops (view v = clip (v // test_crops), crop (v % test_crops)),
         labels int32[b], mask bool[b] (False on padding rows).
`DevicePrefetcher` copies the train batches to the devices two steps ahead.

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

Evaluation loaders are finite: the split is padded to a multiple of the global batch size, split
into equal contiguous parts per process, so every process yields the same number of full batches;
padding rows are zeros with mask False. No random augmentation.

Throughput (experiments/data_throughput.py, results in experiments/results/): per clip the host
reads the T sampled frames (builder 2.0.0: one record per frame), decodes them with simplejpeg
(DCT-domain downscaling) and resizes only the crop's box with OpenCV; the measured figures and the
per-stage breakdown are in the README. Use num_workers >= 1 (or 'auto') so the work overlaps with
the training step; grain starts its workers with `spawn`, so the training script needs the usual
`if __name__ == '__main__':` guard (absl's app.run provides it). Memory per train worker ~
prefetch batches of b * T * S * S * 3 bytes (uint8; shared memory), e.g. 32 x 8 x 224^2 x 3 =
39 MB. The multi-view test stacks its batches in the main process (`loaders.EvalBatches`): 1.77 GB
computed for configs/laps_vitb.py's test (`loaders.multi_view_buffer_bytes`).
"""

from laps_jax.data.data_config import CONFIG_KEYS
from laps_jax.data.data_config import validate_config
from laps_jax.data.datasets import DatasetNotPreparedError
from laps_jax.data.device_augment import DeviceAugment
from laps_jax.data.datasets import PREPARE_COMMAND
from laps_jax.data.datasets import data_source
from laps_jax.data.datasets import ensure_prepared
from laps_jax.data.datasets import label_names
from laps_jax.data.datasets import num_examples
from laps_jax.data.iterator_checkpoint import restore_args as iterator_restore_args
from laps_jax.data.iterator_checkpoint import save_args as iterator_save_args
from laps_jax.data.loaders import make_eval_loader
from laps_jax.data.loaders import make_train_loader
from laps_jax.data.to_device import DevicePrefetcher
from laps_jax.data.to_device import to_global
from laps_jax.data.transforms import EvalClip
from laps_jax.data.transforms import MixBatch
from laps_jax.data.transforms import PaddedSource
from laps_jax.data.transforms import TrainClip
from laps_jax.data.transforms import train_options

__all__ = [
    'CONFIG_KEYS', 'DatasetNotPreparedError', 'DeviceAugment', 'DevicePrefetcher', 'EvalClip',
    'MixBatch', 'PREPARE_COMMAND', 'PaddedSource', 'TrainClip', 'data_source', 'ensure_prepared',
    'iterator_restore_args', 'iterator_save_args', 'label_names', 'make_eval_loader', 'make_train_loader', 'num_examples',
    'to_global', 'train_options', 'validate_config',
]
