"""Official LAPS checkpoints -> 'laps' / 'vit2d': logits equal to an independent NumPy forward of
the official code (tests/reference_numpy.py), and strict key / shape checking."""
import collections

import ml_collections
import numpy as np
import pytest
from flax import nnx

from laps_jax import models
from laps_jax.weights import WeightImportError, import_weights
from laps_jax.models.vit import ViTConfig
import reference_numpy as ref

torch = pytest.importorskip('torch')

HIDDEN, LAYERS, HEADS, MLP, PATCH, IMAGE, FRAMES, CLASSES = 32, 3, 2, 64, 8, 32, 4, 5
LEVELS = (1, 2, None, 1)   # the official S2_SKIP_LEVEL list (4 entries; block k uses k % 4)


def vit_config(name, **overrides):
  laps = dict(leap_levels=LEVELS) if name == 'laps' else {}
  config = ViTConfig.variant(f'Mu/{PATCH}', name=name, image_size=IMAGE, hidden_size=HIDDEN, num_layers=LAYERS,
                             num_heads=HEADS, mlp_dim=MLP, num_frames=FRAMES, num_classes=CLASSES,
                             attention_impl='xla', **laps).to_config_dict()
  config.update(overrides)
  return config


def save_official_laps(path, backbone):
  """A checkpoint as the LAPS training script saves it (DataParallel VideoNet, optimizer state)."""
  state_dict = collections.OrderedDict(
      ('module.base_model.' + k, torch.tensor(v)) for k, v in backbone.items())
  model = torch.nn.Linear(2, 2)
  optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
  scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [10, 15, 18])
  torch.save({'epoch': 18, 'state_dict': state_dict, 'best_acc1': torch.tensor(71.5),
              'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict()}, path)


@pytest.fixture(scope='module')
def official(tmp_path_factory):
  rng = np.random.default_rng(0)
  backbone = ref.random_timm_vit(rng, hidden=HIDDEN, layers=LAYERS, heads=HEADS, mlp=MLP, patch=PATCH,
                                 image=IMAGE, classes=CLASSES)
  path = str(tmp_path_factory.mktemp('laps') / 'laps_k400.pth.tar')
  save_official_laps(path, backbone)
  videos = rng.normal(size=(2, FRAMES, IMAGE, IMAGE, 3)).astype(np.float32)
  return backbone, path, videos


def converted_model(config, path):
  model = models.build(config, nnx.Rngs(0))
  import_weights('laps-pytorch', path, model, config)
  return model


def test_laps_logits_match_official_forward(official):
  backbone, path, videos = official
  model = converted_model(vit_config('laps'), path)
  frame_ref, clip_ref = ref.laps_forward(backbone, videos, num_heads=HEADS, s2_skip_level=LEVELS, fold_div=4)
  frame = np.asarray(model.frame_logits(videos))
  np.testing.assert_allclose(frame, frame_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(model(videos)), clip_ref, rtol=1e-5, atol=1e-5)
  # The comparison has teeth: without leap attention and the shift the official logits differ.
  frame_2d, _ = ref.laps_forward(backbone, videos, num_heads=HEADS, s2_skip_level=(None,) * 4, fold_div=0)
  assert np.abs(frame_2d - frame_ref).max() > 1e-2


def test_vit2d_logits_match_official_forward(official):
  backbone, path, videos = official
  model = converted_model(vit_config('vit2d'), path)
  frame_ref, _ = ref.laps_forward(backbone, videos, num_heads=HEADS, s2_skip_level=(None,) * 4, fold_div=0)
  np.testing.assert_allclose(np.asarray(model.frame_logits(videos)), frame_ref, rtol=1e-5, atol=1e-5)


def test_class_count_mismatch_names_the_setting(official):
  _, path, _ = official
  with pytest.raises(WeightImportError, match=f'set model.num_classes={CLASSES}'):
    converted_model(vit_config('laps', num_classes=7), path)


def test_layer_count_mismatch_lists_left_over_keys(official):
  _, path, _ = official
  with pytest.raises(WeightImportError) as info:
    converted_model(vit_config('laps', num_layers=2), path)
  message = str(info.value)
  assert 'left over' in message and 'module.base_model.blocks.2.attn.qkv.weight (96, 32)' in message
  assert f'the checkpoint has {LAYERS} blocks' in message


def test_missing_and_extra_keys_are_listed(official, tmp_path):
  backbone, _, _ = official
  broken = dict(backbone)
  del broken['blocks.1.mlp.fc2.bias']
  broken['blocks.1.attn.q_norm.weight'] = np.ones(16, np.float32)
  path = str(tmp_path / 'broken.pth.tar')
  save_official_laps(path, broken)
  with pytest.raises(WeightImportError) as info:
    converted_model(vit_config('laps'), path)
  message = str(info.value)
  assert 'module.base_model.blocks.1.mlp.fc2.bias  (needed for blocks/1/mlp/fc2/bias (32,))' in message
  assert 'module.base_model.blocks.1.attn.q_norm.weight (16,)' in message


def test_wrong_width_is_a_shape_error(official):
  _, path, _ = official
  with pytest.raises(WeightImportError, match=r'shape mismatches[\s\S]*patch_embed/kernel'):
    converted_model(vit_config('laps', hidden_size=64, num_heads=4, mlp_dim=128), path)


def test_other_model_names_are_refused(official):
  _, path, _ = official
  with pytest.raises(WeightImportError, match="model.name in \\('laps', 'vit2d'\\)"):
    converted_model(vit_config('joint'), path)
