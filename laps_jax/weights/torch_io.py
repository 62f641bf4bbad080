"""Reading PyTorch checkpoint files (.pth, .pth.tar, .bin) safely, as NumPy.

`torch.load` unpickles, and a pickle can run any code while loading. Files are therefore read only
with `weights_only=True`: PyTorch's restricted unpickler, which rebuilds tensors, plain containers
(dict, list, tuple, OrderedDict, Counter), numbers and strings and refuses every other global. The
only additions are NumPy scalars and dtypes (reconstructed from bytes, no code), which some
training scripts leave in their metadata (an accuracy as `np.float64`). Anything else, e.g. a
`__reduce__` that calls `os.system`, is refused with an `UnsafeCheckpointError` before it runs.

torch is an optional dependency (`pip install torch==2.13.0`, CPU wheel is enough): it is imported
here, inside the functions, only when a PyTorch file is read.
"""
import pickle
import struct

import numpy as np

from laps_jax.weights.errors import UnsafeCheckpointError, WeightImportError, damaged, not_a, read_head


def _import_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('reading PyTorch checkpoints (.pth, .pth.tar, .bin) needs torch, an optional '
                      'dependency: pip install torch==2.13.0 (the CPU wheel is enough), or convert '
                      'the file to .safetensors') from e
  return torch


def _numpy_safe_globals():
  """NumPy scalar reconstruction, under the names NumPy 2 and NumPy 1 pickles use."""
  scalar = np._core.multiarray.scalar  # pylint: disable=protected-access
  allowed = [scalar, (scalar, 'numpy.core.multiarray.scalar'), np.dtype]
  allowed += [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith('DType')]
  return allowed


PYTORCH_FILE = 'a PyTorch checkpoint (expected a zip or legacy torch.save file)'  # for messages


def is_torch_file_head(head: bytes) -> bool:
  """Whether a file starting with `head` can be a torch.save file: a zip (torch >= 1.6), a
  legacy pickle (protocol 2 to 5) or a tar (torch < 0.4)."""
  return (head.startswith(b'PK\x03\x04') or (head[:1] == b'\x80' and head[1:2] in (b'\x02', b'\x03', b'\x04', b'\x05'))
          or head[257:262] == b'ustar')


def check_torch_file(path: str) -> bytes:
  """The first bytes of `path`, after checking that it can be a PyTorch file (no torch needed);
  FileNotFoundError or WeightImportError naming the file otherwise."""
  head = read_head(path, PYTORCH_FILE, size=512)
  if not is_torch_file_head(head):
    raise not_a(path, PYTORCH_FILE, head)
  return head


def load_torch_file(path: str):
  """The unpickled content of a PyTorch file (tensors on the CPU), with weights_only=True.

  Raises UnsafeCheckpointError (nothing of the file's code runs) if it holds other objects, and
  WeightImportError naming the file if it is not a PyTorch checkpoint or is damaged.
  """
  check_torch_file(path)
  torch = _import_torch()
  try:
    with torch.serialization.safe_globals(_numpy_safe_globals()):
      return torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    detail = [line.strip() for line in str(e).splitlines() if 'GLOBAL' in line or 'global' in line]
    if not detail:  # not a refused object: bytes the unpickler cannot read
      raise damaged(path, 'PyTorch', e) from None
    raise UnsafeCheckpointError(
        f'refusing to load {path}: it holds pickled Python objects other than tensors and plain '
        f'containers, so unpickling it could run code from the file. {detail[0].rstrip(".")}. '
        'Ask whoever published it for the state dict alone (torch.save(model.state_dict())) or a '
        '.safetensors file, and convert that.') from None
  except (EOFError, RuntimeError, ValueError, KeyError, IndexError, struct.error) as e:
    # A truncated or corrupt zip or pickle (torch raises any of these, e.g. "failed finding
    # central directory", EOFError, "pop from empty list").
    raise damaged(path, 'PyTorch', e) from None


def to_numpy(value) -> np.ndarray:
  """A torch tensor (any float dtype, bfloat16 included) as a NumPy array; float16/bfloat16
  become float32."""
  torch = _import_torch()
  if not isinstance(value, torch.Tensor):
    raise WeightImportError(f'expected a tensor, got {type(value).__name__}')
  value = value.detach().cpu()
  if value.dtype in (torch.bfloat16, torch.float16):
    value = value.float()
  return value.numpy()


def find_state_dict(checkpoint, description: str,
                    candidates: tuple[str, ...] = ('state_dict', 'model_state', 'model')) -> dict:
  """The {name: tensor} dict inside a training checkpoint: under the first of `candidates` that is
  a dict, or the checkpoint itself when its values are tensors."""
  torch = _import_torch()
  if not isinstance(checkpoint, dict):
    raise WeightImportError(f'{description}: expected a dict, got {type(checkpoint).__name__}')
  for key in candidates:
    if isinstance(checkpoint.get(key), dict):
      return checkpoint[key]
  if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
    return checkpoint
  raise WeightImportError(f'{description}: no state dict found; expected one of the keys {candidates} '
                          f'or a plain {{name: tensor}} dict, found keys {sorted(checkpoint)[:20]}')


def numpy_state_dict(state_dict: dict, description: str) -> dict[str, np.ndarray]:
  """{name: tensor} -> {name: np.ndarray}; a value that is not a tensor is an error naming it."""
  torch = _import_torch()
  not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
  if not_tensors:
    raise WeightImportError(f'{description}: state dict entries that are not tensors: {not_tensors[:20]}')
  return {k: to_numpy(v) for k, v in state_dict.items()}


def read_torch_state_dict(path: str, candidates: tuple[str, ...] = ('state_dict', 'model_state', 'model')
                          ) -> dict[str, np.ndarray]:
  """A PyTorch file's state dict as {name: np.ndarray}, read safely (see module docstring)."""
  checkpoint = load_torch_file(path)
  return numpy_state_dict(find_state_dict(checkpoint, path, candidates), path)
