"""Reading a flat {name: array} weight file by its suffix, without torch where possible.

  .safetensors          -> the `safetensors` package (no torch; no code can run: the format is a
                           JSON header plus raw bytes). bfloat16/float16 tensors become float32.
  .pth / .pth.tar / .bin / .pt -> torch_io (torch, weights_only=True).
  .npz                  -> NumPy (allow_pickle=False).
"""
import json
import os
import struct
import zipfile

import ml_dtypes
import numpy as np

from laps_jax.weights import torch_io
from laps_jax.weights.errors import WeightImportError, damaged, not_a, read_head

TORCH_SUFFIXES = ('.pth', '.pth.tar', '.bin', '.pt', '.tar')


def _read_safetensors_raw(path: str, names: list[str]) -> dict[str, np.ndarray]:
  """Tensors NumPy cannot name (bfloat16) straight from the file: 8-byte header length, JSON
  header {name: {dtype, shape, data_offsets}}, then the raw little-endian data."""
  dtypes = {'BF16': ml_dtypes.bfloat16, 'F16': np.float16, 'F32': np.float32, 'F64': np.float64}
  with open(path, 'rb') as f:
    (header_len,) = struct.unpack('<Q', f.read(8))
    header = json.loads(f.read(header_len))
    base = 8 + header_len
    out = {}
    for name in names:
      info = header[name]
      if info['dtype'] not in dtypes:
        raise WeightImportError(f'{path}: tensor {name} has unsupported dtype {info["dtype"]}')
      start, end = info['data_offsets']
      f.seek(base + start)
      data = np.frombuffer(f.read(end - start), dtype=np.dtype(dtypes[info['dtype']]).newbyteorder('<'))
      out[name] = data.reshape(info['shape']).astype(np.float32)
  return out


SAFETENSORS_FILE = 'a .safetensors file (an 8-byte header length, a JSON header, the tensor bytes)'
NPZ_FILE = 'a .npz archive (expected a zip of .npy arrays, as numpy.savez writes)'


def check_safetensors_file(path: str) -> bytes:
  head = read_head(path, SAFETENSORS_FILE)
  if head[8:9] != b'{':  # the JSON header starts after its 8-byte length
    raise not_a(path, SAFETENSORS_FILE, head)
  return head


def check_npz_file(path: str) -> bytes:
  head = read_head(path, NPZ_FILE)
  if not head.startswith(b'PK\x03\x04'):
    raise not_a(path, NPZ_FILE, head)
  return head


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """{name: float array} from a .safetensors file; half-precision tensors become float32."""
  from safetensors import SafetensorError, safe_open  # pylint: disable=g-import-not-at-top
  check_safetensors_file(path)
  out, raw = {}, []
  try:
    with safe_open(path, framework='numpy') as f:
      for name in f.keys():
        if f.get_slice(name).get_dtype() == 'BF16':
          raw.append(name)
        else:
          array = f.get_tensor(name)
          out[name] = array.astype(np.float32) if array.dtype == np.float16 else array
    out.update(_read_safetensors_raw(path, raw))
  except (SafetensorError, ValueError, KeyError, struct.error) as e:
    if isinstance(e, WeightImportError):
      raise
    raise damaged(path, '.safetensors', e) from None
  return out


def read_npz(path: str) -> dict[str, np.ndarray]:
  """{name: array} of a .npz file; numeric arrays only (no pickled objects are loaded)."""
  check_npz_file(path)
  try:
    with np.load(path, allow_pickle=False) as data:
      out = {}
      for name in data.files:
        try:
          out[name] = data[name]
        except ValueError as e:  # an object array: loading it would unpickle
          if 'allow_pickle' not in str(e):
            raise
          raise WeightImportError(f'{path}: the array {name!r} holds pickled Python objects, which '
                                  'are not loaded; expected numeric arrays') from None
      return out
  except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
    if isinstance(e, WeightImportError):
      raise
    raise damaged(path, '.npz', e) from None


def _reader(path: str):
  """(check, read) of the file type `path`'s suffix names."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no such file')
  lower = path.lower()
  if lower.endswith('.safetensors'):
    return check_safetensors_file, read_safetensors
  if lower.endswith('.npz'):
    return check_npz_file, read_npz
  if lower.endswith(TORCH_SUFFIXES):
    return torch_io.check_torch_file, torch_io.read_torch_state_dict
  raise WeightImportError(f'{path}: unknown weight file type; expected .safetensors, .npz or a PyTorch '
                          f'file ({", ".join(TORCH_SUFFIXES)})')


def check_state_dict_file(path: str) -> None:
  """Whether `path` looks like the weight file its suffix names (reads a few bytes); the error
  `read_state_dict_file` would raise for a missing, empty or foreign file otherwise."""
  _reader(path)[0](path)


def read_state_dict_file(path: str) -> dict[str, np.ndarray]:
  """The flat {name: array} of a .safetensors / .npz / PyTorch file."""
  return _reader(path)[1](path)
