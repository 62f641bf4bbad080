r"""Convert published weights into an exported laps_jax model (Orbax params + model config JSON).

  python -m laps_jax.convert --config=configs/laps_vitb.py --source=vit-npz \
      --input=imagenet21k/ViT-B_16.npz --output=/models/laps_vitb_in21k
  python -m laps_jax.convert --config=configs/laps_vitb.py --source=laps-pytorch \
      --input=laps_k400_8x8.pth.tar --output=/models/laps_k400
  python -m laps_jax.convert --config=configs/laps_visformer.py --source=laps-pytorch \
      --input=visformer_s_in10k.pth --output=/models/visformer_s_imagenet_224   # or a LAPS .pth.tar
  python -m laps_jax.convert --config=configs/lvt.py --source=lvt-pytorch \
      --input=lvt_k400.pyth --output=/models/lvt_k400 --config.model.temporal_embed_frames=8

--source: vit-npz | timm | laps-pytorch | lvt-pytorch (see laps_jax/weights/__init__.py; for
model.name='visformer', laps-pytorch and timm read Visformer files, BatchNorm statistics
included). Only the config's `model` part is used (override keys with --config.model.KEY=VALUE).
The output directory
is what `laps_jax.checkpoints.load_model(DIR)` returns as (model, config), what
`--config.init_from=DIR` starts training from and what `python -m laps_jax.predict --model=DIR`
runs. Whatever the converter dropped (pre-logits, a classifier with another class count, unused
official parameters) or left at the model's initialisation is logged and summarised at the end;
a checkpoint that does not fit the config stops with a message listing every key and shape.
"""
import os
import sys

from absl import flags
from flax import nnx
from ml_collections import config_flags

from laps_jax import checkpoints, config_args, models, weights
from laps_jax.train.errors import ConfigError


def define_flags(flag_values: flags.FlagValues, argv: list[str]) -> None:
  # sys_argv: config_flags reads the --config.KEY=VALUE overrides from it (default sys.argv).
  config_flags.DEFINE_config_file('config', None, 'laps_jax config file (its `model` part is used)',
                                  flag_values=flag_values, lock_config=True, sys_argv=argv)
  flags.DEFINE_enum('source', None, list(weights.SOURCES), 'format of --input', flag_values=flag_values)
  flags.DEFINE_string('input', None, 'the weight file to convert', flag_values=flag_values)
  flags.DEFINE_string('output', None, 'directory to write (must not exist or be empty)', flag_values=flag_values)
  flags.DEFINE_enum('dtype', None, ['float32', 'bfloat16'], 'storage dtype of the saved parameters '
                    '(default float32)', flag_values=flag_values)
  flags.DEFINE_integer('seed', 0, 'seed of the parameters the source does not provide', flag_values=flag_values)
  for name in ('config', 'source', 'input', 'output'):
    flags.mark_flag_as_required(name, flag_values=flag_values)


def convert(config, source: str, input_path: str, output: str, *, dtype: str | None = None, seed: int = 0
            ) -> weights.ConvertedWeights:
  """Builds `config.model`, imports `input_path` (format `source`) into it and saves it to `output`.

  Returns what the converter did (dropped and re-initialised parameters). Raises
  weights.WeightImportError when the file does not fit the config, FileExistsError when
  `output` already holds something.
  """
  model_config = config.model if 'model' in config else config
  if os.path.exists(output) and os.listdir(output):
    raise FileExistsError(f'--output={output} exists and is not empty; choose a new directory')
  weights.check_file(source, input_path, model_config)  # a file that is no checkpoint, in seconds
  model = models.build(model_config, nnx.Rngs(params=seed, dropout=seed + 1))
  converted = weights.import_weights(source, input_path, model, model_config)
  checkpoints.save_model(output, model, model_config, dtype=dtype)
  return converted


def summary(converted: weights.ConvertedWeights, output: str) -> str:
  lines = [f'wrote {output}: {len(converted.params)} parameter arrays from the file']
  for note in converted.notes:
    lines.append(f'  note: {note}')
  for name, reason in converted.dropped:
    lines.append(f'  dropped {name}: {reason}')
  for name, reason in sorted(converted.keep_initialised.items()):
    lines.append(f'  initialised as the model does: {name} ({reason})')
  return '\n'.join(lines)


USAGE = (f'usage: python -m laps_jax.convert --config=CONFIG --source={"|".join(weights.SOURCES)} '
         '--input=FILE --output=DIR [--dtype=bfloat16]')


def main(argv: list[str]) -> int:
  """The command: 0 done, 1 the file or config does not fit (one `ERROR (Type): ...` message,
  no traceback), 2 bad flags."""
  flag_values = flags.FlagValues()
  try:
    define_flags(flag_values, argv)  # parses the --config default with its overrides, if any
    flag_values(argv)
    error = None if config_args.is_config(flag_values.config) else flags.Error('--config did not load')
  except Exception as e:  # pylint: disable=broad-except  (explained below, else re-raised)
    error = e
  if error is not None:
    explained = config_args.explain_flags_error(error, argv, flag_values)
    if explained is None:
      raise error
    type_name, message = explained
    usage = '' if type_name == 'ConfigError' else f'\n\n{USAGE}'  # a usage mistake: the usage
    print(f'ERROR ({type_name}): {message}{usage}', file=sys.stderr)
    return 2
  try:
    converted = convert(flag_values.config, flag_values.source, flag_values.input, flag_values.output,
                        dtype=flag_values.dtype, seed=flag_values.seed)
  except (weights.WeightImportError, ConfigError, FileExistsError, FileNotFoundError,
          ImportError) as e:
    print(f'ERROR ({type(e).__name__}): {e}', file=sys.stderr)
    return 1
  print(summary(converted, flag_values.output))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
