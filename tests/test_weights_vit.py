"""ImageNet ViT weights (Google .npz, timm .safetensors / .pth / .bin) -> the ViT video family.

Each test writes the file itself, converts it, and compares the model's logits with the
independent NumPy forward of the official (timm-named) ViT in tests/reference_numpy.py.
"""
import logging

import ml_collections
import numpy as np
import pytest
from flax import nnx

import reference_numpy as ref
from laps_jax import models
from laps_jax.weights import WeightImportError, import_weights
from laps_jax.models.vit import ViTConfig

HIDDEN, LAYERS, HEADS, MLP, PATCH, IMAGE, FRAMES, CLASSES = 32, 2, 2, 64, 8, 32, 4, 5
LEVELS = (1, 2)


def vit_config(name, **overrides):
  laps = dict(leap_levels=LEVELS) if name == 'laps' else {}
  config = ViTConfig.variant(f'Mu/{PATCH}', name=name, image_size=IMAGE, hidden_size=HIDDEN, num_layers=LAYERS,
                             num_heads=HEADS, mlp_dim=MLP, num_frames=FRAMES, num_classes=CLASSES,
                             attention_impl='xla', **laps).to_config_dict()
  config.update(overrides)
  return config


def image_vit(seed=0, classes=CLASSES, pre_logits=False):
  return ref.random_timm_vit(np.random.default_rng(seed), hidden=HIDDEN, layers=LAYERS, heads=HEADS, mlp=MLP,
                             patch=PATCH, image=IMAGE, classes=classes, pre_logits=pre_logits)


def convert(source, path, config):
  model = models.build(config, nnx.Rngs(0))
  converted = import_weights(source, path, model, config)
  return model, converted


@pytest.fixture(scope='module')
def videos():
  return np.random.default_rng(7).normal(size=(2, FRAMES, IMAGE, IMAGE, 3)).astype(np.float32)


def write_npz(path, sd, prefix=''):
  np.savez(path, **{prefix + k: v for k, v in ref.timm_to_google_npz(sd, HEADS).items()})


def test_npz_into_laps_matches_official_forward(tmp_path, videos):
  sd = image_vit()
  path = str(tmp_path / 'ViT-B_16.npz')
  write_npz(path, sd)
  model, converted = convert('vit-npz', path, vit_config('laps'))
  frame_ref, _ = ref.laps_forward(sd, videos, num_heads=HEADS, s2_skip_level=LEVELS + LEVELS, fold_div=4)
  np.testing.assert_allclose(np.asarray(model.frame_logits(videos)), frame_ref, rtol=1e-5, atol=1e-5)
  assert not converted.keep_initialised and not converted.dropped  # laps has the image ViT's tree


def test_npz_with_optimizer_prefix_and_pre_logits(tmp_path, videos, caplog):
  """ImageNet-21k style: 'opt/target/' prefix, optimizer state beside it, a pre-logits layer and a
  21k-class head: pre-logits and head are dropped (logged), the head is re-initialised."""
  sd = image_vit(classes=11, pre_logits=True)
  path = str(tmp_path / 'imagenet21k_ViT-B_16.npz')
  tensors = {'opt/target/' + k: v for k, v in ref.timm_to_google_npz(sd, HEADS).items()}
  tensors['opt/state/step'] = np.array(3)
  np.savez(path, **tensors)
  with caplog.at_level(logging.INFO):
    model, converted = convert('vit-npz', path, vit_config('vit2d'))
  dropped = {name for name, _ in converted.dropped}
  assert dropped == {'opt/state/step', 'opt/target/pre_logits/kernel', 'opt/target/pre_logits/bias',
                     'opt/target/head/kernel', 'opt/target/head/bias'}
  assert set(converted.keep_initialised) == {'head/kernel', 'head/bias'}
  assert 'classifier has 11 classes, the model 5' in caplog.text
  assert 'head/kernel initialised as the model does' in caplog.text
  np.testing.assert_array_equal(np.asarray(model.head.kernel[...]), 0.0)  # the model's zero init
  # Everything below the head is the checkpoint's: with any 5-class head on top, the logits match.
  head = ref.random_timm_vit(np.random.default_rng(9), hidden=HIDDEN, layers=0, heads=HEADS, mlp=MLP,
                             patch=PATCH, image=IMAGE, classes=CLASSES)
  model.head.kernel[...] = head['head.weight'].T
  model.head.bias[...] = head['head.bias']
  backbone = {k: v for k, v in sd.items() if not k.startswith(('pre_logits', 'head'))}
  frame_ref, _ = ref.laps_forward(dict(backbone, **{k: head[k] for k in ('head.weight', 'head.bias')}), videos,
                                  num_heads=HEADS, s2_skip_level=(None,) * 4, fold_div=0)
  np.testing.assert_allclose(np.asarray(model.frame_logits(videos)), frame_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('suffix', ['.safetensors', '.pth', '.bin'])
def test_timm_files_into_laps(tmp_path, videos, suffix):
  sd = image_vit(seed=1)
  path = str(tmp_path / f'vit_base_patch16_224{suffix}')
  if suffix == '.safetensors':
    from safetensors.numpy import save_file
    save_file(sd, path)
  else:
    torch = pytest.importorskip('torch')
    torch.save({k: torch.tensor(v) for k, v in sd.items()}, path)
  model, _ = convert('timm', path, vit_config('laps'))
  frame_ref, _ = ref.laps_forward(sd, videos, num_heads=HEADS, s2_skip_level=LEVELS + LEVELS, fold_div=4)
  np.testing.assert_allclose(np.asarray(model.frame_logits(videos)), frame_ref, rtol=1e-5, atol=1e-5)


def test_timm_bfloat16_safetensors(tmp_path):
  torch = pytest.importorskip('torch')
  from safetensors.torch import save_file
  sd = image_vit(seed=2)
  path = str(tmp_path / 'vit_bf16.safetensors')
  save_file({k: torch.tensor(v).to(torch.bfloat16) for k, v in sd.items()}, path)
  model, _ = convert('timm', path, vit_config('vit2d'))
  expected = torch.tensor(sd['blocks.1.mlp.fc1.weight']).to(torch.bfloat16).float().numpy().T
  np.testing.assert_array_equal(np.asarray(model.blocks[1].mlp.fc1.kernel[...]), expected)


def test_position_embedding_interpolated_to_another_resolution(tmp_path):
  """A 32² checkpoint (4x4 grid) into a 48² model (6x6 grid): the grid is resized as PyTorch's
  bilinear F.interpolate does, the cls embedding kept, and the logits match the reference
  run with that resized embedding."""
  torch = pytest.importorskip('torch')
  sd = image_vit(seed=3)
  path = str(tmp_path / 'vit.safetensors')
  from safetensors.numpy import save_file
  save_file(sd, path)
  model, converted = convert('timm', path, vit_config('vit2d', image_size=48))
  grid = torch.tensor(sd['pos_embed'][0, 1:]).reshape(1, 4, 4, HIDDEN).permute(0, 3, 1, 2)
  resized = torch.nn.functional.interpolate(grid, size=(6, 6), mode='bilinear', align_corners=False)
  expected = np.concatenate([sd['pos_embed'][:, :1], resized.permute(0, 2, 3, 1).reshape(1, 36, HIDDEN).numpy()], 1)
  np.testing.assert_allclose(np.asarray(model.pos_embed[...]), expected, rtol=1e-6, atol=1e-6)
  assert any('4x4 to a 6x6' in note for note in converted.notes)
  videos = np.random.default_rng(0).normal(size=(1, FRAMES, 48, 48, 3)).astype(np.float32)
  frame_ref, _ = ref.laps_forward(dict(sd, pos_embed=expected), videos, num_heads=HEADS,
                                  s2_skip_level=(None,) * 4, fold_div=0)
  np.testing.assert_allclose(np.asarray(model.frame_logits(videos)), frame_ref, rtol=1e-5, atol=1e-5)


def test_divided_starts_as_the_image_model(tmp_path, videos, caplog):
  """Parameters an image ViT lacks keep the model's initialisation (logged by name); divided's
  temporal_fc is zero, so every frame's logits equal the image ViT's."""
  sd = image_vit(seed=4)
  path = str(tmp_path / 'vit.npz')
  write_npz(path, sd)
  with caplog.at_level(logging.WARNING):
    model, converted = convert('vit-npz', path, vit_config('divided'))
  expected_new = {'time_embed'} | {f'blocks/{i}/temporal_{part}' for i in range(LAYERS)
                                   for part in ('norm/scale', 'norm/bias', 'attn/qkv/kernel', 'attn/qkv/bias',
                                                'attn/proj/kernel', 'attn/proj/bias', 'fc/kernel', 'fc/bias')}
  assert set(converted.keep_initialised) == expected_new
  for name in expected_new:
    assert f'{name} initialised as the model does' in caplog.text
  frame_ref, _ = ref.laps_forward(sd, videos, num_heads=HEADS, s2_skip_level=(None,) * 4, fold_div=0)
  np.testing.assert_allclose(np.asarray(model.frame_logits(videos)), frame_ref, rtol=1e-5, atol=1e-5)


def test_joint_on_a_still_clip_equals_the_image_model(tmp_path):
  """joint attends over all frames; on T identical frames (and a zero time_embed) that is the same
  softmax as per-frame attention, so the logits are the image ViT's."""
  sd = image_vit(seed=5)
  path = str(tmp_path / 'vit.npz')
  write_npz(path, sd)
  model, converted = convert('vit-npz', path, vit_config('joint'))
  assert set(converted.keep_initialised) == {'time_embed'}
  frame = np.random.default_rng(0).normal(size=(1, 1, IMAGE, IMAGE, 3)).astype(np.float32)
  still = np.repeat(frame, FRAMES, axis=1)
  frame_ref, _ = ref.laps_forward(sd, still, num_heads=HEADS, s2_skip_level=(None,) * 4, fold_div=0)
  np.testing.assert_allclose(np.asarray(model.frame_logits(still)), frame_ref, rtol=1e-5, atol=1e-5)


def test_image_weights_are_refused_for_lvt(tmp_path):
  path = str(tmp_path / 'vit.npz')
  write_npz(path, image_vit())
  config = ml_collections.ConfigDict(dict(vit_config('vit2d').to_dict(), name='lvt'))
  with pytest.raises(WeightImportError, match='ViT family'):
    import_weights('vit-npz', path, None, config)


def test_missing_left_over_and_mis_shaped_keys_are_listed(tmp_path):
  sd = image_vit()
  tensors = ref.timm_to_google_npz(sd, HEADS)
  del tensors['Transformer/encoderblock_1/LayerNorm_2/bias']
  tensors['Transformer/encoderblock_0/MlpBlock_3/Dense_2/kernel'] = np.zeros((3, 3), np.float32)
  path = str(tmp_path / 'broken.npz')
  np.savez(path, **tensors)
  with pytest.raises(WeightImportError) as info:
    convert('vit-npz', path, vit_config('vit2d'))
  message = str(info.value)
  assert 'Transformer/encoderblock_1/LayerNorm_2/bias  (needed for blocks/1/norm2/bias (32,))' in message
  assert 'Transformer/encoderblock_0/MlpBlock_3/Dense_2/kernel (3, 3)' in message
  path = str(tmp_path / 'wide.npz')
  write_npz(path, image_vit())
  with pytest.raises(WeightImportError, match=r'blocks/0/mlp/fc1/kernel: checkpoint \(32, 64\)[^\n]*'
                                              r'model \(32, 128\)  \(check model.mlp_dim\)'):
    convert('vit-npz', path, vit_config('vit2d', mlp_dim=128))
