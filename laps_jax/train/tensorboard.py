"""clu's TensorBoard metric writer, without TensorFlow.

With the pinned clu 0.0.12, `import clu.metric_writers` (and so `clu.periodic_actions`) imports
`clu.metric_writers.summary_writer`, which is `import tensorflow`. TensorFlow is not a
dependency here (hundreds of MB, and TFDS changes behaviour when it is present). `install()`,
called by `metrics.create_writer` / `metrics.create_hooks` before they import clu's writers,
registers a `clu.metric_writers.summary_writer` module whose `SummaryWriter` implements clu's
`MetricWriter` interface with TensorBoard's own TensorFlow-free pieces: `EventFileWriter` and the
`summary_pb2` protos with the scalar / image / text plugins' metadata (laps_jax/train/summaries.py
builds them; PNGs with Pillow). clu's `create_default_writer` then writes TensorBoard event files
as usual. Scalars, images and texts go to TensorBoard; videos, audio, histograms and hparams are
not written by this backend (the log still has them).

If TensorFlow is installed, clu's own writer is used and `install()` does nothing.
"""
import importlib.util
import os
import sys
import time
import types
from typing import Any, Mapping

from absl import logging

_SUMMARY_WRITER_MODULE = 'clu.metric_writers.summary_writer'
_INTERFACE_MODULE = 'clu.metric_writers.interface'


def install() -> None:
  """Makes `clu.metric_writers` importable without TensorFlow. Idempotent."""
  if _SUMMARY_WRITER_MODULE in sys.modules or 'clu.metric_writers' in sys.modules:
    return
  if importlib.util.find_spec('tensorflow') is not None:
    return
  # Load clu's interface module under its own name without running the package __init__ (the
  # package __init__ is what imports TensorFlow); clu's later imports reuse this module.
  clu_dir = os.path.dirname(importlib.util.find_spec('clu').origin)
  spec = importlib.util.spec_from_file_location(
      _INTERFACE_MODULE, os.path.join(clu_dir, 'metric_writers', 'interface.py'))
  interface = importlib.util.module_from_spec(spec)
  sys.modules[_INTERFACE_MODULE] = interface
  spec.loader.exec_module(interface)

  class SummaryWriter(interface.MetricWriter):
    """clu MetricWriter that writes TensorBoard event files (scalars, images, texts) without
    TensorFlow."""

    def __init__(self, logdir: str):
      super().__init__()
      from tensorboard.summary.writer import event_file_writer  # pylint: disable=g-import-not-at-top
      os.makedirs(logdir, exist_ok=True)
      self._writer = event_file_writer.EventFileWriter(os.fspath(logdir))

    def _add(self, step: int, summary) -> None:
      from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
      self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
      from laps_jax.train import summaries  # pylint: disable=g-import-not-at-top
      for key, value in scalars.items():
        self._add(step, summaries.scalar_summary(key, float(value)))

    def write_summaries(self, step, values, metadata=None):
      del step, metadata
      self._skipped('summaries', values)

    def write_images(self, step, images):
      from laps_jax.train import summaries  # pylint: disable=g-import-not-at-top
      for key, value in images.items():
        self._add(step, summaries.image_summary(key, value))

    def write_videos(self, step, videos):
      self._skipped('videos', videos)

    def write_audios(self, step, audios, *, sample_rate):
      self._skipped('audios', audios)

    def write_texts(self, step, texts):
      from laps_jax.train import summaries  # pylint: disable=g-import-not-at-top
      for key, value in texts.items():
        self._add(step, summaries.text_summary(key, str(value)))

    def write_histograms(self, step, arrays, num_buckets=None):
      self._skipped('histograms', arrays)

    def write_hparams(self, hparams):
      self._skipped('hparams', hparams)

    def _skipped(self, kind: str, values) -> None:
      logging.log_first_n(logging.INFO, 'TensorBoard writer without TensorFlow: %s (%s) are only '
                          'logged, not written to event files.', 1, kind, ', '.join(map(str, values)))

    def flush(self):
      self._writer.flush()

    def close(self):
      self._writer.close()

  module = types.ModuleType(_SUMMARY_WRITER_MODULE)
  module.__doc__ = __doc__
  module.SummaryWriter = SummaryWriter
  sys.modules[_SUMMARY_WRITER_MODULE] = module
