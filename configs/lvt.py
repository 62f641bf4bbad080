r"""LVT (linear video transformer with feature fixation): the paper's recipe (docs/DESIGN.md 1.2).

  python main.py --config=configs/lvt.py --workdir=DIR                        # Kinetics-400
  python main.py --config=configs/lvt.py:dataset=ssv2 --workdir=DIR

Variant args: dataset=kinetics400|kinetics600|ssv2.

Backbone (LVTConfig 'base'): 12 layers, width 512, 8 heads × 64, MLP 2048, overlapping 16×16
patches at stride 14 (padding 8: a 17×17 grid at 224²), divided temporal-then-spatial linear
attention with neighbourhood association and feature fixation (two gates on K400, one shared gate
on K600 and SSv2), VVT head (768 hidden, dropout 0.5). The clean defaults: one temporal-embedding
slot per frame and one shift segment per clip (temporal_embed_frames / shift_segment_frames =
None, which follow num_frames; the official Kinetics checkpoints need 8 / 8 instead, see
docs/DESIGN.md 1.2).

Recipe. Kinetics: 16 frames dense at stride 16, short side in [256, 320], random 224 crop, flip,
AutoAugment, mixup 0.4, label smoothing 0.3, SGD momentum 0.9, LR 0.035 cosine with 5 warm-up
epochs, 40 epochs, weight decay 1e-5, batch 32, test 4 clips × 3 crops. SSv2: 16 TSN segments,
no flip, random erasing 0.5, LR 0.03, 35 epochs, weight decay 1e-4, test 2 × 3. mean = std = 0.5.
Test-time aggregation: the views' logits are summed (test.aggregate='sum_logits'), as the official
code does: its XVIT model with CONSENSUS_TYPE 'vit' returns the VVT head's logits (the softmax
applies only to other consensus types), tools/test_net.py passes them unchanged to the TestMeter,
whose ensemble_method 'sum' (DATA.ENSEMBLE_METHOD default; no LVT config changes it) adds them up.
The official dropout on the gated q̂, k̂ (`attn_drop`, XVIT.BACKBONE.DROP_ATTN_RATE) is 0 in every
released config: model.attention_dropout_rate, 0 here too.
"""
from configs import common
from laps_jax.models.lvt import LVTConfig

DATASETS = {'kinetics400': 400, 'kinetics600': 600, 'ssv2': 174}


def get_config(arg: str | None = None):
  dataset = common.parse_config_arg(arg, {'dataset': 'kinetics400'}, {'dataset': tuple(sorted(DATASETS))},
                                    'configs/lvt.py')['dataset']
  ssv2 = dataset == 'ssv2'
  model = LVTConfig.variant('base', num_frames=16, image_size=224, num_classes=DATASETS[dataset],
                            attention_impl='auto', dtype='bfloat16', shared_gate=dataset != 'kinetics400',
                            temporal_shift_div=4 if ssv2 else 8, head_dropout_rate=0.5)
  return common.run_config(
      model,
      data=dict(name=dataset, frame_stride=16, sampling='segment' if ssv2 else 'dense',
                scale_jitter=(256, 320), flip=not ssv2, auto_augment='autoaugment',
                random_erasing=0.5 if ssv2 else 0.0, mixup_alpha=0.0 if ssv2 else 0.4,
                label_smoothing=0.3, test_clips=2 if ssv2 else 4, test_crops=3, num_workers=8),
      batch_size=32, num_epochs=35 if ssv2 else 40,
      optimizer=dict(name='sgd', momentum=0.9, weight_decay=1e-4 if ssv2 else 1e-5, clip_norm=0.0),
      schedule=dict(name='warmup_cosine', base_lr=0.03 if ssv2 else 0.035, warmup_epochs=5.0),
      log_every_steps=100, profile_steps=5,
      eval=dict(every_steps=5000, batch_size=32), test=dict(batch_size=16, aggregate='sum_logits'),
      checkpoint=dict(every_steps=1000, keep=3))
