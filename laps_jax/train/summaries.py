"""What TensorBoard shows beyond the train scalars, and TensorBoard summaries written without
TensorFlow.

Written by the train loop (laps_jax/train/trainer.py), each behind a `config.tensorboard` key:

    input_clips  the first train step's first k clips as images, mean/std undone (`input_images`)
    per_class    the final multi-view test's per-class top-1 as a Markdown table (`per_class_table`)

and always: grad_norm, param_norm, update_norm and update_ratio (= update_norm / param_norm) of
each train step, averaged over the logged steps (`step_norms`); the resolved config as text
(`config_text`); the device memory in use where the backend reports it (`device_memory`); the
learning rate, clips/s, val_* / test_* (and val_ema_* / test_ema_*) top-1, top-5 and loss.

Without TensorFlow, clu's writer is the one of laps_jax/train/tensorboard.py; its images and texts
are the `image_summary` / `text_summary` protos below: TensorBoard's own `summary_pb2` protos with
the image / text plugins' metadata (`tensorboard.plugins.{image,text}.metadata`), PNGs encoded with
Pillow, appended with TensorBoard's `EventFileWriter` (the `tensorboard.summary.v1` helpers for
images and text import TensorFlow, so they are not used).
"""
import io

import jax
import numpy as np
import optax
from PIL import Image
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.util import tensor_util


# ---------------------------------------------------------------------------------------------
# Protos (no TensorFlow)
# ---------------------------------------------------------------------------------------------
def scalar_summary(tag: str, value: float) -> summary_pb2.Summary:
  meta = scalar_metadata.create_summary_metadata(display_name=tag, description='')
  summary = summary_pb2.Summary()
  summary.value.add(tag=tag, metadata=meta,
                    tensor=tensor_util.make_tensor_proto(np.float32(value)))
  return summary


def _png(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  return buffer.getvalue()


def to_uint8(images) -> np.ndarray:
  """Images (N, H, W, C) or (H, W, C): uint8 as is, floats taken to lie in [0, 1]."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = np.clip(np.round(images.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
  return images


def image_summary(tag: str, images) -> summary_pb2.Summary:
  """images (N, H, W, C) or (H, W, C), C in {1, 3, 4}: the image plugin's [width, height,
  png...] string tensor."""
  images = to_uint8(images)
  if images.ndim == 3:
    images = images[None]
  if images.shape[-1] == 1:
    images = images[..., 0]
  height, width = images.shape[1:3]
  content = np.array([str(width).encode(), str(height).encode()] + [_png(i) for i in images],
                     dtype=object)
  meta = image_metadata.create_summary_metadata(display_name=tag, description='')
  summary = summary_pb2.Summary()
  summary.value.add(tag=tag, metadata=meta, tensor=tensor_util.make_tensor_proto(content))
  return summary


def text_summary(tag: str, text: str) -> summary_pb2.Summary:
  """A string (Markdown) for the text plugin."""
  meta = text_metadata.create_summary_metadata(display_name=tag, description='')
  summary = summary_pb2.Summary()
  summary.value.add(tag=tag, metadata=meta,
                    tensor=tensor_util.make_tensor_proto(np.array(text.encode('utf-8'), dtype=object)))
  return summary


# ---------------------------------------------------------------------------------------------
# What the loop writes
# ---------------------------------------------------------------------------------------------
def step_norms(params_before, updates) -> dict:
  """Global L2 norms in one train step (traced inside it): the parameters before the step, the
  update applied to them, and update / parameters. With gradient accumulation the update is zero
  on the micro-steps that only accumulate (the logged means then average those in too)."""
  param_norm = optax.tree.norm(params_before)
  update_norm = optax.tree.norm(updates)
  return {'param_norm': param_norm, 'update_norm': update_norm,
          'update_ratio': update_norm / jax.numpy.maximum(param_norm, 1e-12)}


def input_images(videos, mean, std, max_clips: int) -> dict[str, np.ndarray]:
  """{'input_clips/i': uint8 (1, H, T·W, 3)}: each of the first `max_clips` clips of a batch
  (B, T, H, W, 3) as one strip of its frames, normalisation undone (x · std + mean, then ×255).
  uint8 clips (not normalised yet) are shown as they are."""
  videos = np.asarray(videos)[:max_clips]
  if videos.dtype != np.uint8:
    videos = videos.astype(np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
  images = {}
  for i, clip in enumerate(videos):
    strip = np.concatenate(list(clip), axis=1)  # (H, T·W, 3): the frames left to right
    images[f'input_clips/{i}'] = to_uint8(strip)[None]
  return images


def per_class_table(hits, counts, class_names=None) -> str:
  """A Markdown table: class, test videos, top-1 (%), from per-class hit and video counts."""
  hits, counts = np.asarray(hits, np.float64), np.asarray(counts, np.float64)
  rows = ['| class | videos | top-1 (%) |', '|---|---:|---:|']
  for k, (h, n) in enumerate(zip(hits, counts)):
    name = class_names[k] if class_names is not None and k < len(class_names) else str(k)
    accuracy = f'{100.0 * h / n:.1f}' if n else '–'
    rows.append(f'| {name} | {int(n)} | {accuracy} |')
  return '\n'.join(rows)


def config_text(config) -> str:
  """The resolved config as a Markdown code block (TensorBoard's text plugin renders Markdown)."""
  body = config.to_json_best_effort(indent=2, sort_keys=True)
  return '```\n' + body + '\n```'


def device_memory() -> dict[str, float]:
  """{'memory/bytes_in_use', 'memory/peak_bytes_in_use'} of this process's first device, in
  GiB, where the backend reports them (GPU and TPU do; the CPU backend reports nothing: {})."""
  stats = jax.local_devices()[0].memory_stats()
  if not stats:
    return {}
  gib = float(1 << 30)
  return {f'memory/{key}_gib': stats[key] / gib
          for key in ('bytes_in_use', 'peak_bytes_in_use', 'bytes_limit') if key in stats}


# ---------------------------------------------------------------------------------------------
# Writing them (clu MetricWriter calls; the loop calls these)
# ---------------------------------------------------------------------------------------------
def write_config(writer, config) -> None:
  """The resolved config as text, at step 0."""
  writer.write_texts(0, {'config': config_text(config)})


def write_input_clips(writer, step: int, local_batch: dict, data_config, max_clips: int) -> None:
  """The first `max_clips` clips of this process's batch as images (see `input_images`)."""
  if max_clips > 0:
    writer.write_images(step, input_images(local_batch['videos'], data_config.mean, data_config.std,
                                           max_clips))


def write_per_class(writer, step: int, evaluation, tag: str, class_names=None) -> None:
  """An `Evaluation`'s per-class top-1 as a Markdown table under `tag`."""
  if getattr(evaluation, 'class_hits', None) is not None:
    writer.write_texts(step, {tag: per_class_table(evaluation.class_hits, evaluation.class_count,
                                                   class_names)})
