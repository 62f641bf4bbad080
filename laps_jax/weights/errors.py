"""The one error type of weight import: what did not fit, listed in full."""


class WeightImportError(ValueError):
  """A checkpoint does not fit the model config: missing or left-over keys, or wrong shapes.

  The message lists every problem (names and shapes), and where a config setting would fix it,
  names the setting.
  """


class UnsafeCheckpointError(WeightImportError):
  """A PyTorch file holds pickled objects other than tensors and plain containers (code could run)."""


def read_head(path: str, expected: str, size: int = 16) -> bytes:
  """The first `size` bytes of the weight file `path`, after checking that it is a non-empty
  file: FileNotFoundError or WeightImportError naming the file and `expected` ('a PyTorch
  checkpoint (...)') otherwise."""
  import os  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no such file')
  if os.path.isdir(path):
    raise WeightImportError(f'{path} is a directory, not {expected}')
  try:
    with open(path, 'rb') as f:
      head = f.read(size)
  except OSError as e:
    raise WeightImportError(f'{path}: cannot be read ({e.strerror or e}); expected {expected}') from None
  if not head:
    raise WeightImportError(f'{path} is empty (0 bytes), not {expected}')
  return head


def not_a(path: str, expected: str, head: bytes) -> WeightImportError:
  """The error for a file that is not what was expected: names the file, what was expected and
  what it starts with."""
  return WeightImportError(f'{path} is not {expected}; it starts with {head[:8]!r}')


def damaged(path: str, kind: str, error: BaseException) -> WeightImportError:
  """The error for a file of the right kind that does not read: names the file and the reader's
  complaint (its first sentence)."""
  text = str(error).strip().splitlines()
  first = text[0].split('. ')[0].rstrip('.') if text else ''
  name = type(error).__name__
  name = f'{type(error).__module__}.{name}' if name == 'error' else name  # struct.error
  return WeightImportError(f'{path} is a damaged or truncated {kind} file ({name}'
                           + (f': {first})' if first else ')'))
