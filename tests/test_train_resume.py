"""Preemption and resumption: a run stopped by SIGTERM, then killed with SIGKILL, then resumed
gives exactly the losses and the final parameters of the run that was never interrupted (model,
optimizer with gradient accumulation, dropout RNG and data-iterator position all restored)."""
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from conftest import REPO, python_env, read_scalars, run_python, write_config_file
from laps_jax import checkpoints
from laps_jax.train import checkpointing, preemption

TOTAL_STEPS = 20
CHECKPOINT_EVERY = 3


def _config(tiny_config):
  config = tiny_config()
  config.total_steps = TOTAL_STEPS
  config.model.dropout_rate = 0.1  # the dropout RNG stream must be restored too
  config.optimizer.grad_accum_steps = 2  # and optax.MultiSteps' accumulator
  config.data.num_workers = 1  # and the position of a multi-process grain loader
  config.checkpoint.every_steps = CHECKPOINT_EVERY
  config.schedule.update(dict(base_lr=1e-2, warmup_epochs=0.0))  # the loss moves from step 2 on
  return config


def _start(config_path, workdir):
  log = open(os.path.join(os.path.dirname(workdir), os.path.basename(workdir) + '.log'), 'a')
  # A process group of its own: the preemption signal goes to the whole group (the trainer and its
  # data-loader worker), as schedulers and `timeout` send it.
  return subprocess.Popen([sys.executable, 'main.py', f'--config={config_path}', f'--workdir={workdir}'],
                          cwd=REPO, env=python_env(), stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True), log.name


def _wait_for(condition, process, timeout=300):
  start = time.monotonic()
  while not condition():
    assert process.poll() is None, 'the run ended before the test could interrupt it'
    assert time.monotonic() - start < timeout, 'timed out'
    time.sleep(0.05)


def _logged_steps(log_path) -> int:
  with open(log_path) as f:
    steps = [int(s) for s in re.findall(r'\] \[(\d+)\] .*\bloss=', f.read())]
  return max(steps, default=0)


def test_preempted_and_killed_run_continues_exactly(tiny_config, tmp_path):
  config_path = write_config_file(tmp_path / 'tiny.py', _config(tiny_config))
  reference, resumed = str(tmp_path / 'reference'), str(tmp_path / 'resumed')

  # 1. SIGTERM (preemption) to the process group once a few steps are done: the run saves the
  # last finished step and exits with the preemption code (the data worker ignores SIGTERM).
  process, log = _start(config_path, resumed)
  _wait_for(lambda: _logged_steps(log) >= 2, process)
  os.killpg(process.pid, signal.SIGTERM)
  assert process.wait(timeout=300) == preemption.DEFAULT_EXIT_CODE
  with open(log) as f:
    preempted_at = int(re.search(r'Preempted: saved the checkpoint at step (\d+)', f.read()).group(1))
  assert 2 <= preempted_at < TOTAL_STEPS - CHECKPOINT_EVERY

  # 2. Resume, then SIGKILL (no chance to save) once a later periodic checkpoint exists.
  process, log = _start(config_path, resumed)
  manager_dir = os.path.join(resumed, checkpointing.CHECKPOINT_DIR)
  later = (preempted_at // CHECKPOINT_EVERY + 1) * CHECKPOINT_EVERY
  _wait_for(lambda: os.path.exists(os.path.join(manager_dir, str(later), 'model')), process)
  process.kill()
  process.wait()

  # 3. Resume again and finish; meanwhile the reference run goes from start to end untouched.
  run_python(['main.py', f'--config={config_path}', f'--workdir={resumed}'])
  run_python(['main.py', f'--config={config_path}', f'--workdir={reference}'])

  expected = dict(read_scalars(reference, 'loss'))
  assert sorted(expected) == list(range(1, TOTAL_STEPS + 1))
  assert len(set(round(v, 3) for v in expected.values())) > 5  # the loss does move
  got = read_scalars(resumed, 'loss')
  assert {step for step, _ in got} == set(expected)
  assert len(got) > TOTAL_STEPS  # steps after the last checkpoint were run twice ...
  for step, value in got:  # ... and every repetition gave the same loss
    assert value == expected[step], (step, value, expected[step])

  final = [checkpoints.flatten_params(
      checkpointing.Checkpointer(d, keep=100).restore_model_arrays(TOTAL_STEPS)) for d in (reference, resumed)]
  assert final[0].keys() == final[1].keys()
  for name in final[0]:  # parameters and the dropout RNG state
    np.testing.assert_array_equal(_numpy(final[0][name]), _numpy(final[1][name]), err_msg=name)


def _numpy(x):
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  return np.asarray(x)
