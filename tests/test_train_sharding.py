"""The sharded train step on 8 simulated CPU devices: the same losses on every mesh as on one
device, and FSDP / tensor parallelism really shard parameters and optimizer state."""
import json

from conftest import run_python

# Runs in a subprocess with 8 CPU devices. Three steps of a tiny LAPS model (dropout on, AdamW,
# clipping) on fixed random batches, on meshes (1,1,1) [one device], (8,1,1), (2,4,1), (2,2,2).
SCRIPT = r'''
import json, sys
import jax, numpy as np
sys.path.insert(0, 'tests'); sys.path.insert(0, 'configs')
import laps_jax.train
from conftest import make_tiny_config
from laps_jax.train import mesh as mesh_lib, train_state as ts_lib, optimizer as opt_lib

config = make_tiny_config('unused')
config.model.dropout_rate = 0.1
K = config.model.num_classes
config.model.update(dict(num_layers=1, leap_levels=(1,)))  # one block: compiles faster
config.schedule.update(dict(base_lr=3e-3, warmup_epochs=0.0))
tx, _ = opt_lib.make_optimizer(config, updates_per_epoch=10, total_updates=10)
rng = np.random.default_rng(0)
batches = []
for _ in range(3):
  labels = rng.integers(0, K, 8).astype(np.int32)
  batches.append(dict(videos=rng.normal(size=(8, 4, 16, 16, 3)).astype(np.float32), labels=labels,
                      targets=np.eye(K, dtype=np.float32)[labels]))

out = {}
for shape in [(1, 1, 1), (8, 1, 1), (2, 4, 1), (2, 2, 2)]:
  mesh = mesh_lib.make_mesh(shape, jax.devices()[:int(np.prod(shape))])
  init_fn = ts_lib.make_init_fn(config.model, tx, seed=0)
  with mesh_lib.activate(mesh, config.axis_rules):
    graphdef, abstract = ts_lib.abstract_train_state(init_fn, mesh)
    shardings = ts_lib.shardings_of(abstract)
    state = ts_lib.create_train_state(init_fn, shardings)
    step = ts_lib.jit_train_step(graphdef, shardings, mesh)
    losses = []
    for b in batches:
      state, metrics = step(state, jax.device_put(b, mesh_lib.batch_sharding(mesh)))
      losses.append(float(metrics['loss']))
  fc1 = state['model']['blocks'][0]['mlp']['fc1']['kernel']
  mu = state['optimizer']['opt_state'][1][0].mu['blocks'][0]['mlp']['fc1']['kernel']
  out[str(shape)] = dict(
      losses=losses,
      fc1_spec=[str(a) for a in fc1.sharding.spec], fc1_shard=list(fc1.addressable_shards[0].data.shape),
      mu_spec=[str(a) for a in mu.sharding.spec], mu_shard=list(mu.addressable_shards[0].data.shape),
      fc1_global=list(fc1.shape), step=int(state['optimizer']['step']))
print('RESULT' + json.dumps(out))
'''


def test_meshes_match_one_device_and_shard_the_state():
  result = run_python(['-c', SCRIPT], devices=8)
  out = json.loads(result.stdout.split('RESULT', 1)[1])
  reference = out['(1, 1, 1)']['losses']
  assert len(set(round(x, 4) for x in reference)) > 1, 'the losses should change as training goes'
  for shape in ['(8, 1, 1)', '(2, 4, 1)', '(2, 2, 2)']:
    for a, b in zip(out[shape]['losses'], reference):
      assert abs(a - b) < 2e-5, (shape, out[shape]['losses'], reference)
    assert out[shape]['step'] == 3

  # fc1 kernel (embed=32, mlp=64): embed over fsdp, mlp over tensor.
  pure_data = out['(8, 1, 1)']
  assert pure_data['fc1_shard'] == pure_data['fc1_global'] == [32, 64]  # replicated
  fsdp = out['(2, 4, 1)']
  assert fsdp['fc1_spec'][0] == 'fsdp' and fsdp['fc1_shard'] == [8, 64]
  assert fsdp['mu_spec'] == fsdp['fc1_spec'] and fsdp['mu_shard'] == [8, 64]  # Adam moments too
  both = out['(2, 2, 2)']
  assert both['fc1_spec'] == ['fsdp', 'tensor'] and both['fc1_shard'] == [16, 32]
  assert both['mu_shard'] == [16, 32]
