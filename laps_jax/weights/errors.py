"""The one error type of weight import: what did not fit, listed in full."""


class WeightImportError(ValueError):
  """A checkpoint does not fit the model config: missing or left-over keys, or wrong shapes.

  The message lists every problem (names and shapes), and where a config setting would fix it,
  names the setting.
  """


class UnsafeCheckpointError(WeightImportError):
  """A PyTorch file holds pickled objects other than tensors and plain containers (code could run)."""
