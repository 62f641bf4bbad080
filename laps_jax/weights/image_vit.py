"""From an ImageNet ViT (already in our parameter names) to a model of the ViT video family.

Shared by the Google `.npz` and the timm importers. Given the image ViT's parameters renamed to
ours ('patch_embed/kernel', 'blocks/0/attn/qkv/kernel', ..., 'head/kernel'), this
  - interpolates the position embedding when the model's token grid differs (another
    image_size, e.g. 384 from a 224 checkpoint) -- see posembed.py;
  - keeps the classifier if it has the model's class count, else drops it and leaves the model's
    (zero-initialised) head, logging both class counts;
  - leaves the parameters an image ViT does not have at the model's initial values, logging each
    by name: `time_embed` of joint/divided, and divided's `temporal_norm`, `temporal_attn`,
    `temporal_fc` (zero-initialised, so the divided model starts as the image model per frame).
    laps and vit2d have exactly the image ViT's tree, so nothing is left initialised there.
Any other difference is an error (assign.py).
"""
import re

import numpy as np
from flax import nnx

from laps_jax.models.vit import VIT_FAMILY
from laps_jax.weights.assign import ConvertedWeights, flat_param_shapes
from laps_jax.weights.errors import WeightImportError
from laps_jax.weights.posembed import grid_side, resize_pos_embed

# Parameters of the video models that an image ViT cannot provide.
VIDEO_ONLY_PARAMS = re.compile(r'^time_embed$|^blocks/\d+/temporal_(norm|attn|fc)/')
# What `adapt_to_video_model` still changes after the converters read the file (a regex).
ADAPTED = r'^(pos_embed|head/(kernel|bias))$'


def check_vit_family(config, description: str) -> None:
  if config.name not in VIT_FAMILY:
    raise WeightImportError(f'{description}: an ImageNet ViT initialises the ViT family {VIT_FAMILY}, '
                            f'not model.name={config.name!r} (LVT has its own backbone; use '
                            f'--source=lvt-pytorch for official LVT checkpoints)')


def adapt_to_video_model(vit: ConvertedWeights, model: nnx.Module, config) -> ConvertedWeights:
  """Completes `vit` (image-ViT params in our names, head included if the source has one) for
  `model`: position-embedding resize, head kept or re-initialised, video-only params kept."""
  expected = flat_param_shapes(model)
  params = vit.params

  # Position embedding: same cls token, grid resized to the model's.
  if 'pos_embed' in params and 'pos_embed' in expected:
    old = params['pos_embed']
    new_tokens = expected['pos_embed'][1]
    if old.ndim == 3 and old.shape[1] != new_tokens:
      new_side = grid_side(new_tokens - 1)
      try:
        old_side = grid_side(old.shape[1] - 1)
      except ValueError as e:
        raise WeightImportError(f'position embedding {old.shape}: {e}') from None
      params['pos_embed'] = resize_pos_embed(old, (new_side, new_side))
      vit.notes.append(f'position embedding interpolated (bilinear) from a {old_side}x{old_side} to a '
                       f'{new_side}x{new_side} patch grid (model image_size={config.image_size}, '
                       f'patch_size={config.patch_size})')

  # Classifier: keep only if it has the model's class count.
  head_shape = expected['head/kernel']
  if 'head/kernel' in params and tuple(params['head/kernel'].shape) == head_shape:
    vit.notes.append(f'classifier kept ({head_shape[1]} classes)')
  else:
    if 'head/kernel' in params:
      source_classes = np.shape(params['head/kernel'])[-1]
      reason = f'the checkpoint classifier has {source_classes} classes, the model {head_shape[1]}'
      for name in ('head/kernel', 'head/bias'):
        vit.dropped.append((vit.origin.get(name, name), reason))
        params.pop(name, None)
        vit.origin.pop(name, None)
    else:
      reason = 'the checkpoint has no classifier'
    for name in ('head/kernel', 'head/bias'):
      vit.keep_initialised[name] = f'new classifier: {reason}'

  # Parameters only the video model has.
  for name in sorted(expected):
    if name not in params and VIDEO_ONLY_PARAMS.search(name):
      vit.keep_initialised[name] = f'not in an image ViT; model.name={config.name!r}'
  return vit
