"""`--config.mode=dry_run`: compile the train step for the configured mesh, without data or
parameters in memory, and report what one device needs and how much work a step is.

Everything is abstract (ShapeDtypeStructs with shardings), so a laptop can check a ViT-B run on
a simulated mesh: XLA_FLAGS=--xla_force_host_platform_device_count=8 on a CPU machine.
The numbers are XLA's own (`compiled.memory_analysis()` / `cost_analysis()`, and the collectives of
the compiled HLO by kind, `laps_jax.train.collectives`) for the backend the compile ran on: compile on the target accelerator for exact figures; the CPU figures are a guide
(XLA's CPU and GPU/TPU buffer assignment and fusion differ).
"""
import re
import time

import jax
import jax.numpy as jnp
from clu import parameter_overview
from flax import nnx

from laps_jax.models.layers import compute_dtype
from laps_jax.train import collectives as collectives_lib
from laps_jax.train import mesh as mesh_lib
from laps_jax.train import train_state as ts_lib


def _size(n: float) -> str:
  for unit, scale in (('GiB', 2**30), ('MiB', 2**20), ('KiB', 2**10)):
    if n >= scale:
      return f'{n / scale:.3f} {unit}'
  return f'{n:.0f} B'


def _flops(n: float) -> str:
  for unit, scale in (('PFLOP', 1e15), ('TFLOP', 1e12), ('GFLOP', 1e9), ('MFLOP', 1e6)):
    if n >= scale:
      return f'{n / scale:.4g} {unit}'
  return f'{n:.4g} FLOP'


def _array_text(shape: str, limit: int = 60) -> str:
  """An HLO shape without layouts, shortened: 'f32[64,8,5,32]'."""
  text = re.sub(r'\{[\d,]*\}', '', shape)
  return text if len(text) <= limit else text[:limit - 3] + '...'


def report(config, mesh: jax.sharding.Mesh, graphdef, abstract_state) -> dict:
  """Lowers and compiles the train step; logs and returns memory (bytes per device) and FLOPs."""
  shardings = ts_lib.shardings_of(abstract_state)
  step = ts_lib.jit_train_step(graphdef, shardings, mesh)
  batch = ts_lib.abstract_batch(config.batch_size, config.model.num_frames, config.model.image_size,
                                config.model.num_classes, mesh)
  start = time.monotonic()
  compiled = step.lower(abstract_state, batch).compile()
  compile_s = time.monotonic() - start

  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops_per_device = float(cost.get('flops', float('nan')))
  num_params = parameter_overview.count_parameters(
      nnx.to_pure_dict(nnx.filter_state(abstract_state['model'], nnx.Param)))
  compute_itemsize = jnp.dtype(compute_dtype(config.model.dtype)).itemsize
  hlo_collectives = collectives_lib.collectives(compiled.as_text())
  moved = collectives_lib.collective_bytes(compiled.as_text())
  largest = {kind: max((c for c in hlo_collectives if c.kind == kind), key=lambda c: c.bytes, default=None)
             for kind in moved}
  # An upper bound: arguments (state + batch shard) and outputs live together, less the donated
  # state that the outputs reuse, plus every temporary (XLA's peak below overlaps temporaries).
  total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
           - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
  results = {
      'backend': jax.default_backend(),
      'mesh': dict(mesh.shape),
      'devices': mesh.size,
      'global_batch': config.batch_size,
      'batch_per_device': config.batch_size // mesh_lib.batch_shards(mesh),
      'parameters': num_params,
      'compile_seconds': compile_s,
      'memory_per_device': {
          'arguments': memory.argument_size_in_bytes,
          'outputs': memory.output_size_in_bytes,
          'aliased (donated)': memory.alias_size_in_bytes,
          'temporaries': memory.temp_size_in_bytes,
          'generated_code': memory.generated_code_size_in_bytes,
          'upper bound': total,
      },
      'peak_memory_per_device': getattr(memory, 'peak_memory_in_bytes', None),
      'flops_per_device_per_step': flops_per_device,
      'flops_per_step': flops_per_device * mesh.size,
      'parameter_bytes': {'float32': 4 * num_params, 'compute dtype': compute_itemsize * num_params},
      'collective_bytes_per_device': moved,
      'largest_collective': {k: c and {'bytes': c.bytes, 'shape': c.shape} for k, c in largest.items()},
  }
  lines = [
      f'Dry run of the train step on {results["devices"]} {results["backend"]} device(s), '
      f'mesh {results["mesh"]} (compiled in {compile_s:.1f} s)',
      f'  model {config.model.name}: {num_params:,} parameters ({num_params / 1e6:.2f} M); global batch '
      f'{config.batch_size} ({results["batch_per_device"]} per device) × '
      f'{config.model.num_frames}×{config.model.image_size}² clips; '
      f'gradient accumulation {config.optimizer.grad_accum_steps}; '
      f'remat {config.model.get("remat", None)!r}',
      '  memory per device (XLA memory analysis):',
      *[f'    {k:<18} {_size(v)}' for k, v in results['memory_per_device'].items()],
  ]
  if results["peak_memory_per_device"] and results["backend"] != "cpu":  # not meaningful on CPU
    lines.append(f'    {"peak (XLA)":<18} {_size(results["peak_memory_per_device"])}')
  lines += [
      f'  FLOPs per train step (XLA cost analysis): {_flops(flops_per_device)} per device, '
      f'{_flops(results["flops_per_step"])} in all, '
      f'{_flops(results["flops_per_step"] / config.batch_size)} per clip (forward + backward)',
      f'  collectives per train step, bytes per device (compiled HLO); parameters '
      f'{_size(4 * num_params)} in float32, {_size(compute_itemsize * num_params)} in '
      f'{config.model.dtype}:',
      *[f'    {kind:<18} {_size(n):>12}   {n / (compute_itemsize * num_params):6.2f} × parameters'
        + (f'   largest {_size(largest[kind].bytes)} {_array_text(largest[kind].shape)}' if largest[kind] else '')
        for kind, n in moved.items()],
  ]
  if jax.process_index() == 0:
    print('\n'.join(lines), flush=True)  # stdout: the report itself (the log has the rest)
  return results
