"""The model registry and typed configs: one list of keys per family, named sizes, a family added
with one file, and the config values tied by one flag."""
import dataclasses

import jax
import pytest
from flax import nnx

from configs import common, laps_vitb, lvt
from conftest import run_python
from laps_jax import models
from laps_jax.models.lvt import LVTConfig
from laps_jax.models.vit import ViTConfig
from laps_jax.train import trainer


def test_every_name_has_a_family_whose_fields_are_its_keys():
  assert set(('vit2d', 'laps', 'joint', 'divided', 'lvt')) <= set(models.model_names())
  for name in models.model_names():
    family = models.family(name)
    assert name in family.names
    assert family.keys == tuple(f.name for f in dataclasses.fields(family.config_class))
    assert models.required_keys(name) == family.keys


def test_typed_config_names_missing_and_unknown_keys():
  config = ViTConfig.variant('Mu/8', name='laps', image_size=16).to_config_dict()
  del config['shift_div']
  config.colour = 'red'
  with pytest.raises(ValueError, match=r"missing keys \['shift_div'\]; unknown keys \['colour'\]"):
    models.typed_config(config)
  with pytest.raises(ValueError, match="unknown model.name 'nope'"):
    models.typed_config({'name': 'nope'})


def test_size_variants_are_the_published_sizes():
  b16 = ViTConfig.variant('B/16', name='laps')
  assert (b16.hidden_size, b16.num_layers, b16.num_heads, b16.mlp_dim, b16.patch_size) == (768, 12, 12, 3072, 16)
  assert (b16.leap_levels, b16.shift_div) == ((1, 2, 3, 1), 4)  # laps: the paper's defaults
  l16 = ViTConfig.variant('L/16', name='vit2d')
  assert (l16.hidden_size, l16.num_layers, l16.num_heads, l16.mlp_dim) == (1024, 24, 16, 4096)
  assert (l16.leap_levels, l16.shift_div) == ((None,), 0)
  assert ViTConfig.variant('Ti/16').hidden_size == 192 and ViTConfig.variant('S/32').patch_size == 32
  base = LVTConfig.variant('base')
  assert (base.hidden_size, base.num_heads, base.patch_stride, base.patch_padding) == (512, 8, 14, 8)
  with pytest.raises(ValueError, match="unknown size 'X/16'"):
    ViTConfig.variant('X/16')


def test_a_typed_config_and_its_config_dict_build_the_same_model():
  typed = ViTConfig.variant('Mu/8', name='laps', image_size=16, num_frames=4, leap_levels=(1, 2))
  a = models.build(typed, nnx.Rngs(0))
  b = models.build(typed.to_config_dict(), nnx.Rngs(0))
  leaves = lambda m: jax.tree.leaves(nnx.state(m, nnx.Param))
  assert len(leaves(a)) == len(leaves(b)) and all((x == y).all() for x, y in zip(leaves(a), leaves(b)))


def test_config_files_tie_clip_length_and_resolution():
  config = laps_vitb.get_config()
  config.model.num_frames = 16
  config.model.image_size = 288
  assert (config.data.num_frames, config.data.image_size, config.data.test_short_side) == (16, 288, 288)
  config.data.test_short_side = 320  # a test short side of its own leaves the crop size alone
  assert (config.model.image_size, config.data.image_size) == (288, 288)
  config = lvt.get_config()
  config.data.num_frames = 8
  typed = models.typed_config(config.model).resolved()
  assert (typed.num_frames, typed.temporal_embed_frames, typed.shift_segment_frames) == (8, 8, 8)
  config.model.temporal_embed_frames = 4  # an explicit value (the official checkpoints' 8) stays
  assert models.typed_config(config.model).resolved().temporal_embed_frames == 4
  assert config.model.num_frames == 8


def test_one_flag_changes_the_clip_length_of_a_run():
  """`--config.model.num_frames=16` alone: the dry run builds a 16-frame LAPS and feeds it 16 frames."""
  result = run_python(['main.py', '--config=configs/demo.py', '--workdir=/tmp/unused_workdir',
                       '--config.mode=dry_run', '--config.model.num_frames=16', '--config.batch_size=2'])
  assert '16×32² clips' in result.stdout


def test_a_toy_family_is_one_file_and_a_config_entry(tiny_config, tmp_path):
  import toy_model_family  # the one file: it registers 'toy_mean'
  assert 'toy_mean' in models.model_names()
  config = tiny_config('vit2d')
  # the config entry: the run config of the toy model, the demo's data and recipe
  toy = common.run_config(toy_model_family.ToyConfig(image_size=16, num_frames=4),
                          data=dict(config.data), batch_size=8, num_epochs=1, optimizer=dict(config.optimizer),
                          schedule=dict(config.schedule))
  config.model = toy.model
  config.total_steps = 2
  results = trainer.run(config, str(tmp_path))
  assert results['step'] == 2 and 0 <= results['validation']['top1'] <= 1
  assert isinstance(models.build(config.model, nnx.Rngs(0)), toy_model_family.ToyMeanModel)


def test_an_older_export_without_a_newer_key_still_loads():
  """An export's model_config.json written before a key existed: the key's default fills in
  (run configs stay strict)."""
  config = ViTConfig.variant('Mu/8', name='laps', image_size=16).to_config_dict().to_dict()
  del config['drop_path_rate']
  with pytest.raises(ValueError, match=r"missing keys \['drop_path_rate'\]"):
    models.typed_config(config)
  assert models.typed_config(config, fill_missing=True).drop_path_rate == 0.0
