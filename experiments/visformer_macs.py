"""Visformer MACs by operator, the way fvcore splits them (the LAPS model zoo's counter).

fvcore (`FlopCountAnalysis`, as in the LAPS code's `cal_flops.py`, model in eval mode) counts
  conv        every nn.Conv2d: out elements × kernel window × input channels per group (1 MAC each)
  matmul      the attention's q·kᵀ and attn·v
  batch_norm  eval-mode BatchNorm with affine: 2 per input element
  linear      the classifier
and ignores elementwise ops (GELU, softmax, the q/k scale, adds, pooling). Its published
Visformer-S 8×224 split: conv 37.967, attention 1.062 (2D) / 2.124 (LAPS), BatchNorm 0.043,
head 0.002 GMACs; totals 39.074 / 40.136.

`jaxpr_macs_by_operator` reads the split off the jaxpr of our forward pass: conv_general_dilated
and the 1×1 convs (dot_generals) are 'conv'; dot_generals under the model's `attention_matmuls`
name scope are 'attention'; under `head` 'head'. BatchNorm is elementwise in the jaxpr, so its
count is fvcore's rule applied to the layer shapes (`analytic_macs_by_operator`, which also
writes the other three out by hand as an independent check of the jaxpr walk).
"""
from __future__ import annotations

import collections
import re

import jax

from laps_jax.models.visformer import stage_grids

PUBLISHED_8x224 = {  # LAPS MODEL_ZOO.md / the issue: fvcore GMACs of Visformer-S 8×224, 400 classes
    'conv': 37.967, 'batch_norm': 0.043, 'head': 0.002, 'attention_frame': 1.062, 'attention_leap': 2.124}
_HEAD = re.compile(r'(^|/)head(/|$)')


def _scope_kind(scope: str) -> str:
  if 'attention_matmuls' in scope:
    return 'attention'
  if _HEAD.search(scope):
    return 'head'
  return 'conv'


def jaxpr_macs_by_operator(jaxpr, scope: str = '') -> collections.Counter:
  """{'conv', 'attention', 'head'}: exact MACs of the dot_generals / convs of `jaxpr` by name scope."""
  from experiments.flops_params import _sub_jaxprs, conv_macs, dot_general_macs
  if isinstance(jaxpr, jax.extend.core.ClosedJaxpr):
    jaxpr = jaxpr.jaxpr
  counts = collections.Counter()
  for eqn in jaxpr.eqns:
    here = f'{scope}/{eqn.source_info.name_stack}'
    name = eqn.primitive.name
    if name == 'dot_general':
      lhs, rhs = (v.aval.shape for v in eqn.invars)
      counts[_scope_kind(here)] += dot_general_macs(lhs, rhs, eqn.params['dimension_numbers'])
    elif name == 'conv_general_dilated':
      counts['conv'] += conv_macs(eqn.outvars[0].aval.shape, eqn.invars[1].aval.shape,
                                  eqn.params['dimension_numbers'])
    elif name in ('while', 'cond', 'scan'):
      raise NotImplementedError(f'jaxpr_macs_by_operator: {name} is not expected in the Visformer forward pass')
    else:
      for sub in _sub_jaxprs(eqn.params):
        counts.update(jaxpr_macs_by_operator(sub, here))
  return counts


def forward_macs_by_operator(config) -> dict[str, int]:
  """The jaxpr split of one clip's forward pass (batch 1), plus fvcore's BatchNorm rule."""
  from experiments.flops_params import abstract_model, forward_fn, video_spec
  graphdef, state = abstract_model(config)
  jaxpr = jax.make_jaxpr(forward_fn(graphdef))(state, video_spec(config, 1))
  counts = dict(jaxpr_macs_by_operator(jaxpr))
  counts['batch_norm'] = analytic_macs_by_operator(config)['batch_norm']
  return {k: counts.get(k, 0) for k in ('conv', 'attention', 'batch_norm', 'head')}


def analytic_macs_by_operator(config) -> dict[str, int]:
  """fvcore's count of one clip written out from the architecture (laps_jax/models/visformer.py)."""
  t, s, c, k = config.num_frames, config.image_size, config.hidden_size, config.num_classes
  stem = config.stem_channels
  widths = (c // 2, c, 2 * c)
  grids = tuple(g * g for g in stage_grids(s))  # tokens per frame in stages 1, 2, 3
  g = config.conv_groups
  hidden1 = widths[0] * 5 // 6 if g < 2 else widths[0] * 2
  conv = (s // 2) ** 2 * 49 * 3 * stem                                     # stem 7×7/2
  conv += grids[0] * 16 * stem * widths[0] + grids[1] * 4 * widths[0] * widths[1] + grids[2] * 4 * widths[1] * widths[2]
  conv += config.stage_depths[0] * grids[0] * (2 * widths[0] * hidden1 + 9 * (hidden1 // g) * hidden1)
  attention, batch_norm = 0, (s // 2) ** 2 * stem + sum(n * w for n, w in zip(grids, widths))  # stem, patch norms
  batch_norm += config.stage_depths[0] * grids[0] * widths[0] + grids[2] * widths[2]   # stage-1 norm2, final norm
  for stage, (n, w) in enumerate(zip(grids[1:], widths[1:])):
    depth = config.stage_depths[stage + 1]
    conv += depth * n * (4 * w * w + 2 * w * int(w * config.mlp_ratio))   # qkv 3w², proj w², MLP
    batch_norm += depth * 2 * n * w
    levels = config.leap_levels[stage]
    for block in range(depth):
      if config.temporal_attention == 'joint':
        attention += 2 * t * n * n * w  # a frame's share of the clip's joint attention 2·(T·n)²·w
      else:
        attention += 2 * n * n * w * (1 if levels[block % len(levels)] is None else 2)
  return {'conv': t * conv, 'attention': t * attention, 'batch_norm': 2 * t * batch_norm, 'head': t * 2 * c * k}


def published_by_operator(config) -> dict[str, float] | None:
  """The published fvcore split (GMACs) for Visformer-S 8×224 with 400 classes, else None."""
  if (config.num_frames, config.image_size, config.hidden_size, config.num_classes) != (8, 224, 384, 400):
    return None
  if config.temporal_attention == 'joint':
    return None
  leap = any(level is not None for stage in config.leap_levels for level in stage)
  out = {key: PUBLISHED_8x224[key] for key in ('conv', 'batch_norm', 'head')}
  out['attention'] = PUBLISHED_8x224['attention_leap' if leap else 'attention_frame']
  return out


def operator_table(rows: list[dict]) -> str:
  """Markdown: the per-operator GMACs of the Visformer rows against the published split."""
  head = ['model', 'T×res', 'conv', 'attention', 'BatchNorm', 'head', 'total (fvcore rule)',
          'published total', 'Δ total', 'published split (conv / attn / BN / head)']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    ops = r['gmacs_by_operator']
    published = r.get('published_by_operator')
    total = sum(ops.values())
    ref = r.get('published_gmacs')
    cells = [r['model'], f"{r['frames']}×{r['image_size']}"] + [f'{ops[k]:.3f}' for k in
                                                                  ('conv', 'attention', 'batch_norm', 'head')]
    cells += [f'{total:.3f}', '—' if ref is None else f'{ref:.3f}',
              '—' if ref is None else f'{100 * (total / ref - 1):+.2f} %',
              '—' if published is None else ' / '.join(f'{published[k]:.3f}' for k in
                                                         ('conv', 'attention', 'batch_norm', 'head'))]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)
