"""Fine-tuning recipe pieces without a train loop: layer-wise lr decay and the lr scaled by the
global batch."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import make_tiny_config
from laps_jax import models
from laps_jax import named_params
from laps_jax.models.visformer import VisformerConfig
from laps_jax.train import layer_decay
from laps_jax.train import optimizer as optimizer_lib


def _names(model_config):
  return list(named_params.of_model(nnx.eval_shape(lambda: models.build(model_config, nnx.Rngs(0)))))


def test_layer_ids_of_vit_and_lvt():
  for name, embeddings in (('laps', {'cls_token', 'pos_embed', 'patch_embed/kernel'}),
                           ('lvt', {'temporal_embed', 'patch_norm/scale', 'patch_embed/kernel'})):
    names = _names(make_tiny_config('unused', name).model)  # 2 blocks
    ids, num_layers = layer_decay.layer_ids(names)
    assert num_layers == 2, name
    for n in names:
      expected = (int(n.split('/')[1]) + 1 if n.startswith('blocks/') else
                  3 if n.startswith(('norm/', 'head/')) else 0)
      assert ids[n] == expected, n
    assert embeddings <= {n for n, i in ids.items() if i == 0}, name


def test_layer_ids_of_visformer_count_the_stages_in_order():
  config = VisformerConfig.variant('Mu', num_frames=2, image_size=32, num_classes=4, stage_depths=(2, 1, 1),
                                   leap_levels=((None,), (None,)))
  names = _names(config.to_config_dict())
  ids, num_layers = layer_decay.layer_ids(names)
  assert num_layers == 4
  first = {prefix: {ids[n] for n in names if n.startswith(prefix)}
           for prefix in ('stem', 'patch_embed1', 'pos_embed1', 'stage1/0/', 'stage1/1/', 'patch_embed2',
                          'pos_embed2', 'stage2/0/', 'patch_embed3', 'stage3/0/', 'norm/', 'head/')}
  assert first == {'stem': {0}, 'patch_embed1': {0}, 'pos_embed1': {0}, 'stage1/0/': {1}, 'stage1/1/': {2},
                   'patch_embed2': {3}, 'pos_embed2': {3}, 'stage2/0/': {3}, 'patch_embed3': {4},
                   'stage3/0/': {4}, 'norm/': {5}, 'head/': {5}}


@pytest.mark.parametrize('name', ['sgd', 'adamw'])
def test_layer_decay_scales_each_update_by_decay_to_the_depth(name):
  """With decay d, every parameter's update is d ** (L + 1 - layer) times the update without it."""
  config = make_tiny_config('unused', 'laps')
  config.optimizer.update(dict(name=name, momentum=0.9, weight_decay=0.05, clip_norm=0.0))
  config.schedule.update(dict(name='piecewise', base_lr=0.1, warmup_epochs=0.0, decay_epochs=()))
  model = nnx.eval_shape(lambda: models.build(config.model, nnx.Rngs(0)))
  shapes = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), shapes)
  grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)

  def two_updates(decay):
    config.optimizer.layer_decay = decay
    tx, _ = optimizer_lib.make_optimizer(config, updates_per_epoch=1, total_updates=10)
    state = tx.init(params)
    _, state = tx.update(grads, state, params)  # a second step exercises the momenta too
    updates, _ = tx.update(grads, state, params)
    return named_params.flatten(updates)

  plain, decayed = two_updates(1.0), two_updates(0.5)
  ids, num_layers = layer_decay.layer_ids(plain)
  assert num_layers == 2
  for n, update in plain.items():
    np.testing.assert_allclose(decayed[n], update * 0.5 ** (3 - ids[n]), rtol=1e-5, atol=1e-7, err_msg=n)
  assert {ids[n] for n in plain} == {0, 1, 2, 3}


def test_layer_decay_out_of_range_is_an_error():
  config = make_tiny_config('unused')
  config.optimizer.layer_decay = 1.5
  with pytest.raises(ValueError, match='layer_decay'):
    optimizer_lib.make_optimizer(config, updates_per_epoch=1, total_updates=1)


def test_learning_rate_scales_with_the_global_batch_per_update():
  config = make_tiny_config('unused')
  config.schedule.update(dict(name='piecewise', base_lr=0.1, warmup_epochs=0.0, decay_epochs=()))
  assert optimizer_lib.peak_learning_rate(config) == pytest.approx(0.1)  # base_batch_size 0: off
  config.batch_size, config.optimizer.grad_accum_steps = 64, 2
  config.schedule.base_batch_size = 256
  assert optimizer_lib.peak_learning_rate(config) == pytest.approx(0.1 * 128 / 256)
  _, schedule = optimizer_lib.make_optimizer(config, updates_per_epoch=10, total_updates=10)
  assert float(schedule(0)) == pytest.approx(0.05)
  config.schedule.update(dict(name='warmup_cosine', warmup_epochs=1.0, end_lr=0.0))
  _, schedule = optimizer_lib.make_optimizer(config, updates_per_epoch=10, total_updates=100)
  assert float(schedule(10)) == pytest.approx(0.05)  # the peak after warm-up


def test_ema_follows_each_weight_update_as_a_numpy_loop():
  """ema = w after the first update, then d·ema + (1 − d)·w after each update, and unchanged on a
  micro-step that did not update the weights."""
  class Model(nnx.Module):
    def __init__(self, rngs):
      self.w = nnx.Param(jnp.zeros(3))

  class State(nnx.Module):
    def __init__(self, model, ema):
      self.model, self.ema = model, ema

  from laps_jax.train import ema as ema_lib
  decay = 0.75
  model = Model(nnx.Rngs(0))
  graphdef, state = nnx.split(State(model, ema_lib.EMA(model, decay)))

  @jax.jit
  def step(state, weights, updated):
    s = nnx.merge(graphdef, state)
    s.model.w[...] = weights
    s.ema.update(s.model, updated)
    return nnx.state(s)

  rng = np.random.default_rng(0)
  expected, updates = None, 0
  for updated in (False, True, False, True, True, False, False, True):
    weights = rng.normal(size=3).astype(np.float32)
    state = step(state, weights, jnp.bool_(updated))
    if updated:
      expected = weights if expected is None else decay * expected + (1 - decay) * weights
      updates += 1
    if expected is not None:
      np.testing.assert_allclose(state['ema']['model']['w'][...], expected, rtol=1e-6)
    assert int(state['ema']['count'][...]) == updates
  swapped = ema_lib.as_model(state)
  np.testing.assert_allclose(swapped['model']['w'][...], expected, rtol=1e-6)


@pytest.mark.parametrize('accum', [1, 3])
def test_weights_updated_follows_the_optimizer_through_dropped_micro_steps(accum):
  """train_state.weights_updated against a plain loop of what apply_if_finite + MultiSteps do:
  a dropped (non-finite) micro-step neither updates nor counts towards the accumulation, and
  whenever it says the weights changed they did (and only then)."""
  from laps_jax.train import train_state as ts_lib
  inner = optax.sgd(0.1, momentum=0.9)
  if accum > 1:
    inner = optax.MultiSteps(inner, every_k_schedule=accum)
  tx = optax.apply_if_finite(inner, max_consecutive_errors=5)

  class Model(nnx.Module):
    def __init__(self):
      self.w = nnx.Param(jnp.ones(3))

  optimizer = nnx.Optimizer(model := Model(), tx, wrt=nnx.Param)
  finite_pattern = [True, False, True, True, False, True, True, True, False, True, True, True]
  reached = 0  # micro-steps that reached the inner optimizer
  for i, finite in enumerate(finite_pattern):
    grad = jnp.full(3, float(i + 1) if finite else jnp.nan)
    before = np.asarray(model.w[...])
    optimizer.update(model, nnx.State({'w': nnx.Param(grad)}))
    updated = bool(ts_lib.weights_updated(optimizer.opt_state, jnp.bool_(finite)))
    reached += finite
    assert updated == (finite and reached % accum == 0), i
    assert updated == (not np.array_equal(before, np.asarray(model.w[...]))), i
  assert int(optimizer.step[...]) == len(finite_pattern)  # why the EMA cannot use the step count


EMA_SHARDING_SCRIPT = r'''
import json, sys
import jax, ml_collections
sys.path.insert(0, 'tests')
import laps_jax.train
from conftest import make_tiny_config
from laps_jax import named_params
from laps_jax.train import mesh as mesh_lib, train_state as ts_lib, optimizer as opt_lib

config = make_tiny_config('unused')
tx, _ = opt_lib.make_optimizer(config, updates_per_epoch=10, total_updates=10)
mesh = mesh_lib.make_mesh((1, 2, 2), jax.devices()[:4])
init_fn = ts_lib.make_init_fn(config.model, tx, 0, ml_collections.ConfigDict(dict(decay=0.9)))
with mesh_lib.activate(mesh, config.axis_rules):
  graphdef, abstract = ts_lib.abstract_train_state(init_fn, mesh)
  state = ts_lib.create_train_state(init_fn, ts_lib.shardings_of(abstract))
spec = lambda tree: {k: str(v.sharding.spec) for k, v in named_params.flatten(
    jax.tree.map(lambda x: x, dict(tree))).items()}
model, ema = spec(state['model']), spec(state['ema']['model'])
fc1 = 'blocks/0/mlp/fc1/kernel'
print('RESULT' + json.dumps(dict(model=model, ema=ema, fc1_shard=list(
    named_params.flatten(dict(state['ema']['model']))[fc1].addressable_shards[0].data.shape))))
'''


def test_ema_is_sharded_like_the_parameters():
  import json
  from conftest import run_python
  out = json.loads(run_python(['-c', EMA_SHARDING_SCRIPT], devices=4).stdout.split('RESULT', 1)[1])
  assert out['ema'] == out['model']
  assert out['ema']['blocks/0/mlp/fc1/kernel'] != 'PartitionSpec()'  # really sharded here
  assert out['fc1_shard'] == [16, 32]  # (embed 32 / fsdp 2, mlp 64 / tensor 2)


def test_an_epoch_counts_videos_with_repeated_augmentation():
  from laps_jax.train import setup as setup_lib
  config = make_tiny_config('unused')
  config.batch_size, config.num_epochs, config.total_steps = 8, 2.0, -1
  assert setup_lib.run_length(config, 80) == (20, 10.0)
  config.data.num_repeats = 2  # 4 videos per step: an epoch of 80 videos takes 20 steps
  assert setup_lib.run_length(config, 80) == (40, 20.0)


def test_per_class_table_and_device_memory(monkeypatch):
  from laps_jax.train import summaries
  table = summaries.per_class_table([1.0, 0.0, 3.0], [2.0, 0.0, 4.0], ['walk', 'run', 'jump'])
  assert table.splitlines()[2:] == ['| walk | 2 | 50.0 |', '| run | 0 | – |', '| jump | 4 | 75.0 |']

  class Device:
    def __init__(self, stats):
      self.stats = stats

    def memory_stats(self):
      return self.stats

  monkeypatch.setattr(jax, 'local_devices', lambda: [Device(None)])  # the CPU backend: nothing
  assert summaries.device_memory() == {}
  monkeypatch.setattr(jax, 'local_devices', lambda: [Device({'bytes_in_use': 3 << 30,
                                                              'peak_bytes_in_use': 5 << 29})])
  assert summaries.device_memory() == {'memory/bytes_in_use_gib': 3.0, 'memory/peak_bytes_in_use_gib': 2.5}


def test_layer_rates_are_logged_once(caplog):
  config = make_tiny_config('unused')
  config.optimizer.layer_decay = 0.5
  tx, _ = optimizer_lib.make_optimizer(config, updates_per_epoch=1, total_updates=1)
  model = nnx.eval_shape(lambda: models.build(config.model, nnx.Rngs(0)))
  params = jax.tree.map(lambda s: jnp.zeros(s.shape), nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  with caplog.at_level('INFO'):
    tx.init(params)
    tx.init(params)  # the abstract state, then the real one
  logged = [r.getMessage() for r in caplog.records if 'Layer-wise' in r.getMessage()]
  assert len(logged) == 1
  assert 'lr x 0.125' in logged[0] and 'layer   3 (      head)' in logged[0]  # 0.5^3, the head x 1
