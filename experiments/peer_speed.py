"""Our compiled LAPS against the official PyTorch LAPS on one CPU: forward and train step.

    python experiments/peer_speed.py --official=/path/to/LAPS-transformer \
        --out experiments/results/peer_speed_cpu

`--official` is a checkout of github.com/VideoNetworks/LAPS-transformer (this project contains
none of its code). Its model file `timm/models/vit_laps.py` is imported unmodified from there. The
checkout vendors an old timm whose package `__init__` imports every model and torchvision; this
script loads only the pieces `vit_laps.py` needs (`timm.models.{helpers,layers,registry}`,
`timm.data.constants`) by registering the checkout's `timm`, `timm.models` and `timm.data` folders
as bare packages, so neither torchvision nor a pip-installed timm is needed — only torch.

What is timed, ViT-B/16, 8×224², 400 classes, batch 1 (`--batch`), float32, dropout and drop-path 0:
  * forward: logits of one clip (ours: `jax.jit` of the model with train=False; official:
    `VisionTransformer` on the (B·T, 3, H, W) frames in eval mode under `torch.no_grad()`, logits
    averaged over T as the official `VideoNet`'s consensus does);
  * train step: forward + cross-entropy + backward + SGD-momentum update (ours: one jitted
    function, parameters and optimizer state donated; official: `loss.backward()` and
    `torch.optim.SGD(momentum=0.9).step()`).
Models: `laps` (leap levels (1, 2, 3, 1), shift_div 4; official `s2_skip_level=[1, 2, 3, 1]`,
`fold_div=4`) and `vit2d` (official `s2_skip_level=[None] * 4`, `fold_div=0`).

Protocol: every (framework, model) runs in its own fresh process; a process compiles / warms up
with `--warmup` untimed calls of each program, then times `--calls` calls of each and reports its
median. The processes alternate (ours, official, ours, ...) for `--repeats` rounds, so a noisy
spell of a shared machine hits both; the table gives the median over rounds and the spread
(min–max). Both frameworks use the same CPU set (this process's affinity) and the same number of
threads (`--threads`, default: all cores of that set): torch through `torch.set_num_threads`, XLA
through its default (one Eigen thread per core). Ours uses JAX's persistent compilation cache
(`--cache_dir`) so repeated rounds do not recompile; compile time is never timed.

The JSON keeps every per-call time (wall clock and process CPU time) of every process.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script: make `experiments` and `laps_jax` importable
  sys.path.insert(0, REPO)
from experiments import host_cpu  # pylint: disable=wrong-import-position

FRAMEWORKS = ('ours', 'official')
MODELS = ('laps', 'vit2d')
LAPS_LEVELS = [1, 2, 3, 1]
LAPS_FOLD_DIV = 4


# ---------------------------------------------------------------------------------------------
# Workers: one framework, one model, one fresh process.
# ---------------------------------------------------------------------------------------------
def _timed(fn, calls: int, warmup: int) -> list[tuple[float, float]]:
  """(wall s, process CPU s) of `calls` calls of fn after `warmup` untimed ones."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(calls):
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    times.append((time.perf_counter() - start, time.process_time() - cpu_start))
  return times


def import_official_vit_laps(checkout: str):
  """The official `timm/models/vit_laps.py` module, imported from `checkout` unmodified."""
  timm_root = os.path.join(checkout, 'timm')
  if not os.path.isfile(os.path.join(timm_root, 'models', 'vit_laps.py')):
    raise SystemExit(f'--official={checkout}: no timm/models/vit_laps.py there; pass a checkout of '
                     'github.com/VideoNetworks/LAPS-transformer')
  for name, folder in (('timm', ''), ('timm.models', 'models'), ('timm.data', 'data')):
    package = types.ModuleType(name)
    package.__path__ = [os.path.join(timm_root, folder)]
    sys.modules[name] = package
  from timm.version import __version__  # pylint: disable=import-outside-toplevel
  from timm.data import constants  # pylint: disable=import-outside-toplevel
  sys.modules['timm'].__version__ = __version__
  for key in ('IMAGENET_DEFAULT_MEAN', 'IMAGENET_DEFAULT_STD'):
    setattr(sys.modules['timm.data'], key, getattr(constants, key))
  from timm.models import vit_laps  # pylint: disable=import-outside-toplevel
  return vit_laps


GEMM_SHAPE = (8 * 197, 768, 3072)  # (M, K, N) of the step's largest GEMMs: the MLP of 8 frames


def gemm_gflops(matmul, calls: int = 10) -> float:
  """GFLOP/s of the framework's own float32 GEMM on GEMM_SHAPE, the best of `calls`: the rate its
  BLAS reaches on this CPU, which sets most of the step's time. `matmul()` runs one product and
  waits for it."""
  for _ in range(2):
    matmul()
  best = min(_timed(matmul, calls, 0))[0]
  m, k, n = GEMM_SHAPE
  return 2 * m * k * n / best / 1e9


def run_official(args) -> dict:
  import contextlib  # pylint: disable=import-outside-toplevel
  import io  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(args.threads)
  vit_laps = import_official_vit_laps(args.official)
  laps = args.model == 'laps'
  torch.manual_seed(0)
  with contextlib.redirect_stdout(io.StringIO()):  # the model prints one line per shifted block
    model = vit_laps.VisionTransformer(
        img_size=args.image_size, patch_size=16, embed_dim=768, depth=args.num_layers, num_heads=12,
        num_classes=400, n_seg=args.frames, fold_div=LAPS_FOLD_DIV if laps else 0,
        s2_skip_level=LAPS_LEVELS if laps else [None] * 4)
  b, t, s = args.batch, args.frames, args.image_size
  frames = torch.randn(b * t, 3, s, s)
  labels = torch.randint(0, 400, (b,))
  optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

  def clip_logits():
    return model(frames).view(b, t, -1).mean(1)  # VideoNet's 'avg' consensus

  def forward():
    model.eval()
    with torch.no_grad():
      clip_logits()

  def train_step():
    model.train()
    loss = torch.nn.functional.cross_entropy(clip_logits(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()

  m, k, n = GEMM_SHAPE
  a, b_ = torch.randn(m, k), torch.randn(k, n)
  blas = [line.strip(' -') for line in torch.__config__.show().splitlines() if 'Math Kernel' in line or 'BLAS_INFO' in line]
  result = {'threads': torch.get_num_threads(), 'version': f'torch {torch.__version__}',
            'parameters': sum(p.numel() for p in model.parameters()),
            'cpu_capability': torch.backends.cpu.get_cpu_capability(), 'blas': blas[:1],
            'gemm_gflops': gemm_gflops(lambda: a @ b_)}
  if 'forward' in args.programs:
    result['forward'] = _timed(forward, args.calls, args.warmup)
  if 'train' in args.programs:
    result['train'] = _timed(train_step, args.calls, args.warmup)
  return result


def run_ours(args) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from experiments.model_configs import model_config  # pylint: disable=import-outside-toplevel
  from experiments.speed_memory import _split_params, forward_params_fn, train_step_fn  # pylint: disable=import-outside-toplevel
  from laps_jax import models  # pylint: disable=import-outside-toplevel
  if args.cache_dir:
    jax.config.update('jax_compilation_cache_dir', args.cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  config = model_config(args.model, 'base', frames=args.frames, image_size=args.image_size,
                        dtype='float32', attention_impl='xla')
  config.num_layers = args.num_layers
  model = models.build(config, nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  params, rest = _split_params(state)
  key = jax.random.key(0)
  videos = jax.random.normal(key, (args.batch, args.frames, args.image_size, args.image_size, 3))
  labels = jax.random.randint(key, (args.batch,), 0, 400)
  tx = optax.sgd(1e-3, momentum=0.9)
  try:  # laps_jax.cpu_defaults (absent in an older --baseline tree): what it set in this process
    from laps_jax import cpu_defaults  # pylint: disable=import-outside-toplevel
    applied = dict(cpu_defaults.applied)
  except ImportError:
    applied = None
  result = {'threads': os.cpu_count() if not hasattr(os, 'sched_getaffinity') else len(os.sched_getaffinity(0)),
            'version': f'jax {jax.__version__}', 'cpu_defaults': applied,
            'xla_flags': os.environ.get('XLA_FLAGS', ''),
            'parameters': sum(x.size for x in jax.tree.leaves(params))}
  m, k, n = GEMM_SHAPE
  a, b_ = jnp.ones((m, k)), jnp.ones((k, n))
  matmul = jax.jit(jnp.matmul)
  result['gemm_gflops'] = gemm_gflops(lambda: jax.block_until_ready(matmul(a, b_)))
  if 'forward' in args.programs:
    forward = jax.jit(forward_params_fn(graphdef))
    result['forward'] = _timed(lambda: jax.block_until_ready(forward(params, rest, videos)),
                               args.calls, args.warmup)
  if 'train' in args.programs:
    step = jax.jit(train_step_fn(graphdef, tx), donate_argnums=(0, 1))
    carry = {'params': params, 'opt_state': tx.init(params)}

    def train_step():
      carry['params'], carry['opt_state'], loss = step(carry['params'], carry['opt_state'], rest,
                                                       videos, labels)
      jax.block_until_ready(loss)
    result['train'] = _timed(train_step, args.calls, args.warmup)
  return result


# ---------------------------------------------------------------------------------------------
# The driver: alternating processes, medians, the table.
# ---------------------------------------------------------------------------------------------
def _worker_command(args, framework: str, model: str) -> list[str]:
  return [sys.executable, os.path.abspath(__file__), f'--worker={framework}', f'--model={model}',
          f'--official={args.official}', f'--baseline={args.baseline}',
          f'--programs={",".join(args.programs)}', f'--calls={args.calls}', f'--warmup={args.warmup}',
          f'--threads={args.threads}', f'--pin_cpu={args.pin_cpu}', f'--batch={args.batch}',
          f'--num_layers={args.num_layers}', f'--frames={args.frames}',
          f'--image_size={args.image_size}', f'--cache_dir={args.cache_dir}']


def _run_worker(args, framework: str, model: str) -> dict:
  env = dict(os.environ)
  env.setdefault('JAX_PLATFORMS', 'cpu')
  if framework == 'ours' and args.ours_xla_flags:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' ' + args.ours_xla_flags).strip()
  proc = subprocess.run(_worker_command(args, framework, model), env=env, capture_output=True,
                        text=True, cwd=REPO)
  if proc.returncode:
    raise SystemExit(f'{framework} {model} worker failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(times, clock: str) -> float:
  return statistics.median(wall if clock == 'wall' else cpu for wall, cpu in times)


def run(args) -> dict:
  frameworks = FRAMEWORKS + (('baseline',) if args.baseline else ())
  runs = {f'{fw}/{m}': [] for m in args.models for fw in frameworks}
  load_before = os.getloadavg()[0]
  for round_index in range(args.repeats):
    # rotate which framework goes first, so none always runs after another
    order = frameworks[round_index % len(frameworks):] + frameworks[:round_index % len(frameworks)]
    for model in args.models:
      for framework in order:
        record = _run_worker(args, framework, model)
        runs[f'{framework}/{model}'].append(record)
        summary = ', '.join(f'{p} {_median(record[p], args.clock):.3f} s' for p in args.programs)
        print(f'round {round_index + 1}/{args.repeats} {framework:8s} {model:5s}: {summary} ({args.clock})',
              flush=True)
  table = {}
  for key, records in runs.items():
    table[key] = {}
    for program in args.programs:
      entry = {}
      for clock in ('wall', 'cpu'):
        per_round = [_median(r[program], clock) for r in records]
        entry[clock] = {'median_s': statistics.median(per_round), 'min_s': min(per_round),
                        'max_s': max(per_round), 'per_round_s': per_round}
      table[key][program] = entry
  return {
      'setting': {'model': 'ViT-B/16', 'num_layers': args.num_layers, 'frames': args.frames,
                  'image_size': args.image_size, 'batch': args.batch, 'dtype': 'float32',
                  'repeats': args.repeats, 'calls_per_process': args.calls, 'warmup_calls': args.warmup,
                  'threads': args.threads, 'pin_cpu': args.pin_cpu, 'clock': args.clock,
                  'baseline': args.baseline, 'ours_xla_flags': args.ours_xla_flags, 'cpu': host_cpu.describe(),
                  'cpus': len(os.sched_getaffinity(0)),
                  'load_average_1min': [load_before, os.getloadavg()[0]],
                  'versions': {k: runs[k][0]['version'] for k in runs}},
      'table': table,
      'gemm_gflops': {fw: statistics.median(r['gemm_gflops'] for m in args.models for r in runs[f'{fw}/{m}'])
                      for fw in frameworks if all('gemm_gflops' in r for m in args.models for r in runs[f'{fw}/{m}'])},
      'runs': runs,
  }


def markdown(result: dict) -> str:
  s = result['setting']
  table = result['table']
  clock = s['clock']
  baseline = bool(s['baseline'])
  where = (f"pinned to CPU {s['pin_cpu']}, 1 thread each" if s['pin_cpu'] >= 0
           else f"{s['cpus']} cores, {s['threads']} threads each")
  lines = [
      f"ViT-B/16 {s['frames']}×{s['image_size']}², {s['num_layers']} layers, batch {s['batch']}, "
      f"{s['dtype']}, CPU ({where}); seconds per call, "
      f"{'process CPU time' if clock == 'cpu' else 'wall clock'}, median of {s['repeats']} "
      f"alternating processes (each the median of {s['calls_per_process']} calls), min–max in "
      f"brackets; ratio < 1: ours faster. 1-min load average {s['load_average_1min'][0]:.1f} before, "
      f"{s['load_average_1min'][1]:.1f} after."
      + (f" Ours with XLA_FLAGS={s['ours_xla_flags']}." if s.get('ours_xla_flags') else ''),
      '',
      f"CPU: {host_cpu.summary(s['cpu'])}." if 'cpu' in s else 'CPU: not recorded.',
  ]
  if result.get('gemm_gflops'):
    m, k, n = GEMM_SHAPE
    lines.append(f"Float32 GEMM ({m}×{k})·({k}×{n}) in each worker, best of 10 calls, median over "
                 "workers: " + ', '.join(f'{fw} {g:.0f} GFLOP/s' for fw, g in result['gemm_gflops'].items())
                 + '.')
  lines += [
      '',
      '| model | program | official (s) | ours (s) | ours / official |'
      + (' baseline (s) | baseline / official |' if baseline else ''),
      '|---|---|---|---|---|' + ('---|---|' if baseline else ''),
  ]
  cell = lambda e: f"{e['median_s']:.3f} [{e['min_s']:.3f}–{e['max_s']:.3f}]"
  for model in MODELS:
    for program in ('forward', 'train'):
      if f'ours/{model}' not in table or program not in table[f'ours/{model}']:
        continue
      o, p = table[f'ours/{model}'][program][clock], table[f'official/{model}'][program][clock]
      row = (f"| {model} | {'train step' if program == 'train' else program} | {cell(p)} | {cell(o)} | "
             f"{o['median_s'] / p['median_s']:.3f} |")
      if baseline:
        b = table[f'baseline/{model}'][program][clock]
        row += f" {cell(b)} | {b['median_s'] / p['median_s']:.3f} |"
      lines.append(row)
  if 'ours/vit2d' in table and 'ours/laps' in table:
    lines.append('')
    for program in ('forward', 'train'):
      if program in table['ours/laps']:
        ratios = [f"{fw} {table[f'{fw}/laps'][program][clock]['median_s'] / table[f'{fw}/vit2d'][program][clock]['median_s']:.3f}"
                  for fw in FRAMEWORKS + (('baseline',) if baseline else ())]
        lines.append(f"LAPS / vit2d {program}: {', '.join(ratios)}  ")
  lines.append('')
  lines.append('Versions: ' + '; '.join(sorted(set(result['setting']['versions'].values())))
               + (f"; baseline = this project at {s['baseline']}" if baseline else ''))
  return '\n'.join(lines) + '\n'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--official', required=True, help='checkout of VideoNetworks/LAPS-transformer')
  parser.add_argument('--models', default='laps,vit2d', help='comma list of laps, vit2d')
  parser.add_argument('--programs', default='forward,train', help='comma list of forward, train')
  parser.add_argument('--repeats', type=int, default=3, help='alternating rounds of processes')
  parser.add_argument('--calls', type=int, default=3, help='timed calls per program per process')
  parser.add_argument('--warmup', type=int, default=1, help='untimed calls before timing')
  parser.add_argument('--threads', type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--frames', type=int, default=8)
  parser.add_argument('--num_layers', type=int, default=12, help='fewer for quick profiling runs')
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--cache_dir', default=os.path.join(tempfile.gettempdir(), 'laps_jax_peer_speed_cache'),
                      help="JAX persistent compilation cache ('' for none)")
  parser.add_argument('--baseline', default='', help='optional: a copy of this project at another '
                      'commit (e.g. `git archive COMMIT | tar -x -C DIR`), timed as a third column')
  parser.add_argument('--pin_cpu', type=int, default=-1,
                      help='pin every worker to this CPU with 1 thread (>= 0): CPU time is then '
                      'robust to other load on a shared machine')
  parser.add_argument('--clock', choices=('wall', 'cpu'), default=None,
                      help='the table\'s clock (default: cpu when pinned, else wall)')
  parser.add_argument('--ours_xla_flags', default='',
                      help="XLA_FLAGS for our workers only, e.g. "
                      "'--xla_cpu_experimental_ynn_fusion_type=-individual_dot'")
  parser.add_argument('--out', default='', help='write OUT.md and OUT.json')
  parser.add_argument('--worker', choices=FRAMEWORKS + ('baseline',), help=argparse.SUPPRESS)
  parser.add_argument('--model', choices=MODELS, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  args.official = os.path.abspath(os.path.expanduser(args.official))
  args.programs = [p for p in args.programs.split(',') if p]
  args.models = [m for m in args.models.split(',') if m]
  if unknown := set(args.programs) - {'forward', 'train'} or set(args.models) - set(MODELS):
    raise SystemExit(f'unknown --programs/--models entries: {sorted(unknown)}')
  if args.clock is None:
    args.clock = 'cpu' if args.pin_cpu >= 0 else 'wall'
  if args.pin_cpu >= 0:
    args.threads = 1
  if args.baseline:
    args.baseline = os.path.abspath(os.path.expanduser(args.baseline))
  if args.worker:
    if args.pin_cpu >= 0:  # before torch / jax size their thread pools
      os.sched_setaffinity(0, {args.pin_cpu})
    if args.worker == 'baseline':
      sys.path.insert(0, args.baseline)  # its laps_jax and experiments shadow this checkout's
    record = (run_official if args.worker == 'official' else run_ours)(args)
    print(json.dumps(record))
    return
  import_official_vit_laps(args.official)  # fail early on a wrong path
  result = run(args)
  text = markdown(result)
  print(text)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + '.md', 'w') as f:
      f.write(text)
    with open(args.out + '.json', 'w') as f:
      json.dump(result, f, indent=1)


if __name__ == '__main__':
  main()
