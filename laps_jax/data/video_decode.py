"""Video files -> JPEG frames (preparation time) and JPEG frames -> pixels (training time).

Preparation decodes every video exactly once with PyAV (which ships its own FFmpeg), scales each
frame so that its short side is `short_side` (only ever down: smaller videos keep their size) and
stores it as JPEG bytes. Training then decodes only the frames it samples (`decode_jpeg_stack`),
which is what makes the input pipeline cheap: a 10 s Kinetics clip has ~250 frames and a 8x8 clip
needs 8 of them.

Training-time decoding uses simplejpeg (libjpeg-turbo, shipped in its wheel), the fastest of the
libjpeg-turbo bindings that install from PyPI without a system library, with DCT-domain
downscaling (the JPEG is decoded directly at 1/2, 1/4 or 1/8 size when that is still at least the
size the clip needs); resizing uses OpenCV (`resize_stack`), single-threaded: the parallelism is
the data workers'. experiments/data_throughput.py measures both against PIL (`draft`).

A file that cannot be used raises `VideoDecodeError` with a one-line reason; the builders catch it,
skip the video and list it in the skip file. Reasons, in the order they are checked:
  - `missing`: no such file;
  - `empty`: the file has 0 bytes;
  - `undecodable`: FFmpeg cannot open it (not a video, or truncated before its index, as an
    interrupted mp4 download with its `moov` atom at the end);
  - `no video stream`;
  - `truncated`: decoding fails part way, or yields fewer than half the frames that the container
    announces;
  - `no frames`: nothing could be decoded.

This module imports neither TFDS nor JAX: preparation workers are spawned processes that import it.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Sequence

import av
import cv2
import numpy as np
import simplejpeg
from PIL import Image

# One thread per process: the data workers are the parallelism, and OpenCV's own thread pool
# would only add scheduling cost for frames this small.
cv2.setNumThreads(1)


class VideoDecodeError(Exception):
  """A video that preparation skips; `str(error)` is the reason written to the skip list."""


@dataclasses.dataclass(frozen=True)
class EncodedVideo:
  """A decoded video kept as JPEG frames.

  Attributes:
    frames: one JPEG (bytes) per decoded frame, in display order, each `height` x `width`.
    fps: frames per second of the source stream (0.0 when the file does not say).
    original_num_frames: the frame count the container announces (0 when it does not say, as
      for most webm files); `len(frames)` is what was actually decoded.
    height, width: size of the stored frames.
  """
  frames: list[bytes]
  fps: float
  original_num_frames: int
  height: int
  width: int


def scaled_size(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(height, width) with the short side scaled to `short_side`, never up; both even-agnostic ints."""
  short = min(height, width)
  if short <= short_side:
    return height, width
  scale = short_side / short
  # The short side lands exactly on short_side; the long side is rounded.
  if height <= width:
    return short_side, max(1, round(width * scale))
  return max(1, round(height * scale)), short_side


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
  """uint8[H, W, 3] RGB -> JPEG bytes."""
  buffer = io.BytesIO()
  Image.fromarray(frame).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def _announced_frames(container, stream) -> int:
  """Frames the container claims to hold: the stream's count, else duration x rate, else 0."""
  if stream.frames:
    return int(stream.frames)
  rate = stream.average_rate or stream.guessed_rate
  if rate and stream.duration and stream.time_base:
    return int(round(float(stream.duration * stream.time_base * rate)))
  if rate and container.duration:
    return int(round(container.duration / av.time_base * float(rate)))
  return 0


def decode_video_file(path: str, short_side: int = 320, jpeg_quality: int = 90) -> EncodedVideo:
  """Decodes every frame of `path` into JPEG bytes at the given short side.

  Args:
    path: a video file FFmpeg can read (mp4, webm, mkv, ...).
    short_side: frames whose short side is larger are scaled down so that it equals this.
    jpeg_quality: JPEG quality of the stored frames (1..95).

  Returns:
    The frames and the metadata the builders store.

  Raises:
    VideoDecodeError: the video is missing, empty, undecodable or truncated (see module doc).
  """
  if not os.path.exists(path):
    raise VideoDecodeError('missing: no such file')
  if os.path.getsize(path) == 0:
    raise VideoDecodeError('empty: the file has 0 bytes')
  try:
    container = av.open(path)
  except Exception as e:  # FFmpeg reports everything through a handful of error types.
    raise VideoDecodeError(f'undecodable: {type(e).__name__}: {e}') from None
  with container:
    if not container.streams.video:
      raise VideoDecodeError('no video stream')
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    announced = _announced_frames(container, stream)
    frames = []
    size = None
    try:
      for frame in container.decode(stream):
        if size is None:
          size = scaled_size(frame.height, frame.width, short_side)
        # swscale does the resize in C, straight into RGB; AREA is the right filter for shrinking.
        pixels = frame.to_ndarray(width=size[1], height=size[0], format='rgb24',
                                  interpolation='AREA')
        frames.append(encode_jpeg(pixels, jpeg_quality))
    except Exception as e:
      raise VideoDecodeError(
          f'truncated: decoding failed after {len(frames)} of {announced or "?"} frames: '
          f'{type(e).__name__}: {e}') from None
  if not frames:
    raise VideoDecodeError('no frames: the video stream decodes to nothing')
  if announced and len(frames) < announced / 2:
    raise VideoDecodeError(
        f'truncated: decoded {len(frames)} frames, the container announces {announced}')
  return EncodedVideo(frames=frames, fps=fps, original_num_frames=announced,
                      height=size[0], width=size[1])


def write_video(path: str, frames: np.ndarray, fps: int = 25, codec: str | None = None,
                bit_rate: int | None = None) -> None:
  """Writes uint8[T, H, W, 3] RGB frames as a video file with PyAV (tests, benchmarks, demos).

  codec: default by extension: .mp4 -> libx264, .webm -> libvpx-vp9, else mpeg4. H and W must be
  even (yuv420p). bit_rate: bits / s (default: the codec's own rate control).
  """
  if codec is None:
    ext = os.path.splitext(path)[1].lower()
    codec = {'.mp4': 'libx264', '.webm': 'libvpx-vp9'}.get(ext, 'mpeg4')
  frames = np.asarray(frames, np.uint8)
  with av.open(path, 'w') as container:
    stream = container.add_stream(codec, rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = 'yuv420p'
    if bit_rate:
      stream.bit_rate = int(bit_rate)
    for pixels in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def decode_jpeg(data: bytes, min_size: tuple[int, int] | None = None) -> Image.Image:
  """JPEG bytes -> RGB PIL image.

  Args:
    data: JPEG bytes.
    min_size: optional (width, height) that the caller will resize to; libjpeg may then decode at
      1/2, 1/4 or 1/8 scale directly (PIL's `draft`), never below this size. Much cheaper when
      frames are stored far larger than the training resolution.
  """
  image = Image.open(io.BytesIO(data))
  if min_size is not None:
    image.draft('RGB', min_size)
  return image.convert('RGB')


def decode_jpeg_size(data: bytes) -> tuple[int, int]:
  """(width, height) of a JPEG, from its header (nothing is decoded)."""
  height, width, _, _ = simplejpeg.decode_jpeg_header(data)
  return width, height


def decode_jpeg_stack(frames: Sequence[bytes], indices: Sequence[int],
                      min_size: tuple[int, int] | None = None) -> np.ndarray:
  """Decodes frames[indices] (all of one size) -> uint8[len(indices), h, w, 3] RGB.

  min_size: optional (height, width) the caller will resize to; the JPEGs are then decoded in the
  DCT domain at the smallest of the 1/1, 1/2, 1/4 and 1/8 scales whose size is still >= min_size
  (h, w are that size). Each frame is decoded straight into its slot of the output array.
  """
  min_h, min_w = min_size if min_size is not None else (0, 0)
  # Only the power-of-two scales: libjpeg-turbo's in-between ones (7/8, 3/4, ...) decode slower
  # than the full size (experiments/data_throughput.py).
  scale = dict(min_height=min_h, min_width=min_w, min_factor=2)
  height, width, _, _ = simplejpeg.decode_jpeg_header(frames[int(indices[0])], **scale)
  out = np.empty((len(indices), height, width, 3), np.uint8)
  for slot, i in enumerate(indices):
    simplejpeg.decode_jpeg(frames[int(i)], colorspace='RGB', buffer=out[slot], **scale)
  return out


def resize_stack(frames: np.ndarray, size: tuple[int, int], flip: bool = False) -> np.ndarray:
  """uint8[N, h, w, 3] (a view is fine) -> uint8[N, height, width, 3] with size = (height, width),
  mirrored left-right when `flip`.

  Bilinear (OpenCV, pixel centres aligned as in PIL and tf.image), or area averaging when
  shrinking by 2 or more, where bilinear would skip pixels and alias. After the power-of-two DCT
  downscaling of `decode_jpeg_stack` what is left is less than 2; there, OpenCV's area filter costs
  ~6x the bilinear one and changes little.
  """
  height, width = size
  out = np.empty((len(frames), height, width, 3), np.uint8)
  shrink = frames.shape[1] >= 2 * height and frames.shape[2] >= 2 * width
  interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
  for slot, frame in enumerate(frames):
    if frame.shape[:2] == (height, width):
      out[slot] = frame
    else:
      cv2.resize(frame, (width, height), dst=out[slot], interpolation=interpolation)
    if flip:
      cv2.flip(out[slot], 1, dst=out[slot])
  return out


def decode_jpeg_frames(frames: Sequence[bytes], indices: Sequence[int],
                       min_size: tuple[int, int] | None = None) -> list[Image.Image]:
  """Decodes only frames[indices] (each distinct index once) -> list of PIL images, len(indices)."""
  cache: dict[int, Image.Image] = {}
  out = []
  for i in indices:
    i = int(i)
    if i not in cache:
      cache[i] = decode_jpeg(frames[i], min_size)
    out.append(cache[i])
  return out


# --- preparation work items (run in spawned worker processes) ---

@dataclasses.dataclass(frozen=True)
class VideoItem:
  """One video to prepare: `key` (unique in the split), label index and where to read it."""
  key: str
  video_id: str
  label: int
  path: str


def example_from_video(video_id: str, label: int, video: EncodedVideo) -> dict:
  """The stored example of one decoded video (fields: see `builder_common`)."""
  return {
      'video_id': video_id,
      'frames': video.frames,
      'label': label,
      'fps': np.float32(video.fps),
      'num_frames': np.int32(len(video.frames)),
      'original_num_frames': np.int32(video.original_num_frames),
      'height': np.int32(video.height),
      'width': np.int32(video.width),
  }


def _decode_item(item: VideoItem, short_side: int, jpeg_quality: int):
  """Worker: VideoItem -> (item, example dict) or (item, skip reason str)."""
  try:
    video = decode_video_file(item.path, short_side, jpeg_quality)
  except VideoDecodeError as e:
    return item, str(e)
  return item, example_from_video(item.video_id, item.label, video)


class DecodeWorker:
  """Picklable callable for the pool: binds the frame size and quality to `_decode_item`."""

  def __init__(self, short_side: int, jpeg_quality: int):
    self.short_side = short_side
    self.jpeg_quality = jpeg_quality

  def __call__(self, item: VideoItem):
    return _decode_item(item, self.short_side, self.jpeg_quality)
