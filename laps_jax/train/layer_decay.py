"""Layer-wise learning-rate decay (BEiT / VideoMAE / timm `param_groups_layer_decay`).

With L blocks and decay d, a parameter's learning rate is multiplied by d ** (L + 1 - layer):

    layer 0          the embeddings (patch / position / temporal embeddings, cls token, stems)
                     -> d ** (L + 1)
    layer i + 1      block i (0-based) of L -> d ** (L - i): the last block gets d, the first d ** L
    layer L + 1      the final norm and the head -> 1

The layer of a parameter comes from its name (`laps_jax.named_params`):

    blocks/<i>/...                     ViT, LAPS and LVT blocks
    stage<s>/<i>/...                   Visformer: the stages' blocks counted in order (stage1 first)
    patch_embed<s>, pos_embed<s>       Visformer's down-sampling before stage s >= 2: the layer of
                                       that stage's first block (as BEiT-style Swin recipes do)
    norm/..., head/...                 the head
    anything else                      an embedding (layer 0)

An optax GradientTransformation (stateless per-parameter scaling) applied to the optimizer's final
updates (after the learning rate and, for AdamW, the decoupled weight
decay), which is what a PyTorch parameter group with `lr * lr_scale` does, for SGD-momentum too.
"""
import collections
import re

import jax
import jax.numpy as jnp
import optax
from absl import logging

from laps_jax import named_params

_BLOCK = re.compile(r'^blocks/(\d+)/')
_STAGE_BLOCK = re.compile(r'^stage(\d+)/(\d+)/')
_STAGE_EMBED = re.compile(r'^(?:patch_embed|pos_embed)(\d+)(?:/|$)')
_HEAD = re.compile(r'^(?:norm|head)(?:/|$)')


def layer_ids(names) -> tuple[dict[str, int], int]:
  """({parameter name: layer}, L): layer 0 = embeddings, 1..L = blocks in order, L + 1 = head."""
  names = list(names)
  blocks = {int(m.group(1)) for n in names if (m := _BLOCK.match(n))}
  stage_sizes = collections.Counter()
  for n in names:
    if m := _STAGE_BLOCK.match(n):
      stage, index = int(m.group(1)), int(m.group(2))
      stage_sizes[stage] = max(stage_sizes[stage], index + 1)
  if blocks and stage_sizes:
    raise ValueError('layer decay: a model with both blocks/<i> and stage<s>/<i> parameters')
  stage_offsets, offset = {}, 0
  for stage in sorted(stage_sizes):
    stage_offsets[stage] = offset
    offset += stage_sizes[stage]
  num_layers = (max(blocks) + 1) if blocks else offset
  if num_layers == 0:
    raise ValueError('layer decay: the model has no blocks/<i> or stage<s>/<i> parameters')

  def layer(name: str) -> int:
    if m := _BLOCK.match(name):
      return int(m.group(1)) + 1
    if m := _STAGE_BLOCK.match(name):
      return stage_offsets[int(m.group(1))] + int(m.group(2)) + 1
    if (m := _STAGE_EMBED.match(name)) and int(m.group(1)) in stage_offsets and int(m.group(1)) >= 2:
      return stage_offsets[int(m.group(1))] + 1
    if _HEAD.match(name):
      return num_layers + 1
    return 0
  return {n: layer(n) for n in names}, num_layers


def layer_scales(decay: float, num_layers: int) -> dict[int, float]:
  """{layer: learning-rate multiplier decay ** (L + 1 - layer)} for layers 0 .. L + 1."""
  return {layer: float(decay) ** (num_layers + 1 - layer) for layer in range(num_layers + 2)}


def layer_decay(decay: float, *, peak_lr: float | None = None) -> optax.GradientTransformation:
  """optax transformation multiplying each parameter's update by its layer's rate (module doc).

  Stateless; the layers come from the tree's names (updates and parameters share them), so it
  works for any model whose parameters follow the naming above. The per-layer rates (and the peak
  learning rates, with `peak_lr`) are logged once, when the optimizer is initialised.
  """
  logged = []  # init runs more than once (abstract state, then the real one): log the first

  def init(params):
    ids, num_layers = layer_ids(named_params.flatten(params))
    if not logged:
      _log_rates(ids, num_layers, decay, peak_lr)
      logged.append(True)
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    ids, num_layers = layer_ids(named_params.flatten(updates))
    scales = layer_scales(decay, num_layers)
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, u: None if u is None else u * jnp.asarray(
            scales[ids[named_params.path_name(path)]], u.dtype), updates)
    return scaled, state

  return optax.GradientTransformation(init, update)


def _log_rates(ids: dict[str, int], num_layers: int, decay: float, peak_lr: float | None) -> None:
  counts = collections.Counter(ids.values())
  scales = layer_scales(decay, num_layers)
  rows = []
  for layer in sorted(counts):
    kind = 'embeddings' if layer == 0 else 'head' if layer == num_layers + 1 else f'block {layer - 1}'
    lr = f'  peak lr {peak_lr * scales[layer]:.4g}' if peak_lr is not None else ''
    rows.append(f'  layer {layer:3d} ({kind:>10s}): {counts[layer]:4d} tensors  lr x {scales[layer]:.4g}{lr}')
  logging.info('Layer-wise learning-rate decay %.3g over %d blocks:\n%s', decay, num_layers,
               '\n'.join(rows))
