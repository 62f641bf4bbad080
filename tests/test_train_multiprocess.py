"""Two JAX processes on localhost (jax.distributed, gloo CPU collectives), 2 CPU devices each,
train the same global batches as one process with 4 devices and get the same losses; the state
they checkpoint together restores to the same values. And main.py's multi-host flags end to end."""
import json
import os
import subprocess
import sys

import portpicker

from conftest import REPO, python_env, read_scalars, run_python, write_config_file

# argv: process_id num_processes port workdir. Prints RESULT{...} on process 0.
SCRIPT = r'''
import json, sys
import jax, numpy as np
process_id, num_processes, port, workdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
if num_processes > 1:
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=f'localhost:{port}', num_processes=num_processes,
                             process_id=process_id)
sys.path.insert(0, 'tests')
import laps_jax.train
from conftest import make_tiny_config
from laps_jax.data import pipeline
from laps_jax.train import checkpointing, mesh as mesh_lib, optimizer as opt_lib, train_state as ts_lib

assert jax.device_count() == 4 and jax.process_count() == num_processes
config = make_tiny_config('unused')
config.model.dropout_rate = 0.1
K = config.model.num_classes
config.model.update(dict(num_layers=1, leap_levels=(1,)))  # one block: compiles faster
config.schedule.update(dict(base_lr=3e-3, warmup_epochs=0.0))
tx, _ = opt_lib.make_optimizer(config, updates_per_epoch=10, total_updates=10)
mesh = mesh_lib.make_mesh((2, 2, 1))  # data x fsdp over the 4 devices of both processes
rng = np.random.default_rng(0)
losses = []
init_fn = ts_lib.make_init_fn(config.model, tx, seed=0)
with mesh_lib.activate(mesh, config.axis_rules):
  graphdef, abstract = ts_lib.abstract_train_state(init_fn, mesh)
  shardings = ts_lib.shardings_of(abstract)
  state = ts_lib.create_train_state(init_fn, shardings)
  step = ts_lib.jit_train_step(graphdef, shardings, mesh)
  for _ in range(3):
    labels = rng.integers(0, K, 8).astype(np.int32)
    batch = dict(videos=rng.normal(size=(8, 4, 16, 16, 3)).astype(np.float32), labels=labels,
                 targets=np.eye(K, dtype=np.float32)[labels])
    part = slice(process_id * 8 // num_processes, (process_id + 1) * 8 // num_processes)
    local = {k: v[part] for k, v in batch.items()}  # this process's rows of the global batch
    state, metrics = step(state, pipeline.to_global(local, mesh))
    losses.append(float(metrics['loss'].addressable_data(0)))
  checkpointer = checkpointing.Checkpointer(workdir, keep=2)
  checkpointer.save(3, state)
  checkpointer.wait()
  restored = checkpointer.restore(3, abstract)
  checkpointer.close()
  same = jax.tree.map(lambda a, b: bool((a == b).all()), state['model'], restored['model'])
  fc1 = restored['model']['blocks'][0]['mlp']['fc1']['kernel']
  total = float(jax.jit(lambda x: x.sum(), out_shardings=mesh_lib.replicated(mesh))(fc1).addressable_data(0))
if process_id == 0:
  print('RESULT' + json.dumps(dict(losses=losses, restored_equal=all(jax.tree.leaves(same)),
                                   fc1_sum=total, fc1_spec=[str(a) for a in fc1.sharding.spec])))
'''


def test_two_processes_match_one_process(tmp_path):
  one = run_python(['-c', SCRIPT, '0', '1', '0', str(tmp_path / 'one')], devices=4)
  expected = json.loads(one.stdout.split('RESULT', 1)[1])

  port = str(portpicker.pick_unused_port())
  env = python_env(devices=2)
  processes = [subprocess.Popen([sys.executable, '-c', SCRIPT, str(i), '2', port, str(tmp_path / 'two')],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for p, (out, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-5000:]
  got = json.loads(outputs[0][0].split('RESULT', 1)[1])

  assert len(set(round(x, 4) for x in expected['losses'])) > 1
  for a, b in zip(got['losses'], expected['losses']):
    assert abs(a - b) < 2e-5, (got['losses'], expected['losses'])
  assert got['restored_equal'] and expected['restored_equal']
  assert got['fc1_spec'][0] == 'fsdp'  # sharded across the two processes' devices
  assert abs(got['fc1_sum'] - expected['fc1_sum']) < 1e-4


def test_main_py_runs_on_two_processes(tiny_config, tmp_path):
  """main.py's multi-host flags: each process reads its half of every batch, both save their data
  iterator position in the shared checkpoint, process 0 writes metrics and results."""
  config = tiny_config()
  config.total_steps = 3
  config.eval.update(dict(every_steps=0, batch_size=40, max_batches=1))
  path = write_config_file(tmp_path / 'tiny.py', config)
  workdir = tmp_path / 'run'
  port = str(portpicker.pick_unused_port())
  processes = [subprocess.Popen(
      [sys.executable, 'main.py', f'--config={path}', f'--workdir={workdir}',
       f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}'],
      cwd=REPO, env=python_env(devices=1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for p, (_, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-5000:]
  assert "over 2 devices (2 processes)" in outputs[0][1]
  data_item = workdir / 'checkpoints' / '3' / 'data'
  assert sorted(f for f in os.listdir(data_item) if f.endswith('.json')) == [
      'process_0-of-2.json', 'process_1-of-2.json']
  assert [step for step, _ in read_scalars(str(workdir), 'loss')] == [1, 2, 3]
  with open(workdir / 'results.json') as f:
    assert json.load(f)['validation']['count'] == 40
