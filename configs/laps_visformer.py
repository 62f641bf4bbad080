r"""LAPS with a Visformer-S backbone on Kinetics-400: the paper's main model (docs/DESIGN.md 1.4).

  python main.py --config=configs/laps_visformer.py --workdir=DIR                    # 8×224
  python main.py --config=configs/laps_visformer.py:frames=32,res=320 --workdir=DIR  # 32×320
  python main.py --config=configs/laps_visformer.py:frames=32,res=360 --workdir=DIR  # 32×360
  python main.py --config=configs/laps_visformer.py --workdir=DIR --config.mode=dry_run

Recipe (official code, config/custom/k400/visformer/visformer_LAPS_8x8.yaml + main_tokshift.py):
  init from ImageNet Visformer-S (`pretrain/visformer_s_in10k.pth` of the LAPS README, or
  danczs/Visformer's visformer_small.pth, or timm's visformer_small; convert it with
  `python -m laps_jax.convert --config=configs/laps_visformer.py --source=laps-pytorch` (timm:
  --source=timm) and set `init_from` to the output directory; other resolutions get the position
  embeddings resized, logged); 8 frames at stride 8 (dense), short side jittered in [224, 360],
  random 224 crop, horizontal flip, colour jitter p=0.1, ImageNet mean (0.486, 0.457, 0.407) and
  std (0.229, 0.224, 0.225); SGD momentum 0.9, no weight decay, LR 0.20 ×0.1 at epochs 10 and 15
  (LR_STEPS [10, 15, 18]: 18 epochs), 40 clips per GPU (we take 4 GPUs, as configs/laps_vitb.py:
  a global batch of 160), gradient accumulation 10, global-norm clipping 1.0, label smoothing 0.1
  (timm's LabelSmoothingCrossEntropy default), no mixup; precise BN after every epoch from 200
  training batches (PRECISE_BN: 200, PBN_EPOCH: 1). BatchNorm statistics are synchronised over
  the global batch. Test: 10 clips × 3 crops (the model zoo's "× 30 views"), logits summed.

  frames=32 (visformer_LAPS_32x8_{320,360}.yaml): leap levels ((1, 2, 3, 4), (5, 1, 2, 3)),
  LR 0.036, 4 clips per GPU at 320 (3 at 360), short side jittered in [320, 480] ([360, 540]).

Ablations (same parameters): 2D `--config.model.leap_levels='((None,), (None,))'
--config.model.shift_div=0`; P-Shift only: leap_levels ((None,), (None,)); LA only: shift_div=0;
Base3D: temporal_attention='joint' with no leap and no shift; PlainShift: shift_kind='plain' with
no leap (laps_jax/models/visformer.py).

Variant args: res=224|320|360, frames=8|32.
"""
from configs import common
from laps_jax.models.visformer import VisformerConfig

LEAP_LEVELS = {8: ((1, 2, 3, 1), (2, 3, 1, 2)), 32: ((1, 2, 3, 4), (5, 1, 2, 3))}
GPUS = 4  # the global batch is the official per-GPU batch × 4 (see the docstring)


def _parse(arg: str | None) -> dict:
  return common.parse_config_arg(arg, {'res': '224', 'frames': '8'},
                                 {'res': ('224', '320', '360'), 'frames': ('8', '32')},
                                 'configs/laps_visformer.py')


def get_config(arg: str | None = None):
  args = _parse(arg)
  res, frames = int(args['res']), int(args['frames'])
  model = VisformerConfig.variant('S', image_size=res, num_frames=frames, num_classes=400,
                                  leap_levels=LEAP_LEVELS[frames], shift_div=4, attention_impl='auto',
                                  dtype='bfloat16')
  per_gpu = 40 if frames == 8 else {224: 4, 320: 4, 360: 3}[res]
  return common.run_config(
      model,
      # ImageNet Visformer-S in laps_jax's export format (laps_jax/checkpoints.py); '' = scratch.
      init_from=f'pretrained/visformer_s_imagenet_{res}',
      data=dict(name='kinetics400', frame_stride=8, sampling='dense',
                scale_jitter=(224, 360) if res == 224 else (res, res * 3 // 2), flip=True, color_jitter=0.1,
                label_smoothing=0.1, mean=(0.486, 0.457, 0.407), std=(0.229, 0.224, 0.225),
                test_clips=10, test_crops=3, num_workers=8),
      batch_size=per_gpu * GPUS, num_epochs=18,
      optimizer=dict(name='sgd', momentum=0.9, weight_decay=0.0, clip_norm=1.0, grad_accum_steps=10),
      schedule=dict(name='piecewise', base_lr=0.20 if frames == 8 else 0.036, decay_epochs=(10.0, 15.0),
                    decay_factor=0.1),
      precise_bn=dict(num_batches=200, every_epochs=1),
      log_every_steps=100, profile_steps=5,
      eval=dict(every_steps=5000, batch_size=64), test=dict(batch_size=16, aggregate='sum_logits'),
      checkpoint=dict(every_steps=1000, keep=3))
