"""Official LVT (PySlowFast) checkpoints -> 'lvt': logits equal to an independent NumPy forward of
the official code (tests/reference_numpy.py), the two checkpoint quirks, strict checking."""
import ml_collections
import numpy as np
import pytest
from flax import nnx

import reference_numpy as ref
from laps_jax import models
from laps_jax.weights import WeightImportError, import_weights
from laps_jax.models.lvt import LVTConfig

torch = pytest.importorskip('torch')

HIDDEN, LAYERS, HEADS, MLP, FRAMES, CLASSES, HEAD_MLP = 32, 2, 2, 64, 4, 5, 48
IMAGE, PATCH, STRIDE = 32, 8, 7          # padding patch // 2 = 4 -> a 5x5 token grid
SHIFT_DIV = 8


def lvt_config(**overrides):
  config = LVTConfig.variant(
      'base', image_size=IMAGE, patch_size=PATCH, hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS,
      mlp_dim=MLP, num_frames=FRAMES, num_classes=CLASSES, attention_impl='xla', patch_stride=STRIDE,
      patch_padding=PATCH // 2, temporal_shift_div=SHIFT_DIV, head_mlp_dim=HEAD_MLP,
      temporal_embed_frames=FRAMES, shift_segment_frames=FRAMES).to_config_dict()
  config.update(overrides)
  return config


def save_pyslowfast(path, state_dict, data_parallel=True):
  """As PySlowFast's checkpoint.save_checkpoint writes it."""
  prefix = 'module.' if data_parallel else ''
  model_state = {prefix + k: torch.tensor(v) for k, v in state_dict.items()}
  torch.save({'epoch': 40, 'model_state': model_state,
              'optimizer_state': {'state': {}, 'param_groups': [{'lr': 0.035, 'params': [0, 1]}]},
              'cfg': 'MODEL:\n  NUM_CLASSES: 5\nXVIT:\n  NUM_SEGMENTS: 4\n'}, path)


def official_lvt(rng, *, slots, gates):
  return ref.random_lvt(rng, hidden=HIDDEN, layers=LAYERS, heads=HEADS, mlp=MLP, patch=PATCH, classes=CLASSES,
                        head_mlp=HEAD_MLP, slots=slots, gates=gates)


def convert(config, path):
  model = models.build(config, nnx.Rngs(0))
  converted = import_weights('lvt-pytorch', path, model, config)
  return model, converted


@pytest.fixture(scope='module')
def videos():
  return np.random.default_rng(1).normal(size=(2, FRAMES, IMAGE, IMAGE, 3)).astype(np.float32)


def test_lvt_logits_match_official_forward(tmp_path, videos):
  sd = official_lvt(np.random.default_rng(0), slots=FRAMES, gates='two')
  path = str(tmp_path / 'lvt_k400.pyth')
  save_pyslowfast(path, sd)
  model, converted = convert(lvt_config(), path)
  expected = ref.lvt_forward(sd, videos, num_heads=HEADS, patch_stride=STRIDE, num_segments=FRAMES,
                             shift_div=SHIFT_DIV)
  np.testing.assert_allclose(np.asarray(model(videos)), expected, rtol=1e-5, atol=1e-5)
  assert sorted(name for name, _ in converted.dropped) == ['new_fc.bias', 'new_fc.weight']
  assert not converted.keep_initialised
  # The comparison has teeth: without the neighbourhood shifts the official logits differ.
  unshifted = ref.lvt_forward(sd, videos, num_heads=HEADS, patch_stride=STRIDE, num_segments=FRAMES,
                              shift_div=SHIFT_DIV, use_temporal_shift=False, use_spatial_shift=False)
  assert np.abs(unshifted - expected).max() > 1e-3


def test_lvt_checkpoint_quirks_slots_and_segments(tmp_path, videos):
  """The official Kinetics backbones: fewer temporal-embedding slots than frames (frame t -> slot
  t mod S) and the temporal shift inside segments; here S = segment = 2 of 4 frames, shared gate."""
  sd = official_lvt(np.random.default_rng(2), slots=2, gates='shared')
  path = str(tmp_path / 'lvt_quirks.pyth')
  save_pyslowfast(path, sd, data_parallel=False)
  model, _ = convert(lvt_config(temporal_embed_frames=2, shift_segment_frames=2, shared_gate=True), path)
  expected = ref.lvt_forward(sd, videos, num_heads=HEADS, patch_stride=STRIDE, num_segments=2,
                             shift_div=SHIFT_DIV)
  np.testing.assert_allclose(np.asarray(model(videos)), expected, rtol=1e-5, atol=1e-5)
  whole_clip = ref.lvt_forward(sd, videos, num_heads=HEADS, patch_stride=STRIDE, num_segments=FRAMES,
                               shift_div=SHIFT_DIV)
  assert np.abs(whole_clip - expected).max() > 1e-4


def test_slot_count_is_read_from_the_checkpoint(tmp_path):
  sd = official_lvt(np.random.default_rng(3), slots=2, gates='two')
  path = str(tmp_path / 'lvt.pyth')
  save_pyslowfast(path, sd)
  with pytest.raises(WeightImportError, match='set model.temporal_embed_frames=2'):
    convert(lvt_config(), path)


@pytest.mark.parametrize('gates, overrides, setting', [
    ('shared', {}, 'shared_gate=True'),
    ('two', {'shared_gate': True}, 'shared_gate=False'),
    (None, {}, 'fixation=False'),
    ('two', {'fixation': False}, 'fixation=True'),
])
def test_gate_settings_are_checked(tmp_path, gates, overrides, setting):
  sd = official_lvt(np.random.default_rng(4), slots=FRAMES, gates=gates)
  path = str(tmp_path / 'lvt.pyth')
  save_pyslowfast(path, sd)
  with pytest.raises(WeightImportError, match=f'set model.{setting}'):
    convert(lvt_config(**overrides), path)


def test_unknown_and_missing_keys_are_listed(tmp_path):
  sd = official_lvt(np.random.default_rng(5), slots=FRAMES, gates='two')
  del sd['base_model.blocks.1.mlp.dwconv.dwconv.bias']
  sd['base_model.blocks.0.motion_norm1.weight'] = np.ones(HIDDEN, np.float32)
  path = str(tmp_path / 'lvt.pyth')
  save_pyslowfast(path, sd)
  with pytest.raises(WeightImportError) as info:
    convert(lvt_config(), path)
  message = str(info.value)
  assert 'base_model.blocks.1.mlp.dwconv.dwconv.bias  (needed for blocks/1/mlp/dwconv_bias (64,))' in message
  assert 'base_model.blocks.0.motion_norm1.weight (32,)' in message


def test_backbone_only_checkpoint_gets_a_new_head(tmp_path, videos):
  """The image lvit_v2 backbone (names without `base_model.`, an image classifier `head`): the
  classifier is dropped, the VVT head keeps the model's initialisation, the rest is the file's."""
  sd = official_lvt(np.random.default_rng(6), slots=FRAMES, gates='two')
  image_backbone = {k[len('base_model.'):]: v for k, v in sd.items() if k.startswith('base_model.')}
  image_backbone['head.weight'] = np.zeros((7, HIDDEN), np.float32)
  image_backbone['head.bias'] = np.zeros(7, np.float32)
  path = str(tmp_path / 'lvit_v2_base.pth')
  torch.save({k: torch.tensor(v) for k, v in image_backbone.items()}, path)
  model, converted = convert(lvt_config(), path)
  assert set(converted.keep_initialised) == {f'head/{layer}/{leaf}' for layer, leaves in
                                             (('norm', ('scale', 'bias')), ('hidden', ('kernel', 'bias')),
                                              ('out', ('kernel', 'bias'))) for leaf in leaves}
  assert {name for name, _ in converted.dropped} == {'head.weight', 'head.bias'}
  # With the official head copied in, the model is the official one.
  model.head.norm.scale[...] = sd['consensus.mlp_head.0.weight']
  model.head.norm.bias[...] = sd['consensus.mlp_head.0.bias']
  model.head.hidden.kernel[...] = sd['consensus.mlp_head.1.weight'].T
  model.head.hidden.bias[...] = sd['consensus.mlp_head.1.bias']
  model.head.out.kernel[...] = sd['consensus.mlp_head.4.weight'].T
  model.head.out.bias[...] = sd['consensus.mlp_head.4.bias']
  expected = ref.lvt_forward(sd, videos, num_heads=HEADS, patch_stride=STRIDE, num_segments=FRAMES,
                             shift_div=SHIFT_DIV)
  np.testing.assert_allclose(np.asarray(model(videos)), expected, rtol=1e-5, atol=1e-5)
