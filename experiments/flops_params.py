"""GMACs per view and parameter counts of every model family at the papers' sizes.

    python experiments/flops_params.py            # markdown table
    python experiments/flops_params.py --json     # the same rows as JSON

Nothing is allocated: the model is built under `nnx.eval_shape` and the forward pass is traced,
lowered and compiled on abstract inputs (batch 1, one view, float32). Three counts per model:

  * matmul MACs   — our own count over the jaxpr of the forward pass: every `dot_general` and
                    `conv_general_dilated`, exactly (see `count_matmul_macs`). This is what the
                    papers' counter (fvcore, which reports MACs and calls them FLOPs) counts for
                    these models, so it is the column to compare with the published figures.
  * XLA total     — `cost_analysis()['flops'] / 2` of the compiled forward pass. XLA counts a
                    multiply-add as 2 flops, but also 1 flop per element of every elementwise op,
                    reduction, LayerNorm and softmax (exp/erf go to 'transcendentals', not
                    'flops'), so this is a little above the matmul count.
  * XLA lowered   — the same on the pre-optimisation HLO (`lowered.cost_analysis()`), to show
                    that compilation (fusion, CPU layout) does not change the count materially.

The published figures: LAPS paper (fvcore) ViT-B/16 8×224: LAPS 146.23 GMACs, 2D 140.51, 86.106 M
parameters; LVT 16×224 about 254 GMACs and 52.1 M (docs/DESIGN.md 1.2); Visformer-S 8×224 (LAPS model
zoo): 2D 39.074, LAPS 40.136, Base3D 46.509 GMACs, 39.758 M. Those fvcore totals include
BatchNorm (2 per element): the Visformer operator table adds it to the matmul count
(experiments/visformer_macs.py). Rows without a published figure are compared with a closed-form count (`analytic_macs`, fvcore's rule written out by hand), which
checks the jaxpr counter independently.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

if __package__ in (None, ''):  # run as a script: make `experiments` and `laps_jax` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
from flax import nnx

from experiments import visformer_macs
from experiments.model_configs import PAPER_ROWS, PaperRow
from laps_jax import models
from laps_jax.models.lvt import patch_grid_size


# ---------------------------------------------------------------------------------------------
# The matmul/conv MAC counter (what fvcore counts).
# ---------------------------------------------------------------------------------------------
def dot_general_macs(lhs_shape, rhs_shape, dimension_numbers) -> int:
  """MACs of one dot_general: every lhs element meets every free (non-contracted, non-batch) rhs
  element once, i.e. prod(lhs) · prod(rhs free dims)."""
  (_, rhs_contract), (_, rhs_batch) = dimension_numbers
  rhs_free = [s for i, s in enumerate(rhs_shape) if i not in rhs_contract and i not in rhs_batch]
  return math.prod(lhs_shape) * math.prod(rhs_free)


def conv_macs(out_shape, rhs_shape, dimension_numbers) -> int:
  """MACs of one conv_general_dilated: every output element sums over the kernel's window and its
  input channels (already divided by feature_group_count in the kernel shape), i.e.
  prod(out) · prod(kernel) / kernel_out_features. Padded positions count, as in fvcore."""
  out_feature_dim = dimension_numbers.rhs_spec[0]
  return math.prod(out_shape) * math.prod(rhs_shape) // rhs_shape[out_feature_dim]


def _sub_jaxprs(params: dict[str, Any]):
  for value in params.values():
    values = value if isinstance(value, (tuple, list)) else (value,)
    for v in values:
      if isinstance(v, jax.extend.core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, jax.extend.core.Jaxpr):
        yield v


def count_matmul_macs(jaxpr) -> int:
  """Exact MACs of every dot_general / conv_general_dilated in `jaxpr` (a Jaxpr or ClosedJaxpr),
  recursing into sub-jaxprs (jit, remat, custom_jvp/vjp). A scan body counts `length` times, a
  cond counts its most expensive branch; a while loop has no static trip count and is refused."""
  if isinstance(jaxpr, jax.extend.core.ClosedJaxpr):
    jaxpr = jaxpr.jaxpr
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      lhs, rhs = (v.aval.shape for v in eqn.invars)
      total += dot_general_macs(lhs, rhs, eqn.params['dimension_numbers'])
    elif name == 'conv_general_dilated':
      total += conv_macs(eqn.outvars[0].aval.shape, eqn.invars[1].aval.shape,
                         eqn.params['dimension_numbers'])
    elif name in ('pjit', 'jit') and eqn.params.get('name') == 'depthwise_conv':
      # laps_jax.models.layers.depthwise_conv: k² shifted multiply-adds, the MACs of the conv
      k = eqn.invars[1].aval.shape[0]
      total += math.prod(eqn.outvars[0].aval.shape) * k * k
    elif name == 'while':
      raise NotImplementedError('count_matmul_macs: a while loop has no static trip count')
    elif name == 'cond':
      total += max(count_matmul_macs(b) for b in eqn.params['branches'])
    elif name == 'scan':
      total += eqn.params['length'] * count_matmul_macs(eqn.params['jaxpr'])
    else:
      total += sum(count_matmul_macs(sub) for sub in _sub_jaxprs(eqn.params))
  return total


# ---------------------------------------------------------------------------------------------
# Abstract models: shapes only, no memory.
# ---------------------------------------------------------------------------------------------
def abstract_model(config):
  """(graphdef, abstract state) of the model `config` describes, built under eval_shape."""
  model = nnx.eval_shape(lambda: models.build(config, nnx.Rngs(0)))
  return nnx.split(model)


def param_count(config) -> int:
  """Number of parameters (nnx.Param leaves only; RNG state is not a parameter)."""
  model = nnx.eval_shape(lambda: models.build(config, nnx.Rngs(0)))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def video_spec(config, batch: int = 1, dtype=jnp.float32) -> jax.ShapeDtypeStruct:
  """The abstract input clip (B, T, H, W, 3)."""
  s = config.image_size
  return jax.ShapeDtypeStruct((batch, config.num_frames, s, s, 3), dtype)


def forward_fn(graphdef):
  """forward(state, videos) -> logits, a pure function of the split model (what jit lowers)."""
  def forward(state, videos):
    return nnx.merge(graphdef, state)(videos, train=False)
  return forward


def forward_macs(config, batch: int = 1) -> int:
  """Matmul/conv MACs of one forward pass of `batch` clips (jaxpr count)."""
  graphdef, state = abstract_model(config)
  jaxpr = jax.make_jaxpr(forward_fn(graphdef))(state, video_spec(config, batch))
  return count_matmul_macs(jaxpr)


def xla_flops(config, batch: int = 1) -> dict[str, float]:
  """XLA's cost analysis of the forward pass: {'compiled': flops, 'lowered': flops}."""
  graphdef, state = abstract_model(config)
  # XLA:CPU's count everywhere (no accelerator needed; the same figure on every machine).
  with jax.default_device(jax.local_devices(backend='cpu')[0]):
    lowered = jax.jit(forward_fn(graphdef)).lower(state, video_spec(config, batch))
    lowered_cost = lowered.cost_analysis() or {}
    compiled_cost = lowered.compile().cost_analysis() or {}
  if isinstance(compiled_cost, (list, tuple)):  # older JAX returned one dict per device
    compiled_cost = compiled_cost[0]
  return {'compiled': float(compiled_cost.get('flops', float('nan'))),
          'lowered': float(lowered_cost.get('flops', float('nan')))}


# ---------------------------------------------------------------------------------------------
# A closed-form count (fvcore's rule by hand): an independent check of the jaxpr counter.
# ---------------------------------------------------------------------------------------------
def analytic_macs(config) -> int:
  """Matmul/conv MACs of one clip, written out by hand from the architecture (the models' docstrings)."""
  if config.name == 'visformer':  # everything but BatchNorm, which is elementwise in the jaxpr
    ops = visformer_macs.analytic_macs_by_operator(config)
    return ops['conv'] + ops['attention'] + ops['head']
  c, m, layers, t = config.hidden_size, config.mlp_dim, config.num_layers, config.num_frames
  heads, k = config.num_heads, config.num_classes
  d = c // heads
  p = config.patch_size
  if config.name == 'lvt':
    side = patch_grid_size(config.image_size, p, config.patch_stride, config.patch_padding)
    n = side * side
    tokens = t * n
    gates = (0 if not config.fixation else 1 if config.shared_gate else 2)
    per_pass = (4 * c * c            # qkv + output projection
                + gates * 3 * d * d * heads   # fixation gate(s): 3d -> d per head
                + 2 * c * d + c)     # Σ φ(k)ᵀv, φ(q)·(…), and the normaliser φ(q)·Σφ(k)
    per_token = 2 * per_pass + 2 * c * m + 9 * m  # two attention passes, Mix-FFN with 3×3 depthwise conv
    patch = tokens * p * p * 3 * c
    head = c * config.head_mlp_dim + config.head_mlp_dim * k
    return layers * tokens * per_token + patch + head
  n = (config.image_size // p) ** 2
  l = 1 + n  # tokens per frame with the cls token
  tokens = t * l
  linear = 4 * c * c + 2 * c * m  # qkv 3C², proj C², MLP fc1 + fc2
  if config.name == 'vit2d' or (config.name == 'laps' and all(x is None for x in config.leap_levels)):
    attention = [2 * t * l * l * c] * layers                      # q·kᵀ and attn·v per frame
  elif config.name == 'laps':
    levels = config.leap_levels
    attention = [2 * t * l * l * c * (2 if levels[i % len(levels)] is not None else 1) for i in range(layers)]
  elif config.name == 'joint':
    attention = [2 * tokens * tokens * c] * layers
  elif config.name == 'divided':
    # spatial per frame, plus temporal over T per token position: its qkv/proj (4C²), temporal_fc (C²)
    attention = [2 * t * l * l * c + 2 * l * t * t * c + 5 * c * c * tokens] * layers
  else:
    raise ValueError(config.name)
  patch = t * n * p * p * 3 * c
  head = t * c * k  # per-frame logits, then the mean
  return layers * tokens * linear + sum(attention) + patch + head


# ---------------------------------------------------------------------------------------------
# The table.
# ---------------------------------------------------------------------------------------------
def measure_row(row: PaperRow, num_classes: int = 400, with_xla: bool = True) -> dict[str, Any]:
  config = row.config(num_classes)
  start = time.perf_counter()
  params = param_count(config)
  macs = forward_macs(config)
  result = {
      'model': row.label, 'name': row.name, 'size': row.size,
      'frames': row.frames, 'image_size': row.image_size, 'num_classes': num_classes,
      'params': params, 'params_m': params / 1e6,
      'gmacs_matmul': macs / 1e9,
      'gmacs_analytic': analytic_macs(config) / 1e9,
      'published_gmacs': row.published_gmacs, 'published_params_m': row.published_params_m,
      'source': row.source,
  }
  if with_xla:
    flops = xla_flops(config)
    result['gmacs_xla_compiled'] = flops['compiled'] / 2e9
    result['gmacs_xla_lowered'] = flops['lowered'] / 2e9
  reference = row.published_gmacs if row.published_gmacs is not None else result['gmacs_analytic']
  result['reference_gmacs'] = reference
  result['reference_kind'] = 'published' if row.published_gmacs is not None else 'analytic'
  result['diff_matmul_pct'] = 100.0 * (result['gmacs_matmul'] / reference - 1.0)
  if with_xla:
    result['diff_xla_pct'] = 100.0 * (result['gmacs_xla_compiled'] / reference - 1.0)
  if row.name == 'visformer':  # fvcore's split by operator (BatchNorm counted), experiments/visformer_macs.py
    result['gmacs_by_operator'] = {k: v / 1e9 for k, v in visformer_macs.forward_macs_by_operator(config).items()}
    result['gmacs_fvcore_rule'] = sum(result['gmacs_by_operator'].values())
    result['published_by_operator'] = visformer_macs.published_by_operator(config)
  if row.published_params_m is not None:
    result['diff_params_pct'] = 100.0 * (result['params_m'] / row.published_params_m - 1.0)
  result['seconds'] = time.perf_counter() - start
  return result


def _fmt(x, spec='.2f'):
  return '—' if x is None else format(x, spec)


def markdown_table(results: list[dict[str, Any]]) -> str:
  """The rows as a markdown table (GMACs per view, batch 1)."""
  with_xla = all('gmacs_xla_compiled' in r for r in results)
  head = ['model', 'T×res', 'params (M)', 'published params (M)', 'GMACs matmul (ours)']
  if with_xla:
    head += ['GMACs XLA total', 'GMACs XLA lowered']
  head += ['reference GMACs', 'Δ matmul vs ref', *(['Δ XLA vs ref'] if with_xla else []), 'Δ params']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in results:
    ref = f"{r['reference_gmacs']:.2f} ({'published' if r['reference_kind'] == 'published' else 'analytic'})"
    cells = [r['model'], f"{r['frames']}×{r['image_size']}", f"{r['params_m']:.3f}",
             _fmt(r['published_params_m'], '.3f'), f"{r['gmacs_matmul']:.2f}"]
    if with_xla:
      cells += [f"{r['gmacs_xla_compiled']:.2f}", f"{r['gmacs_xla_lowered']:.2f}"]
    cells += [ref, f"{r['diff_matmul_pct']:+.2f} %"]
    if with_xla:
      cells += [f"{r['diff_xla_pct']:+.2f} %"]
    cells += [f"{r['diff_params_pct']:+.2f} %" if 'diff_params_pct' in r else '—']
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def elementwise_flops_per_element() -> dict[str, float]:
  """What XLA's cost analysis charges for the non-matmul pieces, per element (measured, not
  assumed): it explains why 'XLA total' sits above the matmul count."""
  from laps_jax.models.layers import LayerNorm, gelu
  spec = jax.ShapeDtypeStruct((197, 768), jnp.float32)
  heads = jax.ShapeDtypeStruct((1, 197, 12, 64), jnp.float32)

  def extra_flops(f, *specs):
    flops = jax.jit(f).lower(*specs).compile().cost_analysis()['flops']
    return flops - 2 * count_matmul_macs(jax.make_jaxpr(f)(*specs))

  norm = nnx.eval_shape(lambda: LayerNorm(768, epsilon=1e-6, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(norm)
  scores = 12 * 197 * 197
  return {
      'gelu_erf': extra_flops(gelu, spec) / math.prod(spec.shape),
      'layer_norm': extra_flops(lambda s, x: nnx.merge(graphdef, s)(x), state, spec) / math.prod(spec.shape),
      'softmax_per_score': extra_flops(lambda q, k, v: jax.nn.dot_product_attention(q, k, v),
                                       heads, heads, heads) / scores,
      'add': extra_flops(lambda x, y: x + y, spec, spec) / math.prod(spec.shape),
  }


def main(argv=None) -> list[dict[str, Any]]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--json', action='store_true', help='print the rows as JSON instead of markdown')
  parser.add_argument('--num_classes', type=int, default=400)
  parser.add_argument('--no_xla', action='store_true',
                      help='skip the XLA cost analysis (compiling ViT-L takes a while on a small CPU)')
  parser.add_argument('--only', default='', help='comma-separated model names to keep (e.g. laps,vit2d)')
  parser.add_argument('--out', default='', help='also write the table (.md) and rows (.json) to this stem')
  parser.add_argument('--explain', action='store_true',
                      help='also print the flops XLA charges per element of GELU, LayerNorm, softmax, add')
  args = parser.parse_args(argv)
  explain = ''
  if args.explain:
    with jax.default_device(jax.local_devices(backend='cpu')[0]):
      per_element = elementwise_flops_per_element()
    explain = ('XLA flops per element outside matmuls: ' +
               ', '.join(f'{k} {v:.1f}' for k, v in per_element.items()) + '\n\n')
    print(explain, end='', file=sys.stderr if args.json else sys.stdout)
  rows = [r for r in PAPER_ROWS if not args.only or r.name in args.only.split(',')]
  results = [measure_row(r, args.num_classes, with_xla=not args.no_xla) for r in rows]
  table = markdown_table(results)
  if by_operator := [r for r in results if 'gmacs_by_operator' in r]:
    table += ('\n\nVisformer by operator (GMACs; fvcore rule: BatchNorm 2 per element, as the LAPS '
              'model zoo counts):\n\n' + visformer_macs.operator_table(by_operator))
  if args.json:
    print(json.dumps(results, indent=1))
  else:
    print(table)
  if args.out:
    os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
    command = ' '.join(['python experiments/flops_params.py', *(sys.argv[1:] if argv is None else argv)])
    header = (f'<!-- {command}; jax {jax.__version__}, '
              f'XLA:CPU cost analysis -->\nGMACs per view (batch 1, float32); params from eval_shape.\n\n' + explain)
    with open(args.out + '.md', 'w') as f:
      f.write(header + table + '\n')
    with open(args.out + '.json', 'w') as f:
      json.dump(results, f, indent=1)
  return results


if __name__ == '__main__':
  main()
