"""The recipe features through the train loop: EMA (evaluated, checkpointed, exported), the best
checkpoint kept beside the last ones and exported with --which=best, the data settings beside an
export, and what the TensorBoard event files hold (read back without TensorFlow)."""
import glob
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import read_scalars
from laps_jax import checkpoints
from laps_jax import export
from laps_jax import named_params
from laps_jax import predict
from laps_jax.train import checkpointing
from laps_jax.train import trainer


def _events(workdir):
  """{tag: [(step, plugin name, tensor proto)]} of every event file in `workdir`."""
  from tensorboard.backend.event_processing import event_file_loader
  found = {}
  for path in sorted(glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))):
    for event in event_file_loader.EventFileLoader(path).Load():
      for value in event.summary.value:
        found.setdefault(value.tag, []).append(
            (event.step, value.metadata.plugin_data.plugin_name, value.tensor))
  return found


@pytest.fixture(scope='module')
def recipe_run(tmp_path_factory, synthetic_data_dir):
  """6 steps with EMA, validation every 2 steps, the best val_top1 checkpoint kept beside the
  last one, and the multi-view test at the end."""
  from conftest import make_tiny_config
  config = make_tiny_config(synthetic_data_dir)
  config.ema.decay = 0.5
  config.eval.every_steps = 2
  config.checkpoint.update(dict(every_steps=3, keep=1, best_metric='val_top1'))
  config.test.at_end = True
  config.optimizer.layer_decay = 0.75
  workdir = str(tmp_path_factory.mktemp('recipe') / 'run')
  return config, workdir, trainer.run(config, workdir)


def test_ema_is_evaluated_beside_the_raw_weights(recipe_run):
  config, workdir, results = recipe_run
  for split in ('validation', 'test'):
    assert results[f'{split}_ema']['count'] == results[split]['count']
  val_ema = read_scalars(workdir, 'val_ema_top1')
  assert [step for step, _ in val_ema] == [2, 4, 6]
  assert val_ema[-1][1] == pytest.approx(results['validation_ema']['top1'])
  assert read_scalars(workdir, 'test_ema_loss')[0][1] == pytest.approx(results['test_ema']['loss'])
  del config


def test_best_checkpoint_is_kept_beside_the_latest_and_exported(recipe_run, tmp_path):
  config, workdir, results = recipe_run
  val_top1 = dict(read_scalars(workdir, 'val_top1'))  # {2: .., 4: .., 6: ..}
  assert sorted(val_top1) == [2, 4, 6]
  checkpointer = checkpointing.Checkpointer(workdir, keep=1, best_metric='val_top1')
  try:
    best = checkpointer.best_step()  # of equal values, Orbax keeps the later step
    assert val_top1[best] == max(val_top1.values())
    assert checkpointer.latest_step() == 6 and set(checkpointer.all_steps()) == {best, 6}
  finally:
    checkpointer.close()
  assert val_top1[results['best_checkpoint_step']] == max(val_top1.values())

  best_dir, latest_dir = str(tmp_path / 'best'), str(tmp_path / 'latest')
  assert val_top1[export.export(workdir, best_dir, which='best')] == max(val_top1.values())
  assert export.export(workdir, latest_dir) == 6
  with pytest.raises(FileNotFoundError, match='best_metric'):
    no_best = str(tmp_path / 'no_best_run')
    os.makedirs(no_best)
    with open(os.path.join(workdir, 'config.json')) as f:
      saved = json.load(f)
    saved['checkpoint']['best_metric'] = ''
    with open(os.path.join(no_best, 'config.json'), 'w') as f:
      json.dump(saved, f)
    export.export(no_best, str(tmp_path / 'x'), which='best')
  del config


def test_export_of_the_ema_and_the_data_settings(recipe_run, tmp_path):
  config, workdir, _ = recipe_run
  raw_dir, ema_dir = str(tmp_path / 'raw'), str(tmp_path / 'ema')
  export.export(workdir, raw_dir)
  export.export(workdir, ema_dir, ema=True)
  raw = named_params.flatten(checkpoints.load_params(raw_dir))
  ema = named_params.flatten(checkpoints.load_params(ema_dir))
  assert raw.keys() == ema.keys()
  kernel = 'blocks/0/mlp/fc1/kernel'
  assert raw[kernel].shape == ema[kernel].shape and not np.allclose(raw[kernel], ema[kernel])

  with open(os.path.join(raw_dir, export.DATA_CONFIG_FILE)) as f:
    data = json.load(f)
  assert (data['test_clips'], data['test_crops'], data['num_frames']) == (2, 1, 4)
  # predict's default view settings are then the trained test protocol, not 1 clip x 1 crop.
  settings = predict.view_settings(checkpoints.load_config(raw_dir), predict.exported_data_config(raw_dir), {})
  assert (settings['test_clips'], settings['test_crops'], settings['frame_stride']) == (
      2, 1, config.data.frame_stride)


def test_tensorboard_holds_images_texts_and_norms(recipe_run):
  from tensorboard.util import tensor_util
  config, workdir, _ = recipe_run
  events = _events(workdir)
  for tag in ('learning_rate', 'grad_norm', 'param_norm', 'update_norm', 'update_ratio',
              'data_wait_fraction', 'val_top1', 'val_top5', 'val_loss', 'test_top1', 'test_top5', 'test_loss'):
    assert tag in events and events[tag][0][1] == 'scalars', tag
  values = {tag: np.array([float(tensor_util.make_ndarray(t)) for _, _, t in events[tag]])
            for tag in ('update_ratio', 'update_norm', 'param_norm', 'data_wait_fraction')}
  assert ((values['data_wait_fraction'] >= 0) & (values['data_wait_fraction'] <= 1)).all()
  # Per logged step (log_every_steps=1): the ratio of the norms; zero only at the warm-up's lr 0.
  np.testing.assert_allclose(values['update_ratio'], values['update_norm'] / values['param_norm'],
                             rtol=1e-5)
  assert values['update_ratio'][0] >= 0 and (values['update_ratio'][1:] > 0).all()
  # A few input clips at the first step: one strip of T frames each, normalisation undone.
  images = {tag: v for tag, v in events.items() if tag.startswith('input_clips/')}
  assert sorted(images) == ['input_clips/0', 'input_clips/1']
  step, plugin, tensor = images['input_clips/0'][0]
  assert (step, plugin) == (1, 'images')
  width, height, png = tensor_util.make_ndarray(tensor)
  strip = np.asarray(Image.open(io.BytesIO(png)))
  t, s = config.data.num_frames, config.data.image_size
  assert (int(width), int(height)) == (t * s, s) and strip.shape == (s, t * s, 3)
  assert strip.max() > 100  # pixel values, not normalised values near 0
  # The resolved config and the per-class test accuracy as text.
  (_, plugin, tensor), = events['config']
  assert plugin == 'text' and '"ema"' in tensor_util.make_ndarray(tensor).item().decode()
  (_, plugin, tensor), = events['test_per_class_top1']
  table = tensor_util.make_ndarray(tensor).item().decode()
  assert plugin == 'text' and table.count('\n') == 2 + config.model.num_classes - 1
  assert 'test_ema_per_class_top1' in events


def test_the_videomae_recipe_runs_on_a_tiny_model(tiny_config, tmp_path):
  """configs/laps_vitb.py's videomae_recipe on the tiny model: AdamW with layer decay, mixup /
  cutmix, RandAugment, random erasing, 2 repeats, EMA and the best EMA checkpoint, through the loop."""
  import importlib.util
  from conftest import REPO
  spec = importlib.util.spec_from_file_location('laps_vitb', os.path.join(REPO, 'configs', 'laps_vitb.py'))
  laps_vitb = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(laps_vitb)
  config = tiny_config()
  laps_vitb.videomae_recipe(config)
  config.batch_size, config.optimizer.grad_accum_steps = 8, 2  # 4 videos x 2 repeats per step
  config.total_steps, config.eval.every_steps = 4, 2
  config.ema.decay = 0.5
  results = trainer.run(config, str(tmp_path / 'run'))
  assert results['step'] == 4 and np.isfinite(results['train']['loss'])
  assert results['validation_ema']['count'] == results['validation']['count']
  assert results['best_checkpoint_step'] in (2, 4)
