"""The exported-model format (laps_jax.checkpoints), export from a training run
(laps_jax.export) and `config.init_from` with a new number of classes."""
import os

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import make_tiny_config
from laps_jax import checkpoints
from laps_jax import export as export_lib
from laps_jax import models
from laps_jax import named_params
from laps_jax.train import checkpointing
from laps_jax.train import mesh as mesh_lib
from laps_jax.train import optimizer as optimizer_lib
from laps_jax.train import train_state as ts_lib
from laps_jax.train import trainer

VIDEOS = np.random.default_rng(0).normal(size=(2, 4, 16, 16, 3)).astype(np.float32)


def _model(config, seed=0):
  model = models.build(config.model, nnx.Rngs(params=seed, dropout=seed + 1))
  # The classifier is zero-initialised: give it values so that the logits say something.
  model.head.kernel[...] = jax.random.normal(jax.random.key(seed), model.head.kernel.shape)
  return model


@pytest.mark.parametrize('name', ['laps', 'lvt'])
def test_save_and_load_model_round_trip(tmp_path, name):
  config = make_tiny_config('unused', name)
  model = models.build(config.model, nnx.Rngs(params=3, dropout=4))
  expected = model(VIDEOS, train=False)
  checkpoints.save_model(str(tmp_path / 'm'), model, config)  # a run config is accepted too
  loaded, loaded_config = checkpoints.load_model(str(tmp_path / 'm'))
  assert loaded_config.to_dict() == config.model.to_dict()  # tuples survive the JSON
  np.testing.assert_allclose(loaded(VIDEOS, train=False), expected, rtol=1e-6, atol=1e-6)


def test_bfloat16_export_and_clear_errors(tmp_path):
  config = make_tiny_config('unused')
  model = _model(config)
  checkpoints.save_model(str(tmp_path / 'bf16'), model, config.model, dtype='bfloat16')
  params = checkpoints.flatten_params(checkpoints.load_params(str(tmp_path / 'bf16')))
  assert {str(v.dtype) for v in params.values()} == {'bfloat16'}
  loaded, _ = checkpoints.load_model(str(tmp_path / 'bf16'))
  assert loaded.head.kernel[...].dtype == np.float32  # computed in float32 again
  np.testing.assert_allclose(loaded(VIDEOS), model(VIDEOS), rtol=0.05, atol=0.05)

  with pytest.raises(FileNotFoundError, match='model_config.json'):
    checkpoints.load_model(str(tmp_path / 'nothing'))
  other = make_tiny_config('unused')
  other.model.hidden_size = 64
  with pytest.raises(ValueError, match='saved shape'):
    checkpoints.assign_params(models.build(other.model, nnx.Rngs(0)), checkpoints.load_params(str(tmp_path / 'bf16')))


def test_export_a_training_checkpoint(tmp_path):
  """A training checkpoint (model + optimizer + RNG) -> export -> load_model gives the same logits."""
  config = make_tiny_config('unused')
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort())
  tx, _ = optimizer_lib.make_optimizer(config, updates_per_epoch=1, total_updates=1)
  mesh = mesh_lib.make_mesh((1, 1, 1))
  init_fn = ts_lib.make_init_fn(config.model, tx, seed=0)
  with mesh_lib.activate(mesh, config.axis_rules):
    graphdef, abstract = ts_lib.abstract_train_state(init_fn, mesh)
    state = ts_lib.create_train_state(init_fn, ts_lib.shardings_of(abstract))
  train_state = nnx.merge(graphdef, state)
  train_state.model.head.kernel[...] = jax.random.normal(jax.random.key(1), train_state.model.head.kernel.shape)
  expected = train_state.model(VIDEOS)
  checkpointer = checkpointing.Checkpointer(workdir, keep=3)
  checkpointer.save(7, nnx.state(train_state))
  checkpointer.close()

  assert export_lib.export(workdir, str(tmp_path / 'exported')) == 7
  model, model_config = checkpoints.load_model(str(tmp_path / 'exported'))
  assert model_config.name == 'laps'
  np.testing.assert_allclose(model(VIDEOS), expected, rtol=1e-6, atol=1e-6)
  with pytest.raises(FileExistsError):
    export_lib.export(workdir, str(tmp_path / 'exported'))
  with pytest.raises(FileNotFoundError, match='step 8'):
    export_lib.export(workdir, str(tmp_path / 'other'), step=8)


def test_init_from_reinitialises_a_classifier_of_another_size(tmp_path):
  source = make_tiny_config('unused')
  source.model.num_classes = 5
  source_model = _model(source, seed=5)
  checkpoints.save_model(str(tmp_path / 'pretrained'), source_model, source)

  config = make_tiny_config('unused')  # 6 classes
  config.init_from = str(tmp_path / 'pretrained')
  tx, _ = optimizer_lib.make_optimizer(config, updates_per_epoch=1, total_updates=1)
  mesh = mesh_lib.make_mesh((1, 1, 1))
  init_fn = ts_lib.make_init_fn(config.model, tx, seed=0)
  with mesh_lib.activate(mesh, config.axis_rules):
    graphdef, abstract = ts_lib.abstract_train_state(init_fn, mesh)
    fresh = ts_lib.create_train_state(init_fn, ts_lib.shardings_of(abstract))
    fresh_head = np.asarray(fresh['model']['head']['kernel'][...])
    state = trainer.initialise_from(fresh, graphdef, config)
  params = checkpoints.flatten_params(nnx.to_pure_dict(nnx.filter_state(state['model'], nnx.Param)))
  saved = checkpoints.flatten_params(nnx.to_pure_dict(nnx.state(source_model, nnx.Param)))
  for name, value in params.items():
    if name.startswith('head/'):
      assert value.shape[-1] == 6
    else:
      np.testing.assert_array_equal(value, saved[name], err_msg=name)
  np.testing.assert_array_equal(params['head/kernel'], fresh_head)

  config.init_from = str(tmp_path / 'missing')
  with pytest.raises(FileNotFoundError, match='not an exported model.*laps_jax.convert'):
    trainer.check_init_from(config)


def test_named_params_flatten_and_copy_into():
  """One naming for every tree the code meets: int or str list keys, Variables (optax at init)."""
  as_built = {'blocks': {0: {'fc': {'kernel': np.ones((2, 3))}}, 1: {'fc': {'kernel': np.zeros(3)}}},
              'head': {'bias': np.arange(4)}}
  as_read = {'blocks': {'0': as_built['blocks'][0], '1': as_built['blocks'][1]}, 'head': as_built['head']}
  for tree in (as_built, as_read):
    flat = named_params.flatten(tree)
    assert sorted(flat) == ['blocks/0/fc/kernel', 'blocks/1/fc/kernel', 'head/bias']
    np.testing.assert_array_equal(flat['head/bias'], np.arange(4))
  model = models.build(make_tiny_config('unused').model, nnx.Rngs(0))
  variables = nnx.state(model, nnx.Param)  # leaves are Variables: paths end in `.value`
  names = [named_params.path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(variables)[0]]
  assert sorted(names) == sorted(named_params.of_model(model)) and 'head/kernel' in names

  before = named_params.of_model(model)
  new_kernel = np.full(before['head/kernel'].shape, 2.0, dtype=np.float16)
  named_params.copy_into(model, {'head/kernel': new_kernel})
  after = named_params.of_model(model)
  assert after['head/kernel'].dtype == np.float32  # the parameter's dtype, not the source's
  np.testing.assert_array_equal(after['head/kernel'], new_kernel.astype(np.float32))
  for name in before:
    if name != 'head/kernel':
      np.testing.assert_array_equal(after[name], before[name], err_msg=name)  # untouched


def test_workdir_and_export_paths_go_through_epath(tmp_path, monkeypatch):
  """gs://... stays a URL (no os.path.abspath, which made it '<cwd>/gs:/bucket/run'); local paths,
  as str or etils.epath.Path, are made absolute and read and written through epath."""
  from etils import epath
  assert str(checkpoints.as_path('gs://bucket/run')) == 'gs://bucket/run'
  assert checkpoints.as_path('relative/run') == epath.Path(os.path.abspath('relative/run'))
  made = {}
  monkeypatch.setattr(checkpointing.ocp, 'CheckpointManager',
                      lambda directory, **kwargs: made.setdefault('directory', directory))
  checkpointing.Checkpointer('gs://bucket/run', keep=1)
  assert str(made['directory']) == 'gs://bucket/run/checkpoints'
  monkeypatch.undo()

  config = make_tiny_config('unused')
  exported = epath.Path(tmp_path) / 'exported'
  model = _model(config)
  checkpoints.save_model(exported, model, config)
  assert checkpoints.load_config(exported).to_dict() == config.model.to_dict()
  assert checkpoints.flatten_params(checkpoints.load_params(exported)).keys() == \
      named_params.of_model(model).keys()
  workdir = epath.Path(tmp_path) / 'run'
  trainer._save_config(config, workdir)
  trainer._write_results(workdir, trainer.EVAL_RESULTS_FILE, {'step': 1})
  assert (workdir / 'config.json').exists() and (workdir / 'eval_results.json').read_text()
  checkpointer = checkpointing.Checkpointer(workdir, keep=1, read_only=True)
  assert checkpointer.directory == workdir / 'checkpoints' and checkpointer.finalized_steps() == []
  checkpointer.close()
  assert not (workdir / 'checkpoints').exists()  # read only: nothing created
