"""What every video dataset builder of the project shares: features, parallel preparation, skip list.

Stored example (one video), the same for every dataset:

  video_id             str      Kinetics `{youtube_id}_{start:06d}_{end:06d}`, SSv2 `{id}`, ...
  frames               [N] bytes  one JPEG per frame, display order, short side <= `short_side`;
                                since version 2.0.0 (Kinetics, SSv2) not in the video's record but
                                one record per frame in a frames file, the record holding
  first_frame          int64    instead (`laps_jax.data.frame_records`);
  label                int      ClassLabel; `label.labels.txt` in the dataset folder has the names
  fps                  float32  of the source (0.0 when unknown)
  num_frames           int32    N, the frames actually stored
  original_num_frames  int32    the count the source container announces (0 when unknown)
  height, width        int32    size of the stored frames

Frames are a `Sequence` of scalar object tensors (encoded bytes), not a `tfds.features.Video`: on
TFDS's NumPy path (`tfds.data_source`, no TensorFlow) a Video feature would decode all N frames;
this way reading an example costs a memcpy and the pipeline decodes only the frames it samples.

Preparation (`download_and_prepare`) runs the per-video work in `num_processes` spawned processes
(spawn, not fork: the caller may be a training process with JAX threads running) and shows a tqdm
bar. A video that fails (see `video_decode.VideoDecodeError`) is skipped; the skipped ones are
listed, one per line `video_id<TAB>path<TAB>reason`, in

  <data_dir>/<name>/<version>/skipped_<split>.txt

(written for every split, with a `#` header line, even when empty) and counted in the log.
"""

from __future__ import annotations

import inspect
import logging
import multiprocessing
import os
from typing import Any, Callable, Iterable, Iterator, Sequence

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import gcs_utils
import tqdm

from laps_jax.data import frame_records
from laps_jax.data import video_decode

# Never look anything up on GCS: every dataset here is built locally (4.9.10 already defaults to
# disabled; set it anyway so a future default cannot make a run touch the network).
gcs_utils._is_gcs_disabled = True  # pylint: disable=protected-access

log = logging.getLogger(__name__)

SKIP_FILE_TEMPLATE = 'skipped_{split}.txt'


def video_features(label_names: Sequence[str] | None = None, frame_records: bool = False
                   ) -> tfds.features.FeaturesDict:
  """The FeaturesDict of module doc; `label_names=None` leaves the ClassLabel to be named later.
  frame_records: the frames live in the frames file (`first_frame`), not in the record."""
  label = (tfds.features.ClassLabel(names=list(label_names)) if label_names is not None
           else tfds.features.ClassLabel())
  frames = ({'first_frame': np.int64} if frame_records else
            {'frames': tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_))})
  return tfds.features.FeaturesDict({
      'video_id': tfds.features.Text(),
      **frames,
      'label': label,
      'fps': np.float32,
      'num_frames': np.int32,
      'original_num_frames': np.int32,
      'height': np.int32,
      'width': np.int32,
  })


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], num_processes: int,
                 description: str, chunksize: int = 1, unit: str = 'video') -> Iterator[Any]:
  """Yields fn(item) for every item, in order, computed in `num_processes` spawned processes.

  Order is kept (imap, not imap_unordered) so that a build is deterministic. One process runs
  in-line, without a pool (tests, debugging).
  """
  bar = tqdm.tqdm(total=len(items), desc=description, unit=unit, mininterval=2.0)
  try:
    if num_processes <= 1 or len(items) <= 1:
      for item in items:
        yield fn(item)
        bar.update(1)
      return
    context = multiprocessing.get_context('spawn')
    with context.Pool(num_processes) as pool:
      for result in pool.imap(fn, items, chunksize=chunksize):
        yield result
        bar.update(1)
  finally:
    bar.close()


def write_skip_file(directory: str, split: str, skipped: Iterable[tuple[str, str, str]]) -> str:
  """Writes `skipped_<split>.txt` (video_id, path, reason per line) in `directory`; returns path."""
  path = os.path.join(directory, SKIP_FILE_TEMPLATE.format(split=split))
  with open(path, 'w') as f:
    f.write('# video_id\tpath\treason (videos skipped while preparing this split)\n')
    for video_id, source, reason in skipped:
      f.write(f'{video_id}\t{source}\t{reason}\n')
  return path


def read_skip_file(dataset_dir: str, split: str) -> list[tuple[str, str, str]]:
  """The (video_id, path, reason) rows of a prepared split's skip list."""
  path = os.path.join(dataset_dir, SKIP_FILE_TEMPLATE.format(split=split))
  rows = []
  with open(path) as f:
    for line in f:
      if line.startswith('#') or not line.strip():
        continue
      video_id, source, reason = line.rstrip('\n').split('\t', 2)
      rows.append((video_id, source, reason))
  return rows


class VideoDatasetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the project's video builders: JPEG frames, parallel decoding, skip list.

  Builder keyword arguments (besides TFDS's own `data_dir`, `file_format`, ...):
    short_side: stored frames are scaled down to this short side (default 320, so that training
      scale jitter up to 320 needs no up-sampling).
    jpeg_quality: quality of the stored JPEGs (default 90).
    num_processes: decoding processes (default: all CPUs).

  Subclasses implement `_label_names()` (None when only known from the annotations, which
  `_split_generators` then sets) and `_split_generators`, whose generators call
  `self._generate_video_examples(split, items)`.
  """

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'Frames as JPEG bytes, decoded once with PyAV.',
      '2.0.0': 'One record per frame in <name>-<split>.frames.array_record; the video records '
               'hold first_frame: a clip reads only its frames (laps_jax.data.frame_records).',
  }
  FRAME_RECORDS = True  # the 2.0.0 layout; a subclass with small records may keep frames inline

  def __init__(self, *, short_side: int = 320, jpeg_quality: int = 90,
               num_processes: int | None = None, **kwargs):
    self.short_side = int(short_side)
    self.jpeg_quality = int(jpeg_quality)
    self.num_processes = int(num_processes or os.cpu_count() or 1)
    super().__init__(**kwargs)

  # TFDS 4.9.10 finds a builder's source file through importlib_resources, which it does not
  # declare as a dependency (ModuleNotFoundError for builders defined in a package). The file of
  # the class is all it needs.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))

  def _label_names(self) -> Sequence[str] | None:
    return None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=video_features(self._label_names(), self.FRAME_RECORDS),
        metadata=tfds.core.MetadataDict(short_side=self.short_side,
                                        jpeg_quality=self.jpeg_quality),
    )

  def _set_label_names(self, names: Sequence[str]) -> None:
    """Names the ClassLabel once the annotations are read (before any example is written)."""
    self.info.features['label'].names = list(names)

  def _generate_video_examples(self, split: str, items: Sequence[video_decode.VideoItem],
                               missing: Sequence[tuple[str, str, str]] = ()
                               ) -> Iterator[tuple[str, dict]]:
    """Decodes `items` in parallel; yields (key, example) for the good ones, lists the others.

    Args:
      split: split name (for the skip file and the log).
      items: the videos found on disk.
      missing: (video_id, expected path, reason) of annotated videos that were not found; they go
        straight to the skip list.
    """
    skipped = list(missing)
    worker = video_decode.DecodeWorker(self.short_side, self.jpeg_quality)
    # During preparation `data_dir` is TFDS's temporary folder, renamed to the final one at the end.
    frame_writer = (frame_records.FrameWriter(frame_records.frames_path(self.data_dir, self.name,
                                                                        split))
                    if self.FRAME_RECORDS else None)
    try:
      for item, result in parallel_map(worker, items, self.num_processes,
                                       f'{self.name} {split}'):
        if isinstance(result, str):
          skipped.append((item.video_id, item.path, result))
          continue
        yield item.key, frame_writer.move_frames(result) if frame_writer else result
    finally:
      if frame_writer:
        frame_writer.close()
    self._finish_split(split, len(items) + len(missing), skipped)

  def _finish_split(self, split: str, num_items: int,
                    skipped: Sequence[tuple[str, str, str]]) -> None:
    # During preparation `data_dir` is TFDS's temporary folder, renamed to the final one at the end.
    path = write_skip_file(self.data_dir, split, skipped)
    root = os.path.dirname(os.path.dirname(os.fspath(self.data_dir)))
    final = os.path.join(root, self.name, str(self.version), os.path.basename(path))
    if skipped:
      log.warning('%s %s: skipped %d of %d videos (listed in %s)', self.name, split, len(skipped),
                  num_items, final)
    else:
      log.info('%s %s: all %d videos prepared', self.name, split, num_items)


def find_video_files(root: str, extensions: Sequence[str]) -> dict[str, list[str]]:
  """Indexes `root` once (os.walk, following links): file stem -> paths with one of `extensions`."""
  extensions = tuple(e.lower() for e in extensions)
  index: dict[str, list[str]] = {}
  for directory, _, files in os.walk(root, followlinks=True):
    for name in files:
      stem, ext = os.path.splitext(name)
      if ext.lower() in extensions:
        index.setdefault(stem, []).append(os.path.join(directory, name))
  return index


def check_manual_dir(manual_dir: str | os.PathLike | None, dataset: str, expected: str) -> str:
  """The manual dir as str; a clear error when it is unset, missing or empty."""
  if manual_dir is None:
    raise ValueError(f'{dataset}: no manual_dir given; expected {expected}')
  manual_dir = os.fspath(manual_dir)
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f'{dataset}: manual_dir {manual_dir} does not exist; '
                            f'expected {expected}')
  if not os.listdir(manual_dir):
    raise FileNotFoundError(f'{dataset}: manual_dir {manual_dir} is empty; expected {expected}')
  return manual_dir


class LabelledVideoBuilder(VideoDatasetBuilder, skip_registration=True):
  """A VideoDatasetBuilder read from a manual dir laid out as `LAYOUT` describes, whose class
  count is checked against the dataset's own unless `strict_num_classes=False` (a subset)."""

  LAYOUT: str = ''  # the expected manual-dir layout, for error messages

  def __init__(self, *, strict_num_classes: bool = True, **kwargs):
    self.strict_num_classes = strict_num_classes
    super().__init__(**kwargs)

  def checked_manual_dir(self, dl_manager: tfds.download.DownloadManager) -> str:
    return check_manual_dir(dl_manager.manual_dir, self.name, self.LAYOUT)
