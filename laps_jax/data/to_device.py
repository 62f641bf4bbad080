"""Host batches -> global jax.Arrays on the mesh, split over the batch axes."""

from __future__ import annotations

from typing import Mapping

import numpy as np


def to_global(batch: Mapping[str, np.ndarray], mesh, batch_axes=None) -> dict:
  """Local batch parts of all processes -> global jax.Arrays sharded on `batch_axes` (dim 0).

  `batch_axes` defaults to `laps_jax.train.mesh.BATCH_AXES`. Mesh axes named in it but absent
  from `mesh` are ignored (a mesh without 'fsdp' is fine). The global batch is the concatenation of the processes' parts in process order.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from laps_jax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  batch_axes = mesh_lib.BATCH_AXES if batch_axes is None else batch_axes
  axes = tuple(a for a in batch_axes if a in mesh.axis_names)
  spec = jax.sharding.PartitionSpec(axes if axes else None)
  sharding = jax.sharding.NamedSharding(mesh, spec)
  return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for key, value in batch.items()}
