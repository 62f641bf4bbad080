"""TFDS builders `kinetics400`, `kinetics600`, `kinetics700` from the official CSVs and mp4 clips.

Manual directory (`--manual_dir`), either of the two layouts of the public downloads, or a mix:

  1. The cvdfoundation `kinetics-dataset` layout (`manual_dir` = its `k400/`, `k600/` or `k700/`):
       annotations/train.csv  annotations/val.csv  [annotations/test.csv]
       train/*.mp4            val/*.mp4            [test/*.mp4]
  2. The ActivityNet / crawler layout:
       kinetics_400_train.csv  kinetics_400_validate.csv  [kinetics_400_test.csv]   (or train.csv ...)
       videos/<anything>/<class name>/*.mp4      (class sub-folders, or flat; any depth)

Annotation CSVs are looked for in `manual_dir/annotations/` and `manual_dir/`; a split's file is the
`.csv` whose name (lower case, without extension) is the split alias or ends with `_alias`/`-alias`:
train: `train`; validation: `validate`, `validation`, `val`; test: `test`. Every CSV must have the
header exactly `label,youtube_id,time_start,time_end,split`. The test split is built only when it is
labelled: a test CSV with the unlabelled header `youtube_id,time_start,time_end,split`, or with all
labels empty, is ignored (logged). Train and validation CSVs are required.

Videos are found by file name anywhere under `manual_dir` (one os.walk): clip
`{youtube_id}_{time_start:06d}_{time_end:06d}` with extension .mp4 (also .webm / .mkv / .avi, which
some re-encodes use). When the same name exists twice, the copy under a folder named after the
split (`train`, `val`, ...) wins. Annotated clips with no file are listed as `missing` in the skip
file.

Labels: a ClassLabel whose names are the train CSV's labels sorted alphabetically (the official
convention, so label ids match published checkpoints). The count must be 400 / 600 / 700; the
builder keyword `strict_num_classes=False` (`--allow_class_subset` of `prepare`) accepts any count,
for tests or a subset of the classes. A validation or test label that is not a train label is an
error.
"""

from __future__ import annotations

import csv
import logging
import os
from typing import Sequence

import tensorflow_datasets as tfds

from laps_jax.data import builder_common
from laps_jax.data import video_decode

log = logging.getLogger(__name__)

KINETICS_COLUMNS = ('label', 'youtube_id', 'time_start', 'time_end', 'split')
UNLABELLED_COLUMNS = ('youtube_id', 'time_start', 'time_end', 'split')
SPLIT_ALIASES = {
    'train': ('train',),
    'validation': ('validate', 'validation', 'val'),
    'test': ('test',),
}
VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.avi')

LAYOUT = ('annotations/{train,val[,test]}.csv (or kinetics_N_{train,validate,test}.csv) with '
          f'header {",".join(KINETICS_COLUMNS)} and the clips '
          '{youtube_id}_{time_start:06d}_{time_end:06d}.mp4 anywhere below it')


def clip_name(youtube_id: str, time_start: int, time_end: int) -> str:
  """The file stem of one clip: `{youtube_id}_{time_start:06d}_{time_end:06d}`."""
  return f'{youtube_id}_{int(time_start):06d}_{int(time_end):06d}'


def find_annotation_csv(manual_dir: str, split: str) -> str | None:
  """The CSV of `split` in manual_dir/annotations or manual_dir (module doc), or None."""
  aliases = SPLIT_ALIASES[split]
  for directory in (os.path.join(manual_dir, 'annotations'), manual_dir):
    if not os.path.isdir(directory):
      continue
    matches = []
    for name in sorted(os.listdir(directory)):
      stem, ext = os.path.splitext(name)
      stem = stem.lower()
      if ext.lower() != '.csv':
        continue
      if any(stem == a or stem.endswith('_' + a) or stem.endswith('-' + a) for a in aliases):
        matches.append(os.path.join(directory, name))
    if len(matches) > 1:
      raise ValueError(f'several annotation CSVs for split {split!r}: {matches}; keep one')
    if matches:
      return matches[0]
  return None


def read_annotations(path: str, allow_unlabelled: bool = False
                     ) -> list[tuple[str, str]] | None:
  """Reads one Kinetics CSV -> [(label, clip name)] in file order, duplicates dropped.

  Returns None for an unlabelled file when `allow_unlabelled` (test CSVs).

  Raises:
    ValueError: the header is not `label,youtube_id,time_start,time_end,split`, or a row is bad;
      the message names the file and the expected columns.
  """
  with open(path, newline='') as f:
    reader = csv.reader(f)
    header = tuple(h.strip() for h in next(reader, ()))
    if allow_unlabelled and header == UNLABELLED_COLUMNS:
      return None
    if header != KINETICS_COLUMNS:
      raise ValueError(f'{path}: expected the CSV header {",".join(KINETICS_COLUMNS)}, '
                       f'found {",".join(header) or "an empty file"}')
    rows, seen = [], set()
    for line_number, row in enumerate(reader, start=2):
      if not row:
        continue
      if len(row) != len(KINETICS_COLUMNS):
        raise ValueError(f'{path}:{line_number}: expected {len(KINETICS_COLUMNS)} columns '
                         f'({",".join(KINETICS_COLUMNS)}), found {len(row)}: {row}')
      label, youtube_id, start, end, _ = (x.strip() for x in row)
      try:
        name = clip_name(youtube_id, int(float(start)), int(float(end)))
      except ValueError:
        raise ValueError(f'{path}:{line_number}: time_start / time_end must be numbers, found '
                         f'{start!r}, {end!r}') from None
      if name not in seen:
        seen.add(name)
        rows.append((label, name))
  if allow_unlabelled and rows and not any(label for label, _ in rows):
    return None
  return rows


def _pick_path(paths: Sequence[str], split: str) -> str:
  """Of several files with the clip's name, the one in a folder named after the split."""
  if len(paths) == 1:
    return paths[0]
  for path in sorted(paths):
    folders = path.lower().split(os.sep)[:-1]
    if any(alias in folders for alias in SPLIT_ALIASES[split]):
      return path
  return sorted(paths)[0]


class _KineticsBuilder(builder_common.LabelledVideoBuilder, skip_registration=True):
  """Kinetics human action clips (~10 s YouTube clips); see `laps_jax.data.kinetics`."""

  NUM_CLASSES: int = 0
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
  LAYOUT = LAYOUT

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = self.checked_manual_dir(dl_manager)
    csvs = {split: find_annotation_csv(manual_dir, split) for split in SPLIT_ALIASES}
    for split in ('train', 'validation'):
      if csvs[split] is None:
        raise FileNotFoundError(
            f'{self.name}: no {split} annotation CSV in {manual_dir}/annotations or {manual_dir}; '
            f'expected a file named one of {[a + ".csv" for a in SPLIT_ALIASES[split]]} (or '
            f'kinetics_{self.NUM_CLASSES}_{SPLIT_ALIASES[split][0]}.csv) with header '
            f'{",".join(KINETICS_COLUMNS)}')
    annotations = {split: read_annotations(path, allow_unlabelled=split == 'test')
                   for split, path in csvs.items() if path is not None}
    if annotations.get('test', 0) is None:
      log.info('%s: %s is unlabelled; no test split', self.name, csvs['test'])
      del annotations['test']

    names = sorted({label for label, _ in annotations['train']})
    if self.strict_num_classes and len(names) != self.NUM_CLASSES:
      raise ValueError(
          f'{csvs["train"]}: {len(names)} distinct labels, {self.name} has {self.NUM_CLASSES}. '
          'To build from a subset of the classes pass strict_num_classes=False to the builder '
          '(--allow_class_subset to prepare).')
    self._compare_with_official_names(names, csvs['train'])
    label_ids = {name: i for i, name in enumerate(names)}
    for split, rows in annotations.items():
      for label, name in rows:
        if label not in label_ids:
          raise ValueError(f'{csvs[split]}: label {label!r} (clip {name}) is not a label of the '
                           f'train CSV {csvs["train"]}')
    self._set_label_names(names)

    index = builder_common.find_video_files(manual_dir, VIDEO_EXTENSIONS)
    generators = {}
    for split, rows in annotations.items():
      items, missing = [], []
      for label, name in rows:
        if name in index:
          path = _pick_path(index[name], split)
          items.append(video_decode.VideoItem(key=name, video_id=name, label=label_ids[label],
                                              path=path))
        else:
          missing.append((name, os.path.join(manual_dir, name + '.mp4'),
                          'missing: no file with this name under manual_dir'))
      log.info('%s %s: %d annotated clips, %d found on disk', self.name, split, len(rows),
               len(items))
      generators[split] = self._generate_examples(split=split, items=items, missing=missing)
    return generators

  def _compare_with_official_names(self, names: Sequence[str], csv_path: str) -> None:
    """Warns when the classes differ from the official list (laps_jax/data/labels/<name>.txt):
    label ids would then not match published checkpoints."""
    official_path = os.path.join(os.path.dirname(__file__), 'labels', f'{self.name}.txt')
    if not self.strict_num_classes or not os.path.exists(official_path):
      return
    with open(official_path) as f:
      official = [line.rstrip('\n') for line in f if line.strip()]
    if list(names) != official:
      differ = sorted(set(names) ^ set(official))[:6]
      log.warning('%s: the classes of %s differ from the official %s list (e.g. %s); label ids '
                  'will not match published checkpoints', self.name, csv_path, self.name, differ)

  def _generate_examples(self, split, items, missing):
    yield from self._generate_video_examples(split, items, missing)


class Kinetics400(_KineticsBuilder):
  """Kinetics-400 (Kay et al. 2017): 400 human action classes; see `laps_jax.data.kinetics`."""
  NUM_CLASSES = 400


class Kinetics600(_KineticsBuilder):
  """Kinetics-600 (Carreira et al. 2018): 600 classes; see `laps_jax.data.kinetics`."""
  NUM_CLASSES = 600


class Kinetics700(_KineticsBuilder):
  """Kinetics-700 (-2020): 700 classes; see `laps_jax.data.kinetics`."""
  NUM_CLASSES = 700
