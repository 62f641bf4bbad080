"""`python -m laps_jax.convert`: file -> exported model -> load_model -> logits of the official model."""
import os
import subprocess
import sys

import numpy as np
import pytest

import reference_numpy as ref
from laps_jax import checkpoints, convert

torch = pytest.importorskip('torch')

HIDDEN, LAYERS, HEADS, MLP, PATCH, IMAGE, FRAMES, CLASSES = 32, 2, 2, 64, 8, 32, 4, 5

CONFIG_FILE = '''
import ml_collections

def get_config(arg=None):
  name = arg or 'laps'
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
      name=name, image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64,
      num_frames=4, num_classes=5, dropout_rate=0.0, drop_path_rate=0.0, attention_impl='xla',
      dtype='float32', remat=False))
  if name == 'lvt':
    config.model.update(dict(patch_stride=7, patch_padding=4, fixation=True, shared_gate=False,
                             temporal_shift_div=8, spatial_shift=True, head_mlp_dim=48,
                             head_dropout_rate=0.0, attention_dropout_rate=0.0, temporal_embed_frames=4, shift_segment_frames=4))
  else:
    config.model.leap_levels = (1, 2) if name == 'laps' else (None,)
    config.model.shift_div = 4 if name == 'laps' else 0
  config.data = ml_collections.ConfigDict(dict(name='kinetics400', test_clips=2, test_crops=3,
                                               sampling='dense', frame_stride=2, test_short_side=32,
                                               mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
  return config
'''


@pytest.fixture(scope='module')
def config_path(tmp_path_factory):
  path = tmp_path_factory.mktemp('configs') / 'tiny.py'
  path.write_text(CONFIG_FILE)
  return str(path)


@pytest.fixture(scope='module')
def videos():
  return np.random.default_rng(3).normal(size=(2, FRAMES, IMAGE, IMAGE, 3)).astype(np.float32)


def backbone(seed=0):
  return ref.random_timm_vit(np.random.default_rng(seed), hidden=HIDDEN, layers=LAYERS, heads=HEADS, mlp=MLP,
                             patch=PATCH, image=IMAGE, classes=CLASSES)


def test_laps_checkpoint_round_trip(tmp_path, config_path, videos, capsys):
  sd = backbone()
  source = str(tmp_path / 'laps.pth.tar')
  torch.save({'epoch': 1, 'state_dict': {'module.base_model.' + k: torch.tensor(v) for k, v in sd.items()}}, source)
  output = str(tmp_path / 'exported')
  assert convert.main(['convert', f'--config={config_path}', '--source=laps-pytorch', f'--input={source}',
                       f'--output={output}']) == 0
  assert 'wrote' in capsys.readouterr().out
  model, config = checkpoints.load_model(output)
  assert config.name == 'laps' and tuple(config.leap_levels) == (1, 2)
  frame_ref, _ = ref.laps_forward(sd, videos, num_heads=HEADS, s2_skip_level=(1, 2, 1, 2), fold_div=4)
  np.testing.assert_allclose(np.asarray(model.frame_logits(videos)), frame_ref, rtol=1e-5, atol=1e-5)


def test_lvt_checkpoint_round_trip_with_config_override(tmp_path, config_path, videos):
  sd = ref.random_lvt(np.random.default_rng(1), hidden=HIDDEN, layers=LAYERS, heads=HEADS, mlp=MLP, patch=PATCH,
                      classes=CLASSES, head_mlp=48, slots=2, gates='two')
  source = str(tmp_path / 'lvt.pyth')
  torch.save({'epoch': 1, 'model_state': {k: torch.tensor(v) for k, v in sd.items()}}, source)
  output = str(tmp_path / 'exported')
  args = ['convert', f'--config={config_path}:lvt', '--source=lvt-pytorch', f'--input={source}', f'--output={output}']
  assert convert.main(args) == 1  # the checkpoint has 2 temporal-embedding slots, the config 4
  assert not os.path.exists(output)
  assert convert.main(args + ['--config.model.temporal_embed_frames=2', '--config.model.shift_segment_frames=2']) == 0
  model, config = checkpoints.load_model(output)
  assert config.temporal_embed_frames == 2
  expected = ref.lvt_forward(sd, videos, num_heads=HEADS, patch_stride=7, num_segments=2, shift_div=8)
  np.testing.assert_allclose(np.asarray(model(videos)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('source', ['vit-npz', 'timm'])
def test_imagenet_vit_round_trip(tmp_path, config_path, videos, source):
  sd = backbone(seed=5)
  if source == 'vit-npz':
    path = str(tmp_path / 'ViT-B_16.npz')
    np.savez(path, **ref.timm_to_google_npz(sd, HEADS))
  else:
    path = str(tmp_path / 'vit_base_patch16_224.pth')
    torch.save({k: torch.tensor(v) for k, v in sd.items()}, path)
  output = str(tmp_path / 'exported')
  assert convert.main(['convert', f'--config={config_path}', f'--source={source}', f'--input={path}',
                       f'--output={output}']) == 0
  model, _ = checkpoints.load_model(output)
  frame_ref, _ = ref.laps_forward(sd, videos, num_heads=HEADS, s2_skip_level=(1, 2, 1, 2), fold_div=4)
  np.testing.assert_allclose(np.asarray(model.frame_logits(videos)), frame_ref, rtol=1e-5, atol=1e-5)


def test_bfloat16_storage_loads_as_float32(tmp_path, config_path):
  source = str(tmp_path / 'vit.safetensors')
  from safetensors.numpy import save_file
  save_file(backbone(seed=2), source)
  output = str(tmp_path / 'exported')
  assert convert.main(['convert', f'--config={config_path}:vit2d', '--source=timm', f'--input={source}',
                       f'--output={output}', '--dtype=bfloat16']) == 0
  model, _ = checkpoints.load_model(output)
  kernel = model.blocks[0].mlp.fc1.kernel[...]
  assert kernel.dtype == np.float32
  np.testing.assert_allclose(np.asarray(kernel), backbone(seed=2)['blocks.0.mlp.fc1.weight'].T, rtol=1e-2)


def test_command_line_end_to_end(tmp_path, config_path):
  """`python -m laps_jax.convert` in a fresh process: ImageNet .npz into divided (new parameters
  logged), then a mismatching config fails with the key listing and a non-zero exit code."""
  source = str(tmp_path / 'ViT.npz')
  np.savez(source, **ref.timm_to_google_npz(backbone(seed=4), HEADS))
  output = str(tmp_path / 'exported')
  run = lambda *args: subprocess.run([sys.executable, '-m', 'laps_jax.convert', *args], capture_output=True,
                                     text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  done = run(f'--config={config_path}:divided', '--source=vit-npz', f'--input={source}', f'--output={output}')
  assert done.returncode == 0, done.stderr
  assert 'initialised as the model does: blocks/1/temporal_fc/kernel' in done.stdout
  assert os.path.exists(os.path.join(output, checkpoints.CONFIG_FILE))
  failed = run(f'--config={config_path}:vit2d', '--source=vit-npz', f'--input={source}',
               f'--output={tmp_path / "other"}', '--config.model.num_layers=3')
  assert failed.returncode == 1
  assert 'Transformer/encoderblock_2/LayerNorm_0/scale' in failed.stderr
  assert 'the checkpoint has 2 blocks, the model config num_layers=3' in failed.stderr
