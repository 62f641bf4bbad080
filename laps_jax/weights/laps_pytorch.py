"""Official LAPS checkpoints (github.com/VideoNetworks/LAPS-transformer) -> name='laps' or 'vit2d'.

The LAPS training script saves `{'epoch', 'state_dict', 'best_acc1', 'optimizer', 'scheduler'}`
as `.pth.tar`; `state_dict` is the one of `VideoNet` wrapped in (Distributed)DataParallel, so
every key starts with `module.base_model.`. `VideoNet.base_model` is the timm ViT of
`timm/models/vit_laps.py` (names in timm_state_dict.py) whose classifier `head` (C -> classes)
is applied to every frame's cls token; the per-frame logits are then averaged
(`ConsensusModule('avg')`, no parameters). Leap attention and the periodic shift add no
parameters, so the same file loads into 'laps' or 'vit2d' (the LAPS model's settings are
`leap_levels=(1, 2, 3, 1)`, `shift_div=4` = the official S2_SKIP_LEVEL and FOLD_DIV).

This is a trained video model, so nothing is re-initialised: the classifier must have the
config's num_classes and the position embedding the config's token grid; any difference is an
error that names the setting.
"""
from flax import nnx

from laps_jax.weights.assign import ConvertedWeights, flat_param_shapes
from laps_jax.weights.errors import WeightImportError
from laps_jax.weights.source_dict import SourceDict, block_count_hints
from laps_jax.weights.timm_state_dict import read_vit
from laps_jax.weights.torch_io import read_torch_state_dict

SUPPORTED_NAMES = ('laps', 'vit2d')
PREFIXES = ('module.base_model.', 'base_model.')


def backbone_prefix(names: list[str], description: str) -> str:
  """The prefix in front of the ViT's names ('module.base_model.' when saved from DataParallel)."""
  for prefix in PREFIXES:
    if any(n.startswith(prefix) for n in names):
      return prefix
  if 'patch_embed.proj.weight' in names:
    return ''  # a bare backbone state dict
  raise WeightImportError(f'{description}: no LAPS VideoNet keys found (expected names starting with '
                          f'{PREFIXES[0]!r}); first keys: {names[:10]}')


def convert_tensors(tensors, config, description: str, model: nnx.Module | None = None) -> ConvertedWeights:
  """Official LAPS {name: array} -> ConvertedWeights for name='laps' / 'vit2d'."""
  if config.name not in SUPPORTED_NAMES:
    raise WeightImportError(f'{description}: official LAPS checkpoints load into model.name in '
                            f'{SUPPORTED_NAMES}, not {config.name!r}')
  source = SourceDict(tensors, description, flat_param_shapes(model) if model is not None else None)
  prefix = backbone_prefix(source.keys(), description)
  params, origin = read_vit(source, config, prefix, with_head=True)
  hints = block_count_hints(source.keys(), prefix.replace('.', r'\.') + r'blocks\.(\d+)\.', config)
  if prefix + 'head.weight' in source:
    classes = source.shape(prefix + 'head.weight')[0]
    if classes != config.num_classes:
      hints.append(f'the checkpoint classifier has {classes} classes: set model.num_classes={classes}')
  source.finish(hints, params=params, origin=origin)
  return ConvertedWeights(params=params, origin=origin, dropped=list(source.dropped), hints=hints)


def convert(path: str, config, model: nnx.Module | None = None) -> ConvertedWeights:
  """An official LAPS `.pth.tar` -> ConvertedWeights (strict: every model parameter from the file;
  `model` only gives the expected shapes for messages)."""
  tensors = read_torch_state_dict(path, candidates=('state_dict', 'model'))
  return convert_tensors(tensors, config, f'{path} (official LAPS checkpoint)', model)
