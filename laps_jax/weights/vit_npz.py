"""Google's ImageNet ViT `.npz` checkpoints (the original ViT release and AugReg) -> ViT family.

The files are flat {name: array} dicts of the Flax ViT (github.com/google-research/vision_transformer),
optionally under an 'opt/target/' prefix (then the other entries are optimizer state, dropped):

  embedding/kernel (p, p, 3, C) HWIO, embedding/bias      -> patch_embed/{kernel, bias} (same layout)
  cls (1, 1, C)                                           -> cls_token
  Transformer/posembed_input/pos_embedding (1, 1+N, C)    -> pos_embed (interpolated if N differs)
  Transformer/encoderblock_{i}/
    LayerNorm_0/{scale, bias}                             -> blocks/i/norm1
    MultiHeadDotProductAttention_1/{query,key,value}/kernel (C, H, d), bias (H, d)
                                                          -> blocks/i/attn/qkv kernel (C, 3, H, d), bias (3, H, d)
    MultiHeadDotProductAttention_1/out/kernel (H, d, C), bias (C,) -> blocks/i/attn/proj
    LayerNorm_2/{scale, bias}                             -> blocks/i/norm2
    MlpBlock_3/Dense_0, Dense_1 /{kernel (in, out), bias} -> blocks/i/mlp/fc1, fc2
  Transformer/encoder_norm/{scale, bias}                  -> norm
  pre_logits/{kernel, bias}                               dropped (ImageNet-21k releases; LAPS drops it)
  head/{kernel (C, K), bias}                              -> head, or dropped when K differs
"""
import numpy as np
from flax import nnx

from laps_jax.weights.assign import ConvertedWeights, flat_param_shapes
from laps_jax.weights.image_vit import ADAPTED, adapt_to_video_model, check_vit_family
from laps_jax.weights.source_dict import ParamCollector, SourceDict, block_count_hints
from laps_jax.weights.tensor_files import read_npz

OPTIMIZER_PREFIX = 'opt/target/'


def convert_tensors(tensors: dict[str, np.ndarray], config, model: nnx.Module, description: str) -> ConvertedWeights:
  """Google ViT {name: array} -> ConvertedWeights for `model` (ViT family)."""
  check_vit_family(config, description)
  source = SourceDict(tensors, description, flat_param_shapes(model))
  prefix = ''
  if OPTIMIZER_PREFIX + 'embedding/kernel' in source:
    prefix = OPTIMIZER_PREFIX
    source.drop_matching(lambda n: not n.startswith(OPTIMIZER_PREFIX), 'optimizer state, not a parameter')

  take = ParamCollector(source, prefix)
  params, origin = take.params, take.origin

  take('embedding/kernel', 'patch_embed/kernel')
  take('embedding/bias', 'patch_embed/bias')
  take('cls', 'cls_token')
  take('Transformer/posembed_input/pos_embedding', 'pos_embed')
  take('Transformer/encoder_norm/scale', 'norm/scale')
  take('Transformer/encoder_norm/bias', 'norm/bias')
  for i in range(config.num_layers):
    block, ours = f'Transformer/encoderblock_{i}/', f'blocks/{i}/'
    mha = block + 'MultiHeadDotProductAttention_1/'
    for flax_norm, our_norm in (('LayerNorm_0', 'norm1'), ('LayerNorm_2', 'norm2')):
      take(f'{block}{flax_norm}/scale', f'{ours}{our_norm}/scale')
      take(f'{block}{flax_norm}/bias', f'{ours}{our_norm}/bias')
    # q, k, v stacked on a new axis 1: kernel (C, 3, H, d), bias (3, H, d).
    for part, axis in (('kernel', 1), ('bias', 0)):
      pieces = [source.take(f'{prefix}{mha}{n}/{part}', needed_for=f'{ours}attn/qkv/{part}')
                for n in ('query', 'key', 'value')]
      if all(p is not None for p in pieces):
        try:
          params[f'{ours}attn/qkv/{part}'] = np.stack(pieces, axis=axis)
          origin[f'{ours}attn/qkv/{part}'] = f'{prefix}{mha}{{query,key,value}}/{part}'
        except ValueError as e:
          source.bad_shapes.append(f'{prefix}{mha}{{query,key,value}}/{part}: {e}')
    take(mha + 'out/kernel', f'{ours}attn/proj/kernel')
    take(mha + 'out/bias', f'{ours}attn/proj/bias')
    for j, fc in ((0, 'fc1'), (1, 'fc2')):
      take(f'{block}MlpBlock_3/Dense_{j}/kernel', f'{ours}mlp/{fc}/kernel')
      take(f'{block}MlpBlock_3/Dense_{j}/bias', f'{ours}mlp/{fc}/bias')
  for name in ('pre_logits/kernel', 'pre_logits/bias'):
    source.drop(prefix + name, 'pre-logits layer of the ImageNet-21k release; the video model has none')
  if prefix + 'head/kernel' in source:
    take('head/kernel', 'head/kernel')
    take('head/bias', 'head/bias')
  source.finish(hints=block_count_hints(source.keys(), prefix + r'Transformer/encoderblock_(\d+)/', config),
                params=params, origin=origin, adapted=ADAPTED)
  converted = ConvertedWeights(params=params, dropped=list(source.dropped), origin=origin)
  return adapt_to_video_model(converted, model, config)


def convert(path: str, config, model: nnx.Module) -> ConvertedWeights:
  """A Google ViT `.npz` file -> ConvertedWeights for `model`."""
  return convert_tensors(read_npz(path), config, model, f'{path} (Google ViT .npz)')
