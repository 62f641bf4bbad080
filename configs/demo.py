r"""The embedded demo: a tiny model on the generated `synthetic_motion` dataset (no download).

  python main.py --config=configs/demo.py --workdir=/tmp/demo              # LAPS
  python main.py --config=configs/demo.py:model=vit2d --workdir=/tmp/demo2d

Variants (`:model=...`): laps (default) | vit2d | joint | divided | lvt | visformer (Visformer
LAPS at its 'Mu' size: width 32, two blocks per stage; its 2D baseline is
`--config.model.leap_levels='((None,), (None,))' --config.model.shift_div=0`; measured: 100 %
validation top-1 against 17.1 % for its 2D baseline, 7 and 11 min).
The dataset's classes differ only in the order of events (laps_jax/data/synthetic_motion.py), so
LAPS, joint and LVT reach 100 % validation top-1 (LVT in ~13 min), divided ~50 % after the same 8
epochs, while the per-frame vit2d stays at chance (1/6): see README.md for the measured runs.
Runs on 2 CPU cores in a few minutes, dataset generation included.

The model is the paper configs' family at the CPU-sized 'Mu' size (width 64, 4 blocks, 4 heads),
8 frames of 32², patches of 8; the recipe is AdamW with warm-up and cosine decay.
"""
from configs import common
from laps_jax.models.lvt import LVTConfig
from laps_jax.models.visformer import VisformerConfig
from laps_jax.models.vit import ViTConfig

MODELS = ('laps', 'vit2d', 'joint', 'divided', 'lvt', 'visformer')


def demo_model(name: str):
  """The demo's tiny model of `name` (typed config)."""
  shared = dict(image_size=32, num_frames=8, num_classes=6, attention_impl='xla', dtype='float32')
  if name == 'lvt':
    return LVTConfig.variant('Mu', **shared)
  if name == 'visformer':
    return VisformerConfig.variant('Mu', **shared)
  return ViTConfig.variant('Mu/8', name=name, **shared)


def get_config(arg: str | None = None):
  name = common.parse_config_arg(arg, {'model': 'laps'}, {'model': MODELS}, 'configs/demo.py')['model']
  return common.run_config(
      demo_model(name),
      data=dict(name='synthetic_motion', frame_stride=2, sampling='dense', scale_jitter=(32, 40),
                flip=False, color_jitter=0.0, label_smoothing=0.0, mean=(0.5, 0.5, 0.5),
                std=(0.5, 0.5, 0.5), test_clips=2, test_crops=3, num_workers=1),
      batch_size=32, num_epochs=8,  # ~1050 steps at batch 32
      optimizer=dict(name='adamw', b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.05, clip_norm=1.0),
      schedule=dict(name='warmup_cosine', base_lr=1e-3, warmup_epochs=1.0, end_lr=1e-5),
      log_every_steps=50, profile_steps=0,
      eval=dict(every_steps=500, batch_size=200), test=dict(batch_size=50, aggregate='sum_logits'),
      checkpoint=dict(every_steps=500, keep=2))
