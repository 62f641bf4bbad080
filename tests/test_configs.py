"""The config files: every variant loads, sets exactly the keys the models and the data pipeline
take, follows its paper's recipe, and main.py rejects a misspelt override by name."""
import importlib.util
import os

import pytest
from flax import traverse_util

from conftest import REPO, run_python
from laps_jax import models
from laps_jax.data import pipeline
from laps_jax.train import optimizer as optimizer_lib

TOP_LEVEL_KEYS = {'mode', 'seed', 'init_from', 'model', 'data', 'batch_size', 'num_epochs',
                  'total_steps', 'optimizer', 'schedule', 'mesh_shape', 'axis_rules',
                  'log_every_steps', 'profile_steps', 'profile_first_step', 'compilation_cache_dir',
                  'preemption_exit_code', 'skip_nonfinite_updates',
                  'eval', 'test', 'checkpoint', 'ema', 'tensorboard', 'precise_bn'}
VARIANTS = [
    ('demo', None), ('demo', 'model=vit2d'), ('demo', 'model=joint'), ('demo', 'model=divided'),
    ('demo', 'model=lvt'), ('demo', 'model=visformer'),
    ('laps_vitb', None), ('laps_vitb', 'res=384'), ('laps_vitb', 'recipe=videomae'),
    ('laps_vitb', 'res=384,recipe=videomae'),
    ('lvt', None), ('lvt', 'dataset=kinetics600'), ('lvt', 'dataset=ssv2'),
    ('baselines', 'model=vit2d'), ('baselines', 'model=joint'), ('baselines', 'model=divided'),
    ('baselines', 'model=la'), ('baselines', 'model=pshift'),
    ('laps_visformer', None), ('laps_visformer', 'frames=32,res=320'), ('laps_visformer', 'frames=32,res=360'),
]


def load(name: str, arg: str | None = None):
  spec = importlib.util.spec_from_file_location(f'config_{name}', os.path.join(REPO, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize('name,arg', VARIANTS)
def test_every_variant_has_exactly_the_keys_its_parts_take(name, arg):
  config = load(name, arg)
  assert set(config.keys()) == TOP_LEVEL_KEYS
  models.validate_config(config.model)  # exactly the model family's keys
  pipeline.validate_config(config.data)  # exactly the data keys, sane values
  assert config.data.num_frames == config.model.num_frames
  assert config.data.image_size == config.model.image_size
  assert set(config.optimizer.keys()) == {'name', 'momentum', 'nesterov', 'b1', 'b2', 'eps',
                                          'weight_decay', 'decay_pattern', 'clip_norm',
                                          'grad_accum_steps', 'layer_decay'}
  assert set(config.schedule.keys()) == {'name', 'base_lr', 'warmup_epochs', 'decay_epochs',
                                         'decay_factor', 'end_lr', 'base_batch_size'}
  # Every logical axis name the models use has a rule.
  assert {'embed', 'mlp', 'heads', 'kv', 'classes', 'patch', 'time', 'tokens'} <= {
      rule[0] for rule in config.axis_rules}


def test_laps_vitb_is_the_paper_recipe():
  c = load('laps_vitb')
  assert (c.model.name, c.model.hidden_size, c.model.num_layers, c.model.num_heads, c.model.patch_size,
          c.model.mlp_dim) == ('laps', 768, 12, 12, 16, 3072)
  assert c.model.leap_levels == (1, 2, 3, 1) and c.model.shift_div == 4
  assert (c.data.name, c.data.num_frames, c.data.frame_stride, c.data.image_size) == ('kinetics400', 8, 8, 224)
  assert tuple(c.data.scale_jitter) == (224, 360) and c.data.color_jitter == 0.1 and c.data.flip
  assert c.data.label_smoothing == 0.1 and c.data.mixup_alpha == 0 and c.data.mean == (0.5,) * 3
  assert (c.data.test_clips, c.data.test_crops, c.test.aggregate) == (10, 3, 'sum_logits')
  assert (c.optimizer.name, c.optimizer.momentum, c.optimizer.weight_decay) == ('sgd', 0.9, 0.0)
  assert (c.optimizer.grad_accum_steps, c.optimizer.clip_norm) == (10, 1.0)
  assert (c.schedule.name, c.schedule.base_lr, tuple(c.schedule.decay_epochs), c.num_epochs) == (
      'piecewise', 0.18, (10.0, 15.0), 18.0)
  # The schedule in numbers: updates per epoch 100 -> x0.1 after epoch 10, x0.01 after 15.
  schedule = optimizer_lib.make_schedule(c.schedule, updates_per_epoch=100, total_updates=1800)
  assert [float(schedule(s)) for s in (0, 999, 1000, 1499, 1500, 1799)] == pytest.approx(
      [0.18, 0.18, 0.018, 0.018, 0.0018, 0.0018])

  big = load('laps_vitb', 'res=384')
  assert big.model.image_size == big.data.image_size == big.data.test_short_side == 384
  assert big.data.scale_jitter[0] >= 384


def test_laps_vitb_videomae_recipe_changes_only_the_recipe():
  paper, videomae = load('laps_vitb'), load('laps_vitb', 'recipe=videomae')
  assert paper.optimizer.layer_decay == 1.0 and paper.ema.decay == 0.0 and paper.data.num_repeats == 1
  c = videomae
  assert (c.optimizer.name, c.optimizer.weight_decay, c.optimizer.layer_decay, c.model.drop_path_rate) == (
      'adamw', 0.05, 0.75, 0.1)
  assert (c.data.mixup_alpha, c.data.cutmix_alpha, c.data.label_smoothing, c.data.num_repeats) == (0.8, 1.0, 0.1, 2)
  assert c.data.auto_augment.startswith('rand-') and c.ema.decay == 0.9999
  assert (c.schedule.name, c.schedule.warmup_epochs) == ('warmup_cosine', 5.0)
  # 1e-3 per 256 videos: 128 clips × 4 accumulation steps / 2 repeats = 256 videos per update.
  assert optimizer_lib.peak_learning_rate(c) == pytest.approx(1e-3)
  # The model (but stochastic depth), the frames and the test protocol are the paper's.
  same = lambda a, b, keys: {k: (a[k], b[k]) for k in keys if a[k] != b[k]}
  assert same(paper.model, c.model, paper.model.keys()) == {'drop_path_rate': (0.0, 0.1)}
  assert not same(paper.data, c.data, ('num_frames', 'frame_stride', 'test_clips', 'test_crops', 'mean'))
  assert paper.test == c.test and paper.init_from == c.init_from
  assert load('laps_vitb', 'res=384,recipe=videomae').model.image_size == 384


def test_lvt_variants():
  k400, k600, ssv2 = load('lvt'), load('lvt', 'dataset=kinetics600'), load('lvt', 'dataset=ssv2')
  assert (k400.model.hidden_size, k400.model.num_heads, k400.model.patch_stride) == (512, 8, 14)
  assert not k400.model.shared_gate and k600.model.shared_gate and ssv2.model.shared_gate
  assert (k400.model.num_classes, k600.model.num_classes, ssv2.model.num_classes) == (400, 600, 174)
  assert (k400.data.mixup_alpha, k400.data.label_smoothing, k400.data.auto_augment) == (0.4, 0.3, 'autoaugment')
  assert (ssv2.data.sampling, ssv2.data.flip, ssv2.data.random_erasing) == ('segment', False, 0.5)
  assert (k400.data.test_clips, ssv2.data.test_clips) == (4, 2)
  assert (k400.schedule.base_lr, ssv2.schedule.base_lr, k400.schedule.warmup_epochs) == (0.035, 0.03, 5.0)
  assert (k400.model.temporal_shift_div, ssv2.model.temporal_shift_div) == (8, 4)


@pytest.mark.parametrize('variant,expected', [
    ('vit2d', {'model/name': 'vit2d', 'model/leap_levels': (None,), 'model/shift_div': 0}),
    ('joint', {'model/name': 'joint', 'model/leap_levels': (None,), 'model/shift_div': 0}),
    ('divided', {'model/name': 'divided', 'model/leap_levels': (None,), 'model/shift_div': 0}),
    ('la', {'model/shift_div': 0}),
    ('pshift', {'model/leap_levels': (None,)}),
])
def test_baselines_change_only_the_token_mixing(variant, expected):
  reference = traverse_util.flatten_dict(load('laps_vitb').to_dict(), sep='/')
  baseline = traverse_util.flatten_dict(load('baselines', f'model={variant}').to_dict(), sep='/')
  assert baseline.keys() == reference.keys()
  changed = {k: v for k, v in baseline.items() if v != reference[k]}
  assert changed == expected


def test_unknown_variant_arguments_are_errors():
  with pytest.raises(ValueError, match='model'):
    load('demo', 'model=resnet')
  with pytest.raises(ValueError, match='takes'):
    load('laps_vitb', 'resolution=384')


def test_main_rejects_a_misspelt_override_naming_the_key(tmp_path):
  result = run_python(['main.py', '--config=configs/demo.py', f'--workdir={tmp_path}',
                       '--config.batch_sise=16'], check=False, timeout=120)
  assert result.returncode != 0
  assert 'batch_sise' in result.stderr
  assert not os.path.exists(tmp_path / 'checkpoints')
