r"""Classify video files with an exported model: top-5 class names and probabilities.

  python -m laps_jax.predict --model=/models/laps_k400 clip1.mp4 clip2.webm
  python -m laps_jax.predict --model=/models/laps_k400 --config=configs/laps_vitb.py --json *.mp4

Each video is decoded with PyAV (laps_jax.data.video_decode, the decoder of dataset preparation)
and cut into the test views of the evaluation pipeline (laps_jax.data.sampling +
augment.eval_views): K clips spread evenly over the video x C crops (1 centre, or 3 along the long
side) after scaling the short side, as uint8, normalised with mean / std inside the jitted forward
pass (laps_jax.data.device_augment, the evaluation's contract). The model runs on every view; the
clip's class probabilities are the softmax of the view-averaged logits (the official LAPS test sums
the views' logits: same ranking).

Where the view settings come from, first found wins:
  1. the flags --test_clips, --test_crops, --sampling, --frame_stride, --short_side, --mean, --std;
  2. the `data` part of --config (a laps_jax config file, e.g. the one the model was trained with);
  3. `data_config.json` next to the exported model, if the exporter wrote one;
  4. defaults: 1 clip x 1 crop (centre), dense sampling with the model family's Kinetics stride
     (`default_frame_stride` of its registry entry: 8 for the ViT family, 16 for LVT), short side = the model's image_size, mean / std = the family's (`default_mean` / `default_std`:
     0.5 for ViT and LVT, the ImageNet statistics of the official Visformer).
The number of frames and the crop size always come from the model config.

Class names (--labels): kinetics400 | kinetics600 | kinetics700 | ssv2 (shipped in
laps_jax/data/labels/) or a text file with one name per line; by default the data config's dataset
name, else the list whose length equals the model's num_classes, else 'class <i>'.

A file that cannot be decoded is reported (stderr, and in --json output) and the others still run;
the exit code is 1 if any video failed.
"""
import json
import os
import sys
from importlib import resources

import numpy as np
from absl import flags
from ml_collections import config_flags

LABEL_SETS = ('kinetics400', 'kinetics600', 'kinetics700', 'ssv2')
TOP_K = 5


# ----------------------------------------------------------------------------------------------
# Class names
# ----------------------------------------------------------------------------------------------

def read_label_file(path_or_name: str) -> list[str]:
  """A shipped label set by name, or a text file with one class name per line."""
  if path_or_name in LABEL_SETS:
    text = resources.files('laps_jax.data').joinpath('labels', f'{path_or_name}.txt').read_text()
  else:
    with open(path_or_name) as f:
      text = f.read()
  return [line for line in text.splitlines() if line.strip()]


def label_names(num_classes: int, labels: str | None, dataset_name: str | None) -> list[str]:
  """Names for the model's `num_classes` outputs (module doc)."""
  if labels:
    names = read_label_file(labels)
  elif dataset_name in LABEL_SETS:
    names = read_label_file(dataset_name)
  else:
    by_count = [s for s in LABEL_SETS if len(read_label_file(s)) == num_classes]
    names = read_label_file(by_count[0]) if by_count else [f'class {i}' for i in range(num_classes)]
  if len(names) != num_classes:
    raise ValueError(f'{labels or dataset_name}: {len(names)} class names for a model with '
                     f'{num_classes} classes')
  return names


# ----------------------------------------------------------------------------------------------
# View settings
# ----------------------------------------------------------------------------------------------

VIEW_KEYS = ('test_clips', 'test_crops', 'sampling', 'frame_stride', 'test_short_side', 'mean', 'std')


def view_settings(model_config, data_config: dict | None, overrides: dict) -> dict:
  """The test-view settings: overrides (non-None) > data_config > defaults (module doc)."""
  from laps_jax import models  # pylint: disable=g-import-not-at-top
  family = models.family(model_config.name)
  settings = dict(test_clips=1, test_crops=1, sampling='dense', frame_stride=family.default_frame_stride,
                  test_short_side=model_config.image_size, mean=family.default_mean,
                  std=family.default_std)
  if data_config:
    settings.update({k: data_config[k] for k in VIEW_KEYS if k in data_config})
  settings.update({k: v for k, v in overrides.items() if v is not None})
  settings['test_short_side'] = max(settings['test_short_side'], model_config.image_size)
  settings['mean'], settings['std'] = tuple(settings['mean']), tuple(settings['std'])
  return settings


def exported_data_config(model_dir: str) -> dict | None:
  path = os.path.join(model_dir, 'data_config.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return None


# ----------------------------------------------------------------------------------------------
# Prediction
# ----------------------------------------------------------------------------------------------

def video_views(path: str, model_config, settings: dict) -> np.ndarray:
  """uint8[V, T, S, S, 3] test views of the video at `path` (V = test_clips * test_crops).

  Raises laps_jax.data.video_decode.VideoDecodeError if the file cannot be decoded.
  """
  from laps_jax.data import augment, sampling, video_decode  # pylint: disable=g-import-not-at-top
  video = video_decode.decode_video_file(path, short_side=settings['test_short_side'])
  clip_indices = sampling.test_indices(len(video.frames), model_config.num_frames, settings['sampling'],
                                       settings['frame_stride'], settings['test_clips'])
  return augment.eval_views(video.frames, clip_indices, settings['test_short_side'], model_config.image_size,
                            settings['test_crops'])


class ModelLoadError(ValueError):
  """An exported model directory that does not load: its config or its parameters are damaged,
  or they do not fit each other. The message names the directory."""


def load_exported_model(model_dir: str):
  """`checkpoints.load_model(model_dir)`; FileNotFoundError (not an exported model) or a
  ModelLoadError naming the directory and the part that does not load."""
  from laps_jax import checkpoints  # pylint: disable=g-import-not-at-top
  try:
    return checkpoints.load_model(model_dir)
  except FileNotFoundError:
    raise
  except json.JSONDecodeError as e:
    raise ModelLoadError(f'--model={model_dir}: {checkpoints.CONFIG_FILE} is not valid JSON ({e})') from e
  except ValueError as e:  # a config or a shape that does not fit
    raise ModelLoadError(f'--model={model_dir} does not load: {_first_line(e)}') from e
  except Exception as e:  # pylint: disable=broad-except
    # The config read; Orbax / TensorStore raise many types for damaged parameter files.
    raise ModelLoadError(f'--model={model_dir}: its parameters ({checkpoints.PARAMS_DIR}/) do not '
                         f'restore, damaged or incomplete ({type(e).__name__}: {_first_line(e)})') from e


def _first_line(error: BaseException) -> str:
  return (str(error).strip().splitlines() or [''])[0]


class Predictor:
  """An exported model, jitted, returning class probabilities for a stack of views."""

  def __init__(self, model_dir: str, batch_size: int = 8):
    from flax import nnx  # pylint: disable=g-import-not-at-top
    self.model, self.config = load_exported_model(model_dir)
    self.batch_size = batch_size
    from laps_jax.data import device_augment  # pylint: disable=g-import-not-at-top
    self._logits = nnx.jit(lambda model, videos, mean, std: model(
        device_augment.normalize(videos, mean, std), train=False))

  def probabilities(self, views: np.ndarray, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> np.ndarray:
    """views uint8[V, T, S, S, 3] (normalised with mean / std on the device) -> float64[K]: softmax
    of the view-averaged logits."""
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    logits = []
    for start in range(0, len(views), self.batch_size):
      logits.append(np.asarray(self._logits(self.model, views[start:start + self.batch_size], mean, std),
                               np.float64))
    mean_logits = np.concatenate(logits).mean(axis=0)
    exp = np.exp(mean_logits - mean_logits.max())
    return exp / exp.sum()


def top_k(probabilities: np.ndarray, names: list[str], k: int = TOP_K) -> list[dict]:
  order = np.argsort(-probabilities, kind='stable')[:k]
  return [{'index': int(i), 'label': names[i], 'probability': float(probabilities[i])} for i in order]


def predict_files(paths: list[str], predictor: Predictor, names: list[str], settings: dict) -> list[dict]:
  """One result per path: {'video', 'views', 'top5'} or {'video', 'error'}; never raises for a
  video that cannot be decoded."""
  from laps_jax.data.video_decode import VideoDecodeError  # pylint: disable=g-import-not-at-top
  results = []
  for path in paths:
    try:
      views = video_views(path, predictor.config, settings)
    except VideoDecodeError as e:
      results.append({'video': path, 'error': f'cannot decode: {e}'})
      continue
    results.append({'video': path, 'views': int(len(views)),
                    'top5': top_k(predictor.probabilities(views, settings['mean'], settings['std']), names)})
  return results


def format_text(results: list[dict], settings: dict) -> str:
  lines = []
  for result in results:
    if 'error' in result:
      continue
    lines.append(f'{result["video"]}  ({settings["test_clips"]} clips x {settings["test_crops"]} crops)')
    for rank, entry in enumerate(result['top5'], 1):
      lines.append(f'  {rank}. {entry["probability"]:7.2%}  {entry["label"]}')
  return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def define_flags(fv: flags.FlagValues, argv: list[str]) -> None:
  flags.DEFINE_string('model', None, 'exported model directory (laps_jax.convert / laps_jax.export)', flag_values=fv)
  config_flags.DEFINE_config_file('config', None, 'optional laps_jax config file: its `data` part gives the '
                                  'test views and the dataset', flag_values=fv, lock_config=True, sys_argv=argv)
  flags.DEFINE_string('labels', None, f'class names: {"|".join(LABEL_SETS)} or a text file', flag_values=fv)
  flags.DEFINE_boolean('json', False, 'print machine-readable JSON instead of text', flag_values=fv)
  flags.DEFINE_integer('test_clips', None, 'clips per video', flag_values=fv)
  flags.DEFINE_integer('test_crops', None, 'crops per clip: 1 or 3', flag_values=fv)
  flags.DEFINE_enum('sampling', None, ['dense', 'segment'], 'temporal sampling', flag_values=fv)
  flags.DEFINE_integer('frame_stride', None, 'dense sampling stride', flag_values=fv)
  flags.DEFINE_integer('short_side', None, 'short side before cropping', flag_values=fv)
  flags.DEFINE_list('mean', None, 'normalisation mean (3 values, of x / 255)', flag_values=fv)
  flags.DEFINE_list('std', None, 'normalisation std (3 values)', flag_values=fv)
  flags.DEFINE_integer('batch_size', 8, 'views per forward pass', flag_values=fv)
  flags.mark_flag_as_required('model', flag_values=fv)


USAGE = 'usage: python -m laps_jax.predict --model=DIR [--json] VIDEO [VIDEO ...]'


def main(argv: list[str]) -> int:
  """The command: 0 every video classified, 1 an error (one `ERROR (Type): ...` line, or one line
  per video that does not decode), 2 bad flags."""
  from laps_jax import config_args  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  try:
    define_flags(fv, argv)  # parses a --config default with its overrides, if any
    videos = fv(argv)[1:]
    error = (None if fv.config is None or config_args.is_config(fv.config)
             else flags.Error('--config did not load'))
  except Exception as e:  # pylint: disable=broad-except  (explained below, else re-raised)
    error = e
  if error is not None:
    explained = (config_args.explain_flags_error(error, argv, fv)
                 if _config_given(argv) or not isinstance(error, flags.Error)
                 else (type(error).__name__, ' '.join(str(error).split())))
    if explained is None:
      raise error
    usage = '' if explained[0] == 'ConfigError' else f'\n\n{USAGE}'  # a usage mistake: the usage
    print(f'ERROR ({explained[0]}): {explained[1]}{usage}', file=sys.stderr)
    return 2
  if not videos:
    print(USAGE, file=sys.stderr)
    return 2
  try:
    data_config = fv.config.data.to_dict() if fv.config is not None and 'data' in fv.config else None
    data_config = data_config or exported_data_config(fv.model)
    predictor = Predictor(fv.model, batch_size=fv.batch_size)
    floats = lambda name, values: _floats(name, values) if values else None
    settings = view_settings(predictor.config, data_config, dict(
        test_clips=fv.test_clips, test_crops=fv.test_crops, sampling=fv.sampling,
        frame_stride=fv.frame_stride, test_short_side=fv.short_side, mean=floats('mean', fv.mean),
        std=floats('std', fv.std)))
    check_settings(settings, fv.batch_size)
  except (FileNotFoundError, ValueError) as e:
    print(f'ERROR ({type(e).__name__}): {e}', file=sys.stderr)
    return 1
  try:
    names = label_names(predictor.config.num_classes, fv.labels, (data_config or {}).get('name'))
  except (ValueError, OSError) as e:
    print(f'ERROR ({type(e).__name__}): class names: {e} (choose them with --labels)', file=sys.stderr)
    return 1
  results = predict_files(videos, predictor, names, settings)
  for result in results:
    if 'error' in result:
      print(f'{result["video"]}: {result["error"]}', file=sys.stderr)
  if fv.json:
    print(json.dumps({'model': fv.model, 'views': settings, 'results': results}, indent=2))
  else:
    print(format_text(results, settings))
  return 1 if any('error' in r for r in results) else 0


def check_settings(settings: dict, batch_size: int) -> None:
  """A ValueError naming the first view setting (flag, else data config key) out of range."""
  for key, flag, ok, what in (
      ('test_clips', 'test_clips', lambda v: v >= 1, '>= 1'),
      ('test_crops', 'test_crops', lambda v: v in (1, 3), '1 or 3'),
      ('frame_stride', 'frame_stride', lambda v: v >= 1, '>= 1'),
      ('test_short_side', 'short_side', lambda v: v >= 1, '>= 1')):
    if not ok(settings[key]):
      raise ValueError(f'--{flag} (or the data config\'s {key}) must be {what}, got {settings[key]!r}')
  if batch_size < 1:
    raise ValueError(f'--batch_size must be >= 1, got {batch_size}')


def _config_given(argv: list[str]) -> bool:
  return any(a == '--config' or a.startswith(('--config=', '--config.')) for a in argv[1:])


def _floats(name: str, values: list[str]) -> tuple[float, ...]:
  """--mean / --std: 3 numbers; a ValueError naming the flag otherwise."""
  try:
    numbers = tuple(float(v) for v in values)
  except ValueError:
    numbers = ()
  if len(numbers) != 3:
    raise ValueError(f'--{name} takes 3 numbers (R,G,B of x / 255), got {",".join(values)!r}')
  return numbers


if __name__ == '__main__':
  sys.exit(main(sys.argv))
