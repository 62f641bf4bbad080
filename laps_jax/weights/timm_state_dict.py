"""timm ViT state dicts (`.safetensors`, or `.pth`/`.bin` through torch) -> ViT family.

timm's VisionTransformer names, which the official LAPS code's `vit_laps.py` keeps unchanged:

  patch_embed.proj.weight (C, 3, p, p), .bias     -> patch_embed/{kernel (p, p, 3, C), bias}
  cls_token (1, 1, C), pos_embed (1, 1+N, C)      -> cls_token, pos_embed
  blocks.{i}.norm1.{weight, bias}                 -> blocks/i/norm1/{scale, bias}
  blocks.{i}.attn.qkv.{weight (3C, C), bias}      -> blocks/i/attn/qkv/{kernel (C, 3, H, d), bias (3, H, d)}
  blocks.{i}.attn.proj.{weight (C, C), bias}      -> blocks/i/attn/proj/{kernel (H, d, C), bias}
  blocks.{i}.norm2, blocks.{i}.mlp.fc1, .fc2      -> blocks/i/norm2, mlp/fc1, mlp/fc2 (kernels transposed)
  norm.{weight, bias}                             -> norm/{scale, bias}
  pre_logits.fc.{weight, bias}                    dropped (older ImageNet-21k models)
  head.{weight (K, C), bias}                      -> head (or dropped when K differs)

`read_vit` is shared with the official LAPS importer (laps_pytorch.py), whose backbone is this
ViT under a `module.base_model.` prefix. A timm model with other parts (layer scale `ls1`,
`fc_norm`, register tokens, qk-norm, a distillation token) is not this architecture: its extra
keys are reported as left over.
"""
import numpy as np
from flax import nnx

from laps_jax.weights import torch_layouts as layouts
from laps_jax.weights.assign import ConvertedWeights, flat_param_shapes
from laps_jax.weights.image_vit import ADAPTED, adapt_to_video_model, check_vit_family
from laps_jax.weights.source_dict import ParamCollector, SourceDict, block_count_hints
from laps_jax.weights.tensor_files import read_state_dict_file

LAYER_NORM = (('weight', 'scale'), ('bias', 'bias'))


def read_vit(source: SourceDict, config, prefix: str = '', *, with_head: bool) -> tuple[dict, dict]:
  """Takes the ViT backbone (and the head if `with_head`) from `source` under `prefix`.

  Returns ({our flat name: array}, {our flat name: source name}).
  """
  heads = config.num_heads
  take = ParamCollector(source, prefix)
  params, origin = take.params, take.origin

  take('patch_embed.proj.weight', 'patch_embed/kernel', layouts.conv_kernel)
  take('patch_embed.proj.bias', 'patch_embed/bias')
  take('cls_token', 'cls_token')
  take('pos_embed', 'pos_embed')
  for i in range(config.num_layers):
    b, ours = f'blocks.{i}.', f'blocks/{i}/'
    for norm in ('norm1', 'norm2'):
      for theirs, our_leaf in LAYER_NORM:
        take(f'{b}{norm}.{theirs}', f'{ours}{norm}/{our_leaf}')
    take(f'{b}attn.qkv.weight', f'{ours}attn/qkv/kernel', layouts.qkv_kernel(heads))
    take(f'{b}attn.qkv.bias', f'{ours}attn/qkv/bias', layouts.qkv_bias(heads))
    take(f'{b}attn.proj.weight', f'{ours}attn/proj/kernel', layouts.heads_out_kernel(heads))
    take(f'{b}attn.proj.bias', f'{ours}attn/proj/bias')
    for fc in ('fc1', 'fc2'):
      take(f'{b}mlp.{fc}.weight', f'{ours}mlp/{fc}/kernel', layouts.linear_kernel)
      take(f'{b}mlp.{fc}.bias', f'{ours}mlp/{fc}/bias')
  for theirs, our_leaf in LAYER_NORM:
    take(f'norm.{theirs}', f'norm/{our_leaf}')
  if with_head:
    take('head.weight', 'head/kernel', layouts.linear_kernel)
    take('head.bias', 'head/bias')
  return params, origin


def convert_tensors(tensors: dict[str, np.ndarray], config, model: nnx.Module, description: str) -> ConvertedWeights:
  """timm ViT {name: array} -> ConvertedWeights for `model` (ViT family)."""
  check_vit_family(config, description)
  source = SourceDict(tensors, description, flat_param_shapes(model))
  params, origin = read_vit(source, config, with_head='head.weight' in source)
  for name in ('pre_logits.fc.weight', 'pre_logits.fc.bias'):
    source.drop(name, 'pre-logits layer of the ImageNet-21k release; the video model has none')
  source.finish(hints=block_count_hints(source.keys(), r'blocks\.(\d+)\.', config), params=params,
                origin=origin, adapted=ADAPTED)
  converted = ConvertedWeights(params=params, dropped=list(source.dropped), origin=origin)
  return adapt_to_video_model(converted, model, config)


def convert(path: str, config, model: nnx.Module) -> ConvertedWeights:
  """A timm ViT state dict file (.safetensors / .pth / .bin) -> ConvertedWeights for `model`."""
  return convert_tensors(read_state_dict_file(path), config, model, f'{path} (timm ViT state dict)')
