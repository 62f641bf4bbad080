"""Reading a flat {name: array} weight file by its suffix, without torch where possible.

  .safetensors          -> the `safetensors` package (no torch; no code can run: the format is a
                           JSON header plus raw bytes). bfloat16/float16 tensors become float32.
  .pth / .pth.tar / .bin / .pt -> torch_io (torch, weights_only=True).
  .npz                  -> NumPy (allow_pickle=False).
"""
import json
import os
import struct

import ml_dtypes
import numpy as np

from laps_jax.weights import torch_io
from laps_jax.weights.errors import WeightImportError

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


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """{name: float array} from a .safetensors file; half-precision tensors become float32."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  out, raw = {}, []
  with safe_open(path, framework='numpy') as f:
    for name in f.keys():
      if f.get_slice(name).get_dtype() == 'BF16':
        raw.append(name)
      else:
        array = f.get_tensor(name)
        out[name] = array.astype(np.float32) if array.dtype == np.float16 else array
  out.update(_read_safetensors_raw(path, raw))
  return out


def read_npz(path: str) -> dict[str, np.ndarray]:
  with np.load(path, allow_pickle=False) as data:
    return {name: data[name] for name in data.files}


def read_state_dict_file(path: str) -> dict[str, np.ndarray]:
  """The flat {name: array} of a .safetensors / .npz / PyTorch file."""
  if not os.path.exists(path):
    raise FileNotFoundError(path)
  lower = path.lower()
  if lower.endswith('.safetensors'):
    return read_safetensors(path)
  if lower.endswith('.npz'):
    return read_npz(path)
  if lower.endswith(TORCH_SUFFIXES):
    return torch_io.read_torch_state_dict(path)
  raise WeightImportError(f'{path}: unknown weight file type; expected .safetensors, .npz or a PyTorch '
                          f'file ({", ".join(TORCH_SUFFIXES)})')
