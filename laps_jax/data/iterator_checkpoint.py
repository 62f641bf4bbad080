"""Orbax arguments that save / restore a grain train iterator with the training checkpoint.

The iterator's state is a small JSON (positions per worker); each process writes
`process_<i>-of-<n>.json` in the `data_iter` item folder. A restored iterator continues exactly
where the saved one stopped (with the same num_workers; grain checks it).
"""


def save_args(iterator):
  """Orbax args that save a train iterator's state (grain.checkpoint.CheckpointSave)."""
  import grain  # pylint: disable=g-import-not-at-top
  return grain.checkpoint.CheckpointSave(iterator)


def restore_args(iterator):
  """Orbax args that restore into `iterator` in place (grain.checkpoint.CheckpointRestore)."""
  import grain  # pylint: disable=g-import-not-at-top
  return grain.checkpoint.CheckpointRestore(iterator)
