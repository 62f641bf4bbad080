"""Official LVT checkpoints (github.com/OpenNLPLab/Linear_VideoTransformer) -> name='lvt'.

The LVT code is PySlowFast: a checkpoint is `{'epoch', 'model_state', 'optimizer_state', 'cfg'}`
(keys possibly prefixed `module.`). The model is `XVIT` with
  base_model   the `lvit_v2` backbone (LinearChangeVisionTransformer, `linear_block_v2.LinearBlock`s);
               its `head` is an nn.Dropout (MODEL.DROPOUT_RATE > 0), so it has no parameters
  consensus    `VVTHead`: mlp_head = Sequential(LayerNorm, Linear, GELU, Dropout, Linear)
  new_fc       a Linear the forward pass never uses with CONSENSUS_TYPE 'vit': dropped (logged)

Names (base_model. prefix omitted):
  patch_embed.proj.{weight (C, 3, p, p), bias}, patch_embed.norm  -> patch_embed/{kernel, bias}, patch_norm
  temp_embed (1, S, 1, C)                                         -> temporal_embed
  blocks.{i}.temporal_norm1, .norm1, .norm2                       -> blocks/i/temporal_norm1, norm1, norm2
  blocks.{i}.temporal_attn.{qkv, proj}, .attn.{qkv, proj}         -> blocks/i/temporal_attn, attn (qkv / proj layouts)
  blocks.{i}.*attn.{q_gate, k_gate | pgate}.{weight (d, 3d), bias}-> .../fixation/{q_gate, k_gate | pgate}/linear
  blocks.{i}.mlp.fc1, .fc2                                        -> blocks/i/mlp/fc1, fc2
  blocks.{i}.mlp.dwconv.dwconv.{weight (M, 1, 3, 3), bias}        -> blocks/i/mlp/dwconv_kernel (3, 3, 1, M), dwconv_bias
  norm                                                            -> norm
  consensus.mlp_head.{0, 1, 4}                                    -> head/norm, head/hidden, head/out

A backbone-only state dict (the same names without `base_model.`, e.g. the image `lvit_v2`
model the official recipe starts from) also loads: its image classifier (`head`, `pre_logits`) is
dropped and the VVT head keeps the model's initialisation (both logged).

Settings a checkpoint decides: the number of temporal-embedding slots S (read from `temp_embed`:
the official Kinetics backbones keep 8 slots for 16 frames) must equal
`model.temporal_embed_frames`; the gate names decide `fixation` and `shared_gate`. A mismatch is
an error naming the setting to use. The temporal-shift segment (the official
XVIT.NUM_SEGMENTS, `model.shift_segment_frames`) and the shift divisor (`temporal_shift_div`) are
not stored in the weights: take them from the checkpoint's config (its 'cfg' entry).
"""
from flax import nnx

from laps_jax.models.registry import typed_config
from laps_jax.weights import torch_layouts as layouts
from laps_jax.weights.assign import ConvertedWeights, flat_param_shapes
from laps_jax.weights.errors import WeightImportError
from laps_jax.weights.source_dict import ParamCollector, SourceDict, block_count_hints
from laps_jax.weights.torch_io import read_torch_state_dict

LAYER_NORM = (('weight', 'scale'), ('bias', 'bias'))
GATES = ('q_gate', 'k_gate', 'pgate')


def _strip_module(tensors: dict) -> dict:
  if tensors and all(k.startswith('module.') for k in tensors):
    return {k[len('module.'):]: v for k, v in tensors.items()}
  return tensors


def backbone_prefix(source: SourceDict) -> str:
  """'base_model.' for an XVIT video checkpoint, '' for a backbone-only (image lvit_v2) one."""
  if any(name.startswith('base_model.') for name in source.keys()) or 'patch_embed.proj.weight' not in source:
    return 'base_model.'
  return ''


def check_checkpoint_settings(source: SourceDict, config, description: str, bm: str = 'base_model.') -> None:
  """Refuses configs whose temporal-embedding slots or gates differ from the checkpoint's."""
  config = typed_config(config).resolved()  # None placeholders -> num_frames
  problems = []
  if bm + 'temp_embed' in source:
    slots = source.shape(bm + 'temp_embed')[1]
    if slots != config.temporal_embed_frames:
      problems.append(f'the checkpoint has {slots} temporal-embedding slots (temp_embed '
                      f'{source.shape(bm + "temp_embed")}); set model.temporal_embed_frames={slots} '
                      f'(frame t uses slot t mod {slots})')
  gates = {g for g in GATES if f'{bm}blocks.0.attn.{g}.weight' in source}
  if gates and not config.fixation:
    problems.append(f'the checkpoint has feature-fixation gates {sorted(gates)}; set model.fixation=True')
  if not gates and config.fixation:
    problems.append('the checkpoint has no feature-fixation gates; set model.fixation=False')
  if gates == {'pgate'} and config.fixation and not config.shared_gate:
    problems.append("the checkpoint has one shared gate ('pgate'); set model.shared_gate=True")
  if gates == {'q_gate', 'k_gate'} and config.fixation and config.shared_gate:
    problems.append("the checkpoint has two gates ('q_gate', 'k_gate'); set model.shared_gate=False")
  if problems:
    raise WeightImportError(f'{description} does not fit the model config:\n  ' + '\n  '.join(problems))


def convert_tensors(tensors, config, description: str, model: nnx.Module | None = None) -> ConvertedWeights:
  """Official LVT {name: array} -> ConvertedWeights for name='lvt'."""
  if config.name != 'lvt':
    raise WeightImportError(f"{description}: official LVT checkpoints load into model.name='lvt', "
                            f'not {config.name!r}')
  source = SourceDict(_strip_module(tensors), description,
                      flat_param_shapes(model) if model is not None else None)
  bm = backbone_prefix(source)
  check_checkpoint_settings(source, config, description, bm)
  heads = config.num_heads
  take = ParamCollector(source)
  params, origin = take.params, take.origin

  def take_linear(name, ours):
    take(f'{name}.weight', f'{ours}/kernel', layouts.linear_kernel)
    take(f'{name}.bias', f'{ours}/bias')

  def take_norm(name, ours):
    for theirs, our_leaf in LAYER_NORM:
      take(f'{name}.{theirs}', f'{ours}/{our_leaf}')

  take(bm + 'patch_embed.proj.weight', 'patch_embed/kernel', layouts.conv_kernel)
  take(bm + 'patch_embed.proj.bias', 'patch_embed/bias')
  take_norm(bm + 'patch_embed.norm', 'patch_norm')
  take(bm + 'temp_embed', 'temporal_embed')
  gates = (('pgate',) if config.shared_gate else ('q_gate', 'k_gate')) if config.fixation else ()
  for i in range(config.num_layers):
    b, ours = f'{bm}blocks.{i}.', f'blocks/{i}/'
    for norm in ('temporal_norm1', 'norm1', 'norm2'):
      take_norm(b + norm, ours + norm)
    for attn in ('temporal_attn', 'attn'):
      take(f'{b}{attn}.qkv.weight', f'{ours}{attn}/qkv/kernel', layouts.qkv_kernel(heads))
      take(f'{b}{attn}.qkv.bias', f'{ours}{attn}/qkv/bias', layouts.qkv_bias(heads))
      take(f'{b}{attn}.proj.weight', f'{ours}{attn}/proj/kernel', layouts.heads_out_kernel(heads))
      take(f'{b}{attn}.proj.bias', f'{ours}{attn}/proj/bias')
      for gate in gates:
        take_linear(f'{b}{attn}.{gate}', f'{ours}{attn}/fixation/{gate}/linear')
    take_linear(f'{b}mlp.fc1', f'{ours}mlp/fc1')
    take_linear(f'{b}mlp.fc2', f'{ours}mlp/fc2')
    take(f'{b}mlp.dwconv.dwconv.weight', f'{ours}mlp/dwconv_kernel', layouts.conv_kernel)
    take(f'{b}mlp.dwconv.dwconv.bias', f'{ours}mlp/dwconv_bias')
  take_norm(bm + 'norm', 'norm')
  keep_initialised = {}
  if bm:
    take_norm('consensus.mlp_head.0', 'head/norm')
    take_linear('consensus.mlp_head.1', 'head/hidden')
    take_linear('consensus.mlp_head.4', 'head/out')
    for name in ('new_fc.weight', 'new_fc.bias'):
      source.drop(name, "XVIT's new_fc, unused by the forward pass with the VVTHead consensus")
  else:  # an image backbone: its classifier goes, the video head is new
    for name in ('head.weight', 'head.bias', 'pre_logits.fc.weight', 'pre_logits.fc.bias'):
      source.drop(name, 'classifier of the image backbone; the video model has its own VVT head')
    for layer in ('norm', 'hidden', 'out'):
      for leaf in (('scale', 'bias') if layer == 'norm' else ('kernel', 'bias')):
        keep_initialised[f'head/{layer}/{leaf}'] = 'backbone-only checkpoint: the VVT head is new'
  hints = block_count_hints(source.keys(), bm.replace('.', r'\.') + r'blocks\.(\d+)\.', config)
  if 'consensus.mlp_head.4.weight' in source:
    classes = source.shape('consensus.mlp_head.4.weight')[0]
    if classes != config.num_classes:
      hints.append(f'the checkpoint classifier has {classes} classes: set model.num_classes={classes}')
  source.finish(hints, params=params, origin=origin)
  return ConvertedWeights(params=params, origin=origin, dropped=list(source.dropped), hints=hints,
                          keep_initialised=keep_initialised)


def convert(path: str, config, model: nnx.Module | None = None) -> ConvertedWeights:
  """An official LVT (PySlowFast) checkpoint -> ConvertedWeights (strict; `model` only gives the
  expected shapes for messages)."""
  tensors = read_torch_state_dict(path, candidates=('model_state', 'state_dict', 'model'))
  return convert_tensors(tensors, config, f'{path} (official LVT checkpoint)', model)
