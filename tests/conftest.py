"""Shared test fixtures: the generated synthetic dataset (once per session), a tiny run config, and
a runner for subprocesses that need several (simulated) devices or a fresh JAX."""
import os
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPILATION_CACHE = os.path.join(tempfile.gettempdir(), f'laps_jax_tests_jax_cache_{os.getuid()}')


SYNTHETIC_TRAIN, SYNTHETIC_VALIDATION = 256, 80  # a small synthetic_motion: generated in seconds


@pytest.fixture(scope='session')
def synthetic_data_dir(tmp_path_factory) -> str:
  """A data_dir holding a small `synthetic_motion`, generated once per test session."""
  from laps_jax.data import prepare
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  prepare.prepare('synthetic_motion', data_dir, num_train=SYNTHETIC_TRAIN,
                  num_validation=SYNTHETIC_VALIDATION, seed=0, num_processes=1)
  return data_dir


def make_tiny_config(data_dir: str, model: str = 'laps'):
  """configs/demo.py shrunk for tests: 2 layers, width 32, 2 heads, 4 frames of 16², batch 8."""
  from configs import demo  # pylint: disable=g-import-not-at-top
  config = demo.get_config(f'model={model}')
  config.model.update(dict(image_size=16, patch_size=8, hidden_size=32, num_layers=2, num_heads=2,
                           mlp_dim=64, num_frames=4))
  if model == 'laps':
    config.model.leap_levels = (1, 2)
  if model == 'lvt':
    config.model.update(dict(temporal_embed_frames=4, shift_segment_frames=4, head_mlp_dim=16))
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


def python_env(devices: int = 1) -> dict:
  """Environment for a subprocess: `devices` simulated CPU devices, the repo importable, and a
  persistent JAX compilation cache shared by the tests' subprocesses (a run that repeats an
  earlier run's compilations starts in seconds instead of tens of seconds)."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  env.setdefault('JAX_COMPILATION_CACHE_DIR', COMPILATION_CACHE)
  env.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  return env


def run_python(args, *, devices: int = 1, timeout: float = 600, check: bool = True, env=None):
  """Runs `python ARGS...` in the repo (see `python_env`); returns the CompletedProcess."""
  result = subprocess.run([sys.executable, *args], cwd=REPO, env=env or python_env(devices),
                          capture_output=True, text=True, timeout=timeout)
  if check and result.returncode != 0:
    raise AssertionError(f'python {" ".join(args)[:200]} failed ({result.returncode}):\n'
                         f'{result.stdout[-3000:]}\n{result.stderr[-6000:]}')
  return result


def write_config_file(path, config) -> str:
  """Writes `config` as a config file main.py can load (--config=PATH); returns the path."""
  with open(path, 'w') as f:
    f.write('import ml_collections\n\n\ndef get_config():\n'
            f'  return ml_collections.ConfigDict({config.to_dict()!r})\n')
  return str(path)


def read_scalars(workdir: str, tag: str) -> list[tuple[int, float]]:
  """(step, value) of every `tag` scalar in the TensorBoard event files of `workdir`, in the
  order written (a resumed run appends a new event file)."""
  import glob
  from tensorboard.backend.event_processing import event_file_loader
  from tensorboard.util import tensor_util
  values = []
  for path in sorted(glob.glob(os.path.join(workdir, 'events.out.tfevents.*')), key=os.path.getmtime):
    for event in event_file_loader.EventFileLoader(path).Load():
      for value in event.summary.value:
        if value.tag == tag:
          values.append((event.step, float(tensor_util.make_ndarray(value.tensor))))
  return values
