"""Export a training run's model (no optimizer state) in laps_jax's model format.

  python -m laps_jax.export --workdir=TRAIN_DIR --output=DIR [--dtype=bfloat16] [--step=N]

Reads TRAIN_DIR/config.json (written by the training run) and the `model` item of the latest (or
step N's) checkpoint in TRAIN_DIR/checkpoints, keeps the parameters, and writes DIR with
`laps_jax.checkpoints.save_params`: what `load_model`, `laps_jax.predict` and `config.init_from`
read. Runs on one host, no accelerator needed (the arrays are read into host memory).
"""
import json
import os
import sys

from absl import app
from absl import flags
from flax import nnx
from flax import traverse_util

from laps_jax import checkpoints
from laps_jax import models
from laps_jax import named_params


def load_run_config(workdir: str):
  """The config a training run saved in its workdir (config.json)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{workdir} is not a training workdir: config.json is missing')
  with open(path) as f:
    return ml_collections.ConfigDict(checkpoints.lists_to_tuples(json.load(f)))


def export(workdir: str, output: str, *, dtype: str | None = None, step: int | None = None) -> int:
  """Writes the parameters of checkpoint `step` (None: the latest) of `workdir` to `output`.

  Returns the step exported. Raises FileNotFoundError (no config / checkpoint) and
  FileExistsError (`output` is not empty).
  """
  from laps_jax.train import checkpointing  # pylint: disable=g-import-not-at-top
  if os.path.exists(output) and os.listdir(output):
    raise FileExistsError(f'--output={output} exists and is not empty; choose a new directory')
  config = load_run_config(workdir)
  checkpointer = checkpointing.Checkpointer(workdir, keep=1_000_000)  # keeps every step (reads only)
  try:
    step = checkpointer.latest_step() if step is None else step
    arrays = named_params.flatten(checkpointer.restore_model_arrays(step))
  finally:
    checkpointer.close()
  # The parameter names of this model; the checkpoint's model item also holds RNG state.
  names = named_params.of_model(nnx.eval_shape(lambda: models.build(config.model, nnx.Rngs(0))))
  if missing := sorted(set(names) - set(arrays)):
    raise ValueError(f'the checkpoint at step {step} lacks parameters {missing[:5]}')
  params = traverse_util.unflatten_dict({name: arrays[name] for name in names}, sep='/')
  checkpoints.save_params(output, params, config.model, dtype=dtype)
  return step


_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir (holds config.json, checkpoints/).')
_OUTPUT = flags.DEFINE_string('output', None, 'Directory to write the exported model to.')
_DTYPE = flags.DEFINE_enum('dtype', None, ['float32', 'bfloat16'],
                           'Storage dtype of the exported parameters (default: as trained, float32).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step to export (default: the latest).')


def main(argv):
  del argv
  if not _WORKDIR.value or not _OUTPUT.value:
    print('usage: python -m laps_jax.export --workdir=TRAIN_DIR --output=DIR [--dtype=bfloat16] '
          '[--step=N]', file=sys.stderr)
    sys.exit(2)
  try:
    step = export(_WORKDIR.value, _OUTPUT.value, dtype=_DTYPE.value, step=_STEP.value)
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    print(f'ERROR ({type(e).__name__}): {e}', file=sys.stderr)
    sys.exit(1)
  print(f'exported step {step} of {_WORKDIR.value} to {_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main)
