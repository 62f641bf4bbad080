"""Prepared datasets on disk: the check that one is there (generating `synthetic_motion` under a
file lock when missing), its size, class names and random-access source."""

from __future__ import annotations

import fcntl
import logging
import os

from laps_jax.data import frame_records
from laps_jax.data import registry

log = logging.getLogger(__name__)

PREPARE_COMMAND = ('python -m laps_jax.data.prepare --dataset={name} --manual_dir=DIR '
                   '--data_dir={data_dir}')


class DatasetNotPreparedError(RuntimeError):
  """The dataset is not in data_dir; the message holds the command that prepares it."""


def _builder(data_config):
  return registry.get_builder(data_config.name, data_config.data_dir)


def _older_versions(data_config) -> list[str]:
  """Versions of the dataset prepared in data_dir by earlier builders (folder names)."""
  folder = os.path.join(os.path.expanduser(data_config.data_dir), data_config.name)
  current = str(registry.get_builder(data_config.name, data_config.data_dir).version)
  if not os.path.isdir(folder):
    return []
  return sorted(v for v in os.listdir(folder) if v != current and
                os.path.exists(os.path.join(folder, v, 'dataset_info.json')))


def _not_prepared_error(data_config) -> DatasetNotPreparedError:
  command = PREPARE_COMMAND.format(name=data_config.name,
                                   data_dir=os.path.expanduser(data_config.data_dir))
  builder = _builder(data_config)
  older = _older_versions(data_config)
  if older:
    return DatasetNotPreparedError(
        f'dataset {data_config.name!r} in {data_config.data_dir} was prepared by builder version '
        f'{", ".join(older)}, whose layout this code no longer reads: version {builder.version} '
        f'stores one record per frame, so that a clip reads only its frames '
        f'({builder.RELEASE_NOTES.get(str(builder.version), "")}). Prepare it again with\n  '
        f'{command}\n(the same manual DIR as before), then delete the old folder(s) '
        f'{", ".join(os.path.join(data_config.data_dir, data_config.name, v) for v in older)}.')
  return DatasetNotPreparedError(
      f'dataset {data_config.name!r} is not prepared in {data_config.data_dir}. Prepare it once '
      f'with\n  {command}\nwhere DIR holds the downloaded videos and annotations (layout: '
      f'{registry.MODULES[data_config.name]}).')


def ensure_prepared(data_config) -> None:
  """Generates `synthetic_motion` when missing; any other missing dataset raises
  DatasetNotPreparedError with the prepare command.

  Safe to call from several local processes at once (a file lock serialises the generation).
  """
  builder = _builder(data_config)
  if builder.is_prepared():
    return
  if data_config.name != 'synthetic_motion':
    raise _not_prepared_error(data_config)
  from laps_jax.data import prepare  # pylint: disable=g-import-not-at-top
  data_dir = os.path.expanduser(data_config.data_dir)
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, '.synthetic_motion.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if not _builder(data_config).is_prepared():
        log.info('generating synthetic_motion in %s (a few seconds)', data_dir)
        prepare.prepare('synthetic_motion', data_dir)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def prepared_builder(data_config):
  """The TFDS builder of a prepared dataset; DatasetNotPreparedError otherwise."""
  builder = _builder(data_config)
  if not builder.is_prepared():
    raise _not_prepared_error(data_config)
  return builder


def _split_info(builder, split: str):
  if split not in builder.info.splits:
    raise ValueError(f'{builder.name} has no split {split!r}; it has '
                     f'{sorted(builder.info.splits.keys())}')
  return builder.info.splits[split]


def num_examples(data_config, split: str) -> int:
  """Examples in `split` of the prepared dataset (all processes together)."""
  return _split_info(prepared_builder(data_config), split).num_examples


def label_names(data_config) -> list[str]:
  """Class names, index = label id."""
  return list(prepared_builder(data_config).info.features['label'].names)


def data_source(data_config, split: str):
  """Random access to the stored examples of `split` (`tfds.data_source`, ArrayRecord); each
  example's 'frames' is a sequence of JPEG bytes (read on demand in the frame-record layout)."""
  builder = prepared_builder(data_config)
  _split_info(builder, split)
  return frame_records.open_split(builder, split)
