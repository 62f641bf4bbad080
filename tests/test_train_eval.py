"""A short run ends with the single-view validation and the multi-view test in results.json; the
evaluation mode restores the last checkpoint and reproduces the same test numbers."""
import json
import os

import pytest

from conftest import SYNTHETIC_VALIDATION, read_scalars
from laps_jax.train import setup as setup_lib
from laps_jax.train import trainer


def test_train_then_eval_mode(tiny_config, tmp_path):
  config = tiny_config()
  config.total_steps = 2
  config.test.update(dict(at_end=True, batch_size=40))
  workdir = str(tmp_path / 'run')
  results = trainer.run(config, workdir)

  with open(os.path.join(workdir, 'results.json')) as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(results))
  assert results['step'] == 2 and results['test_views'] == 2  # 2 clips x 1 crop
  assert results['validation']['count'] == 40  # eval.max_batches=1 batch of 40
  assert results['test']['count'] == SYNTHETIC_VALIDATION  # the whole split, each video once
  for split in ('validation', 'test'):
    assert 0 <= results[split]['top1'] <= results[split]['top5'] <= 1 and results[split]['loss'] > 0
  assert [step for step, _ in read_scalars(workdir, 'loss')] == [1, 2]
  assert read_scalars(workdir, 'test_top1')[0][1] == pytest.approx(results['test']['top1'])
  assert os.path.exists(os.path.join(workdir, 'config.json'))

  config.mode = 'eval'
  evaluated = trainer.run(config, workdir)
  assert evaluated['step'] == 2 and 'checkpoints step 2' in evaluated['source']
  for key in ('loss', 'top1', 'top5', 'count'):
    assert evaluated['test'][key] == pytest.approx(results['test'][key], rel=1e-5)


def test_the_eval_state_has_no_optimizer(tiny_config):
  """--config.mode=eval builds no optimizer: its state template is the model alone (the
  checkpointer then restores only the checkpoint's model item); training's has both."""
  evaluation = setup_lib.set_up(tiny_config(), 'eval')
  assert 'optimizer' not in evaluation.abstract_state and evaluation.schedule is None
  assert 'model' in evaluation.abstract_state
  training = setup_lib.set_up(tiny_config(), 'train')
  assert {'model', 'optimizer'} <= set(training.abstract_state.keys())
