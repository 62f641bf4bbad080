"""Shared test fixtures: the generated synthetic dataset (once per session), a tiny run config, and
a runner for subprocesses that need several (simulated) devices or a fresh JAX."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def synthetic_data_dir(tmp_path_factory) -> str:
  """A data_dir holding `synthetic_motion`, generated once per test session (set
  LAPS_JAX_TEST_DATA_DIR to reuse one across sessions)."""
  from laps_jax.data import pipeline
  data_dir = os.environ.get('LAPS_JAX_TEST_DATA_DIR') or str(tmp_path_factory.mktemp('tfds'))
  config = pipeline.default_config()
  config.data_dir = data_dir
  pipeline.ensure_prepared(config)
  return data_dir


def make_tiny_config(data_dir: str, model: str = 'laps'):
  """configs/demo.py shrunk for tests: 2 layers, width 32, 2 heads, 4 frames of 16², batch 8."""
  sys.path.insert(0, os.path.join(REPO, 'configs'))
  try:
    import demo  # configs/demo.py
  finally:
    sys.path.pop(0)
  config = demo.get_config(f'model={model}')
  config.model.update(dict(image_size=16, patch_size=8, hidden_size=32, num_layers=2, num_heads=2,
                           mlp_dim=64, num_frames=4))
  if model == 'laps':
    config.model.leap_levels = (1, 2)
  config.data.update(dict(data_dir=data_dir, num_frames=4, image_size=16, scale_jitter=(16, 20),
                          test_short_side=16, test_clips=2, test_crops=1, num_workers=0))
  config.batch_size = 8
  config.total_steps = 6
  config.log_every_steps = 1
  config.eval.update(dict(every_steps=0, batch_size=40, max_batches=1))
  config.test.update(dict(at_end=False, batch_size=40))
  config.checkpoint.update(dict(every_steps=3, keep=10))
  return config


@pytest.fixture
def tiny_config(synthetic_data_dir):
  """A factory of tiny run configs on the session's synthetic data."""
  return lambda model='laps': make_tiny_config(synthetic_data_dir, model)


def run_python(args, *, devices: int = 1, timeout: float = 600, check: bool = True, **popen_kwargs):
  """Runs `python ARGS...` in the repo with `devices` simulated CPU devices; returns the
  CompletedProcess (stdout/stderr as text)."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, **popen_kwargs)
  if check and result.returncode != 0:
    raise AssertionError(f'python {" ".join(args)[:200]} failed ({result.returncode}):\n'
                         f'{result.stdout[-3000:]}\n{result.stderr[-6000:]}')
  return result


def python_env(devices: int = 1) -> dict:
  """The environment `run_python` uses (for tests that manage the process themselves)."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  return env
