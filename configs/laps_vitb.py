r"""LAPS with a ViT-B/16 backbone on Kinetics-400: the paper's recipe (DESIGN.md 1.1).

  python main.py --config=configs/laps_vitb.py --workdir=DIR
  python main.py --config=configs/laps_vitb.py:res=384 --workdir=DIR        # the 384² variant
  python main.py --config=configs/laps_vitb.py --workdir=DIR --config.mode=dry_run

Recipe (official code, config/custom/k400/vit_laps_8x8_b16.yaml + main_tokshift.py):
  init from ImageNet-21k ViT-B/16 (Google's .npz, converted to laps_jax's export format: set
  `init_from` to that directory); 8 frames at stride 8 (dense), short side jittered in [224, 360]
  (384 variant: [384, 480]), random crop, horizontal flip, colour jitter p=0.1, mean=std=0.5;
  SGD momentum 0.9, no weight decay, LR 0.18 ×0.1 at epochs 10 and 15, 18 epochs, 18 clips per
  GPU (we take 4 GPUs: a global batch of 72, the LR comment's "0.1 / 42 × batch × GPUs"),
  gradient accumulation 10, global-norm clipping 1.0, label smoothing 0.1, no mixup.
  Test: 10 clips × 3 crops (short side 224), logits summed.

Variant args: res=224|384.
"""
import ml_collections

from laps_jax.config_args import parse_config_arg
from laps_jax.train.mesh import DEFAULT_AXIS_RULES


def _parse(arg: str | None) -> dict:
  return parse_config_arg(arg, {'res': '224'}, {'res': ('224', '384')}, 'configs/laps_vitb.py')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = _parse(arg)
  res = int(args['res'])
  config = ml_collections.ConfigDict()
  config.mode = 'train'  # 'train' | 'eval' (multi-view test of the latest checkpoint) | 'dry_run'
  config.seed = 0
  # ImageNet-21k ViT-B/16 in laps_jax's export format (laps_jax/checkpoints.py), e.g. converted
  # from Google's ViT-B_16.npz with laps_jax.convert; '' trains from scratch.
  config.init_from = f'pretrained/vit_b16_in21k_{res}'

  # ----------------------------------------------------------------------------------- model
  config.model = ml_collections.ConfigDict(dict(
      name='laps',
      image_size=res, patch_size=16, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072,
      num_frames=8, num_classes=400,
      dropout_rate=0.0, drop_path_rate=0.0, attention_impl='auto', dtype='bfloat16', remat=False,
      leap_levels=(1, 2, 3, 1), shift_div=4))

  # ----------------------------------------------------------------------------------- data
  config.data = ml_collections.ConfigDict(dict(
      name='kinetics400', data_dir='~/tensorflow_datasets',
      train_split='train', eval_split='validation', test_split='validation',
      num_frames=8, frame_stride=8, sampling='dense', image_size=res,
      scale_jitter=(224, 360) if res == 224 else (384, 480), test_short_side=res, flip=True,
      color_jitter=0.1, auto_augment='', random_erasing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0,
      label_smoothing=0.1, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), test_clips=10, test_crops=3,
      num_workers=8, prefetch=2, shuffle=True))

  # ----------------------------------------------------------------------------------- optimisation
  config.batch_size = 72  # global, per train step (one micro-batch of the accumulation)
  config.num_epochs = 18.0
  config.total_steps = -1  # > 0 overrides num_epochs
  config.optimizer = ml_collections.ConfigDict(dict(
      name='sgd', momentum=0.9, nesterov=False, b1=0.9, b2=0.999, eps=1e-8,
      weight_decay=0.0, decay_pattern=r'kernel$', clip_norm=1.0, grad_accum_steps=10))
  config.schedule = ml_collections.ConfigDict(dict(
      name='piecewise', base_lr=0.18, warmup_epochs=0.0, decay_epochs=(10.0, 15.0), decay_factor=0.1,
      end_lr=0.0))

  # ----------------------------------------------------------------------------------- devices
  config.mesh_shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 = the remaining devices
  config.axis_rules = DEFAULT_AXIS_RULES  # laps_jax/train/mesh.py

  # ----------------------------------------------------------------------------------- loop
  config.log_every_steps = 100
  config.profile_steps = 5  # a profiler trace of 5 steps (at step 10) in the workdir
  config.eval = ml_collections.ConfigDict(dict(every_steps=5000, batch_size=64, max_batches=-1))
  config.test = ml_collections.ConfigDict(dict(at_end=True, batch_size=16, aggregate='sum_logits'))
  config.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, keep=3, asynchronous=True))
  return config
