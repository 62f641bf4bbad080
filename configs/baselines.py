r"""Baselines beside LAPS (docs/DESIGN.md 1.3): the laps_vitb.py recipe with exactly one change each.

  python main.py --config=configs/baselines.py:model=vit2d --workdir=DIR

Variant args: model=vit2d|joint|divided|la|pshift, res=224|384 (as laps_vitb.py).
  vit2d    2D ViT on every frame, mean of the per-frame logits (TSN style): no LA, no P-Shift
  joint    joint space-time attention over all T·(1+N) tokens (ViViT model 1)
  divided  divided space-time attention, temporal then spatial (TimeSformer)
  la       Leap Attention only (LAPS with shift_div=0)
  pshift   Periodic Shift only (LAPS with per-frame attention: leap_levels=(None,))
Every other key is laps_vitb.py's (same backbone, data, optimiser, schedule and test protocol).
"""
from configs import common, laps_vitb

# model variant -> the model keys it changes
CHANGES = {
    'vit2d': dict(name='vit2d', leap_levels=(None,), shift_div=0),
    'joint': dict(name='joint', leap_levels=(None,), shift_div=0),
    'divided': dict(name='divided', leap_levels=(None,), shift_div=0),
    'la': dict(shift_div=0),
    'pshift': dict(leap_levels=(None,)),
}


def get_config(arg: str | None = None):
  args = common.parse_config_arg(arg, {'model': 'vit2d', 'res': '224'},
                                 {'model': tuple(CHANGES), 'res': ('224', '384')}, 'configs/baselines.py')
  config = laps_vitb.get_config(f'res={args["res"]}')
  config.model.update(CHANGES[args['model']])
  return config
