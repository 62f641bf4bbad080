"""Importing published weights into laps_jax models.

Sources (`import_weights(source, ...)`, or `python -m laps_jax.convert --source=...`):
  'vit-npz'       Google's ImageNet ViT `.npz` (original ViT and AugReg)  -> ViT family   vit_npz.py
  'timm'          timm ViT state dicts (.safetensors, .pth, .bin)          -> ViT family   timm_state_dict.py
  'laps-pytorch'  official LAPS `VideoNet` checkpoints (.pth.tar)          -> laps, vit2d  laps_pytorch.py
  'lvt-pytorch'   official LVT (PySlowFast) checkpoints, or the lvit_v2    -> lvt          lvt_pytorch.py
                  backbone alone (then the VVT head is new)
For model.name='visformer', 'laps-pytorch' and 'timm' read Visformer files instead: official
Visformer-LAPS `.pth.tar`, ImageNet Visformer-S (danczs/Visformer layout) and timm
`visformer_small` (visformer_pytorch.py; BatchNorm running averages included).

Every importer maps names and layouts into a `ConvertedWeights` (assign.py), which is checked
strictly against the model (a missing, left-over or mis-shaped key is a `WeightImportError`
listing all of them) and logged (what was dropped or re-initialised). PyTorch files are read with
`weights_only=True` only (torch_io.py); torch is optional and needed only for them.
"""
from flax import nnx

from laps_jax.weights import laps_pytorch, lvt_pytorch, tensor_files, timm_state_dict, torch_io
from laps_jax.weights import visformer_pytorch, vit_npz
from laps_jax.weights.assign import ConvertedWeights, assign_converted
from laps_jax.weights.errors import UnsafeCheckpointError, WeightImportError

CONVERTERS = {
    'vit-npz': vit_npz.convert,
    'timm': timm_state_dict.convert,
    'laps-pytorch': laps_pytorch.convert,
    'lvt-pytorch': lvt_pytorch.convert,
}
SOURCES = tuple(CONVERTERS)


def convert_file(source: str, path: str, model: nnx.Module, config) -> ConvertedWeights:
  """The weights in `path` (format `source`) in `model`'s names and layouts, not yet assigned."""
  if source not in CONVERTERS:
    raise ValueError(f'unknown weight source {source!r}; expected one of {SOURCES}')
  if config.name == 'visformer' and source in ('laps-pytorch', 'timm'):
    return visformer_pytorch.convert(path, config, model)
  return CONVERTERS[source](path, config, model)


def check_file(source: str, path: str, config) -> None:
  """Reads a few bytes of `path` to check it is the kind of file `source` reads (before a model
  is built): FileNotFoundError or WeightImportError naming the file and what was expected."""
  if source == 'vit-npz':
    tensor_files.check_npz_file(path)
  elif source in ('laps-pytorch', 'lvt-pytorch') and config.name != 'visformer':
    torch_io.check_torch_file(path)
  else:  # by suffix: timm, Visformer
    tensor_files.check_state_dict_file(path)


def import_weights(source: str, path: str, model: nnx.Module, config) -> ConvertedWeights:
  """Loads `path` (format `source`) into `model` (built from `config`, the model config) in place.

  Raises WeightImportError if anything does not fit; logs what was dropped or re-initialised.
  Returns the ConvertedWeights (its `keep_initialised` and `dropped` say what happened).
  """
  converted = convert_file(source, path, model, config)
  assign_converted(model, converted, f'{path} ({source})')
  return converted


__all__ = ['CONVERTERS', 'SOURCES', 'ConvertedWeights', 'UnsafeCheckpointError', 'WeightImportError',
           'check_file', 'convert_file', 'import_weights']
