r"""The embedded demo: a tiny model on the generated `synthetic_motion` dataset (no download).

  python main.py --config=configs/demo.py --workdir=/tmp/demo              # LAPS
  python main.py --config=configs/demo.py:model=vit2d --workdir=/tmp/demo2d

Variants (`:model=...`): laps (default) | vit2d | joint | divided | lvt.
The dataset's classes differ only in the order of events (laps_jax/data/synthetic_motion.py), so
LAPS, joint and LVT reach 100 % validation top-1 (LVT in ~13 min), divided ~50 % after the same 8
epochs, while the per-frame vit2d stays at chance (1/6): see README.md for the measured runs.
Runs on 2 CPU cores in a few minutes, dataset generation included.
"""
import ml_collections

from laps_jax.config_args import parse_config_arg
from laps_jax.train.mesh import DEFAULT_AXIS_RULES

MODELS = ('laps', 'vit2d', 'joint', 'divided', 'lvt')


def _parse(arg: str | None) -> dict:
  return parse_config_arg(arg, {'model': 'laps'}, {'model': MODELS}, 'configs/demo.py')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = _parse(arg)
  config = ml_collections.ConfigDict()
  config.mode = 'train'  # 'train' | 'eval' (multi-view test of the latest checkpoint) | 'dry_run'
  config.seed = 0
  config.init_from = ''  # an exported model directory (laps_jax.checkpoints format), or ''

  # ----------------------------------------------------------------------------------- model
  config.model = ml_collections.ConfigDict(dict(
      name=args['model'],
      image_size=32, patch_size=8, hidden_size=64, num_layers=4, num_heads=4, mlp_dim=128,
      num_frames=8, num_classes=6,
      dropout_rate=0.0, drop_path_rate=0.0, attention_impl='xla', dtype='float32', remat=False))
  if args['model'] == 'lvt':
    config.model.update(dict(
        patch_stride=8, patch_padding=0, fixation=True, shared_gate=False, temporal_shift_div=8,
        spatial_shift=True, head_mlp_dim=64, head_dropout_rate=0.0, temporal_embed_frames=8,
        shift_segment_frames=8))
  else:
    laps = args['model'] == 'laps'
    config.model.leap_levels = (1, 2, 3, 1) if laps else (None,)
    config.model.shift_div = 4 if laps else 0

  # ----------------------------------------------------------------------------------- data
  config.data = ml_collections.ConfigDict(dict(
      name='synthetic_motion', data_dir='~/tensorflow_datasets',
      train_split='train', eval_split='validation', test_split='validation',
      num_frames=8, frame_stride=2, sampling='dense', image_size=32, scale_jitter=(32, 40),
      test_short_side=32, flip=False, color_jitter=0.0, auto_augment='', random_erasing=0.0,
      mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.0,
      mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), test_clips=2, test_crops=3,
      num_workers=1, prefetch=2, shuffle=True))

  # ----------------------------------------------------------------------------------- optimisation
  config.batch_size = 32  # global, per train step
  config.num_epochs = 8.0  # ~1050 steps at batch 32
  config.total_steps = -1  # > 0 overrides num_epochs
  config.optimizer = ml_collections.ConfigDict(dict(
      name='adamw', momentum=0.9, nesterov=False, b1=0.9, b2=0.999, eps=1e-8,
      weight_decay=0.05, decay_pattern=r'kernel$', clip_norm=1.0, grad_accum_steps=1))
  config.schedule = ml_collections.ConfigDict(dict(
      name='warmup_cosine', base_lr=1e-3, warmup_epochs=1.0, decay_epochs=(), decay_factor=0.1,
      end_lr=1e-5))

  # ----------------------------------------------------------------------------------- devices
  config.mesh_shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 = the remaining devices
  config.axis_rules = DEFAULT_AXIS_RULES  # laps_jax/train/mesh.py

  # ----------------------------------------------------------------------------------- loop
  config.log_every_steps = 50
  config.profile_steps = 0  # > 0: a profiler trace of that many steps (at step 10) in the workdir
  config.eval = ml_collections.ConfigDict(dict(every_steps=500, batch_size=200, max_batches=-1))
  config.test = ml_collections.ConfigDict(dict(at_end=True, batch_size=50, aggregate='sum_logits'))
  config.checkpoint = ml_collections.ConfigDict(dict(every_steps=500, keep=2, asynchronous=True))
  return config
