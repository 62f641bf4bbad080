"""Dataset name -> TFDS builder class, and where a prepared dataset lives on disk."""

from __future__ import annotations

import os

from laps_jax.data import builder_common
from laps_jax.data import kinetics
from laps_jax.data import ssv2
from laps_jax.data import synthetic_motion

BUILDERS: dict[str, type[builder_common.VideoDatasetBuilder]] = {
    'synthetic_motion': synthetic_motion.SyntheticMotion,
    'kinetics400': kinetics.Kinetics400,
    'kinetics600': kinetics.Kinetics600,
    'kinetics700': kinetics.Kinetics700,
    'ssv2': ssv2.Ssv2,
}

# The module whose docstring documents each dataset's manual directory.
MODULES = {
    'synthetic_motion': 'laps_jax/data/synthetic_motion.py',
    'kinetics400': 'laps_jax/data/kinetics.py',
    'kinetics600': 'laps_jax/data/kinetics.py',
    'kinetics700': 'laps_jax/data/kinetics.py',
    'ssv2': 'laps_jax/data/ssv2.py',
}


def builder_class(name: str) -> type[builder_common.VideoDatasetBuilder]:
  if name not in BUILDERS:
    raise ValueError(f'unknown dataset {name!r}; known: {sorted(BUILDERS)}')
  return BUILDERS[name]


def get_builder(name: str, data_dir: str, **kwargs) -> builder_common.VideoDatasetBuilder:
  """The builder of `name` over `data_dir` (kwargs: builder options, used when preparing)."""
  return builder_class(name)(data_dir=os.path.expanduser(data_dir), **kwargs)


def dataset_dir(name: str, data_dir: str) -> str:
  """<data_dir>/<name>/<version>: the prepared files, `dataset_info.json` and the skip lists."""
  return os.path.join(os.path.expanduser(data_dir), name, str(builder_class(name).VERSION))
