r"""LAPS with a ViT-B/16 backbone on Kinetics-400: the paper's recipe (docs/DESIGN.md 1.1).

  python main.py --config=configs/laps_vitb.py --workdir=DIR
  python main.py --config=configs/laps_vitb.py:res=384 --workdir=DIR        # the 384² variant
  python main.py --config=configs/laps_vitb.py:recipe=videomae --workdir=DIR  # AdamW fine-tuning
  python main.py --config=configs/laps_vitb.py --workdir=DIR --config.mode=dry_run

Recipe (official code, config/custom/k400/vit_laps_8x8_b16.yaml + main_tokshift.py):
  init from ImageNet-21k ViT-B/16 (Google's .npz, converted to laps_jax's export format: set
  `init_from` to that directory); 8 frames at stride 8 (dense), short side jittered in [224, 360]
  (384 variant: [384, 480]), random crop, horizontal flip, colour jitter p=0.1, mean=std=0.5;
  SGD momentum 0.9, no weight decay, LR 0.18 ×0.1 at epochs 10 and 15, 18 epochs, 18 clips per
  GPU (we take 4 GPUs: a global batch of 72, the LR comment's "0.1 / 42 × batch × GPUs"),
  gradient accumulation 10, global-norm clipping 1.0, label smoothing 0.1, no mixup.
  Test: 10 clips × 3 crops (short side 224), logits summed.

Variant args: res=224|384, recipe=paper|videomae (combine: `:res=384,recipe=videomae`).
`--config.model.num_frames=16` also sets data.num_frames (tied).

recipe=videomae: the fine-tuning recipe ViT video papers use today beside the paper's SGD (VideoMAE,
MCG-NJU/VideoMAE run_class_finetuning.py defaults and scripts/kinetics/*/finetune.sh; the same
recipe as MAE / BEiT image fine-tuning). Same model, frames, init_from and test protocol as the
paper recipe; what changes, value by value, is in `videomae_recipe` below.
"""
from configs import common
from laps_jax.models.vit import ViTConfig

RECIPES = ('paper', 'videomae')


def _parse(arg: str | None) -> dict:
  return common.parse_config_arg(arg, {'res': '224', 'recipe': 'paper'},
                                 {'res': ('224', '384'), 'recipe': RECIPES}, 'configs/laps_vitb.py')


def videomae_recipe(config) -> None:
  """Changes `config` (the paper recipe) into VideoMAE's fine-tuning recipe, in place."""
  # Stochastic depth 0.1 (VideoMAE --drop_path 0.1), linearly increasing over the 12 blocks.
  config.model.drop_path_rate = 0.1
  # AdamW, betas (0.9, 0.999), eps 1e-8, weight decay 0.05 on weights only: biases, norms, cls
  # token and position embeddings are not decayed (VideoMAE's skip list; our decay_pattern
  # r'kernel$' decays exactly the Linear / conv kernels).
  config.optimizer.update(dict(name='adamw', b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.05,
                               decay_pattern=r'kernel$'))
  # Layer-wise lr decay 0.75: block i of 12 gets lr × 0.75^(12 − i), the embeddings 0.75^13,
  # the head lr (VideoMAE --layer_decay 0.75).
  config.optimizer.layer_decay = 0.75
  # No gradient clipping (VideoMAE --clip_grad None).
  config.optimizer.clip_norm = 0.0
  # 512 clips per update: 128 clips per step (64 videos × 2 repeats) × 4 accumulation steps; at
  # 16 clips per device that is 8 devices, and base_batch_size keeps the lr right on any other.
  config.batch_size = 128
  config.optimizer.grad_accum_steps = 4
  # lr 1e-3 per 256 videos (VideoMAE --lr 1e-3, scaled by total batch / 256, counted in videos
  # before its num_sample repeats) = 1e-3 per 512 clips with 2 repeats per video.
  config.schedule.update(dict(name='warmup_cosine', base_lr=1e-3, base_batch_size=512,
                              # cosine to 1e-6 (VideoMAE --min_lr 1e-6) after a linear warm-up
                              # of 5 epochs (--warmup_epochs 5) from 0 (VideoMAE: from 1e-6).
                              warmup_epochs=5.0, end_lr=1e-6))
  # 30 epochs: VideoMAE fine-tunes 75-100 epochs from its self-supervised video initialisation;
  # from supervised ImageNet-21k weights (this config's init_from) ViViT fine-tunes Kinetics for 30.
  config.num_epochs = 30.0
  # Mixup alpha 0.8 / CutMix alpha 1.0 (one of the two per batch, each with probability 1/2:
  # timm's switch_prob 0.5), label smoothing 0.1 (VideoMAE --mixup 0.8 --cutmix 1.0 --smoothing 0.1).
  config.data.update(dict(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1))
  # RandAugment, 4 ops of magnitude 7 (std 0.5, increasing severity), the same on every frame
  # (VideoMAE --aa rand-m7-n4-mstd0.5-inc1); it replaces the paper's colour jitter.
  config.data.update(dict(auto_augment='rand-m7-n4-mstd0.5-inc1', color_jitter=0.0))
  # Random erasing of one box with probability 0.25 (VideoMAE --reprob 0.25).
  config.data.random_erasing = 0.25
  # Repeated augmentation: 2 differently augmented clips of each sampled video in a batch
  # (VideoMAE --num_sample 2); an epoch still sees every video once.
  config.data.num_repeats = 2
  # EMA of the weights, decay 0.9999 per update (VideoMAE --model_ema_decay 0.9999; there it is
  # off by default): evaluated as val_ema_* / test_ema_* beside the raw weights.
  config.ema.decay = 0.9999
  # Keep the checkpoint with the best validation top-1 of the EMA weights beside the last 3.
  config.checkpoint.best_metric = 'val_ema_top1'
  # Kept from the paper recipe: 8 frames at stride 8, the short-side jitter [224, 360] (384:
  # [384, 480]) with a random crop and flip (VideoMAE's area-jittered resized crop is not in this
  # pipeline), mean = std = 0.5, and the test, 10 clips × 3 crops with the logits summed.


def get_config(arg: str | None = None):
  args = _parse(arg)
  res = int(args['res'])
  model = ViTConfig.variant('B/16', name='laps', image_size=res, num_frames=8, num_classes=400,
                            attention_impl='auto', dtype='bfloat16')
  config = common.run_config(
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
  if args['recipe'] == 'videomae':
    videomae_recipe(config)
  return config
