r"""LAPS with a ViT-B/16 backbone on Kinetics-400: the paper's recipe (docs/DESIGN.md 1.1).

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

Variant args: res=224|384. `--config.model.num_frames=16` also sets data.num_frames (tied).
"""
from configs import common
from laps_jax.models.vit import ViTConfig


def _parse(arg: str | None) -> dict:
  return common.parse_config_arg(arg, {'res': '224'}, {'res': ('224', '384')}, 'configs/laps_vitb.py')


def get_config(arg: str | None = None):
  res = int(_parse(arg)['res'])
  model = ViTConfig.variant('B/16', name='laps', image_size=res, num_frames=8, num_classes=400,
                            attention_impl='auto', dtype='bfloat16')
  return common.run_config(
      model,
      # ImageNet-21k ViT-B/16 in laps_jax's export format (laps_jax/checkpoints.py), e.g. converted
      # from Google's ViT-B_16.npz with laps_jax.convert; '' trains from scratch.
      init_from=f'pretrained/vit_b16_in21k_{res}',
      data=dict(name='kinetics400', frame_stride=8, sampling='dense',
                scale_jitter=(224, 360) if res == 224 else (384, 480), flip=True, color_jitter=0.1,
                label_smoothing=0.1, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), test_clips=10,
                test_crops=3, num_workers=8),
      batch_size=72, num_epochs=18,
      optimizer=dict(name='sgd', momentum=0.9, weight_decay=0.0, clip_norm=1.0, grad_accum_steps=10),
      schedule=dict(name='piecewise', base_lr=0.18, decay_epochs=(10.0, 15.0), decay_factor=0.1),
      log_every_steps=100, profile_steps=5,
      eval=dict(every_steps=5000, batch_size=64), test=dict(batch_size=16, aggregate='sum_logits'),
      checkpoint=dict(every_steps=1000, keep=3))
