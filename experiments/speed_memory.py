"""Speed and memory as the clip grows: vit2d, laps, joint, divided and lvt at T = 8, 16, 32, 64.

    # CPU (what experiments/results/speed_memory_cpu.md was made with; a few minutes on 2 cores)
    python experiments/speed_memory.py --out experiments/results/speed_memory_cpu
    # GPU: ViT-B/16 at 224², bf16, train steps, clips/s and model-FLOPs utilisation
    python experiments/speed_memory.py --size base --image_size 224 --batch 8 \
        --out experiments/results/speed_memory_gpu
    # GPU headline: ViT-B/16 8×224, batch filling the memory, LAPS against vit2d
    python experiments/speed_memory.py --size base --image_size 224 --frames 8 \
        --models vit2d,laps --batch auto --out experiments/results/speed_memory_gpu_headline

What is measured, per number of frames T and model, all in one process:
  * forward time: `jax.jit(forward)` (train=False), compiled ahead of time, one warm-up call, then
    `--repeats` calls (each waits for its result). On a GPU: wall-clock time, median. On a CPU:
    the process's CPU time (all threads, `time.process_time`), minimum — on a shared machine the
    wall time of a call depends on who else runs (we saw 156–434 ms for one program), its CPU time
    hardly (86–109 ms); both clocks are kept in the JSON;
  * train-step time: value_and_grad of the cross-entropy + an optax SGD-momentum update, parameters
    and optimizer state donated, same protocol;
  * peak memory: from XLA's `compiled.memory_analysis()` of each program, i.e. the buffers that
    program needs at its peak: arguments (parameters, optimizer state, the batch) + outputs +
    temporaries (activations kept for the backward pass, attention scores, scratch) − buffers
    aliased between arguments and outputs (donation). It is XLA's own plan, so it is exact for the
    program and deterministic, but it leaves out the runtime's allocator slack and other programs'
    buffers;
  * GMACs per clip from the jaxpr matmul/conv counter (experiments/flops_params.py), and from it the
    achieved TFLOP/s and, given a peak (`--peak_tflops`; on a GPU 989 = H100 SXM bf16 dense by
    default), the model-FLOPs utilisation MFU = 3 · 2 · MACs · clips/s / peak (a train step costs
    about three forward passes; the backward's own extra work, e.g. rematerialisation, is not
    credited — the usual MFU convention).
The measurements are interleaved: for each T every model is compiled first, then the timed calls go
round the models `--repeats` times (in a shuffled order each round, and each timed forward call right
after an untimed one, so that no model always runs with caches full of another model's data), so a
slow spell of a noisy machine hits every model alike and the ratios to vit2d hold. A program whose planned memory exceeds `--max_memory_gb` (default: 60 % of RAM
on CPU, 90 % of the device's limit on GPU) is skipped, not run, and shows as "—".

On a GPU the models compute in bfloat16 (parameters float32) with the default
`attention_impl='auto'`: cuDNN's fused attention for every attention pattern whose dtype and shapes
it takes, XLA's elsewhere (`--attention_impl cudnn_or_xla` forces cuDNN, falling back per model);
on a CPU in float32 with XLA attention. `--batch auto` picks, per T, the largest train
batch (a multiple of 8) that XLA plans to fit for every model, so the models compare at one batch.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import statistics
import sys
import time
from typing import Any

if __package__ in (None, ''):  # run as a script: make `experiments` and `laps_jax` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments import host_cpu
from experiments.flops_params import count_matmul_macs, forward_fn, video_spec
from experiments.model_configs import model_config
from laps_jax import models

MODELS = ('vit2d', 'laps', 'joint', 'divided', 'lvt')
H100_BF16_DENSE_TFLOPS = 989.0
# Dense bf16 peak TFLOP/s by device kind (vendor datasheets, no sparsity), for the MFU default.
PEAK_BF16_TFLOPS = (('H200', 989.0), ('H100 PCIe', 756.0), ('H100', 989.0), ('A100', 312.0), ('L4', 121.0), ('A10', 125.0))


def default_peak_tflops() -> float | None:
  """The bf16 dense peak of the first device, or None on a CPU (no MFU reported)."""
  device = jax.devices()[0]
  if device.platform == 'cpu':
    return None
  for kind, tflops in PEAK_BF16_TFLOPS:
    if kind in device.device_kind:
      return tflops
  print(f'unknown device {device.device_kind!r}: MFU against {H100_BF16_DENSE_TFLOPS} TFLOP/s '
        '(H100 bf16 dense); pass --peak_tflops', file=sys.stderr)
  return H100_BF16_DENSE_TFLOPS


# ---------------------------------------------------------------------------------------------
# Programs: forward and train step, compiled ahead of time.
# ---------------------------------------------------------------------------------------------
def forward_params_fn(graphdef):
  """forward(params, rest, videos) -> logits (train=False)."""
  def forward(params, rest, videos):
    return nnx.merge(graphdef, params, rest)(videos, train=False)
  return forward


def train_step_fn(graphdef, tx: optax.GradientTransformation):
  """step(params, opt_state, rest, videos, labels) -> (params, opt_state, loss)."""
  def step(params, opt_state, rest, videos, labels):
    # NNX's grad over the merged model, as the trainer does: nnx.remat inside a block (model.remat)
    # updates the model's RNG counters, which a plain jax.grad over the pure state cannot allow.
    def loss_fn(model):
      logits = model(videos, train=True)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(nnx.merge(graphdef, params, rest))
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return step


def planned_bytes(compiled) -> int:
  """Peak memory XLA planned for a compiled program: arguments + outputs + temporaries − aliased."""
  m = compiled.memory_analysis()
  if m is None:
    return -1
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


class Candidate:
  """One model at one T: its compiled forward and train step, inputs, and the timings taken."""

  def __init__(self, name: str, config, batch: int, *, train: bool, memory_budget: int):
    self.name, self.config, self.batch = name, config, batch
    self.forward_times: list[tuple[float, float]] = []  # (wall s, process CPU s) per call
    self.train_times: list[tuple[float, float]] = []
    self.notes: list[str] = []
    graphdef, state = nnx.split(nnx.eval_shape(lambda: models.build(config, nnx.Rngs(0))))
    # Count on an XLA-attention float32 twin: cuDNN attention is one opaque call in the jaxpr.
    count_config = config.copy_and_resolve_references()
    count_config.attention_impl, count_config.dtype = 'xla', 'float32'
    count_graphdef, count_state = nnx.split(nnx.eval_shape(lambda: models.build(count_config, nnx.Rngs(0))))
    self.macs_per_clip = count_matmul_macs(
        jax.make_jaxpr(forward_fn(count_graphdef))(count_state, video_spec(count_config, 1)))
    videos_spec = video_spec(config, batch)
    params_spec, rest_spec = _split_params(state)
    self.forward = jax.jit(forward_params_fn(graphdef)).lower(params_spec, rest_spec, videos_spec).compile()
    self.forward_bytes = planned_bytes(self.forward)
    self.train_step = None
    self.train_bytes = None
    tx = optax.sgd(1e-3, momentum=0.9)
    if train:
      opt_spec = jax.eval_shape(tx.init, params_spec)
      labels_spec = jax.ShapeDtypeStruct((batch,), jnp.int32)
      step = jax.jit(train_step_fn(graphdef, tx), donate_argnums=(0, 1))
      self.train_step = step.lower(params_spec, opt_spec, rest_spec, videos_spec, labels_spec).compile()
      self.train_bytes = planned_bytes(self.train_step)
      if self.train_bytes > memory_budget:
        self.notes.append(f'train step needs {self.train_bytes / 2**30:.1f} GiB > budget')
        self.train_step = None
    if self.forward_bytes > memory_budget:
      self.notes.append(f'forward needs {self.forward_bytes / 2**30:.1f} GiB > budget')
      self.forward = None
    self._tx = tx
    self._built = False

  def materialise(self, seed: int = 0) -> None:
    """Real parameters and a random batch (only for what fits)."""
    if self._built or (self.forward is None and self.train_step is None):
      return
    model = models.build(self.config, nnx.Rngs(seed))
    self.params, self.rest = _split_params(nnx.split(model)[1])
    self.opt_state = self._tx.init(self.params) if self.train_step is not None else None
    s = self.config.image_size
    key = jax.random.key(seed)
    self.videos = jax.random.normal(key, (self.batch, self.config.num_frames, s, s, 3), jnp.float32)
    self.labels = jax.random.randint(key, (self.batch,), 0, self.config.num_classes)
    self._built = True

  def release(self) -> None:
    for attr in ('params', 'rest', 'opt_state', 'videos', 'labels'):
      if hasattr(self, attr):
        delattr(self, attr)
    self._built = False

  def time_forward(self, warm_first: bool = False) -> None:
    """One timed forward call; `warm_first`: after an untimed one, so that the caches hold this
    program's data rather than the previous model's (the train step that ran before it)."""
    if self.forward is None:
      return
    if warm_first:
      try:
        jax.block_until_ready(self.forward(self.params, self.rest, self.videos))
      except jax.errors.JaxRuntimeError:
        pass  # reported by the timed call below
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
      jax.block_until_ready(self.forward(self.params, self.rest, self.videos))
    except jax.errors.JaxRuntimeError as e:  # out of memory despite the plan: report, do not abort
      self.notes.append(f'forward failed at run time: {str(e)[:120]}')
      self.forward, self.forward_times = None, []
      return
    self.forward_times.append((time.perf_counter() - start, time.process_time() - cpu_start))

  def time_train(self) -> None:
    if self.train_step is None:
      return
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
      self.params, self.opt_state, loss = self.train_step(
          self.params, self.opt_state, self.rest, self.videos, self.labels)
      jax.block_until_ready(loss)
    except jax.errors.JaxRuntimeError as e:
      # the donated parameters may be gone: this candidate is finished
      self.notes.append(f'train step failed at run time: {str(e)[:120]}')
      self.train_step, self.forward, self.train_times, self.forward_times = None, None, [], []
      return
    self.train_times.append((time.perf_counter() - start, time.process_time() - cpu_start))


def _split_params(state):
  """(params, everything else) of a model state (RNG counters are not trained)."""
  params = nnx.filter_state(state, nnx.Param)
  rest = nnx.filter_state(state, nnx.Not(nnx.Param))
  return params, rest


# ---------------------------------------------------------------------------------------------
# The sweep.
# ---------------------------------------------------------------------------------------------
def auto_batch(name: str, frames: int, args, memory_budget: int) -> int:
  """The largest batch (a multiple of 8, or a power of two below 8) whose train step XLA plans to
  fit in `memory_budget`. Memory is close to affine in the batch, so two compiles give the line;
  XLA's buffer plan is not exactly affine, so the guess is then checked: stepped down while it does
  not fit, and up while the next batch still fits."""
  @functools.cache  # each call compiles the model; the search below revisits batches
  def bytes_at(batch):
    c = _build_candidate(name, frames, batch, args, 2**62)
    return c.train_bytes if c is not None else 2**62
  small, large = 4, 8
  b_small, b_large = bytes_at(small), bytes_at(large)
  if b_small >= 2**62:
    raise RuntimeError(f'--batch auto: {name} at T={frames} does not build (see the message above)')
  per_clip = max((b_large - b_small) / (large - small), 1)
  fixed = b_small - small * per_clip
  batch = int((memory_budget - fixed) // per_clip)
  batch = batch - batch % 8 if batch >= 8 else 2 ** int(math.log2(max(batch, 1)))
  while batch > 1 and bytes_at(batch) > memory_budget:
    batch = batch - 8 if batch > 8 else batch // 2
  batch = max(batch, 1)
  step_up = lambda b: b + 8 if b >= 8 else b * 2
  while bytes_at(step_up(batch)) <= memory_budget:
    batch = step_up(batch)
  return batch


def _build_candidate(name: str, frames: int, batch: int, args, budget: int) -> Candidate | None:
  """Compiles one model; on a GPU tries cuDNN's fused attention first and falls back to XLA's
  attention when cuDNN rejects the shapes (noted in the row)."""
  config = _config(name, frames, args)
  try:
    return Candidate(name, config, batch, train=not args.no_train, memory_budget=budget)
  except Exception as e:  # keep the sweep going: report and skip, or retry without cuDNN
    if args.attention_impl == 'cudnn_or_xla':
      print(f'T={frames} {name}: cuDNN attention failed ({type(e).__name__}: {str(e)[:200]}); '
            'retrying with XLA attention', file=sys.stderr)
      config.attention_impl = 'xla'
      try:
        c = Candidate(name, config, batch, train=not args.no_train, memory_budget=budget)
        c.notes.append('XLA attention (cuDNN rejected the shapes)')
        return c
      except Exception as e2:  # pylint: disable=broad-except
        e = e2
    print(f'T={frames} {name}: not built: {type(e).__name__}: {str(e)[:500]}', file=sys.stderr)
    return None


def _config(name: str, frames: int, args):
  on_gpu = jax.default_backend() == 'gpu'
  dtype = args.dtype if args.dtype != 'auto' else ('bfloat16' if on_gpu else 'float32')
  impl = 'cudnn' if args.attention_impl == 'cudnn_or_xla' else args.attention_impl
  return model_config(name, args.size, frames=frames, image_size=args.image_size,
                      num_classes=args.num_classes, dtype=dtype, attention_impl=impl, remat=args.remat)


def default_memory_budget() -> int:
  device = jax.devices()[0]
  if device.platform != 'cpu':
    stats = device.memory_stats() or {}
    if 'bytes_limit' in stats:
      # 90 %: the other models' parameters stay resident while one runs, and XLA's plan leaves
      # out library workspaces (cuBLAS / cuDNN)
      return int(0.9 * stats['bytes_limit'])
  return int(0.6 * os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'))


def run_sweep(args) -> dict[str, Any]:
  """Measures every (T, model); returns {'meta': ..., 'rows': [...]}."""
  on_gpu = jax.default_backend() == 'gpu'
  peak = args.peak_tflops if args.peak_tflops is not None else default_peak_tflops()
  budget = int(args.max_memory_gb * 2**30) if args.max_memory_gb else default_memory_budget()
  frames_list = [int(f) for f in args.frames.split(',')]
  load_before = os.getloadavg()[0]  # other processes on the machine: the absolute times depend on it
  names = args.models.split(',')
  rows = []
  for frames in frames_list:
    if args.batch == 'auto':
      # 90 % of the budget: every model's parameters and optimizer state stay resident meanwhile
      batch = min(auto_batch(n, frames, args, int(0.9 * budget)) for n in names)
      print(f'T={frames}: batch {batch} (largest train batch that fits every model)', file=sys.stderr)
    else:
      batch = int(args.batch)
    candidates = []
    for name in names:
      start = time.perf_counter()
      c = _build_candidate(name, frames, batch, args, budget)
      if c is None:
        continue
      print(f'T={frames} {name}: compiled in {time.perf_counter() - start:.1f} s', file=sys.stderr)
      candidates.append(c)
    for c in candidates:
      c.materialise()
    for c in candidates:  # warm-up (first calls pay for allocation, not compilation: that was AOT)
      c.time_forward()
      c.time_train()
      c.forward_times.clear()
      c.train_times.clear()
    order = random.Random(0)
    for _ in range(args.repeats):  # interleaved: every round visits every model, in a shuffled order
      for c in order.sample(candidates, len(candidates)):
        c.time_forward(warm_first=True)
        c.time_train()
    for c in candidates:
      rows.append(_row(c, frames, peak, args.statistic, args.clock))
      c.release()
  meta = {
      'command': 'python experiments/speed_memory.py ' + ' '.join(args.argv),
      'backend': jax.default_backend(),
      'device': jax.devices()[0].device_kind,
      'device_count': jax.device_count(),
      'cpu': host_cpu.describe(),
      'cpu_count': os.cpu_count(),
      'load_average_1min_before_after': [load_before, os.getloadavg()[0]],
      'jax': jax.__version__,
      'size': args.size, 'image_size': args.image_size,
      'dtype': _config(names[0], frames_list[0], args).dtype,
      'peak_tflops': peak, 'repeats': args.repeats, 'statistic': args.statistic, 'clock': args.clock, 'memory_budget_gib': budget / 2**30,
  }
  return {'meta': meta, 'rows': rows}


def _row(c: Candidate, frames: int, peak_tflops: float | None, statistic: str, clock: str) -> dict[str, Any]:
  summarise = min if statistic == 'min' else statistics.median

  def seconds(times, which):
    return summarise(t[which] for t in times) if times else None
  index = 0 if clock == 'wall' else 1
  fwd, train = seconds(c.forward_times, index), seconds(c.train_times, index)
  row = {
      'frames': frames, 'model': c.name, 'batch': c.batch,
      'gmacs_per_clip': c.macs_per_clip / 1e9,
      'clock': clock,
      'forward_wall_ms': None if not c.forward_times else 1e3 * seconds(c.forward_times, 0),
      'forward_cpu_ms': None if not c.forward_times else 1e3 * seconds(c.forward_times, 1),
      'train_wall_ms': None if not c.train_times else 1e3 * seconds(c.train_times, 0),
      'train_cpu_ms': None if not c.train_times else 1e3 * seconds(c.train_times, 1),
      'forward_ms': None if fwd is None else 1e3 * fwd,
      'train_ms': None if train is None else 1e3 * train,
      'forward_mib': c.forward_bytes / 2**20,
      'train_mib': None if c.train_bytes is None else c.train_bytes / 2**20,
      'forward_clips_s': None if fwd is None else c.batch / fwd,
      'train_clips_s': None if train is None else c.batch / train,
      'notes': '; '.join(c.notes),
  }
  if train is not None:
    row['train_tflops'] = 3 * 2 * c.macs_per_clip * c.batch / train / 1e12
    if peak_tflops:
      row['mfu'] = row['train_tflops'] / peak_tflops
  return row


# ---------------------------------------------------------------------------------------------
# Output: markdown table and plots.
# ---------------------------------------------------------------------------------------------
def _cell(x, spec):
  return '—' if x is None else format(x, spec)


def markdown_table(result: dict[str, Any]) -> str:
  rows = result['rows']
  with_mfu = any('mfu' in r for r in rows)
  head = ['T', 'model', 'batch', 'GMACs/clip', 'fwd ms', 'fwd ×vit2d', 'train ms', 'train ×vit2d',
          'train clips/s', 'fwd MiB', 'train MiB', 'train MiB ×vit2d', 'TFLOP/s (train)']
  if with_mfu:
    head.append('MFU')
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  by_frames: dict[int, dict[str, dict]] = {}
  for r in rows:
    by_frames.setdefault(r['frames'], {})[r['model']] = r
  ratio = lambda r, base, key: (None if base is None or r.get(key) is None or not base.get(key)
                                else r[key] / base[key])
  for frames, group in by_frames.items():
    base = group.get('vit2d')
    for r in group.values():
      cells = [str(frames), r['model'], str(r['batch']), f"{r['gmacs_per_clip']:.2f}",
               _cell(r['forward_ms'], '.1f'), _cell(ratio(r, base, 'forward_ms'), '.2f'),
               _cell(r['train_ms'], '.1f'), _cell(ratio(r, base, 'train_ms'), '.2f'),
               _cell(r['train_clips_s'], '.2f'), _cell(r['forward_mib'], '.0f'), _cell(r['train_mib'], '.0f'),
               _cell(ratio(r, base, 'train_mib'), '.2f'), _cell(r.get('train_tflops'), '.3f')]
      if with_mfu:
        cells.append(_cell(100 * r['mfu'] if 'mfu' in r else None, '.1f') + (' %' if 'mfu' in r else ''))
      lines.append('| ' + ' | '.join(cells) + ' |')
  notes = [f"T={r['frames']} {r['model']}: {r['notes']}" for r in rows if r.get('notes')]
  if notes:
    lines += ['', 'Notes:', *(f'- {n}' for n in notes)]
  return '\n'.join(lines)


def plot(result: dict[str, Any], path: str) -> None:
  """Forward time, train-step time and train-step memory against T, log-log, one line per model."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  clock = 'CPU time' if result['meta'].get('clock') == 'cpu' else 'wall clock'
  panels = [('forward_ms', f'forward ({clock}, ms)'), ('train_ms', f'train step ({clock}, ms)'),
            ('train_mib', 'train step memory (MiB, XLA plan)')]
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
  names = list(dict.fromkeys(r['model'] for r in result['rows']))
  for ax, (key, label) in zip(axes, panels):
    for name in names:
      pts = [(r['frames'], r[key]) for r in result['rows'] if r['model'] == name and r.get(key)]
      if pts:
        ax.plot(*zip(*pts), marker='o', label=name)
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xlabel('frames T')
    ax.set_ylabel(label)
    ax.grid(True, which='both', alpha=0.3)
  axes[0].legend()
  meta = result['meta']
  fig.suptitle(f"{meta['size']} @ {meta['image_size']}², {meta['dtype']}, {meta['device']} "
               f"({meta['backend']}), batch {result['rows'][0]['batch'] if result['rows'] else '?'}")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--models', default=','.join(MODELS))
  parser.add_argument('--frames', default='8,16,32,64')
  parser.add_argument('--size', default=None, help='tiny | small | base | large (default: tiny on CPU, base on GPU)')
  parser.add_argument('--image_size', type=int, default=None, help='default: 112 on CPU, 224 on GPU')
  parser.add_argument('--batch', default=None, help="clips per step, or 'auto' (largest train batch that fits); "
                                                     'default: 1 on CPU, 8 on GPU')
  parser.add_argument('--num_classes', type=int, default=400)
  parser.add_argument('--repeats', type=int, default=None, help='timed calls per program (default: 7 on CPU, 10 on GPU)')
  parser.add_argument('--clock', default=None, choices=('cpu', 'wall'),
                      help='what a call costs: process CPU time of all threads (default on CPU: a shared '
                           'machine changes wall time, not the work done) or wall-clock time (default on '
                           'GPU, where the work is on the device)')
  parser.add_argument('--statistic', default=None, choices=('min', 'median'),
                      help='summary of the timed calls; default: min on CPU (a shared CPU only adds '
                           'delays, so the fastest call is the cleanest estimate), median on GPU')
  parser.add_argument('--no_train', action='store_true', help='forward only')
  parser.add_argument('--remat', nargs='?', const='full', default='none',
                      help="model.remat policy: none | full (bare --remat) | dots | dots_no_batch | ...")
  parser.add_argument('--dtype', default='auto', help="compute dtype; 'auto' = bfloat16 on GPU, float32 on CPU")
  parser.add_argument('--attention_impl', default=None, choices=('xla', 'cudnn', 'auto', 'cudnn_or_xla'),
                      help="the models' attention_impl; 'auto' (the default) picks cuDNN's fused attention per "
                           "attention pattern wherever it can run, XLA elsewhere; 'cudnn_or_xla' forces cuDNN "
                           "and falls back to XLA per model")
  parser.add_argument('--peak_tflops', type=float, default=None,
                      help=f'peak dense TFLOP/s for MFU (default on GPU: {H100_BF16_DENSE_TFLOPS}, H100 SXM bf16)')
  parser.add_argument('--max_memory_gb', type=float, default=None, help='skip programs that plan more than this')
  parser.add_argument('--out', default='', help='write <out>.md, <out>.json and <out>.png')
  args = parser.parse_args(argv)
  args.argv = list(sys.argv[1:] if argv is None else argv)
  on_gpu = jax.default_backend() == 'gpu'
  args.size = args.size or ('base' if on_gpu else 'tiny')
  args.image_size = args.image_size or (224 if on_gpu else 112)
  args.batch = args.batch or ('8' if on_gpu else '1')
  args.repeats = args.repeats or (10 if on_gpu else 7)
  args.statistic = args.statistic or ('median' if on_gpu else 'min')
  args.clock = args.clock or ('wall' if on_gpu else 'cpu')
  args.attention_impl = args.attention_impl or 'auto'
  return args


def main(argv=None) -> dict[str, Any]:
  args = parse_args(argv)
  result = run_sweep(args)
  table = markdown_table(result)
  meta = result['meta']
  cpu = host_cpu.summary(meta['cpu']) if isinstance(meta.get('cpu'), dict) else meta.get('cpu', '?')
  header = (f"`{meta['command']}` — {meta['device']} ({meta['backend']}, {meta['cpu_count']} CPU cores: {cpu}), "
            f"jax {meta['jax']}, {meta['size']} @ {meta['image_size']}², {meta['dtype']}, "
            f"load average {meta['load_average_1min_before_after'][0]:.1f} → "
            f"{meta['load_average_1min_before_after'][1]:.1f}; "
            f"{meta['statistic']} of {meta['repeats']} interleaved calls, "
            f"{'process CPU time (all threads)' if meta['clock'] == 'cpu' else 'wall-clock time'}; memory = XLA's plan "
            f"(arguments + outputs + temporaries − aliased).")
  print(header + '\n\n' + table)
  if args.out:
    os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
    with open(args.out + '.md', 'w') as f:
      f.write(header + '\n\n' + table + '\n')
    with open(args.out + '.json', 'w') as f:
      json.dump(result, f, indent=1)
    plot(result, args.out + '.png')
  return result


if __name__ == '__main__':
  main()
