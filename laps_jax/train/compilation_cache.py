"""JAX's persistent compilation cache: a resumed or repeated run loads its compiled steps from disk
instead of compiling ViT-B/L again (`config.compilation_cache_dir`).

'auto' (the default): $JAX_COMPILATION_CACHE_DIR when set, else <user cache dir>/laps_jax/jax
($XDG_CACHE_HOME or ~/.cache). '' turns the cache off; any other value is the directory.
The cache only saves time: an 'auto' directory that cannot be created (a read-only home) is a
warning and the run goes on without it; a directory the user named is a ConfigError naming the key.
"""
import os

import jax
from absl import logging

from laps_jax.train.errors import ConfigError


def cache_dir(setting: str) -> str:
  """The directory `config.compilation_cache_dir` = `setting` names ('' for none)."""
  if setting != 'auto':
    return os.path.expanduser(setting)
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  user_cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(user_cache, 'laps_jax', 'jax')


def enable(setting: str) -> str:
  """Points JAX's persistent compilation cache at `cache_dir(setting)`; returns the directory."""
  directory = cache_dir(setting)
  if directory:
    try:
      os.makedirs(directory, exist_ok=True)
    except OSError as e:
      if setting != 'auto':
        raise ConfigError(f'config.compilation_cache_dir={setting!r}: cannot create the directory '
                          f'({e.strerror}); set another, or \'\' for no cache') from None
      logging.warning('No JAX compilation cache: cannot create %s (%s).', directory, e.strerror)
      return ''
    jax.config.update('jax_compilation_cache_dir', directory)
    logging.info('JAX compilation cache: %s', directory)
  return directory
