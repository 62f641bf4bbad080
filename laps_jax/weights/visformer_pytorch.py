"""Visformer checkpoints -> name='visformer': official LAPS video models and ImageNet Visformer-S.

Three layouts, told apart by their names:

  official LAPS (VideoNetworks/LAPS-transformer, `visformer/models_LAPS.py` in `VideoNet`):
      `.pth.tar` {'state_dict': ...}, every key under `module.base_model.`; BatchNorm is a wrapper
      module, so its tensors are `<norm>.bn.{weight, bias, running_mean, running_var}`.
      A trained video model: strict (classifier and position-embedding grids must fit the config).
  official ImageNet (danczs/Visformer `models.py`, the same names as the LAPS code, no prefix):
      {'model': ...} (DeiT's training script), 1000-class head.
  timm `visformer_small` (`.safetensors` / `.pth`): the same modules, but BatchNorm is a plain
      `nn.BatchNorm2d`: `<norm>.{weight, bias, running_mean, running_var}`.

ImageNet sources (no `base_model.` prefix) initialise a video model: a classifier with another
class count is dropped (the model's own initialisation stays, logged) and the position
embeddings are resized bilinearly to the config's grids (logged), as the LAPS code's own
ImageNet start does for the 320/360 models.

Official name (N = the BatchNorm names above)   -> our name / layout
  stem.0.weight (32, 3, 7, 7)                  -> stem/kernel (7, 7, 3, 32)
  stem.1.N                                     -> stem/bn/{scale, bias, mean, var}
  patch_embed{s}.proj.{weight, bias}           -> patch_embed{s}/{kernel (HWIO), bias}
  patch_embed{s}.norm.N                        -> patch_embed{s}/norm/...
  pos_embed{s} (1, C, H, W)                    -> pos_embed{s} (1, H, W, C)
  stage{s}.{i}.norm1.N, norm2.N                -> stage{s}/i/norm1, norm2
  stage{s}.{i}.attn.qkv.weight (3C, C, 1, 1)   -> stage{s}/i/attn/qkv (C, 3, heads, d)
  stage{s}.{i}.attn.proj.weight (C, C, 1, 1)   -> stage{s}/i/attn/proj (heads, d, C)
  stage{s}.{i}.mlp.conv{1,3}.weight (O, I, 1, 1) -> stage{s}/i/mlp/conv{1,3} (I, O)
  stage1.{i}.mlp.conv2.weight (O, O/g, 3, 3)   -> stage1/i/mlp/conv2 (3, 3, O/g, O)
  norm.N; head.{weight, bias}                  -> norm; head/{kernel, bias}
  *.num_batches_tracked                        dropped (PyTorch's counter; momentum is fixed at 0.1)
"""
import numpy as np
from flax import nnx

from laps_jax.weights import torch_layouts as layouts
from laps_jax.weights.assign import ConvertedWeights, flat_param_shapes
from laps_jax.weights.errors import WeightImportError
from laps_jax.weights.posembed import resize_grid
from laps_jax.weights.source_dict import ParamCollector, SourceDict
from laps_jax.weights.tensor_files import read_state_dict_file

PREFIXES = ('module.base_model.', 'base_model.')
BATCH_NORM = (('weight', 'scale'), ('bias', 'bias'), ('running_mean', 'mean'), ('running_var', 'var'))


def layout_of(names: list[str], description: str) -> tuple[str, str, bool]:
  """(prefix, BatchNorm infix ('bn.' official, '' timm), is_video_checkpoint)."""
  prefix = next((p for p in PREFIXES if any(n.startswith(p) for n in names)), '')
  if prefix + 'stem.0.weight' not in names:
    raise WeightImportError(f'{description}: not a Visformer checkpoint (no {prefix}stem.0.weight); '
                            f'first keys: {names[:10]}')
  infix = 'bn.' if prefix + 'stem.1.bn.weight' in names else ''
  return prefix, infix, bool(prefix)


def pointwise_kernel(weight: np.ndarray) -> np.ndarray:
  """A 1×1 conv weight (O, I, 1, 1) -> (I, O)."""
  if weight.ndim != 4 or weight.shape[2:] != (1, 1):
    raise ValueError(f'a 1x1 conv weight is (O, I, 1, 1), got {weight.shape}')
  return weight[:, :, 0, 0].T


def qkv_kernel(num_heads: int):
  """(3C, C, 1, 1) -> (C, 3, heads, d): the output channels read as (3, heads, d)."""
  def transform(weight):
    w = pointwise_kernel(weight)
    c, three_c = w.shape
    if three_c != 3 * c or c % num_heads:
      raise ValueError(f'a qkv conv (3C, C, 1, 1) with C divisible by num_heads={num_heads}, got {weight.shape}')
    return w.reshape(c, 3, num_heads, c // num_heads)
  return transform


def proj_kernel(num_heads: int):
  """(C, C, 1, 1) -> (heads, d, C): the input channels are head-major (h·d + e)."""
  def transform(weight):
    w = pointwise_kernel(weight)
    if w.shape[0] % num_heads:
      raise ValueError(f'a proj conv with C divisible by num_heads={num_heads}, got {weight.shape}')
    return w.reshape(num_heads, w.shape[0] // num_heads, w.shape[1])
  return transform


def pos_embed_channels_last(weight: np.ndarray) -> np.ndarray:
  if weight.ndim != 4 or weight.shape[0] != 1:
    raise ValueError(f'a position embedding is (1, C, H, W), got {weight.shape}')
  return weight.transpose(0, 2, 3, 1)


def convert_tensors(tensors: dict[str, np.ndarray], config, description: str,
                    model: nnx.Module | None = None) -> ConvertedWeights:
  """{official or timm Visformer name: array} -> ConvertedWeights for name='visformer'."""
  if config.name != 'visformer':
    raise WeightImportError(f'{description}: Visformer checkpoints load into model.name=\'visformer\', '
                            f'not {config.name!r}')
  expected = flat_param_shapes(model) if model is not None else {}
  source = SourceDict(tensors, description, expected)
  prefix, infix, video = layout_of(source.keys(), description)
  heads = config.num_heads
  take = ParamCollector(source, prefix)
  params, origin, notes, keep, hints = take.params, take.origin, [], {}, []

  def batch_norm(theirs, ours):
    for their_leaf, our_leaf in BATCH_NORM:
      take(f'{theirs}.{infix}{their_leaf}', f'{ours}/{our_leaf}')
    source.drop(f'{prefix}{theirs}.{infix}num_batches_tracked',
                "PyTorch's BatchNorm step counter (unused with a fixed momentum)")

  take('stem.0.weight', 'stem/kernel', layouts.conv_kernel)
  batch_norm('stem.1', 'stem/bn')
  depths = config.stage_depths
  for s in (1, 2, 3):
    take(f'patch_embed{s}.proj.weight', f'patch_embed{s}/kernel', layouts.conv_kernel)
    take(f'patch_embed{s}.proj.bias', f'patch_embed{s}/bias')
    batch_norm(f'patch_embed{s}.norm', f'patch_embed{s}/norm')
    take(f'pos_embed{s}', f'pos_embed{s}', pos_embed_channels_last)
    for i in range(depths[s - 1]):
      b, ours = f'stage{s}.{i}.', f'stage{s}/{i}/'
      if s > 1:
        batch_norm(b + 'norm1', ours + 'norm1')
        take(b + 'attn.qkv.weight', ours + 'attn/qkv', qkv_kernel(heads))
        take(b + 'attn.proj.weight', ours + 'attn/proj', proj_kernel(heads))
      batch_norm(b + 'norm2', ours + 'norm2')
      take(b + 'mlp.conv1.weight', ours + 'mlp/conv1', pointwise_kernel)
      if s == 1:
        take(b + 'mlp.conv2.weight', ours + 'mlp/conv2', layouts.conv_kernel)
      take(b + 'mlp.conv3.weight', ours + 'mlp/conv3', pointwise_kernel)
  batch_norm('norm', 'norm')

  head_classes = source.shape(prefix + 'head.weight')[0] if prefix + 'head.weight' in source else None
  if video or head_classes == config.num_classes:
    take('head.weight', 'head/kernel', layouts.linear_kernel)
    take('head.bias', 'head/bias')
    if head_classes is not None and head_classes != config.num_classes:
      hints.append(f'the checkpoint classifier has {head_classes} classes: set model.num_classes={head_classes}')
  else:
    for leaf in ('weight', 'bias'):
      source.drop(prefix + f'head.{leaf}', f'ImageNet classifier ({head_classes} classes); the video model '
                                           f'has {config.num_classes}')
    keep.update({'head/kernel': 'new classifier', 'head/bias': 'new classifier'})

  for s in (1, 2, 3):
    name = f'pos_embed{s}'
    if name not in params or name not in expected:
      continue
    have, want = params[name].shape[1:3], tuple(expected[name][1:3])
    if have != want:
      if video:
        hints.append(f'{name} is a {have[0]}x{have[1]} grid; the config gives {want[0]}x{want[1]}: set '
                     f'model.image_size to the checkpoint\'s (its stage-1 grid x 8, e.g. '
                     f'image_size={params["pos_embed1"].shape[1] * 8})')
      else:
        params[name] = resize_grid(params[name][0], want)[None]
        notes.append(f'{name} resized bilinearly from {have[0]}x{have[1]} to {want[0]}x{want[1]} '
                     f'(image_size {config.image_size})')
  depth_found = [len({n.split('.')[1] for n in source.keys() if n.startswith(f'{prefix}stage{s}.')})
                 for s in (1, 2, 3)]
  if tuple(depth_found) != tuple(depths):
    hints.append(f'the checkpoint has stage depths {tuple(depth_found)}: set model.stage_depths')
  source.finish(hints, params=params, origin=origin)
  return ConvertedWeights(params=params, keep_initialised=keep, dropped=list(source.dropped), notes=notes,
                          origin=origin, hints=hints)


def convert(path: str, config, model: nnx.Module | None = None) -> ConvertedWeights:
  """A Visformer checkpoint file (official LAPS `.pth.tar`, danczs/Visformer `.pth`, timm
  `.safetensors`/`.pth`) -> ConvertedWeights for name='visformer' (strict)."""
  return convert_tensors(read_state_dict_file(path), config, f'{path} (Visformer checkpoint)', model)
