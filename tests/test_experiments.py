"""experiments/: the jaxpr MAC counter, the FLOPs/params table, the papers' figures, the speed sweep."""
import math
import os
import sys

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root

from experiments import flops_params, speed_memory  # noqa: E402
from experiments.model_configs import PAPER_ROWS, PaperRow, model_config  # noqa: E402
from laps_jax import models  # noqa: E402

S = jax.ShapeDtypeStruct


def macs_of(f, *specs):
  return flops_params.count_matmul_macs(jax.make_jaxpr(f)(*specs))


# ---------------------------------------------------------------------------------------------
# The MAC counter, on cases counted by hand.
# ---------------------------------------------------------------------------------------------
def test_counter_batched_einsum():
  # (b, i, j) x (b, j, k): every one of the b·i·k outputs sums j products.
  f = lambda x, y: jnp.einsum('bij,bjk->bik', x, y)
  assert macs_of(f, S((2, 3, 4), jnp.float32), S((2, 4, 5), jnp.float32)) == 2 * 3 * 4 * 5


def test_counter_conv_padding_stride_and_groups():
  x = S((2, 9, 9, 4), jnp.float32)
  dn = ('NHWC', 'HWIO', 'NHWC')
  # 3×3, stride 2, padding 1: 5×5 outputs, each 3·3·4 MACs per output channel (6 of them).
  dense = lambda x, w: jax.lax.conv_general_dilated(x, w, (2, 2), [(1, 1), (1, 1)], dimension_numbers=dn)
  assert macs_of(dense, x, S((3, 3, 4, 6), jnp.float32)) == 2 * 5 * 5 * 6 * (3 * 3 * 4)
  # depthwise (groups = channels): each output reads 3·3 taps of its own channel only.
  depthwise = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=dn,
                                                        feature_group_count=4)
  assert macs_of(depthwise, x, S((3, 3, 1, 4), jnp.float32)) == 2 * 9 * 9 * 4 * 9


def test_counter_recurses_into_jit_remat_and_scan_but_ignores_elementwise():
  def layer(x, w):
    return jnp.tanh(x @ w) + 1.0  # 5·7·7 MACs; tanh and the add count nothing

  def f(x, w):
    y = jax.jit(layer)(x, w)
    y = jax.checkpoint(layer)(y, w)
    y, _ = jax.lax.scan(lambda c, _: (layer(c, w), None), y, None, length=3)
    return jax.nn.softmax(y).sum()
  assert macs_of(f, S((5, 7), jnp.float32), S((7, 7), jnp.float32)) == (1 + 1 + 3) * 5 * 7 * 7
  # ... and a gradient w.r.t. the weight: the forward matmul plus xᵀ·g, one more of the same size.
  g = jax.grad(lambda x, w: (x @ w).sum(), argnums=1)
  assert macs_of(g, S((5, 7), jnp.float32), S((7, 3), jnp.float32)) == 2 * 5 * 7 * 3


# ---------------------------------------------------------------------------------------------
# The papers' figures (shapes only: nothing is allocated, a few seconds each).
# ---------------------------------------------------------------------------------------------
def test_laps_vitb_parameters_match_the_paper():
  config = model_config('laps', 'base', frames=8, image_size=224, num_classes=400)
  assert flops_params.param_count(config) == 86_106_256  # LAPS paper: 86.106 M
  # zero extra parameters: the 2D ViT has the same count
  assert flops_params.param_count(model_config('vit2d', 'base')) == 86_106_256


@pytest.mark.parametrize('name, published', [('laps', 146.23), ('vit2d', 140.51)])
def test_vitb_8x224_gmacs_match_the_paper(name, published):
  gmacs = flops_params.forward_macs(model_config(name, 'base', frames=8, image_size=224)) / 1e9
  assert abs(gmacs - published) < 0.006  # the paper's figures have two decimals


def test_model_configs_hold_exactly_the_required_keys():
  for name in models.MODEL_NAMES:
    config = model_config(name, 'tiny', frames=8, image_size=32)
    assert set(config.keys()) == set(models.required_keys(name))
  for row in PAPER_ROWS:
    models.validate_config(row.config())


# ---------------------------------------------------------------------------------------------
# The table, on tiny models.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['laps', 'joint', 'divided', 'lvt'])
def test_table_row_on_a_tiny_model(name):
  row = PaperRow(f'tiny {name}', name, 'micro', 8, 32, published_gmacs=None)
  result = flops_params.measure_row(row, num_classes=10, with_xla=(name == 'laps'))
  config = row.config(10)
  real = models.build(config, __import__('flax').nnx.Rngs(0))
  import flax.nnx as nnx
  assert result['params'] == sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(real, nnx.Param)))
  # the jaxpr count and the closed form are independent: they must agree exactly
  assert result['gmacs_matmul'] == pytest.approx(result['gmacs_analytic'], rel=1e-12)
  assert result['reference_kind'] == 'analytic'
  if name == 'laps':
    # XLA also charges elementwise work (GELU, LayerNorm, softmax), never less than the matmuls
    assert result['gmacs_xla_compiled'] > result['gmacs_matmul']
    table = flops_params.markdown_table([result])
    assert '| tiny laps | 8×32 |' in table and '+0.00 %' in table


def test_flops_params_main_prints_json(capsys):
  import json
  results = flops_params.main(['--json', '--no_xla', '--only', 'divided'])
  printed = json.loads(capsys.readouterr().out)
  assert [r['model'] for r in printed] == [r['model'] for r in results] == ['ViT-B/16 divided (TimeSformer)']
  # TimeSformer's extra temporal attention (qkv, proj, temporal_fc per block): +35.46 M parameters
  assert printed[0]['params'] == 86_106_256 + 12 * (5 * 768 * 768 + 7 * 768) + 8 * 768
  assert abs(printed[0]['diff_matmul_pct']) < 1e-9  # jaxpr count == closed form


# ---------------------------------------------------------------------------------------------
# The speed/memory sweep, at a size that runs in seconds.
# ---------------------------------------------------------------------------------------------
def test_speed_memory_sweep_micro(tmp_path):
  out = str(tmp_path / 'sweep')
  result = speed_memory.main(['--models', 'vit2d,joint', '--frames', '2,4', '--size', 'micro',
                              '--image_size', '32', '--repeats', '2', '--out', out])
  rows = {(r['frames'], r['model']): r for r in result['rows']}
  assert set(rows) == {(t, m) for t in (2, 4) for m in ('vit2d', 'joint')}
  for r in rows.values():
    assert r['forward_ms'] > 0 and r['train_ms'] > 0
    assert r['train_mib'] > r['forward_mib'] > 0  # a train step keeps activations and optimizer state
  # joint attention is quadratic in T: over vit2d it adds 2·L²·C·(T² − T) MACs per layer
  extra = {t: rows[(t, 'joint')]['gmacs_per_clip'] - rows[(t, 'vit2d')]['gmacs_per_clip'] for t in (2, 4)}
  assert extra[4] / extra[2] == pytest.approx((16 - 4) / (4 - 2), rel=1e-6)
  # vit2d's cost per clip is linear in T
  assert rows[(4, 'vit2d')]['gmacs_per_clip'] == pytest.approx(2 * rows[(2, 'vit2d')]['gmacs_per_clip'])
  table = open(out + '.md').read()
  assert '| 2 | vit2d | 1 |' in table and '| 1.00 |' in table
  with open(out + '.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_speed_memory_skips_what_does_not_fit():
  config = model_config('vit2d', 'micro', frames=2, image_size=32)
  c = speed_memory.Candidate('vit2d', config, 1, train=True, memory_budget=1024)  # 1 KiB
  assert c.forward is None and c.train_step is None and 'budget' in ' '.join(c.notes)


def test_speed_memory_times_a_rematerialised_step():
  """--remat builds and runs the train step for every family (NNX's grad over the merged model:
  nnx.remat updates RNG counters, which jax.grad over the pure state refused)."""
  for name in ('laps', 'lvt'):
    config = model_config(name, 'micro', frames=8, image_size=32,
                          remat='full')
    c = speed_memory.Candidate(name, config, 1, train=True, memory_budget=2**62)
    assert c.train_step is not None and c.train_bytes > 0


def test_speed_memory_gpu_path_pieces_on_cpu():
  """What the GPU run relies on, exercised on a CPU: cuDNN attention falls back to XLA's per model
  (cuDNN is absent here), `--batch auto` picks the largest multiple of 8 that XLA plans to fit,
  and MFU is reported against `--peak_tflops`."""
  budget_gb = 0.008
  result = speed_memory.main(['--models', 'vit2d', '--frames', '2', '--size', 'micro', '--image_size', '32',
                              '--attention_impl', 'cudnn_or_xla', '--batch', 'auto',
                              '--max_memory_gb', str(budget_gb), '--peak_tflops', '1', '--repeats', '1'])
  (row,) = result['rows']
  assert 'XLA attention' in row['notes'] and row['train_ms'] > 0
  assert row['mfu'] == pytest.approx(row['train_tflops'] / 1.0)
  batch, budget = row['batch'], int(0.9 * budget_gb * 2**30)  # auto keeps 10 % for resident models
  assert batch >= 8 and batch % 8 == 0 and row['train_mib'] * 2**20 <= budget
  config = model_config('vit2d', 'micro', frames=2, image_size=32)
  bigger = speed_memory.Candidate('vit2d', config, batch + 8, train=True, memory_budget=2**62)
  assert bigger.train_bytes > budget  # the next multiple of 8 would not fit
