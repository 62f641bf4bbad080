"""TFDS builder `ssv2`: Something-Something v2 (Goyal et al. 2017), 174 classes, from the webm files.

Manual directory (`--manual_dir`), as the public download unpacks:

  something-something-v2-labels.json       {"Approaching something with your camera": "0", ...}
  something-something-v2-train.json        [{"id": "78687", "label": "holding potato next to
  something-something-v2-validation.json     vicks vaporub bottle", "template": "Holding
                                             [something] next to [something]", "placeholders":
                                             [...]}, ...]
  20bn-something-something-v2/{id}.webm    (any folder below manual_dir; found by file name)

The json files may also sit in `manual_dir/labels/` or `manual_dir/annotations/`, and may be named
without the `something-something-v2-` prefix (`labels.json`, `train.json`, `validation.json`, as in
the later re-release). Splits: train (168,913 videos) and validation (24,777); the test set has no
public labels in the original release and is not built.

Label of a video: `labels[template.replace('[', '').replace(']', '')]` (the official convention);
the ClassLabel's names are the template strings ordered by their id in the labels file, so label ids
equal the official ones. A template that is not in the labels file is an error naming the file.

Left / right matter in this dataset ("pushing something from left to right"): never train on it
with horizontal flip.
"""

from __future__ import annotations

import json
import logging
import os

import tensorflow_datasets as tfds

from laps_jax.data import builder_common
from laps_jax.data import video_decode

log = logging.getLogger(__name__)

NUM_CLASSES = 174
SPLITS = ('train', 'validation')
LAYOUT = ('something-something-v2-{labels,train,validation}.json and the {id}.webm videos '
          'anywhere below it')


def find_json(manual_dir: str, kind: str) -> str:
  """Path of something-something-v2-{kind}.json (or {kind}.json) in the places of module doc."""
  candidates = []
  for directory in (manual_dir, os.path.join(manual_dir, 'labels'),
                    os.path.join(manual_dir, 'annotations')):
    for name in (f'something-something-v2-{kind}.json', f'{kind}.json'):
      candidates.append(os.path.join(directory, name))
      if os.path.isfile(candidates[-1]):
        return candidates[-1]
  raise FileNotFoundError(f'ssv2: annotation file something-something-v2-{kind}.json not found; '
                          f'looked for {candidates}')


def read_label_names(path: str) -> list[str]:
  """labels json {template: "id"} -> template names ordered by id (ids must be 0..K-1)."""
  with open(path) as f:
    mapping = json.load(f)
  if not isinstance(mapping, dict) or not mapping:
    raise ValueError(f'{path}: expected a JSON object {{template: "id"}}')
  try:
    by_id = sorted((int(v), k) for k, v in mapping.items())
  except (TypeError, ValueError):
    raise ValueError(f'{path}: expected a JSON object {{template: "id"}} with integer ids') from None
  if [i for i, _ in by_id] != list(range(len(by_id))):
    raise ValueError(f'{path}: label ids must be 0..{len(by_id) - 1}')
  return [name for _, name in by_id]


def read_split(path: str, label_ids: dict[str, int]) -> list[tuple[str, int]]:
  """A train / validation json -> [(video id, label id)] in file order."""
  with open(path) as f:
    entries = json.load(f)
  if not isinstance(entries, list):
    raise ValueError(f'{path}: expected a JSON list of {{"id", "label", "template", '
                     '"placeholders"}')
  rows = []
  for entry in entries:
    if not isinstance(entry, dict) or 'id' not in entry or 'template' not in entry:
      raise ValueError(f'{path}: every entry needs "id" and "template"; found {entry!r}')
    template = entry['template'].replace('[', '').replace(']', '')
    if template not in label_ids:
      raise ValueError(f'{path}: template {template!r} of video {entry["id"]} is not in the '
                       'labels file')
    rows.append((str(entry['id']), label_ids[template]))
  return rows


class Ssv2(builder_common.LabelledVideoBuilder):
  """Something-Something v2: 174 classes of hand-object interactions; see `laps_jax.data.ssv2`."""

  name = 'ssv2'
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
  LAYOUT = LAYOUT

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = self.checked_manual_dir(dl_manager)
    labels_path = find_json(manual_dir, 'labels')
    names = read_label_names(labels_path)
    if self.strict_num_classes and len(names) != NUM_CLASSES:
      raise ValueError(f'{labels_path}: {len(names)} labels, ssv2 has {NUM_CLASSES} (pass '
                       'strict_num_classes=False / --allow_class_subset to accept that)')
    self._set_label_names(names)
    label_ids = {name: i for i, name in enumerate(names)}
    index = builder_common.find_video_files(manual_dir, ('.webm', '.mp4'))
    generators = {}
    for split in SPLITS:
      rows = read_split(find_json(manual_dir, split), label_ids)
      items, missing = [], []
      for video_id, label in rows:
        if video_id in index:
          items.append(video_decode.VideoItem(key=video_id, video_id=video_id, label=label,
                                              path=sorted(index[video_id])[0]))
        else:
          missing.append((video_id, os.path.join(manual_dir, video_id + '.webm'),
                          'missing: no file with this name under manual_dir'))
      log.info('ssv2 %s: %d annotated videos, %d found on disk', split, len(rows), len(items))
      generators[split] = self._generate_examples(split=split, items=items, missing=missing)
    return generators

  def _generate_examples(self, split, items, missing):
    yield from self._generate_video_examples(split, items, missing)
