"""configs/laps_visformer.py: the official Visformer-S LAPS recipes (visformer_LAPS_8x8.yaml,
visformer_LAPS_32x8_{320,360}.yaml) and their precise BN."""
import importlib.util
import os

import pytest

from conftest import REPO
from laps_jax import models


def load(arg=None):
  spec = importlib.util.spec_from_file_location('config_laps_visformer', os.path.join(REPO, 'configs', 'laps_visformer.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_8x8_is_the_official_recipe():
  c = load()
  typed = models.typed_config(c.model)
  assert (typed.name, typed.image_size, typed.num_frames, typed.num_classes) == ('visformer', 224, 8, 400)
  assert typed.leap_levels == ((1, 2, 3, 1), (2, 3, 1, 2)) and typed.shift_div == 4
  assert (typed.stem_channels, typed.hidden_size, typed.stage_depths, typed.num_heads) == (32, 384, (7, 4, 4), 6)
  assert tuple(c.data.mean) == (0.486, 0.457, 0.407) and tuple(c.data.std) == (0.229, 0.224, 0.225)
  assert (c.schedule.base_lr, tuple(c.schedule.decay_epochs), c.num_epochs) == (0.20, (10.0, 15.0), 18.0)
  assert (c.optimizer.grad_accum_steps, c.optimizer.clip_norm, c.batch_size) == (10, 1.0, 40 * 4)
  assert (c.precise_bn.num_batches, c.precise_bn.every_epochs) == (200, 1)
  assert (c.data.test_clips, c.data.test_crops) == (10, 3)


@pytest.mark.parametrize('res,per_gpu', [(320, 4), (360, 3)])
def test_32_frame_variants(res, per_gpu):
  c = load(f'frames=32,res={res}')
  typed = models.typed_config(c.model)
  assert (typed.num_frames, typed.image_size) == (32, res) and c.data.num_frames == 32
  assert typed.leap_levels == ((1, 2, 3, 4), (5, 1, 2, 3))
  assert tuple(c.data.scale_jitter) == (res, res * 3 // 2) and c.schedule.base_lr == 0.036
  assert c.batch_size == per_gpu * 4


def test_other_configs_keep_precise_bn_off():
  spec = importlib.util.spec_from_file_location('config_demo', os.path.join(REPO, 'configs', 'demo.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert module.get_config().precise_bn.num_batches == 0
