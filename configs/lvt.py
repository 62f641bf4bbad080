r"""LVT (linear video transformer with feature fixation): the paper's recipe (DESIGN.md 1.2).

  python main.py --config=configs/lvt.py --workdir=DIR                        # Kinetics-400
  python main.py --config=configs/lvt.py:dataset=ssv2 --workdir=DIR

Variant args: dataset=kinetics400|kinetics600|ssv2.

Backbone: 12 layers, width 512, 8 heads × 64, MLP 2048, overlapping 16×16 patches at stride 14
(padding 8: a 17×17 grid at 224²), divided temporal-then-spatial linear attention with
neighbourhood association and feature fixation (two gates on K400, one shared gate on K600 and
SSv2), VVT head (768 hidden, dropout 0.5). The clean defaults: one temporal-embedding slot per
frame and one shift segment per clip (the official Kinetics checkpoints need 8 / 8 instead, see
DESIGN.md 1.2; set model.temporal_embed_frames / shift_segment_frames to load them).

Recipe. Kinetics: 16 frames dense at stride 16, short side in [256, 320], random 224 crop, flip,
AutoAugment, mixup 0.4, label smoothing 0.3, SGD momentum 0.9, LR 0.035 cosine with 5 warm-up
epochs, 40 epochs, weight decay 1e-5, batch 32, test 4 clips × 3 crops. SSv2: 16 TSN segments,
no flip, random erasing 0.5, LR 0.03, 35 epochs, weight decay 1e-4, test 2 × 3. mean = std = 0.5.
The views' logits are summed at test time (the official test-time aggregation was not checked).
"""
import ml_collections

from laps_jax.config_args import parse_config_arg
from laps_jax.train.mesh import DEFAULT_AXIS_RULES


DATASETS = {'kinetics400': 400, 'kinetics600': 600, 'ssv2': 174}


def _parse(arg: str | None) -> dict:
  return parse_config_arg(arg, {'dataset': 'kinetics400'}, {'dataset': tuple(sorted(DATASETS))}, 'configs/lvt.py')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = _parse(arg)
  dataset = args['dataset']
  ssv2 = dataset == 'ssv2'
  config = ml_collections.ConfigDict()
  config.mode = 'train'  # 'train' | 'eval' (multi-view test of the latest checkpoint) | 'dry_run'
  config.seed = 0
  config.init_from = ''  # an exported model directory (laps_jax/checkpoints.py format), or ''

  # ----------------------------------------------------------------------------------- model
  config.model = ml_collections.ConfigDict(dict(
      name='lvt',
      image_size=224, patch_size=16, hidden_size=512, num_layers=12, num_heads=8, mlp_dim=2048,
      num_frames=16, num_classes=DATASETS[dataset],
      dropout_rate=0.0, drop_path_rate=0.0, attention_impl='auto', dtype='bfloat16', remat=False,
      patch_stride=14, patch_padding=8, fixation=True, shared_gate=dataset != 'kinetics400',
      temporal_shift_div=4 if ssv2 else 8, spatial_shift=True, head_mlp_dim=768,
      head_dropout_rate=0.5, temporal_embed_frames=16, shift_segment_frames=16))

  # ----------------------------------------------------------------------------------- data
  config.data = ml_collections.ConfigDict(dict(
      name=dataset, data_dir='~/tensorflow_datasets',
      train_split='train', eval_split='validation', test_split='validation',
      num_frames=16, frame_stride=16, sampling='segment' if ssv2 else 'dense', image_size=224,
      scale_jitter=(256, 320), test_short_side=224, flip=not ssv2, color_jitter=0.0,
      auto_augment='autoaugment', random_erasing=0.5 if ssv2 else 0.0,
      mixup_alpha=0.0 if ssv2 else 0.4, cutmix_alpha=0.0, label_smoothing=0.3,
      mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), test_clips=2 if ssv2 else 4, test_crops=3,
      num_workers=8, prefetch=2, shuffle=True))

  # ----------------------------------------------------------------------------------- optimisation
  config.batch_size = 32  # global, per train step
  config.num_epochs = 35.0 if ssv2 else 40.0
  config.total_steps = -1  # > 0 overrides num_epochs
  config.optimizer = ml_collections.ConfigDict(dict(
      name='sgd', momentum=0.9, nesterov=False, b1=0.9, b2=0.999, eps=1e-8,
      weight_decay=1e-4 if ssv2 else 1e-5, decay_pattern=r'kernel$', clip_norm=0.0,
      grad_accum_steps=1))
  config.schedule = ml_collections.ConfigDict(dict(
      name='warmup_cosine', base_lr=0.03 if ssv2 else 0.035, warmup_epochs=5.0, decay_epochs=(),
      decay_factor=0.1, end_lr=0.0))

  # ----------------------------------------------------------------------------------- devices
  config.mesh_shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 = the remaining devices
  config.axis_rules = DEFAULT_AXIS_RULES  # laps_jax/train/mesh.py

  # ----------------------------------------------------------------------------------- loop
  config.log_every_steps = 100
  config.profile_steps = 5
  config.eval = ml_collections.ConfigDict(dict(every_steps=5000, batch_size=32, max_batches=-1))
  config.test = ml_collections.ConfigDict(dict(at_end=True, batch_size=16, aggregate='sum_logits'))
  config.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, keep=3, asynchronous=True))
  return config
