"""Input pipeline throughput on the host: clips per CPU-second, where the time goes, and ours
against decoding the video with PyAV at every step (what the official PyTorch code does).

  python experiments/data_throughput.py                      # ~10 min on 2 busy cores
  python experiments/data_throughput.py --out=experiments/results/data_throughput_cpu

Everything runs in this one process (grain num_workers=0), so "per CPU-second" is literal: the
clips made per second of this process's CPU time (user + sys, all threads), the fair figure on a
shared machine. Three kinds of data, each prepared with the project's builders:

  synthetic_motion   the demo dataset (64x64 frames), demo settings;
  Kinetics-format    `--num_videos` generated mp4 clips of 10 s at 340x256 (textured shapes, x264),
                     named and annotated like Kinetics, prepared by the kinetics400 builder;
  realistic footage  no real video can be downloaded here, so: a camera panning and zooming over
                     a real photograph (matplotlib's sample grace_hopper.jpg) with two moving
                     patches of it and sensor noise, x264 at 640x272 (1 Mbit/s) and 1280x720
                     (3 Mbit/s), 10 s at 25 fps: sizes and bit rates of real uploads; prepared at
                     the builder's default short side (320).
Training settings are configs/laps_vitb.py's: 8 frames at stride 8, short side jittered in
[224, 360], random 224 crop, flip, colour jitter p=0.1 (its parameters drawn on the host, applied
on the device: laps_jax.data.device_augment), batches of `--batch_size`.

The baseline (PySlowFast's pyav_decode, as a new user would write it): per clip, open the mp4,
seek to the keyframe before the window, decode up to its last frame, keep the 8 sampled frames,
then the same jitter / crop / flip, normalised to float32 on the host (PIL + NumPy).

Records are read in order (shuffle off: see `train_data_config`). Ours and the baseline run
alternately, `--rounds` times; each figure is the median round. The
per-stage breakdown times the steps of `augment.train_clip` one by one on the same records (read,
JPEG decode, resize + crop, flip + parameter draws, batching), and the decoder table compares the
JPEG decoders on the same frames.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import demo  # pylint: disable=g-import-not-at-top
from configs import laps_vitb
from laps_jax.data import augment
from laps_jax.data import mixup
from laps_jax.data import pipeline
from laps_jax.data import prepare
from laps_jax.data import sampling
from laps_jax.data import synthetic_motion
from laps_jax.data import video_decode

import ml_collections  # pylint: disable=g-import-not-at-top,wrong-import-order


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


def realistic_video(rng: np.random.Generator, num_frames: int, height: int, width: int
                    ) -> np.ndarray:
  """uint8[T, H, W, 3]: a camera panning and zooming over a real photograph, two patches of it
  moving across, sensor noise (module doc)."""
  import cv2  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  path = os.path.join(matplotlib.get_data_path(), 'sample_data', 'grace_hopper.jpg')
  photo = np.asarray(Image.open(path).convert('RGB'), np.float32)
  if rng.random() < 0.5:
    photo = photo[:, ::-1]
  scale = 1.4 * max(height / photo.shape[0], width / photo.shape[1])
  scene = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
  big_h, big_w = scene.shape[:2]
  patches = []
  for _ in range(2):
    size = int(rng.integers(height // 6, height // 3))
    top, left = int(rng.integers(0, big_h - size)), int(rng.integers(0, big_w - size))
    patches.append((scene[top:top + size, left:left + size].copy(), rng.uniform(0, height),
                    rng.uniform(0, width), rng.uniform(-4, 4), rng.uniform(-6, 6)))
  zoom0, zoom1 = rng.uniform(1.0, 1.2), rng.uniform(1.0, 1.2)
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  for t in range(num_frames):
    u = t / max(num_frames - 1, 1)
    zoom = zoom0 + (zoom1 - zoom0) * u
    cx = big_w / 2 + (big_w - width * zoom) / 2 * 0.8 * np.sin(2 * np.pi * (u / 2 + 0.1))
    cy = big_h / 2 + (big_h - height * zoom) / 2 * 0.8 * np.cos(2 * np.pi * u / 3)
    matrix = np.float32([[zoom, 0, cx - zoom * width / 2], [0, zoom, cy - zoom * height / 2]])
    frame = cv2.warpAffine(scene, matrix, (width, height), flags=cv2.INTER_LINEAR |
                           cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    for patch, py, px, vy, vx in patches:
      size = patch.shape[0]
      top = int(py + vy * t) % max(height - size, 1)
      left = int(px + vx * t) % max(width - size, 1)
      frame[top:top + size, left:left + size] = patch
    frame += rng.normal(0, 2.5, frame.shape).astype(np.float32)
    frames[t] = np.clip(frame, 0, 255)
  return frames


def write_kinetics_dir(root: str, num_videos: int, seconds: float, fps: int, height: int,
                       width: int, bit_rate: int, make_frames=synthetic_video) -> float:
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
    video_decode.write_video(path, make_frames(rng, int(seconds * fps), height, width), fps,
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


def train_data_config(data_dir: str, name: str) -> ml_collections.ConfigDict:
  """configs/laps_vitb.py's data settings (demo's for synthetic_motion), in this process.

  Records are not shuffled here: grain's shuffled sampler (index_shuffle) costs 1-5 ms per record
  on a split of 2-12 records but ~0.004 ms on Kinetics-400's 240k, so on these small generated
  splits it would measure the split size, not the pipeline."""
  source = demo.get_config() if name == 'synthetic_motion' else laps_vitb.get_config()
  c = ml_collections.ConfigDict(source.data.to_dict())
  c.update(data_dir=data_dir, name=name, num_workers=0, shuffle=False)
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
    clip = augment.color_jitter(np.stack(out).astype(np.float32), o.color_jitter, self.rng)
    return augment.normalize(clip, o.mean, o.std)

  def batch(self, batch_size):
    paths = [self.paths[int(i)] for i in self.rng.integers(0, len(self.paths), batch_size)]
    return np.stack([self.clip(p) for p in paths])


def timed(fn, clips: int) -> tuple[float, float]:
  """(clips / wall second, clips / CPU second) of one call of fn."""
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  return clips / wall, clips / cpu


def alternate(runs: dict, rounds: int) -> dict:
  """{name: (fn, clips)} run in turn `rounds` times -> {name: (median wall, median CPU rate)}."""
  results = {name: [] for name in runs}
  for _ in range(rounds):
    for name, (fn, clips) in runs.items():
      results[name].append(timed(fn, clips))
  return {name: (statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates))
          for name, rates in results.items()}


def stage_breakdown(source, c, num_clips: int, batch_size: int, seed: int = 0) -> dict:
  """CPU ms per clip of each step of `augment.train_clip` + batching, on `num_clips` records."""
  options = pipeline.train_options(c)
  rng = np.random.default_rng(seed)
  totals = dict.fromkeys(('read', 'JPEG decode (DCT-scaled)', 'resize + crop + flip',
                          'parameter draws', 'batching'), 0.0)
  clips = []
  size = options.image_size
  for n in range(num_clips):
    clock = time.process_time()
    example = source[int(rng.integers(len(source)))]
    frames = example['frames']
    indices = sampling.train_indices(len(frames), int(c.num_frames), c.sampling,
                                     int(c.frame_stride), rng)
    unique = np.unique(indices)
    data = [frames[int(i)] for i in unique]
    height, width = int(example['height']), int(example['width'])
    t1 = time.process_time()
    short = int(rng.integers(options.scale_jitter[0], options.scale_jitter[1] + 1))
    new_h, new_w = sampling.resized_size(height, width, short)
    top, left = int(rng.integers(0, new_h - size + 1)), int(rng.integers(0, new_w - size + 1))
    flip = bool(options.flip and rng.random() < 0.5)
    decoded = video_decode.decode_jpeg_stack(data, range(len(data)), min_size=(new_h, new_w))
    t2 = time.process_time()
    fy, fx = decoded.shape[1] / new_h, decoded.shape[2] / new_w
    window = decoded[:, round(top * fy):round((top + size) * fy),
                     round(left * fx):round((left + size) * fx)]
    clip = video_decode.resize_stack(window, (size, size), flip=flip)
    t3 = time.process_time()
    params = (augment.draw_color_jitter(options.color_jitter, rng),
              augment.draw_erasing(options.random_erasing, size, size, rng))
    clips.append((clip, params))
    t4 = time.process_time()
    totals['read'] += t1 - clock
    totals['JPEG decode (DCT-scaled)'] += t2 - t1
    totals['resize + crop + flip'] += t3 - t2
    totals['parameter draws'] += t4 - t3
    if len(clips) == batch_size or n == num_clips - 1:
      t5 = time.process_time()
      videos = np.stack([x for x, _ in clips])
      np.stack([p[0] for _, p in clips])
      mixup.draw_mix(len(videos), size, size, mixup_alpha=float(c.mixup_alpha),
                     cutmix_alpha=float(c.cutmix_alpha), rng=rng)
      totals['batching'] += time.process_time() - t5
      clips = []
  return {k: 1e3 * v / num_clips for k, v in totals.items()}


def decoder_table(source, c, num_clips: int, seed: int = 1) -> dict:
  """CPU ms per clip (8 frames) of each JPEG decoder on the same frames, at the jittered size."""
  import cv2  # pylint: disable=g-import-not-at-top
  import simplejpeg  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  jobs = []
  for _ in range(num_clips):
    frames = source[int(rng.integers(len(source)))]['frames']
    indices = sampling.train_indices(len(frames), int(c.num_frames), c.sampling,
                                     int(c.frame_stride), rng)
    width, height = video_decode.decode_jpeg_size(frames[0])
    short = int(rng.integers(c.scale_jitter[0], c.scale_jitter[1] + 1))
    jobs.append(([frames[int(i)] for i in indices], sampling.resized_size(height, width, short)))

  def pil(data, size, draft):
    image = Image.open(io.BytesIO(data))
    if draft:
      image.draft('RGB', (size[1], size[0]))
    return np.asarray(image.convert('RGB'))

  decoders = {
      'PIL': lambda d, s: pil(d, s, False),
      'PIL + draft (DCT-scaled)': lambda d, s: pil(d, s, True),
      'OpenCV imdecode': lambda d, s: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR_RGB),
      'simplejpeg': lambda d, s: simplejpeg.decode_jpeg(d),
      'simplejpeg, DCT-scaled, any factor': lambda d, s: simplejpeg.decode_jpeg(
          d, min_height=s[0], min_width=s[1]),
      'simplejpeg, DCT-scaled by 2, 4, 8 (ours)': lambda d, s: simplejpeg.decode_jpeg(
          d, min_height=s[0], min_width=s[1], min_factor=2),
  }
  results = {}
  for name, decode in decoders.items():
    clock = time.process_time()
    for data, size in jobs:
      for frame in data:
        decode(frame, size)
    results[name] = 1e3 * (time.process_time() - clock) / num_clips
  return results


def _descendants(pid: int) -> list[int]:
  out = []
  for task in os.listdir(f'/proc/{pid}/task'):
    try:
      with open(f'/proc/{pid}/task/{task}/children') as f:
        children = [int(x) for x in f.read().split()]
    except OSError:
      continue
    for child in children:
      out += [child] + _descendants(child)
  return out


def _pss_bytes(pids) -> int:
  """Proportional set size of the processes together (shared pages counted once), in bytes."""
  total = 0
  for pid in pids:
    try:
      with open(f'/proc/{pid}/smaps_rollup') as f:
        for line in f:
          if line.startswith('Pss:'):
            total += int(line.split()[1]) * 1024
            break
    except OSError:
      pass
  return total


def _peak_loader_memory(c, batch_size: int) -> tuple[int, tuple]:
  """(peak PSS of this process and its workers above the idle process, batch shape) over one pass
  of the multi-view test loader."""
  import threading  # pylint: disable=g-import-not-at-top
  me = os.getpid()
  idle = _pss_bytes([me])
  peak, stop = [0], threading.Event()

  def sample():
    while not stop.is_set():
      peak[0] = max(peak[0], _pss_bytes([me] + _descendants(me)))
      time.sleep(0.02)

  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  shape = None
  for batch in pipeline.make_eval_loader(c, split='train', global_batch_size=batch_size,
                                         multi_view=True):
    shape = batch['videos'].shape
  stop.set()
  sampler.join()
  return peak[0] - idle, shape


def test_buffer_memory(data_dir: str) -> dict:
  """Host memory of the multi-view test loader at configs/laps_vitb.py's test settings.

  Measured: the peak PSS (shared pages counted once) of this process and its grain workers,
  sampled every 20 ms, above the idle process; once with the 30 views and once with 1 view, the
  difference being the view buffers (the workers' interpreters and imports cancel out)."""
  from laps_jax.data import loaders  # pylint: disable=g-import-not-at-top
  config = laps_vitb.get_config()
  c = ml_collections.ConfigDict(config.data.to_dict())
  c.update(data_dir=data_dir, name='kinetics400')
  full, shape = _peak_loader_memory(c, config.test.batch_size)
  one = ml_collections.ConfigDict(c.to_dict())
  one.update(test_clips=1, test_crops=1)
  single, _ = _peak_loader_memory(one, config.test.batch_size)
  computed = loaders.multi_view_buffer_bytes(c, config.test.batch_size)
  computed_single = loaders.multi_view_buffer_bytes(one, config.test.batch_size)
  return {'peak_bytes': full, 'peak_bytes_one_view': single,
          'buffers_bytes': full - single + computed_single['total'], 'batch_shape': shape,
          'num_workers': loaders.num_workers(c), 'computed': computed}


def loader_runner(c, batch_size: int, batches: int, num_classes: int):
  """(fn, clips): `batches` batches of the train loader (one warm-up batch already taken)."""
  iterator = iter(pipeline.make_train_loader(c, global_batch_size=batch_size, seed=0,
                                             num_classes=num_classes))
  next(iterator)
  return (lambda: [next(iterator) for _ in range(batches)]), batches * batch_size


def baseline_runner(manual: str, c, batch_size: int, batches: int):
  folder = os.path.join(manual, 'train')
  paths = sorted(os.path.join(folder, f) for f in os.listdir(folder))
  baseline = PyAVBaseline(paths, int(c.num_frames), int(c.frame_stride), pipeline.train_options(c))
  baseline.batch(1)
  return (lambda: [baseline.batch(batch_size) for _ in range(batches)]), batches * batch_size


def prepare_footage(workdir: str, tag: str, args, height: int, width: int, kbps: int,
                    num_videos: int, make_frames) -> dict:
  manual = os.path.join(workdir, f'manual_{tag}')
  data_dir = os.path.join(workdir, f'data_{tag}')
  t0 = time.perf_counter()
  reused = os.path.isdir(manual)
  if reused:   # a --workdir of an earlier run: its videos (and prepared data) are reused
    mp4_mb = folder_mb(os.path.join(manual, 'train'))
  else:
    mp4_mb = write_kinetics_dir(manual, num_videos, args.seconds, args.fps, height, width,
                                kbps * 1000, make_frames)
  t1 = time.perf_counter()
  builder = prepare.prepare('kinetics400', data_dir, manual, strict_num_classes=False)
  t2 = time.perf_counter()
  return dict(manual=manual, data_dir=data_dir, mp4_mb=mp4_mb,
              prepared_mb=folder_mb(str(builder.data_path)), write_s=t1 - t0,
              prepare_s=None if reused else t2 - t1,
              num_videos=num_videos, size=f'{width}x{height}', kbps=kbps,
              num_classes=len(builder.info.features['label'].names))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--num_videos', type=int, default=12, help='generated Kinetics-format clips')
  parser.add_argument('--real_videos', type=int, default=3, help='clips of each realistic size')
  parser.add_argument('--seconds', type=float, default=10.0)
  parser.add_argument('--fps', type=int, default=25)
  parser.add_argument('--kbps', type=int, default=800,
                      help='x264 bit rate of the generated 340x256 mp4s (Kinetics clips at this '
                      'size are roughly 0.5-1.5 Mbit/s)')
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--batches', type=int, default=6, help='our batches per round and row')
  parser.add_argument('--baseline_batches', type=int, default=1,
                      help='baseline batches per round and row')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--stage_clips', type=int, default=48)
  parser.add_argument('--test_memory', action=argparse.BooleanOptionalAction, default=True,
                      help="peak host memory of the multi-view test loader (laps_vitb's settings)")
  parser.add_argument('--workdir', default=None, help='default: a temporary folder, removed; an existing one is reused')
  parser.add_argument('--out', default=None,
                      help='write OUT.md (the printed report) and OUT.json (the figures)')
  args = parser.parse_args(argv)

  workdir = args.workdir or tempfile.mkdtemp(prefix='data_throughput_')
  started = time.perf_counter()
  try:
    # --------------------------------------------------------------------------- the data
    synthetic_dir = os.path.join(workdir, 'data_synthetic')
    prepare.prepare('synthetic_motion', synthetic_dir, num_train=400, num_validation=8)
    footage = {
        'kinetics': prepare_footage(workdir, 'kinetics', args, 256, 340, args.kbps,
                                    args.num_videos, synthetic_video),
        'real_272p': prepare_footage(workdir, 'real_272p', args, 272, 640, 1000,
                                     args.real_videos, realistic_video),
        'real_720p': prepare_footage(workdir, 'real_720p', args, 720, 1280, 3000,
                                     args.real_videos, realistic_video),
    }
    names = {'kinetics': 'Kinetics-format (generated, 340x256)',
             'real_272p': 'realistic footage 640x272', 'real_720p': 'realistic footage 1280x720'}

    # --------------------------------------------------------------------------- throughput
    b = args.batch_size
    runs = {'synthetic': loader_runner(train_data_config(synthetic_dir, 'synthetic_motion'),
                                       32, 4 * args.batches, synthetic_motion.NUM_CLASSES)}
    configs = {}
    for tag, f in footage.items():
      configs[tag] = train_data_config(f['data_dir'], 'kinetics400')
      runs[f'{tag}/ours'] = loader_runner(configs[tag], b, args.batches, f['num_classes'])
      runs[f'{tag}/pyav'] = baseline_runner(f['manual'], configs[tag], b, args.baseline_batches)
    rates = alternate(runs, args.rounds)

    # --------------------------------------------------------------------------- where it goes
    stages, decoders = {}, {}
    for tag, c in configs.items():
      source = pipeline.data_source(c, 'train')
      stages[tag] = stage_breakdown(source, c, args.stage_clips, b)
      decoders[tag] = decoder_table(source, c, max(8, args.stage_clips // 2))

    memory = test_buffer_memory(footage['kinetics']['data_dir']) if args.test_memory else None

    # --------------------------------------------------------------------------- report
    settings = '8 x stride 8, jitter 224-360, crop 224, flip, colour jitter 0.1'
    lines = [f'Input pipeline throughput, one process (grain num_workers=0), {os.cpu_count()} '
             f'CPUs, load average {os.getloadavg()[0]:.1f} at the end; median of {args.rounds} '
             'alternating rounds.', '',
             '| data | pipeline | clips/s (wall) | clips per CPU-second | vs PyAV per step |',
             '|---|---|---:|---:|---:|']
    wall, cpu = rates['synthetic']
    lines.append(f'| synthetic_motion (JPEG 64x64) | ours: 8 x stride 2, jitter 32-40, crop 32 '
                 f'| {wall:.1f} | {cpu:.1f} | |')
    for tag in footage:
      ours, base = rates[f'{tag}/ours'], rates[f'{tag}/pyav']
      lines.append(f'| {names[tag]} | ours (prepared frames): {settings} | {ours[0]:.1f} | '
                   f'{ours[1]:.1f} | {ours[1] / base[1]:.1f}x |')
      lines.append(f'| {names[tag]} | mp4 decoded with PyAV every step, same settings | '
                   f'{base[0]:.1f} | {base[1]:.1f} | 1x |')
    lines += ['', 'Host CPU ms per clip, by stage (`augment.train_clip` step by step, same '
              'settings; the float work runs on the device):', '',
              '| stage | ' + ' | '.join(names[t] for t in footage) + ' |',
              '|---|' + '---:|' * len(footage)]
    for stage in next(iter(stages.values())):
      lines.append(f'| {stage} | ' + ' | '.join(f'{stages[t][stage]:.2f}' for t in footage) + ' |')
    lines.append('| total | ' + ' | '.join(f'{sum(stages[t].values()):.2f}' for t in footage)
                 + ' |')
    lines += ['', 'JPEG decoders, CPU ms per clip (the 8 sampled frames):', '',
              '| decoder | ' + ' | '.join(names[t] for t in footage) + ' |',
              '|---|' + '---:|' * len(footage)]
    for decoder in next(iter(decoders.values())):
      lines.append(f'| {decoder} | ' + ' | '.join(f'{decoders[t][decoder]:.2f}' for t in footage)
                   + ' |')
    lines += ['', 'Data: ' + '; '.join(
        f"{names[t]}: {f['num_videos']} clips of {args.seconds:g} s, x264 {f['kbps']} kbit/s, "
        f"mp4 {f['mp4_mb']:.1f} MB, prepared {f['prepared_mb']:.1f} MB "
        f"({f['prepared_mb'] / f['mp4_mb']:.1f}x"
        + (f"; prepared in {f['prepare_s']:.0f} s)" if f['prepare_s'] is not None else ')')
        for t, f in footage.items()) + f'. Whole run {time.perf_counter() - started:.0f} s.']
    if memory:
      computed = memory['computed']
      lines += ['', f"Multi-view test at configs/laps_vitb.py's test settings (batch "
                f"{memory['batch_shape'][0]} x {memory['batch_shape'][1]} views of 8 x 224^2, "
                f"{memory['num_workers']} workers, uint8): host buffers "
                f"{memory['buffers_bytes'] / 1e9:.2f} GB measured (peak PSS of the loader and its "
                f"workers above the idle process: {memory['peak_bytes'] / 1e9:.2f} GB with 30 views, "
                f"{memory['peak_bytes_one_view'] / 1e9:.2f} GB with 1 view = the workers' own "
                f"footprint plus 1-view buffers), {computed['total'] / 1e9:.2f} GB computed from "
                f"the buffer shapes (workers {computed['workers'] / 1e9:.2f}, batch "
                f"{computed['batch'] / 1e9:.2f}, transfer {computed['transfer'] / 1e9:.2f}; "
                "`loaders.multi_view_buffer_bytes`)."]
    report = '\n'.join(lines)
    print('\n' + report)
    if args.out:
      with open(args.out + '.md', 'w') as f:
        f.write(f'`python experiments/data_throughput.py {" ".join(argv or sys.argv[1:])}`\n\n'
                f'{report}\n')
      with open(args.out + '.json', 'w') as f:
        json.dump({'rates': {k: {'clips_per_wall_s': v[0], 'clips_per_cpu_s': v[1]}
                             for k, v in rates.items()},
                   'stages_ms_per_clip': stages, 'decoders_ms_per_clip': decoders,
                   'data': {t: {k: v for k, v in f.items() if k not in ('manual', 'data_dir')}
                            for t, f in footage.items()},
                   'test_memory': memory and {k: v for k, v in memory.items()
                                              if k != 'batch_shape'},
                   'cpus': os.cpu_count(), 'args': vars(args)}, f, indent=2)
  finally:
    if args.workdir is None:
      shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
  main()
