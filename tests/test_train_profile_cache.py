"""The profiler traces once, at config.profile_first_step (not again every hour); the persistent
compilation cache (config.compilation_cache_dir, on by default) lands in the user's cache dir."""
import jax
import pytest

from laps_jax.train import compilation_cache, metrics
from laps_jax.train.errors import ConfigError


def test_profile_triggers_once_at_the_configured_step(tmp_path):
  _, hooks = metrics.create_hooks(None, num_train_steps=100, every_steps=10, profile_steps=3,
                                  logdir=str(tmp_path), profile_first_step=7)
  profile = hooks[-1]
  profile._previous_time, profile._last_step = 0.0, 0  # as after its first call
  hours = 3600.0
  fired = [step for step in range(1, 101) if profile._should_trigger(step, t=step * 2 * hours)]
  assert fired == [7]


def test_compilation_cache_dir_rules(monkeypatch, tmp_path):
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert compilation_cache.cache_dir('auto') == str(tmp_path / 'xdg' / 'laps_jax' / 'jax')
  assert compilation_cache.cache_dir('') == ''
  assert compilation_cache.cache_dir(str(tmp_path / 'mine')) == str(tmp_path / 'mine')
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'env'))
  assert compilation_cache.cache_dir('auto') == str(tmp_path / 'env')  # the environment wins
  before = jax.config.jax_compilation_cache_dir
  try:
    assert compilation_cache.enable(str(tmp_path / 'on')) == str(tmp_path / 'on')
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'on') and (tmp_path / 'on').is_dir()
  finally:
    jax.config.update('jax_compilation_cache_dir', before)


def test_a_cache_directory_that_cannot_be_created(tmp_path, monkeypatch):
  """A named directory is a ConfigError naming the key; 'auto' falls back to no cache."""
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  with pytest.raises(ConfigError, match='config.compilation_cache_dir'):
    compilation_cache.enable(str(blocker / 'cache'))
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(blocker))
  assert compilation_cache.enable('auto') == ''
