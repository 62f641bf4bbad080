"""Problems a user can make are reported clearly, before anything is compiled; a non-finite loss
stops the run naming the step and keeps the last good checkpoint."""
import os
import time

import jax
import ml_collections
import pytest

from conftest import make_tiny_config, run_python
from laps_jax.data import pipeline
from laps_jax.train import checkpointing
from laps_jax.train import mesh as mesh_lib
from laps_jax.train import trainer
from laps_jax.train.errors import ConfigError, NonFiniteLossError

MESH_2_4_1 = jax.sharding.AbstractMesh((2, 4, 1), mesh_lib.MESH_AXES)  # shape only, no devices
MESH_1_2_4 = jax.sharding.AbstractMesh((1, 2, 4), mesh_lib.MESH_AXES)


def test_mesh_shape_resolution():
  assert mesh_lib.resolve_mesh_shape((-1, 1, 1), 8) == (8, 1, 1)
  assert mesh_lib.resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)
  for shape, message in [((3, -1, 1), 'not divisible'), ((2, 2, 1), 'needs 4 devices'),
                         ((-1, -1, 1), 'at most one -1'), ((8, 1), '3 entries')]:
    with pytest.raises(ConfigError, match=message):
      mesh_lib.resolve_mesh_shape(shape, 8)


def test_config_that_does_not_fit_the_mesh():
  config = make_tiny_config('unused')  # 2 heads, width 32
  with pytest.raises(ConfigError, match=r'batch_size=12 is not divisible by the 8 batch shards'):
    mesh_lib.check_batch(12, MESH_2_4_1)
  mesh_lib.check_batch(16, MESH_2_4_1)
  with pytest.raises(ConfigError, match=r'num_heads=2 is not divisible by the tensor axis of the mesh \(4\)'):
    mesh_lib.check_model_fits(config.model, MESH_1_2_4)
  mesh_lib.check_model_fits(config.model, MESH_2_4_1)
  abstract = {'kernel': jax.ShapeDtypeStruct(
      (30, 64), 'float32', sharding=jax.sharding.NamedSharding(MESH_2_4_1, jax.P('fsdp', None)))}
  with pytest.raises(ConfigError, match=r"\['kernel'\] \(30, 64\): dim 30 over \('fsdp',\) \(4\)"):
    mesh_lib.check_param_shardings(abstract, MESH_2_4_1)
  with pytest.raises(ConfigError, match="no rule for the logical axes \\['mlp'\\]"):
    mesh_lib.check_rules((('embed', 'fsdp'),), {'embed', 'mlp'})
  with pytest.raises(ConfigError, match="maps 'embed' to 'model', which is not a mesh axis"):
    mesh_lib.check_rules((('embed', 'model'),), {'embed'})


def test_bad_config_values_are_config_errors():
  config = make_tiny_config('unused')
  config.model.unknown_key = 1
  with pytest.raises(ConfigError, match='unknown_key'):
    trainer.check_config(config)
  # The configs tie data.num_frames to model.num_frames (one FieldReference); a config written
  # out without references (e.g. a saved config.json) can still disagree.
  config = ml_collections.ConfigDict(make_tiny_config('unused').to_dict())
  config.data.num_frames = 8
  with pytest.raises(ConfigError, match='data.num_frames=8 differs from model.num_frames=4'):
    trainer.check_config(config)


def test_unprepared_dataset_stops_with_the_prepare_command(tmp_path):
  config = make_tiny_config(str(tmp_path / 'empty'))
  config.data.name = 'kinetics400'
  start = time.monotonic()
  with pytest.raises(pipeline.DatasetNotPreparedError, match='python -m laps_jax.data.prepare --dataset=kinetics400'):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert time.monotonic() - start < 30  # nothing compiled
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_main_prints_the_prepare_command_for_laps_vitb(tmp_path):
  result = run_python(['main.py', '--config=configs/laps_vitb.py', f'--workdir={tmp_path / "run"}',
                       f'--config.data.data_dir={tmp_path / "nodata"}'], check=False, timeout=300)
  assert result.returncode == 1
  assert 'python -m laps_jax.data.prepare --dataset=kinetics400' in result.stderr
  assert 'Traceback' not in result.stderr


def test_missing_init_file_is_reported_before_compiling(tiny_config, tmp_path):
  config = tiny_config()
  config.init_from = str(tmp_path / 'no_such_model')
  start = time.monotonic()
  with pytest.raises(FileNotFoundError, match='config.init_from.*not an exported model'):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert time.monotonic() - start < 30


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
  config = tiny_config()
  config.total_steps = 12
  config.checkpoint.every_steps = 1
  config.log_every_steps = 100  # metrics are still checked before every checkpoint
  config.optimizer.update(dict(name='sgd', clip_norm=0.0))
  config.schedule.update(dict(name='piecewise', base_lr=1e12, warmup_epochs=0.0, decay_epochs=()))
  workdir = str(tmp_path / 'run')
  with pytest.raises(NonFiniteLossError, match=r'at step (\d+)') as error:
    trainer.train_and_evaluate(config, workdir)
  bad_step = int(error.value.args[0].split('at step ')[1].split(';')[0])
  assert 1 < bad_step <= 12
  steps = checkpointing.Checkpointer(workdir, keep=100).all_steps()
  assert steps and max(steps) == bad_step - 1  # every good step saved, nothing after
  # The message says where to resume from, and how to get past the step.
  assert (f'The last checkpoint is step {bad_step - 1} in {workdir}/checkpoints: the same command '
          f'with --workdir={workdir} resumes from it') in str(error.value)
  assert '--config.skip_nonfinite_updates=N' in str(error.value)
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
