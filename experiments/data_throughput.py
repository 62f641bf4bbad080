"""Input pipeline throughput: clips per second per CPU core, ours against decoding mp4 every step.

  python experiments/data_throughput.py            # a few minutes on 2 cores

Three measurements, each in one process (grain num_workers=0), so that "per core" is literal:
  (a) the training pipeline on prepared synthetic_motion (the demo settings: 8 frames at stride 2
      of 16, scale jitter (32, 40), 32 crop, 64x64 stored frames);
  (b) the training pipeline on Kinetics-format data: the script writes `--num_videos` mp4 clips of
      `--seconds` s at `--width`x`--height`, `--fps` fps (moving textured shapes, x264) named and
      annotated like Kinetics, prepares them with the kinetics400 builder (JPEG frames, short side
      kept at 256) and samples 8 frames at stride 8, scale jitter (256, 320), random 224 crop, flip;
  (c) the baseline that the official PyTorch code uses: for every clip open the mp4 with PyAV,
      seek to the window, decode up to its last frame, keep the 8 sampled frames, then the same
      scale jitter / crop / flip / normalisation (PIL + NumPy).
Two figures per row: clips/s of wall time, and clips per CPU-second of this process (user + sys,
all its threads), which is the fair "per core" number on a shared machine. The ratio (b) / (c) is
printed below the table. Batches of `--batch_size` clips; the first batch is not timed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import demo  # pylint: disable=g-import-not-at-top
from laps_jax.data import augment
from laps_jax.data import pipeline
from laps_jax.data import prepare
from laps_jax.data import sampling
from laps_jax.data import synthetic_motion
from laps_jax.data import video_decode


def synthetic_video(rng: np.random.Generator, num_frames: int, height: int, width: int
                    ) -> np.ndarray:
  """uint8[T, H, W, 3]: a panning textured scene with a few moving textured rectangles.

  Enough texture and motion that x264 at the requested bit rate spends it like on real footage.
  """
  pad = 64
  big_h, big_w = height + 2 * pad, width + 2 * pad
  y, x = np.mgrid[0:big_h, 0:big_w].astype(np.float32)
  scene = np.zeros((big_h, big_w, 3), np.float32)
  for _ in range(12):   # a sum of random gratings: texture at several scales
    angle, period = rng.uniform(0, np.pi), rng.uniform(3, 40)
    phase = (x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period
    scene += rng.uniform(5, 20) * np.sin(phase + rng.uniform(0, 6))[..., None] * rng.uniform(
        0.3, 1.0, 3)
  scene += 120
  pan = rng.uniform(-1.5, 1.5, size=2)
  shapes = [(rng.uniform(0, height), rng.uniform(0, width), rng.uniform(-3, 3),
             rng.uniform(-3, 3), int(rng.integers(20, 60)), rng.uniform(0, 255, 3))
            for _ in range(4)]
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  for t in range(num_frames):
    oy = int(pad + pan[0] * t) % (2 * pad)
    ox = int(pad + pan[1] * t) % (2 * pad)
    frame = scene[oy:oy + height, ox:ox + width].copy()
    for cy, cx, vy, vx, size, colour in shapes:
      top, left = int(cy + vy * t) % height, int(cx + vx * t) % width
      frame[top:top + size, left:left + size] = colour + 20 * np.sin(t / 5.0)
    frame += rng.normal(0, 3, frame.shape).astype(np.float32)
    frames[t] = np.clip(frame, 0, 255)
  return frames


def write_kinetics_dir(root: str, num_videos: int, seconds: float, fps: int, height: int,
                       width: int, bit_rate: int) -> float:
  """Kinetics-format manual dir (annotations/{train,val}.csv + train/*.mp4); returns MB of mp4."""
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(root, 'annotations'))
  os.makedirs(os.path.join(root, 'train'))
  os.makedirs(os.path.join(root, 'val'))
  rows = []
  total = 0
  for i in range(num_videos):
    youtube_id = f'video{i:06d}'
    name = f'{youtube_id}_{0:06d}_{int(seconds):06d}.mp4'
    path = os.path.join(root, 'train', name)
    video_decode.write_video(path, synthetic_video(rng, int(seconds * fps), height, width), fps,
                             bit_rate=bit_rate)
    total += os.path.getsize(path)
    rows.append(f'class_{i % 4},{youtube_id},0,{int(seconds)},train')
  header = 'label,youtube_id,time_start,time_end,split\n'
  with open(os.path.join(root, 'annotations', 'train.csv'), 'w') as f:
    f.write(header + '\n'.join(rows) + '\n')
  with open(os.path.join(root, 'annotations', 'val.csv'), 'w') as f:
    f.write(header + rows[0] + '\n')
  return total / 2**20


def folder_mb(path: str) -> float:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
             for f in files) / 2**20


def measure(next_batch, batch_size: int, batches: int) -> tuple[float, float]:
  """(clips / wall second, clips / CPU second) over `batches` batches after one warm-up batch."""
  next_batch()
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(batches):
    next_batch()
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  clips = batches * batch_size
  return clips / wall, clips / cpu


def data_config(data_dir: str, **overrides):
  c = demo.get_config().data
  c.data_dir = data_dir
  c.num_workers = 0
  c.update(overrides)
  return c


class PyAVBaseline:
  """Decodes the sampled window of an mp4 with PyAV at every step (as PySlowFast's pyav_decode)."""

  def __init__(self, paths, num_frames, stride, options: augment.TrainOptions, seed=0):
    self.paths, self.num_frames, self.stride, self.options = paths, num_frames, stride, options
    self.rng = np.random.default_rng(seed)

  def clip(self, path):
    import av  # pylint: disable=g-import-not-at-top
    with av.open(path) as container:
      stream = container.streams.video[0]
      total = stream.frames
      indices = sampling.train_indices(total, self.num_frames, 'dense', self.stride, self.rng)
      first, last = int(indices[0]), int(indices[-1])
      rate = stream.average_rate
      # Seek to the keyframe before the window, then decode up to its last frame.
      target = int(first / rate / stream.time_base)
      container.seek(target, stream=stream, backward=True, any_frame=False)
      frames = {}
      wanted = set(indices.tolist())
      for frame in container.decode(stream):
        index = int(round(float(frame.pts * stream.time_base * rate)))
        if index in wanted:
          frames[index] = frame.to_ndarray(format='rgb24')
        if index >= last:
          break
    images = [frames.get(i, frames[max(frames)]) for i in indices.tolist()]
    return self.augment(np.stack(images))

  def augment(self, video: np.ndarray) -> np.ndarray:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    o = self.options
    height, width = video.shape[1:3]
    short = int(self.rng.integers(o.scale_jitter[0], o.scale_jitter[1] + 1))
    new_h, new_w = sampling.resized_size(height, width, short)
    top = int(self.rng.integers(0, new_h - o.image_size + 1))
    left = int(self.rng.integers(0, new_w - o.image_size + 1))
    flip = o.flip and self.rng.random() < 0.5
    out = []
    for frame in video:
      image = Image.fromarray(frame).resize((new_w, new_h), Image.BILINEAR)
      image = image.crop((left, top, left + o.image_size, top + o.image_size))
      if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
      out.append(np.asarray(image))
    return augment.normalize(np.stack(out), o.mean, o.std)

  def batch(self, batch_size):
    paths = [self.paths[int(i)] for i in self.rng.integers(0, len(self.paths), batch_size)]
    return np.stack([self.clip(p) for p in paths])


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--num_videos', type=int, default=20)
  parser.add_argument('--seconds', type=float, default=10.0)
  parser.add_argument('--fps', type=int, default=25)
  parser.add_argument('--height', type=int, default=256)
  parser.add_argument('--width', type=int, default=340)
  parser.add_argument('--kbps', type=int, default=800,
                      help='x264 bit rate of the generated mp4s (Kinetics clips at this size are '
                      'roughly 0.5-1.5 Mbit/s)')
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--batches', type=int, default=12, help='timed batches per row')
  parser.add_argument('--synthetic_batches', type=int, default=40)
  parser.add_argument('--workdir', default=None, help='default: a temporary folder, removed')
  args = parser.parse_args(argv)

  workdir = args.workdir or tempfile.mkdtemp(prefix='data_throughput_')
  try:
    rows = []
    # (a) synthetic_motion, demo settings.
    t0 = time.perf_counter()
    prepare.prepare('synthetic_motion', os.path.join(workdir, 'data'), num_train=800,
                    num_validation=8)
    synthetic_build = time.perf_counter() - t0
    c = data_config(os.path.join(workdir, 'data'))
    iterator = iter(pipeline.make_train_loader(c, global_batch_size=32, seed=0,
                                               num_classes=synthetic_motion.NUM_CLASSES))
    wall, cpu = measure(lambda: next(iterator), 32, args.synthetic_batches)
    rows.append(('synthetic_motion, prepared (JPEG 64x64)', '8 x stride 2, jitter 32-40, crop 32',
                 wall, cpu))

    # (b) Kinetics-format mp4 -> our builder -> our pipeline.
    manual = os.path.join(workdir, 'kinetics_manual')
    t0 = time.perf_counter()
    mp4_mb = write_kinetics_dir(manual, args.num_videos, args.seconds, args.fps, args.height,
                                args.width, args.kbps * 1000)
    write_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    builder = prepare.prepare('kinetics400', os.path.join(workdir, 'data'), manual,
                              strict_num_classes=False)
    kinetics_build = time.perf_counter() - t0
    prepared_mb = folder_mb(str(builder.data_path))
    settings = '8 x stride 8, jitter 256-320, crop 224, flip'
    c = data_config(os.path.join(workdir, 'data'), name='kinetics400', num_frames=8,
                    frame_stride=8, image_size=224, scale_jitter=(256, 320),
                    test_short_side=224, flip=True)
    iterator = iter(pipeline.make_train_loader(c, global_batch_size=args.batch_size, seed=0,
                                               num_classes=4))
    wall_b, cpu_b = measure(lambda: next(iterator), args.batch_size, args.batches)
    rows.append(('Kinetics-format, prepared (JPEG frames, ours)', settings, wall_b, cpu_b))

    # (c) Baseline: PyAV decoding of the mp4 at every step, same sampling and augmentation.
    paths = sorted(os.path.join(manual, 'train', f) for f in os.listdir(os.path.join(manual,
                                                                                      'train')))
    baseline = PyAVBaseline(paths, 8, 8, pipeline.train_options(c))
    wall_c, cpu_c = measure(lambda: baseline.batch(args.batch_size), args.batch_size,
                            args.batches)
    rows.append(('Kinetics-format, mp4 decoded with PyAV every step', settings, wall_c, cpu_c))

    print(f'\nInput pipeline throughput, one process (grain num_workers=0), {os.cpu_count()} CPUs, '
          f'load average {os.getloadavg()[0]:.1f} at the end.\n')
    print('| data | sampling / augmentation | clips/s (wall) | clips per CPU-second |')
    print('|---|---|---:|---:|')
    for name, setting, wall, cpu in rows:
      print(f'| {name} | {setting} | {wall:.1f} | {cpu:.1f} |')
    print(f'\nPrepared JPEG frames vs decoding mp4 every step: {cpu_b / cpu_c:.1f}x per CPU-second '
          f'({wall_b / wall_c:.1f}x wall).')
    print(f'Kinetics-format data: {args.num_videos} clips of {args.seconds:g} s at '
          f'{args.width}x{args.height}, {args.fps} fps, x264 at {args.kbps} kbit/s: mp4 '
          f'{mp4_mb:.1f} MB (written in '
          f'{write_time:.0f} s), prepared {prepared_mb:.1f} MB (built in {kinetics_build:.0f} s '
          f'with {os.cpu_count()} processes); synthetic_motion 808 clips built in '
          f'{synthetic_build:.0f} s.')
  finally:
    if args.workdir is None:
      shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
  main()
