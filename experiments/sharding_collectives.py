"""What the compiled train step moves between devices, per mesh: collective bytes per device by kind.

    python experiments/sharding_collectives.py --out experiments/results/sharding_collectives_vitb_laps

Compile only (abstract inputs, no parameters in memory), on 8 simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8, set here for the worker process): ViT-B/16
LAPS 8×224², the project's train step (`laps_jax.train.train_state.train_step`, SGD momentum), over
the meshes (data, fsdp, tensor) = (8,1,1), (1,8,1), (2,4,1), (2,2,2), (1,2,4). The bytes are those of
`laps_jax.train.collectives` (each collective's full buffer on one device), beside the parameter
bytes in the compute dtype. What to expect: data parallelism all-reduces the gradients once
(≈ 1× the float32 gradient); FSDP all-gathers the parameters for the forward and again for the
backward (≈ 2× in the compute dtype) and reduces the gradients; tensor parallelism adds
activation all-reduces inside every block. XLA:CPU's figures; a GPU/TPU compile may combine or
schedule collectives differently (on CPU gradient reductions stay all-reduces: XLA:CPU does not
rewrite all-reduce + slice into reduce-scatter).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESHES = ((8, 1, 1), (1, 8, 1), (2, 4, 1), (2, 2, 2), (1, 2, 4))
KINDS = ('all-gather', 'reduce-scatter', 'all-reduce', 'all-to-all', 'collective-permute')


def measure(mesh_shape, args) -> dict:
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from laps_jax.models.vit import ViTConfig  # pylint: disable=import-outside-toplevel
  from laps_jax.train import collectives  # pylint: disable=import-outside-toplevel
  from laps_jax.train import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from laps_jax.train import train_state as ts_lib  # pylint: disable=import-outside-toplevel
  config = ViTConfig.variant('B/16', name=args.model, num_frames=args.frames, image_size=args.image_size,
                             dtype=args.dtype, attention_impl='xla').to_config_dict()
  mesh = mesh_lib.make_mesh(mesh_shape)
  with mesh_lib.activate(mesh, mesh_lib.DEFAULT_AXIS_RULES):
    init = ts_lib.make_init_fn(config, optax.sgd(0.1, momentum=0.9), 0)
    graphdef, abstract = ts_lib.abstract_train_state(init, mesh)
    step = ts_lib.jit_train_step(graphdef, ts_lib.shardings_of(abstract), mesh)
    batch = ts_lib.abstract_batch(args.batch, args.frames, args.image_size, config.num_classes, mesh)
    start = time.monotonic()
    text = step.lower(abstract, batch).compile().as_text()
  params = sum(x.size for x in __import__('jax').tree.leaves(abstract['model']))
  found = collectives.collectives(text)
  largest = {k: max((c for c in found if c.kind == k), key=lambda c: c.bytes, default=None) for k in KINDS}
  return {'mesh': list(mesh_shape), 'compile_s': time.monotonic() - start,
          'parameters': params, 'parameter_bytes': params * jnp.dtype(args.dtype).itemsize,
          'bytes': collectives.collective_bytes(text),
          'count': {k: sum(c.kind == k for c in found) for k in KINDS},
          'largest': {k: c and {'bytes': c.bytes, 'shape': c.shape[:80]} for k, c in largest.items()}}


def markdown(rows, args) -> str:
  mib = lambda n: f'{n / 2**20:.1f}'
  p = rows[0]['parameter_bytes']
  lines = [f'ViT-B/16 {args.model} {args.frames}×{args.image_size}², {args.dtype} compute, global batch '
           f'{args.batch}, train step compiled for 8 simulated CPU devices; MiB per device by kind '
           f'(× the {mib(p)} MiB of parameters in {args.dtype}), number of collectives in brackets.',
           '', '| mesh (data, fsdp, tensor) | ' + ' | '.join(KINDS) + ' | largest all-gather |',
           '|---|' + '---|' * (len(KINDS) + 1)]
  for r in rows:
    cells = [f"{mib(r['bytes'][k])} ({r['bytes'][k] / p:.2f}×) [{r['count'][k]}]" for k in KINDS]
    big = r['largest']['all-gather']
    lines.append(f"| {tuple(r['mesh'])} | " + ' | '.join(cells) + ' | '
                 + (f"{big['shape'].split('{')[0]}" if big else '—') + ' |')
  return '\n'.join(lines) + '\n'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='laps')
  parser.add_argument('--frames', type=int, default=8)
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--dtype', default='bfloat16')
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--meshes', default=';'.join(','.join(map(str, m)) for m in MESHES))
  parser.add_argument('--out', default='')
  parser.add_argument('--worker', default='', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    sys.path.insert(0, REPO)
    print(json.dumps(measure(tuple(int(x) for x in args.worker.split(',')), args)))
    return
  rows = []
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  for mesh in args.meshes.split(';'):
    cmd = [sys.executable, os.path.abspath(__file__), f'--worker={mesh}', f'--model={args.model}',
           f'--frames={args.frames}', f'--image_size={args.image_size}', f'--dtype={args.dtype}',
           f'--batch={args.batch}']
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
      raise SystemExit(f'mesh {mesh} failed:\n{proc.stderr[-4000:]}')
    rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"mesh {mesh}: " + ', '.join(f"{k} {rows[-1]['bytes'][k] / 2**20:.1f} MiB" for k in KINDS)
          + f" (compiled in {rows[-1]['compile_s']:.0f} s)", flush=True)
  text = markdown(rows, args)
  print(text)
  if args.out:
    with open(args.out + '.md', 'w') as f:
      f.write(text)
    with open(args.out + '.json', 'w') as f:
      json.dump({'setting': vars(args), 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
