"""The stored layout of builder version 2.0.0: one ArrayRecord record per frame.

Version 1.0.0 kept every frame of a video inside the video's record, so a training clip of 8
frames read and parsed the whole record (~250 JPEGs, ~6 MB for a 10 s Kinetics clip at 340x256):
that read was the largest cost of the host pipeline (experiments/data_throughput.py). Now:

  <name>-<split>.array_record-*      (TFDS) one record per video: the metadata of
                                     `builder_common` plus `first_frame`, the index of its first
                                     frame in the frames file; no frame bytes;
  <name>-<split>.frames.array_record one record per frame (JPEG bytes), the frames of a video
                                     consecutive, written in generation order, uncompressed (JPEG
                                     does not compress further; a clip reads only its frames).

`FrameRecordSource` puts them back together: `source[i]['frames']` is a lazy sequence whose
`frames[j]` reads one record, so the rest of the pipeline indexes frames as before.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from array_record.python import array_record_data_source
from array_record.python import array_record_module

FILE_TEMPLATE = '{name}-{split}.frames.array_record'
WRITER_OPTIONS = 'group_size:1,uncompressed'


def frames_path(dataset_dir: str, name: str, split: str) -> str:
  return os.path.join(os.fspath(dataset_dir), FILE_TEMPLATE.format(name=name, split=split))


class FrameWriter:
  """Appends the frames of each generated example to the split's frames file."""

  def __init__(self, path: str):
    self._writer = array_record_module.ArrayRecordWriter(path, WRITER_OPTIONS)
    self._count = 0

  def move_frames(self, example: dict) -> dict:
    """example with 'frames' -> the same without them and with 'first_frame' (their position)."""
    example = dict(example)
    frames = example.pop('frames')
    example['first_frame'] = self._count
    for frame in frames:
      self._writer.write(frame)
    self._count += len(frames)
    return example

  def close(self) -> None:
    self._writer.close()


class Frames:
  """frames[j] -> JPEG bytes of frame j of one video (read on demand); len() = its frame count."""

  def __init__(self, records, first: int, count: int):
    self._records, self._first, self._count = records, first, count

  def __len__(self) -> int:
    return self._count

  def __getitem__(self, index: int) -> bytes:
    index = int(index)
    if not 0 <= index < self._count:
      raise IndexError(f'frame {index} of a video of {self._count} frames')
    return self._records[self._first + index]


class FrameRecordSource:
  """A TFDS data source of video records + the frames file -> examples with lazy `frames`.

  Picklable (grain ships it to its worker processes; the ArrayRecord readers reopen there).
  """

  def __init__(self, videos, path: str):
    self.videos, self.path = videos, path
    self._records = array_record_data_source.ArrayRecordDataSource([path])

  def __len__(self) -> int:
    return len(self.videos)

  def __getitem__(self, index: int) -> Mapping[str, Any]:
    example = dict(self.videos[index])
    example['frames'] = Frames(self._records, int(example.pop('first_frame')),
                               int(example['num_frames']))
    return example

  def __repr__(self) -> str:
    return f'FrameRecordSource({self.videos!r}, {self.path!r})'


def open_split(builder, split: str):
  """Random access to a prepared split's examples, 'frames' included, whatever the layout."""
  videos = builder.as_data_source(split)
  if not getattr(builder, 'FRAME_RECORDS', False):
    return videos
  return FrameRecordSource(videos, frames_path(builder.data_dir, builder.name, split))
