"""What every run config shares: the sections, their defaults, and the tied values.

A config file states its recipe as changes to these defaults; `run_config` assembles the sections
into the user-facing ConfigDict with exactly the keys the trainer takes. Values that must agree
are one ml_collections FieldReference, so one flag changes them all:

  model.num_frames  = data.num_frames                       (--config.model.num_frames=16)
  model.image_size  = data.image_size                      (--config.model.image_size=288)
  data.test_short_side follows image_size until it is set itself (--config.data.test_short_side=256)

(LVT's temporal_embed_frames / shift_segment_frames follow num_frames through their None
placeholder, resolved when the model is built: laps_jax/models/lvt.py.)
"""
from __future__ import annotations

import ml_collections

from laps_jax.config_args import parse_config_arg  # noqa: F401  (re-exported for the config files)
from laps_jax.train.mesh import DEFAULT_AXIS_RULES

# config.data: the Kinetics-style defaults (laps_jax/data/data_config.py documents every key).
DATA = dict(
    name='kinetics400', data_dir='~/tensorflow_datasets',
    train_split='train', eval_split='validation', test_split='validation',
    num_frames=8, frame_stride=8, sampling='dense', image_size=224, scale_jitter=(224, 360),
    test_short_side=224, flip=True, color_jitter=0.0, auto_augment='', random_erasing=0.0,
    mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    test_clips=10, test_crops=3, num_workers=8, prefetch=2, shuffle=True, num_repeats=1)

# config.optimizer: 'sgd' (momentum, nesterov) | 'adamw' (b1, b2, eps); decoupled weight decay on
# parameters whose path matches decay_pattern; global-norm clipping (0 = off); accumulation;
# layer-wise lr decay (1.0 = off; laps_jax/train/layer_decay.py).
OPTIMIZER = dict(name='sgd', momentum=0.9, nesterov=False, b1=0.9, b2=0.999, eps=1e-8,
                 weight_decay=0.0, decay_pattern=r'kernel$', clip_norm=1.0, grad_accum_steps=1,
                 layer_decay=1.0)

# config.schedule: 'piecewise' (×decay_factor at decay_epochs) | 'warmup_cosine' (to end_lr).
# base_batch_size > 0: the peak lr is base_lr × (batch_size × grad_accum_steps) / base_batch_size.
SCHEDULE = dict(name='piecewise', base_lr=0.1, warmup_epochs=0.0, decay_epochs=(), decay_factor=0.1,
                end_lr=0.0, base_batch_size=0)

EVAL = dict(every_steps=5000, batch_size=64, max_batches=-1)  # validation: one clip, centre crop
TEST = dict(at_end=True, batch_size=16, aggregate='sum_logits')  # the multi-view test
# best_metric: '' (off) or a validation metric ('val_top1', 'val_top5', 'val_loss', 'val_ema_top1',
# ...): the checkpoint with its best value (max; min for a loss) is kept beside the last `keep`.
# restore_step: -1 resumes (and eval evaluates) the newest intact checkpoint; N >= 0 that step
# (training then moves the newer ones to WORKDIR/checkpoints_set_aside; laps_jax/train/checkpointing.py).
CHECKPOINT = dict(every_steps=1000, keep=3, asynchronous=True, best_metric='', restore_step=-1)
# config.ema: exponential moving average of the weights, ema = decay·ema + (1 - decay)·w after
# every optimizer update (0 = off); evaluated beside the raw weights (val_ema_*, test_ema_*).
EMA = dict(decay=0.0)
# config.tensorboard: what the event files hold beyond the scalars (laps_jax/train/summaries.py):
# the first train step's first `input_clips` clips as images (0 = none), and the final test's
# per-class top-1 as a text table (per_class).
TENSORBOARD = dict(input_clips=2, per_class=True)
# config.precise_bn: recompute the BatchNorm running averages from `num_batches` training batches
# after every `every_epochs` epochs and before the final test (0 = off; models without BatchNorm
# ignore it; laps_jax/train/precise_bn.py).
PRECISE_BN = dict(num_batches=0, every_epochs=1)


def run_config(model, *, data: dict, batch_size: int, num_epochs: float, optimizer: dict,
               schedule: dict, init_from: str = '', log_every_steps: int = 100, profile_steps: int = 5,
               eval: dict | None = None, test: dict | None = None,  # pylint: disable=redefined-builtin
               checkpoint: dict | None = None, ema: dict | None = None,
               tensorboard: dict | None = None, precise_bn: dict | None = None
               ) -> ml_collections.ConfigDict:
  """The run config for `model` (a family's typed config, e.g. `ViTConfig.variant('B/16', ...)`).

  `data`, `optimizer`, `schedule`, `eval`, `test`, `checkpoint`, `ema`, `tensorboard`,
  `precise_bn`: changes to this module's defaults
  (an unknown key is an error). data.num_frames / image_size / test_short_side come from the model.
  """
  config = ml_collections.ConfigDict()
  config.mode = 'train'  # 'train' | 'eval' (multi-view test of the latest checkpoint) | 'dry_run'
  config.seed = 0
  # An exported model directory (laps_jax/checkpoints.py format) to start from, or '' (scratch).
  config.init_from = init_from

  num_frames = ml_collections.FieldReference(model.num_frames)
  image_size = ml_collections.FieldReference(model.image_size)
  config.model = model.to_config_dict()
  config.model.num_frames = num_frames
  config.model.image_size = image_size
  config.data = _section('data', DATA, data)
  config.data.num_frames = num_frames
  config.data.image_size = image_size
  config.data.test_short_side = image_size.identity()  # follows image_size until set itself
  # An int or 'auto': typed `object`, so `--config.data.num_workers=auto` and `=4` both parse.
  config.data.num_workers = ml_collections.FieldReference(config.data.num_workers, field_type=object)

  config.batch_size = batch_size  # global, per train step (one micro-batch of the accumulation)
  config.num_epochs = float(num_epochs)
  config.total_steps = -1  # > 0 overrides num_epochs
  # N > 0: a step whose loss or gradients are not finite is skipped (optax.apply_if_finite; the
  # `skipped_updates` train metric counts them) and the run stops after N in a row; 0: it stops
  # at the first non-finite loss.
  config.skip_nonfinite_updates = 0
  config.optimizer = _section('optimizer', OPTIMIZER, optimizer)
  config.schedule = _section('schedule', SCHEDULE, schedule)

  config.mesh_shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 = the remaining devices
  config.axis_rules = DEFAULT_AXIS_RULES  # logical axis -> mesh axes (laps_jax/train/mesh.py)

  config.log_every_steps = log_every_steps
  config.profile_steps = profile_steps  # > 0: one profiler trace of that many steps ...
  config.profile_first_step = 10  # ... starting at this step (once per run)
  config.compilation_cache_dir = 'auto'  # JAX's persistent cache: 'auto' = ~/.cache/laps_jax/jax, '' = off
  # The exit status of a run preempted by SIGTERM (saved; the same command resumes):
  # 143 = 128 + SIGTERM (laps_jax/train/preemption.py).
  config.preemption_exit_code = 143
  config.eval = _section('eval', EVAL, eval)
  config.test = _section('test', TEST, test)
  config.checkpoint = _section('checkpoint', CHECKPOINT, checkpoint)
  config.ema = _section('ema', EMA, ema)
  config.tensorboard = _section('tensorboard', TENSORBOARD, tensorboard)
  config.precise_bn = _section('precise_bn', PRECISE_BN, precise_bn)
  return config


def _section(name: str, defaults: dict, changes: dict | None) -> ml_collections.ConfigDict:
  if unknown := sorted(set(changes or {}) - set(defaults)):
    raise KeyError(f'configs/common.py: unknown {name} keys {unknown}; known: {sorted(defaults)}')
  return ml_collections.ConfigDict({**defaults, **(changes or {})})
