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


# =============================================================================================
# 2. Damaged state
# =============================================================================================


# =============================================================================================
# 3. Bad input
# =============================================================================================


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
