"""Export a training run's model (no optimizer state) in laps_jax's model format.

  python -m laps_jax.export --workdir=TRAIN_DIR --output=DIR [--dtype=bfloat16]
                            [--which=latest|best | --step=N] [--ema]

Reads TRAIN_DIR/config.json (written by the training run) and the `model` item of a checkpoint in
TRAIN_DIR/checkpoints: the latest (--which=latest, the default), the one with the best validation
metric (--which=best; the run must have set config.checkpoint.best_metric), or step N (--step).
--ema takes the checkpoint's EMA of the weights instead (the run must have set config.ema.decay).
It keeps the parameters (and BatchNorm statistics) and writes DIR with
`laps_jax.checkpoints.save_params`: what `load_model`, `laps_jax.predict` and `config.init_from`
read, plus DIR/data_config.json, the run's `config.data` (frames, stride, sampling, test clips ×
crops, mean / std, short sides, dataset name): `laps_jax.predict` uses that test protocol by
default. Runs on one host, no accelerator needed (the arrays are read into host memory).
TRAIN_DIR and DIR may be URLs (gs://...): paths go through etils.epath. A checkpoint folder Orbax
did not finalise is not taken as the latest.
"""
import functools
import json
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
  path = checkpoints.as_path(workdir) / 'config.json'
  if not path.is_file():
    raise FileNotFoundError(f'{workdir} is not a training workdir: config.json is missing')
  try:
    return ml_collections.ConfigDict(checkpoints.lists_to_tuples(json.loads(path.read_text())))
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON ({e})') from None


class DamagedCheckpointError(ValueError):
  """A checkpoint folder Orbax finalised whose arrays or metadata do not read."""


DATA_CONFIG_FILE = 'data_config.json'  # what laps_jax.predict reads beside an exported model
WHICH = ('latest', 'best')


def export(workdir: str, output: str, *, dtype: str | None = None, step: int | None = None,
           which: str = 'latest', ema: bool = False) -> int:
  """Writes the parameters of a checkpoint of `workdir` to `output`: step `step`, else the
  `which` ('latest' | 'best') one; `ema` takes its EMA of the weights. Writes the run's data
  config beside them (DATA_CONFIG_FILE).

  Returns the step exported. Raises FileNotFoundError (no config / checkpoint / best checkpoint /
  EMA), FileExistsError (`output` is not empty), ValueError (an unknown `which`, a config.json
  that is not JSON) and DamagedCheckpointError (a ValueError: the checkpoint does not restore).
  """
  from laps_jax.train import checkpointing  # pylint: disable=g-import-not-at-top
  if which not in WHICH:
    raise ValueError(f'--which must be one of {WHICH}, got {which!r}')
  output_path = checkpoints.as_path(output)
  if output_path.exists() and any(output_path.iterdir()):
    raise FileExistsError(f'--output={output} exists and is not empty; choose a new directory')
  config = load_run_config(workdir)
  best_metric = config.get('checkpoint', {}).get('best_metric', '')
  # read_only: saves, deletes and creates nothing; best_metric: to find the best step.
  checkpointer = checkpointing.Checkpointer(workdir, keep=1_000_000, best_metric=best_metric,
                                            read_only=True)
  try:
    if step is None and which == 'best':
      step = checkpointer.best_step()
      if step is None:
        raise FileNotFoundError(
            f'{workdir} has no best checkpoint: ' + ('no checkpoint was saved with validation '
            'metrics' if best_metric else 'the run did not set config.checkpoint.best_metric'))
    steps = checkpointer.finalized_steps()
    if step is None and not steps:
      raise FileNotFoundError(f'{workdir} holds no finished checkpoint (checkpoints/ has none '
                              'that Orbax finalised)')
    step = steps[-1] if step is None else step  # the latest finalised step by default
    try:
      arrays = named_params.flatten(
          checkpointer.restore_model_arrays(step, item='ema' if ema else 'model'))
    except FileNotFoundError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (Orbax / TensorStore: many types)
      message = (str(e).strip().splitlines() or [''])[0]
      raise DamagedCheckpointError(
          f'{workdir}: the checkpoint at step {step} does not restore, damaged or incomplete '
          f'({type(e).__name__}: {message}); export another with --step=N (finished steps: '
          f'{steps})') from e
  finally:
    checkpointer.close()
  # The parameter names of this model; the checkpoint's model item also holds RNG state.
  names = named_params.of_model(nnx.eval_shape(lambda: models.build(config.model, nnx.Rngs(0))))
  if missing := sorted(set(names) - set(arrays)):
    raise ValueError(f'the checkpoint at step {step} lacks parameters {missing[:5]}')
  params = traverse_util.unflatten_dict({name: arrays[name] for name in names}, sep='/')
  checkpoints.save_params(output, params, config.model, dtype=dtype)
  if 'data' in config:
    (output_path / DATA_CONFIG_FILE).write_text(
        json.dumps(config.data.to_dict(), indent=2, sort_keys=True))
  return step


_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir (holds config.json, checkpoints/).')
_OUTPUT = flags.DEFINE_string('output', None, 'Directory to write the exported model to.')
_DTYPE = flags.DEFINE_enum('dtype', None, ['float32', 'bfloat16'],
                           'Storage dtype of the exported parameters (default: as trained, float32).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step to export (default: see --which).')
_WHICH = flags.DEFINE_enum('which', 'latest', list(WHICH),
                           'Without --step: the latest checkpoint, or the best by the run\'s '
                           'config.checkpoint.best_metric.')
_EMA = flags.DEFINE_bool('ema', False, 'Export the EMA of the weights (runs with config.ema.decay > 0).')


def main(argv):
  del argv
  if not _WORKDIR.value or not _OUTPUT.value:
    print('usage: python -m laps_jax.export --workdir=TRAIN_DIR --output=DIR [--dtype=bfloat16] '
          '[--which=latest|best | --step=N] [--ema]', file=sys.stderr)
    sys.exit(2)
  try:
    step = export(_WORKDIR.value, _OUTPUT.value, dtype=_DTYPE.value, step=_STEP.value,
                  which=_WHICH.value, ema=_EMA.value)
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    print(f'ERROR ({type(e).__name__}): {e}', file=sys.stderr)
    sys.exit(1)
  weights = 'the EMA of the weights' if _EMA.value else 'the weights'
  print(f'exported {weights} of step {step} of {_WORKDIR.value} to {_OUTPUT.value}')


if __name__ == '__main__':
  from laps_jax import config_args  # pylint: disable=g-import-not-at-top
  app.run(main, flags_parser=functools.partial(config_args.parse_flags, config_flag=None))
