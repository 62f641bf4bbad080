"""The fault suite: what a crash, a preemption, damaged state and bad input cost the user.

Each section is one kind of fault. Every case runs the real entry points (main.py, the
converter, the trainer) on the tiny config and checks both that nothing is lost and that the
user sees one clear line naming the problem, not a traceback.

Sections:
  1. Lost work and stray processes: kill -9 at random points, orphaned data workers, SIGTERM to
     one process of two, the preemption exit code, resuming without init_from.
  2. Damaged state: a truncated checkpoint file, a missing data-iterator file, a stray numbered
     folder, an explicit restore step, a non-finite loss.
  3. Bad input: config typos and values, model-construction errors, corrupt inputs to every
     command (convert, predict, export).
"""
import os
import subprocess
import sys

import pytest

from conftest import REPO, python_env, run_python, write_config_file  # pylint: disable=unused-import


# =============================================================================================
# 1. Lost work and stray processes
# =============================================================================================


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory, synthetic_data_dir):
  """A finished tiny run (6 steps, checkpoints at 3 and 6): each test copies it, then damages or
  resumes the copy."""
  from conftest import make_tiny_config
  from laps_jax.train import trainer
  workdir = str(tmp_path_factory.mktemp('trained') / 'run')
  trainer.run(make_tiny_config(synthetic_data_dir), workdir)
  return workdir


def _copy(workdir, tmp_path) -> str:
  import shutil
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  return copy


def test_resume_needs_no_init_from(trained_workdir, tiny_config, tmp_path):
  """A run that resumes neither checks nor reads config.init_from (moved, or another cwd)."""
  from laps_jax.train import trainer
  workdir = _copy(trained_workdir, tmp_path)
  config = tiny_config()
  config.init_from = str(tmp_path / 'pretrained_model_gone')
  config.total_steps = 9
  assert trainer.run(config, workdir)['step'] == 9


def test_eval_writes_its_own_results_and_creates_nothing(trained_workdir, tiny_config, tmp_path):
  import json
  from laps_jax.train import trainer
  from laps_jax.train.errors import ConfigError
  workdir = _copy(trained_workdir, tmp_path)
  with open(os.path.join(workdir, 'results.json')) as f:
    training_results = f.read()
  config = tiny_config()
  config.mode = 'eval'
  config.data.test_clips = 1  # a cheaper test: one view
  evaluated = trainer.run(config, workdir)
  with open(os.path.join(workdir, 'results.json')) as f:
    assert f.read() == training_results  # the training run's results are kept
  with open(os.path.join(workdir, trainer.EVAL_RESULTS_FILE)) as f:
    assert json.load(f)['step'] == evaluated['step'] == 6

  typo = str(tmp_path / 'runn')
  with pytest.raises(ConfigError, match=f'nothing to evaluate: the workdir {typo} has no checkpoints'):
    trainer.run(config, typo)
  assert not os.path.exists(typo)  # no WORKDIR/checkpoints/ made by the look


def test_leftover_micro_steps_round_to_whole_updates(tiny_config, caplog):
  """7 steps of 2 micro-steps each would end with half an update: the run trains 8."""
  from laps_jax.train import setup as setup_lib
  config = tiny_config()
  config.total_steps = 7
  config.optimizer.grad_accum_steps = 2
  with caplog.at_level('WARNING'):
    assert setup_lib.run_length(config, 256)[0] == 8
  assert 'training 8 steps (4 updates)' in caplog.text
  config.total_steps, config.num_epochs = -1, 1.0  # 256 videos / 8 per step = 32 steps: whole
  assert setup_lib.run_length(config, 256)[0] == 32
  config.optimizer.grad_accum_steps = 3
  assert setup_lib.run_length(config, 256)[0] == 33


# --- Stray processes, kill -9, preemption (exit code, several processes) ---------------------
def _live_processes_of_group(pgid: int) -> list[int]:
  """The processes of process group `pgid` that are alive (not zombies), from /proc."""
  pids = []
  for name in os.listdir('/proc'):
    if not name.isdigit():
      continue
    try:
      with open(f'/proc/{name}/stat') as f:
        state, _, pgrp = f.read().rsplit(')', 1)[1].split()[:3]
    except (OSError, ValueError):
      continue
    if int(pgrp) == pgid and state != 'Z':
      pids.append(int(name))
  return pids


def _left_after(pgid: int, seconds: float) -> list[int]:
  """The live processes of group `pgid` after waiting up to `seconds` for none to be left."""
  import time
  start = time.monotonic()
  while (left := _live_processes_of_group(pgid)) and time.monotonic() - start < seconds:
    time.sleep(0.05)
  return left


def _logged_steps(log_path) -> int:
  import re
  with open(log_path) as f:
    return max((int(s) for s in re.findall(r'\] \[(\d+)\] .*\bloss=', f.read())), default=0)


def _wait_for(condition, processes, timeout=300):
  import time
  start = time.monotonic()
  while not condition():
    assert all(p.poll() is None for p in processes), 'a run ended before the test could interrupt it'
    assert time.monotonic() - start < timeout, 'timed out'
    time.sleep(0.05)


def _finalized_steps(workdir) -> list[int]:
  directory = os.path.join(workdir, 'checkpoints')
  return sorted(int(s) for s in os.listdir(directory) if s.isdigit() and
                os.path.exists(os.path.join(directory, s, 'commit_success.txt')))


def _main_py(config_path, workdir, log_path, *extra, process_group=None, devices=1):
  """main.py in a process group of its own (or `process_group`), its output into `log_path`."""
  log = open(log_path, 'a')  # pylint: disable=consider-using-with
  return subprocess.Popen([sys.executable, 'main.py', f'--config={config_path}',
                           f'--workdir={workdir}', *extra], cwd=REPO, env=python_env(devices),
                          stdout=log, stderr=subprocess.STDOUT,
                          process_group=0 if process_group is None else process_group)


def test_kill_9_at_random_points_leaves_no_process_and_resumes_the_last_checkpoint(
    tiny_config, tmp_path):
  """kill -9 of the trainer (not of its group) at random steps: its data worker and the
  multiprocessing resource_tracker end within seconds (they lived on with parent 1 before), and
  the next run resumes from the newest complete checkpoint."""
  import random
  import signal
  import time
  seed = random.randrange(1 << 30)
  rng = random.Random(seed)
  config = tiny_config()
  config.total_steps = 24  # far more than the kills wait for: no run ends first
  config.data.num_workers = 1
  config.checkpoint.every_steps = 2
  config_path = write_config_file(tmp_path / 'tiny.py', config)
  workdir = str(tmp_path / 'run')
  previous = 0
  for attempt in range(2):
    log = str(tmp_path / f'run_{attempt}.log')
    process = _main_py(config_path, workdir, log)
    kill_at = rng.randint(1, 8)
    _wait_for(lambda: _logged_steps(log) >= kill_at, [process])  # pylint: disable=cell-var-from-loop
    time.sleep(rng.uniform(0.0, 0.3))
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    left = _left_after(process.pid, seconds=5)
    assert not left, f'seed {seed}, attempt {attempt}: processes left 5 s after kill -9: {left}'
    with open(log) as f:
      assert f'Training from step {previous} to 24.' in f.read(), f'seed {seed}, attempt {attempt}'
    previous = (_finalized_steps(workdir) or [0])[-1]  # what the next run must resume from


def test_data_workers_ignore_sigterm_and_end_with_the_loader(tiny_config):
  """A SIGTERM to the process group reaches the data workers too: they ignore it (the trainer
  decides when to stop) and end when the loader is done with them."""
  import multiprocessing
  import signal
  import time
  from laps_jax.data import loaders
  config = tiny_config()
  config.data.num_workers = 1
  batches = iter(loaders.make_eval_loader(config.data, split='validation', global_batch_size=40,
                                          multi_view=False))
  first = next(batches)
  workers = multiprocessing.active_children()
  assert workers
  for worker in workers:
    os.kill(worker.pid, signal.SIGTERM)
  time.sleep(0.5)
  assert all(worker.is_alive() for worker in workers)
  assert len(first['labels']) + sum(len(b['labels']) for b in batches) == 80  # all of them
  assert not any(worker.is_alive() for worker in workers)  # ended with the last batch


def test_sigterm_to_one_process_of_two_and_to_both(tiny_config, tmp_path):
  """Two processes (jax.distributed on localhost): a SIGTERM to one of them, later to the process
  group of both (their data workers too), makes both save the same step (JAX's preemption sync
  point) and exit with the preemption code; started again, both resume from that step."""
  import portpicker
  import re
  import signal
  from laps_jax.train import preemption
  config = tiny_config()
  config.total_steps = 200
  config.data.num_workers = 1
  config.checkpoint.every_steps = 1000
  config_path = write_config_file(tmp_path / 'tiny.py', config)
  workdir = str(tmp_path / 'run')
  logs = [str(tmp_path / f'process_{i}.log') for i in range(2)]

  def start_both():
    port = portpicker.pick_unused_port()
    flags = [f'--coordinator_address=localhost:{port}', '--num_processes=2']
    first = _main_py(config_path, workdir, logs[0], *flags, '--process_id=0')
    second = _main_py(config_path, workdir, logs[1], *flags, '--process_id=1',
                      process_group=first.pid)  # one process group: `killpg` reaches both
    return [first, second]

  def preempted_steps(processes):
    for p in processes:
      assert p.wait(timeout=300) == preemption.DEFAULT_EXIT_CODE
    steps = []
    for log in logs:
      with open(log) as f:
        steps.append(sorted({int(s) for s in re.findall(r'PREEMPTED at step (\d+)', f.read())}))
    return steps

  processes = start_both()
  _wait_for(lambda: _logged_steps(logs[0]) >= 2, processes)
  os.kill(processes[1].pid, signal.SIGTERM)  # one process of two
  (first,), (second,) = preempted_steps(processes)
  assert first == second >= 2
  assert _finalized_steps(workdir) == [first]
  data = os.listdir(os.path.join(workdir, 'checkpoints', str(first), 'data'))
  assert {'process_0-of-2.json', 'process_1-of-2.json'} <= set(data)

  processes = start_both()
  _wait_for(lambda: _logged_steps(logs[0]) >= first + 2, processes)
  os.killpg(processes[0].pid, signal.SIGTERM)  # the whole group: both and their data workers
  (_, again), (_, again_second) = preempted_steps(processes)
  assert again == again_second > first
  for log in logs:
    with open(log) as f:
      assert f'Training from step {first} to 200.' in f.read()  # both resumed
  assert again in _finalized_steps(workdir)
  assert not _left_after(processes[0].pid, seconds=5)  # the data workers and resource_tracker


def test_preemption_exit_code_and_resume_command(capsys):
  """A preempted run exits with config.preemption_exit_code and prints the command that resumes
  it; a finished run does not exit; a code that is no exit status is a ConfigError."""
  import ml_collections
  from laps_jax.train import preemption
  from laps_jax.train.errors import ConfigError
  config = ml_collections.ConfigDict({'preemption_exit_code': 75})
  argv = ['main.py', '--config=configs/demo.py:model=lvt', '--workdir=/tmp/a b', '--config.seed=3']
  with pytest.raises(SystemExit) as exit_info:
    preemption.exit_if_preempted({'preempted_at_step': 7}, config, argv)
  assert exit_info.value.code == 75
  assert ('PREEMPTED at step 7: the checkpoint is saved; the same command resumes from it: '
                  "python main.py --config=configs/demo.py:model=lvt '--workdir=/tmp/a b' --config.seed=3") in capsys.readouterr().err
  preemption.exit_if_preempted({'step': 12}, config, argv)  # finished: returns
  assert preemption.exit_code(ml_collections.ConfigDict()) == 143
  for bad in (-1, 256, 'x'):
    with pytest.raises(ConfigError, match='preemption_exit_code must be an exit status 0..255'):
      preemption.exit_code(ml_collections.ConfigDict({'preemption_exit_code': bad}))


# =============================================================================================
# 2. Damaged state
# =============================================================================================


def _damage(workdir, step, how):
  import glob
  folder = os.path.join(workdir, 'checkpoints', str(step))
  if how == 'truncated_array':
    path = max(glob.glob(os.path.join(folder, 'model', 'ocdbt.process_0', 'd', '*')),
               key=os.path.getsize)
    os.truncate(path, os.path.getsize(path) // 2)
  elif how == 'missing_data_file':
    os.remove(os.path.join(folder, 'data', 'process_0-of-1.json'))


@pytest.mark.parametrize('how', ['truncated_array', 'missing_data_file'])
def test_damaged_latest_checkpoint_falls_back_and_is_kept(trained_workdir, tiny_config, tmp_path,
                                                           caplog, how):
  from laps_jax.train import trainer
  workdir = _copy(trained_workdir, tmp_path)
  _damage(workdir, 6, how)
  config = tiny_config()
  with caplog.at_level('WARNING'):
    results = trainer.run(config, workdir)
  assert results['step'] == 6  # steps 4..6 trained again from the checkpoint at 3
  damaged = os.path.join(workdir, 'checkpoints', '6')
  assert f'The checkpoint {damaged} is damaged' in caplog.text
  assert 'Traceback' not in caplog.text
  # Kept out of Orbax's sight (which would count, refuse to overwrite and delete it) ...
  kept = os.path.join(workdir, 'checkpoints_set_aside', '6')
  assert os.path.isdir(os.path.join(kept, 'model'))
  # ... and the step saved anew.
  assert os.path.exists(os.path.join(workdir, 'checkpoints', '6', 'commit_success.txt'))


def test_every_checkpoint_damaged_is_one_error_and_nothing_moves(trained_workdir, tiny_config,
                                                                 tmp_path):
  from laps_jax.train import trainer
  from laps_jax.train.errors import ConfigError
  workdir = _copy(trained_workdir, tmp_path)
  _damage(workdir, 3, 'missing_data_file')
  _damage(workdir, 6, 'truncated_array')
  with pytest.raises(ConfigError, match=r'no checkpoint in .*/checkpoints restores: every one is '
                                         r'damaged \(steps \[3, 6\]'):
    trainer.run(tiny_config(), workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3', '6']
  assert not os.path.exists(os.path.join(workdir, 'checkpoints_set_aside'))


def test_stray_folder_is_ignored_and_kept(trained_workdir, tiny_config, tmp_path, caplog):
  from laps_jax.train import trainer
  workdir = _copy(trained_workdir, tmp_path)
  os.makedirs(os.path.join(workdir, 'checkpoints', '7'))
  with open(os.path.join(workdir, 'checkpoints', '7', 'junk.txt'), 'w') as f:
    f.write('not a checkpoint')
  with caplog.at_level('WARNING'):
    results = trainer.run(tiny_config(), workdir)  # resumes at 6 of 6: validates only
  assert results['step'] == 6
  assert 'checkpoints/7: not a checkpoint Orbax finalised' in caplog.text
  assert os.path.exists(os.path.join(workdir, 'checkpoints_set_aside', '7', 'junk.txt'))
  assert not os.path.exists(os.path.join(workdir, 'checkpoints', '7'))


def test_restore_step(trained_workdir, tiny_config, tmp_path):
  """--config.checkpoint.restore_step=N parses; N picks the checkpoint to evaluate or resume from,
  a step that is not there is one ConfigError listing those that are."""
  from absl import flags
  from ml_collections import config_flags
  from laps_jax.train import trainer
  from laps_jax.train.errors import ConfigError
  argv = ['main.py', f'--config={os.path.join(REPO, "configs", "demo.py")}',
          '--config.checkpoint.restore_step=7', '--config.skip_nonfinite_updates=5']
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  assert flag_values.config.checkpoint.restore_step == 7
  assert flag_values.config.skip_nonfinite_updates == 5

  workdir = _copy(trained_workdir, tmp_path)
  config = tiny_config()
  for bad in (5, -2):
    config.checkpoint.restore_step = bad
    with pytest.raises(ConfigError, match=rf'restore_step={bad}: no checkpoint at that step in .*'
                                           r'\(the steps there: \[3, 6\]\)'):
      trainer.run(config, workdir)
  config.mode, config.checkpoint.restore_step, config.data.test_clips = 'eval', 3, 1
  assert trainer.run(config, workdir)['step'] == 3
  # Training from 3: the newer checkpoint is set aside (Orbax would not save step 6 again).
  config.mode = 'train'
  assert trainer.run(config, workdir)['step'] == 6
  assert os.path.isdir(os.path.join(workdir, 'checkpoints_set_aside', '6', 'model'))


def test_a_checkpoint_from_before_the_non_finite_counters_resumes(tiny_config, tmp_path,
                                                                   monkeypatch):
  """Training checkpoints written before the optimizer was wrapped in optax.apply_if_finite (its
  state directly under opt_state) still resume: the saved momenta go inside the wrapper and the
  run continues exactly as the old code would have."""
  import jax
  import numpy as np
  import optax
  from laps_jax import named_params
  from laps_jax.train import checkpointing, setup as setup_lib, trainer
  workdir = str(tmp_path / 'run')
  with monkeypatch.context() as patch:  # the optimizer as it was: no wrapper
    patch.setattr(setup_lib.optax, 'apply_if_finite', lambda tx, max_consecutive_errors: tx)
    trainer.run(tiny_config(), workdir)  # 6 steps, checkpoints at 3 and 6
  old = checkpointing.Checkpointer(workdir, keep=2)
  saved = old.manager.item_metadata(3)['optimizer']['opt_state']
  assert 'inner_state' not in saved
  old_final = old.restore_model_arrays(6)
  old.close()
  os.rename(os.path.join(workdir, 'checkpoints', '6'), str(tmp_path / 'old_6'))

  assert optax.apply_if_finite is setup_lib.optax.apply_if_finite  # the current code again
  assert trainer.run(tiny_config(), workdir)['step'] == 6  # resumes from the old step 3
  new = checkpointing.Checkpointer(workdir, keep=2)
  assert 'inner_state' in new.manager.item_metadata(6)['optimizer']['opt_state']
  new_final = new.restore_model_arrays(6)
  new.close()
  as_numbers = lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(
      x.dtype, jax.dtypes.prng_key) else x  # the dropout RNG stream is part of the model state
  new_final = named_params.flatten(new_final)
  for name, value in named_params.flatten(old_final).items():
    # Equal up to float32 rounding (the wrapper's program fuses differently); restarting the
    # momenta at zero would move the biases (~1e-4, ~2e-5 a step) by far more.
    np.testing.assert_allclose(as_numbers(new_final[name]), as_numbers(value), rtol=1e-5,
                               atol=1e-8, err_msg=name)


def test_checkpoint_of_another_config_is_not_damage(trained_workdir, tiny_config, tmp_path):
  """A checkpoint that restores but does not fit the config is an error, not passed over."""
  from laps_jax.train import trainer
  from laps_jax.train.errors import ConfigError
  workdir = _copy(trained_workdir, tmp_path)
  config = tiny_config()
  config.model.mlp_dim = 32
  with pytest.raises(ConfigError, match=r'checkpoints/6 does not fit this config: model '
                                         r"'blocks/0/mlp/fc1/bias' has shape \(64,\)"):
    trainer.run(config, workdir)
  assert not os.path.exists(os.path.join(workdir, 'checkpoints_set_aside'))


def test_skip_nonfinite_updates(tiny_config, tmp_path):
  """config.skip_nonfinite_updates=N: a diverging run skips the non-finite steps (counted in
  `skipped_updates`), keeps saving finite states, and stops after N in a row, naming the step and
  the checkpoint to resume from."""
  from conftest import read_scalars
  from laps_jax.train import checkpointing
  from laps_jax.train import trainer
  from laps_jax.train.errors import NonFiniteLossError
  config = tiny_config()
  config.total_steps = 12
  config.checkpoint.every_steps = 1
  config.log_every_steps = 100  # metrics are still checked before every checkpoint
  config.skip_nonfinite_updates = 3
  config.optimizer.update(dict(name='sgd', clip_norm=0.0))
  config.schedule.update(dict(name='piecewise', base_lr=1e12, warmup_epochs=0.0, decay_epochs=()))
  workdir = str(tmp_path / 'run')
  with pytest.raises(NonFiniteLossError, match=r'3 updates in a row had a non-finite loss or '
                                                r'gradient \(config.skip_nonfinite_updates=3\) at '
                                                r'step (\d+); stopping') as error:
    trainer.train_and_evaluate(config, workdir)
  stop_step = int(error.value.args[0].split('at step ')[1].split(';')[0])
  steps = checkpointing.Checkpointer(workdir, keep=100, read_only=True).all_steps()
  assert max(steps) == stop_step - 1  # the skipped steps' states were finite: saved
  assert f'The last checkpoint is step {stop_step - 1} in {workdir}/checkpoints' in str(error.value)
  skipped = dict(read_scalars(workdir, 'skipped_updates'))
  assert skipped[stop_step - 1] == skipped[stop_step - 2] == 1.0 and skipped[1] == 0.0


def test_a_skipped_micro_step_never_reaches_the_accumulator(tiny_config):
  """With gradient accumulation, optax.apply_if_finite (outside optax.MultiSteps) drops a
  non-finite micro-batch whole: [a, NaN, b] gives the parameters of [a, b]."""
  import jax
  import numpy as np
  from flax import nnx
  from laps_jax.train import mesh as mesh_lib
  from laps_jax.train import setup as setup_lib
  from laps_jax.train import train_state as ts_lib
  config = tiny_config()
  config.optimizer.grad_accum_steps = 2
  config.skip_nonfinite_updates = 2
  config.ema.decay = 0.5  # the EMA too must see only the real update (not nnx.Optimizer.step)
  config.schedule.update(dict(name='piecewise', base_lr=0.1, warmup_epochs=0.0, decay_epochs=()))
  config.model.update(dict(num_layers=1, leap_levels=(1,)))  # one block: compiles faster
  setup = setup_lib.set_up(config, 'train')
  rng = np.random.default_rng(0)
  labels = rng.integers(0, config.model.num_classes, 8).astype(np.int32)

  def batch(videos):
    return dict(videos=videos.astype(np.float32), labels=labels,
                targets=np.eye(config.model.num_classes, dtype=np.float32)[labels])
  a, b = (batch(rng.normal(size=(8, 4, 16, 16, 3))) for _ in range(2))
  bad = batch(np.full((8, 4, 16, 16, 3), np.nan))
  params, emas = [], []
  with mesh_lib.activate(setup.mesh, config.axis_rules):
    step = ts_lib.jit_train_step(setup.graphdef, setup.shardings, setup.mesh, skip_nonfinite=True)
    for batches in ([a, bad, b], [a, b]):
      state = ts_lib.create_train_state(setup.init_fn, setup.shardings)
      skipped = []
      for x in batches:
        state, metrics = step(state, jax.device_put(x, mesh_lib.batch_sharding(setup.mesh)))
        skipped.append(float(metrics['skipped_updates']))
      assert skipped == ([0.0, 1.0, 0.0] if len(batches) == 3 else [0.0, 0.0])
      params.append(nnx.to_pure_dict(nnx.filter_state(state['model'], nnx.Param)))
      emas.append(nnx.to_pure_dict(nnx.filter_state(state['ema']['model'], nnx.Param)))
      assert int(state['ema']['count'][...]) == 1  # one real update in either run
    fresh = nnx.to_pure_dict(nnx.filter_state(
        ts_lib.create_train_state(setup.init_fn, setup.shardings)['model'], nnx.Param))
  for x, y in zip(jax.tree.leaves(params[0]) + jax.tree.leaves(emas[0]),
                  jax.tree.leaves(params[1]) + jax.tree.leaves(emas[1])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  for x, y in zip(jax.tree.leaves(emas[0]), jax.tree.leaves(params[0])):  # first update: a copy
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # and the update did happen: the parameters moved from the fresh ones
  assert any(not np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(params[0]), jax.tree.leaves(fresh)))


# =============================================================================================
# 3. Bad input
# =============================================================================================


def test_a_tensor_axis_across_processes_is_a_config_error():
  """The batch is replicated along `tensor` and each process reads its own data: a tensor axis
  over two processes would feed its replicas different batches, so the mesh is refused."""
  import types
  import numpy as np
  from laps_jax.train import mesh as mesh_lib
  from laps_jax.train.errors import ConfigError
  devices = np.array([types.SimpleNamespace(process_index=i // 2) for i in range(4)], dtype=object)
  mesh_lib.check_tensor_axis_within_processes(devices.reshape(2, 1, 2))  # within each process
  with pytest.raises(ConfigError, match=r'config.mesh_shape \(1, 1, 4\) \(data, fsdp, tensor\): the '
                     r'tensor axis spans several of the 2 processes \(2 devices each\)'):
    mesh_lib.check_tensor_axis_within_processes(devices.reshape(1, 1, 4))


def _parse_main_flags(argv):
  """main.py's flags (--config, --workdir) on a fresh FlagValues, parsed by config_args.parse_flags
  as main.py does: the config, or None when it exits (status 1)."""
  from absl import flags
  from ml_collections import config_flags
  from laps_jax import config_args
  flag_values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file('config', None, flag_values=flag_values, sys_argv=argv)
  flags.DEFINE_string('workdir', None, '', required=True, flag_values=flag_values)
  try:
    config_args.parse_flags(argv, flag_values=flag_values,
                            default_config=os.path.join(REPO, 'configs', 'demo.py'))
  except SystemExit as e:
    assert e.code == 1
    return None
  return holder.value


@pytest.mark.parametrize('args, line', [
    (['--config.modle.dtype=float32'], "ERROR (ConfigError): --config.modle.dtype=float32: the "
     "config has no key 'modle.dtype'; did you mean 'model.dtype'?"),
    (['--config.modle=x'], "the config has no key 'modle'; did you mean 'mode'?"),
    (['--config.data.flipp'], "--config.data.flipp: the config has no key 'data.flipp'; did you "
     "mean 'data.flip'?"),
    (['--config.model.colour=1'], "the config has no key 'model.colour'; config.model has the keys"),
    (['--config.batch_size=x'], "ERROR (ConfigError): --config.batch_size=x: config.batch_size "
     "takes an int (invalid literal for int() with base 10: 'x')"),
    (['--config=configs/demo.py:model=foo'], "ERROR (ConfigError): --config=configs/demo.py:model=foo: "
     "configs/demo.py:model= must be one of ("),
    (['--config=configs/nope.py'], "ERROR (ConfigError): --config=configs/nope.py: no config file "
     "'configs/nope.py'"),
    (['--config=configs/demo.py:colour=red'], "configs/demo.py takes ['model'], got 'colour'"),
])
def test_a_bad_config_flag_is_one_line_naming_the_key(args, line, capsys, monkeypatch):
  monkeypatch.chdir(REPO)
  argv = ['main.py', '--workdir=/tmp/unused', *args]
  assert _parse_main_flags(argv) is None
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and line in err[0], err


def test_main_prints_a_config_typo_as_one_line_without_a_traceback(tmp_path):
  result = run_python(['main.py', '--config=configs/demo.py', f'--workdir={tmp_path}',
                       '--config.modle.dtype=float32'], check=False, timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      "ERROR (ConfigError): --config.modle.dtype=float32: the config has no key 'modle.dtype'; "
      "did you mean 'model.dtype'?"], result.stderr
  assert not os.listdir(tmp_path)


def test_num_workers_auto_is_settable_from_the_command_line(monkeypatch):
  from laps_jax.data import data_config, loaders
  monkeypatch.chdir(REPO)
  for value, expected in (('auto', 'auto'), ('3', 3), ('0', 0)):
    config = _parse_main_flags(['main.py', '--workdir=/tmp/unused', '--config=configs/demo.py',
                                f'--config.data.num_workers={value}'])
    assert config.data.num_workers == expected
    data_config.validate_config(config.data)
    assert loaders.num_workers(config.data) >= (1 if value == 'auto' else expected)
  config.data.num_workers = 2  # still settable from Python, as an int
  assert loaders.num_workers(config.data) == 2


@pytest.mark.parametrize('key, value', [
    ('batch_size', 0), ('eval.batch_size', 0), ('test.batch_size', -8),
    ('optimizer.grad_accum_steps', 0), ('model.hidden_size', 0), ('model.patch_size', 0),
    ('model.num_frames', 0), ('model.num_classes', 0)])
def test_sizes_and_counts_must_be_positive(key, value):
  from configs import demo
  from laps_jax.train import setup
  from laps_jax.train.errors import ConfigError
  config = demo.get_config()
  section, _, name = key.rpartition('.')
  (config[section] if section else config)[name] = value
  with pytest.raises(ConfigError, match=rf'^config\.{key} must be a positive number, got {value}$'):
    setup.check_config(config)


@pytest.mark.parametrize('key, value, message', [
    ('optimizer.name', 'adam', "config.optimizer.name must be 'sgd' or 'adamw', got 'adam'"),
    ('schedule.name', 'cosine', "config.schedule.name must be 'piecewise' or 'warmup_cosine'"),
    ('optimizer.layer_decay', 2.0, r'config.optimizer.layer_decay must be in \(0, 1\]'),
    ('checkpoint.best_metric', 'top1', "best_metric must be '' or a validation metric: val_top1"),
    ('checkpoint.best_metric', 'val_ema_top1', "best_metric='val_ema_top1' needs the EMA"),
])
def test_optimizer_schedule_and_best_metric_are_checked_before_the_run(key, value, message):
  """Before: a traceback when the optimizer is built, or a KeyError at the first validation."""
  from configs import demo
  from laps_jax.train import setup
  from laps_jax.train.errors import ConfigError
  config = demo.get_config()
  section, _, name = key.rpartition('.')
  config[section][name] = value
  with pytest.raises(ConfigError, match=message):
    setup.check_config(config)


def test_mesh_shape_must_be_integers():
  from configs import demo
  from laps_jax.train import setup
  from laps_jax.train.errors import ConfigError
  config = demo.get_config()
  config.mesh_shape = ('abc',)
  with pytest.raises(ConfigError, match=r"config.mesh_shape must be integers .*\('abc',\)"):
    setup.check_config(config)


def test_a_model_construction_error_is_a_config_error():
  from flax import nnx
  from configs import demo
  from laps_jax import models
  from laps_jax.train.errors import ConfigError
  config = demo.get_config()  # LAPS, leap levels up to 3: num_frames a multiple of 8
  config.model.num_frames = 12
  with pytest.raises(ConfigError, match=r'^config.model \(laps\): leap level 3 needs the number of '
                     r'frames to be divisible by 2\*\*3 = 8, but num_frames = 12'):
    nnx.eval_shape(lambda: models.build(config.model, nnx.Rngs(0)))


def _bad_weight_files(tmp_path):
  """{case: (source, path, what the one-line error must say)} of files that are not checkpoints."""
  import numpy as np
  folder = tmp_path / 'folder.pth'
  folder.mkdir()
  (tmp_path / 'text.pth').write_text('hello, not a checkpoint\n')
  (tmp_path / 'empty.pth').write_bytes(b'')
  (tmp_path / 'random.pth').write_bytes(np.random.default_rng(0).bytes(4096))
  (tmp_path / 'text.npz').write_text('not an npz\n')
  (tmp_path / 'random.safetensors').write_bytes(np.random.default_rng(1).bytes(100))
  np.savez(tmp_path / 'truncated.npz', a=np.zeros(1000))
  data = (tmp_path / 'truncated.npz').read_bytes()
  (tmp_path / 'truncated.npz').write_bytes(data[:len(data) // 2])
  pytorch = 'is not a PyTorch checkpoint (expected a zip or legacy torch.save file)'
  return {
      'text': ('laps-pytorch', tmp_path / 'text.pth', f"text.pth {pytorch}; it starts with b'hello, n'"),
      'empty': ('laps-pytorch', tmp_path / 'empty.pth', 'empty.pth is empty (0 bytes), not a PyTorch '
                'checkpoint'),
      'random': ('lvt-pytorch', tmp_path / 'random.pth', f'random.pth {pytorch}'),
      'folder': ('laps-pytorch', folder, 'folder.pth is a directory, not a PyTorch checkpoint'),
      'not npz': ('vit-npz', tmp_path / 'text.npz', 'text.npz is not a .npz archive (expected a zip '
                  'of .npy arrays'),
      'folder npz': ('vit-npz', folder, 'folder.pth is a directory, not a .npz archive'),
      'truncated npz': ('vit-npz', tmp_path / 'truncated.npz', 'truncated.npz is a damaged or '
                        'truncated .npz file (BadZipFile'),
      'random safetensors': ('timm', tmp_path / 'random.safetensors', 'random.safetensors is not a '
                             '.safetensors file'),
      'missing': ('timm', tmp_path / 'missing.pth', 'missing.pth: no such file'),
  }


def test_convert_names_the_file_and_what_was_expected(tmp_path, capsys, monkeypatch):
  """Checked in a few bytes, before the model is built (and without torch)."""
  from laps_jax import convert
  monkeypatch.chdir(REPO)
  for case, (source, path, message) in _bad_weight_files(tmp_path).items():
    code = convert.main(['convert', '--config=configs/demo.py:model=vit2d', f'--source={source}',
                         f'--input={path}', f'--output={tmp_path / "out"}'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith('ERROR (') and message in err[0], (case, err)
    assert 'weights_only' not in err[0] and 'pickled' not in err[0], (case, err)
    assert not os.path.exists(tmp_path / 'out')


def test_a_refused_pickle_suggests_no_unsafe_load(tmp_path):
  """A file with pickled code is refused, naming the global, and the message does not suggest
  loading it with weights_only=False."""
  import pickle
  pytest.importorskip('torch')
  from laps_jax.weights import UnsafeCheckpointError
  from laps_jax.weights.torch_io import load_torch_file
  path = tmp_path / 'code.pth'
  path.write_bytes(pickle.dumps({'state_dict': {}, 'x': os.system}, protocol=2))
  with pytest.raises(UnsafeCheckpointError, match='refusing to load') as info:
    load_torch_file(str(path))
  assert 'system' in str(info.value) and 'weights_only' not in str(info.value)


def test_a_damaged_pytorch_checkpoint_is_named(tmp_path):
  torch = pytest.importorskip('torch')
  from laps_jax.weights import WeightImportError
  from laps_jax.weights.torch_io import load_torch_file
  for name, legacy in (('zip.pth', False), ('legacy.pth', True)):
    path = tmp_path / name
    torch.save({'w': torch.zeros(1000)}, path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(WeightImportError, match=f'{name} is a damaged or truncated PyTorch file'):
      load_torch_file(str(path))


def test_convert_lists_depth_and_width_mismatches_at_once(tmp_path, capsys, monkeypatch):
  """A checkpoint with fewer and narrower blocks than the config: one message has the missing
  blocks and the shapes that do not fit (not the width only after the depth is fixed)."""
  import numpy as np
  import safetensors.numpy
  import reference_numpy as ref
  from laps_jax import convert
  monkeypatch.chdir(REPO)
  tensors = ref.random_timm_vit(np.random.default_rng(0), hidden=32, layers=2, heads=4, mlp=64,
                                patch=8, image=32, classes=6)  # the demo's model: 4 blocks, width 64
  path = str(tmp_path / 'vit.safetensors')
  safetensors.numpy.save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}, path)
  assert convert.main(['convert', '--config=configs/demo.py:model=vit2d', '--source=timm',
                       f'--input={path}', f'--output={tmp_path / "out"}']) == 1
  err = capsys.readouterr().err
  assert 'missing in the checkpoint (24)' in err and 'blocks.3.mlp.fc1.weight' in err
  assert 'the checkpoint has 2 blocks, the model config num_layers=4' in err
  assert ('blocks/0/mlp/fc1/kernel: checkpoint (32, 64) (from blocks.0.mlp.fc1.weight), model '
          '(64, 128)  (check model.mlp_dim)') in err
  assert 'patch_embed/kernel: checkpoint (8, 8, 3, 32)' in err
  assert 'pos_embed' not in err  # interpolated after reading, not a mismatch


def test_convert_config_errors_are_one_line(tmp_path, capsys, monkeypatch):
  from laps_jax import convert
  monkeypatch.chdir(REPO)
  (tmp_path / 'x.pth').write_bytes(b'PK\x03\x04' + bytes(100))  # passes the first look
  for extra, message in (
      ('--config.model.num_layer=3', "ERROR (ConfigError): --config.model.num_layer=3: the config has "
       "no key 'model.num_layer'; did you mean 'model.num_layers'?"),
      ('--config.model.num_frames=12', 'ERROR (ConfigError): config.model (laps): leap level 3 needs '
       'the number of frames to be divisible by 2**3 = 8, but num_frames = 12')):
    code = convert.main(['convert', '--config=configs/demo.py', '--source=timm',
                         f'--input={tmp_path / "x.pth"}', f'--output={tmp_path / "out"}', extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (1, 2) and err == [message], err


@pytest.fixture(scope='module')
def exported_tiny_model(tmp_path_factory):
  """A tiny exported vit2d (laps_jax.checkpoints format)."""
  from flax import nnx
  from conftest import make_tiny_config
  from laps_jax import checkpoints, models
  config = make_tiny_config('unused', 'vit2d').model
  path = str(tmp_path_factory.mktemp('exported') / 'model')
  checkpoints.save_model(path, models.build(config, nnx.Rngs(0)), config)
  return path


def _broken_model(exported, tmp_path, how) -> str:
  import glob
  import json
  import shutil
  path = str(tmp_path / how)
  shutil.copytree(exported, path)
  config_path = os.path.join(path, 'model_config.json')
  if how == 'not json':
    with open(config_path, 'w') as f:
      f.write('{not json')
  elif how in ('unknown key', 'other width'):
    with open(config_path) as f:
      config = json.load(f)
    config.update({'colour': 1} if how == 'unknown key' else {'hidden_size': 64, 'mlp_dim': 128})
    with open(config_path, 'w') as f:
      json.dump(config, f)
  elif how == 'no params':
    shutil.rmtree(os.path.join(path, 'params'))
  elif how == 'damaged params':
    for name in glob.glob(os.path.join(path, 'params', '*')):
      if os.path.isfile(name) and not name.endswith('commit_success.txt'):
        os.remove(name)  # the metadata and manifest
  return path


@pytest.mark.parametrize('how, message', [
    ('missing', 'missing is not an exported model: model_config.json is missing'),
    ('not json', "ERROR (ModelLoadError): --model={path}: model_config.json is not valid JSON "
     "(Expecting property name"),
    ('unknown key', "ERROR (ModelLoadError): --model={path} does not load: model config for "
     "name='vit2d': unknown keys ['colour']"),
    ('other width', 'ERROR (ModelLoadError): --model={path} does not load: blocks/0/'),
    ('no params', 'ERROR (FileNotFoundError): {path} is not an exported model: params/ is missing'),
    ('damaged params', 'ERROR (ModelLoadError): --model={path}: its parameters (params/) do not '
     'restore, damaged or incomplete'),
])
def test_predict_names_a_model_that_does_not_load(exported_tiny_model, tmp_path, capsys, how,
                                                  message):
  from laps_jax import predict
  path = str(tmp_path / 'missing') if how == 'missing' else _broken_model(exported_tiny_model,
                                                                          tmp_path, how)
  assert predict.main(['predict', f'--model={path}', str(tmp_path / 'video.mp4')]) == 1
  err = [line for line in capsys.readouterr().err.strip().splitlines()
         if not line.startswith('WARNING:absl:')]  # Orbax's own warning about the metadata
  assert len(err) == 1 and message.format(path=path) in err[0], err


@pytest.mark.parametrize('args, message', [
    (['--mean=0.5,0.5'], "ERROR (ValueError): --mean takes 3 numbers (R,G,B of x / 255), got '0.5,0.5'"),
    (['--test_crops=2'], "ERROR (ValueError): --test_crops (or the data config's test_crops) must "
     "be 1 or 3, got 2"),
    (['--test_clips=0'], "ERROR (ValueError): --test_clips (or the data config's test_clips) must "
     "be >= 1, got 0"),
    (['--batch_size=0'], 'ERROR (ValueError): --batch_size must be >= 1, got 0'),
    (['--config=configs/demo.py', '--config.dta.name=x'], "ERROR (ConfigError): --config.dta.name=x: "
     "the config has no key 'dta.name'; did you mean 'data.name'?"),
    (['--config=configs/nope.py'], "ERROR (ConfigError): --config=configs/nope.py: no config file "
     "'configs/nope.py'"),
])
def test_predict_flag_errors_are_one_line(exported_tiny_model, tmp_path, capsys, monkeypatch, args,
                                          message):
  from laps_jax import predict
  monkeypatch.chdir(REPO)
  code = predict.main(['predict', f'--model={exported_tiny_model}', *args, str(tmp_path / 'v.mp4')])
  err = capsys.readouterr().err.strip().splitlines()
  assert code in (1, 2) and len(err) == 1 and message in err[0], err


def test_export_names_what_does_not_load(trained_workdir, tmp_path, capsys):
  """A config.json that is not JSON, a workdir without a finished checkpoint, a damaged latest
  checkpoint: one line each, naming the file or the step (and the steps that are there)."""
  from laps_jax import export
  bad_json = tmp_path / 'bad_json'
  bad_json.mkdir()
  (bad_json / 'config.json').write_text('{not json')
  no_checkpoint = tmp_path / 'no_checkpoint'
  no_checkpoint.mkdir()
  with open(os.path.join(trained_workdir, 'config.json')) as f:
    (no_checkpoint / 'config.json').write_text(f.read())
  damaged = _copy(trained_workdir, tmp_path)
  _damage(damaged, 6, 'truncated_array')
  with pytest.raises(ValueError, match=r'bad_json/config.json is not valid JSON \(Expecting'):
    export.export(str(bad_json), str(tmp_path / 'out'))
  with pytest.raises(FileNotFoundError, match='no_checkpoint holds no finished checkpoint'):
    export.export(str(no_checkpoint), str(tmp_path / 'out'))
  with pytest.raises(export.DamagedCheckpointError,
                     match=r'the checkpoint at step 6 does not restore, damaged or incomplete '
                           r'\(.*\); export another with --step=N \(finished steps: \[3, 6\]\)'):
    export.export(damaged, str(tmp_path / 'out'))
  assert export.export(damaged, str(tmp_path / 'out'), step=3) == 3
