"""Collectives of the compiled train step: the HLO parser, and FSDP moving parameters, not activations
(the dry run's table on 8 simulated devices)."""
import re

from conftest import make_tiny_config, run_python, write_config_file
from laps_jax.train.collectives import collective_bytes, collectives

HLO = """
ENTRY %main {
  %p = f32[4,8]{1,0} parameter(0)
  %all-gather.1 = f32[32,8]{1,0} all-gather(%p), channel_id=1, replica_groups=mesh['axis_0'=8,'axis_1'=1] {'axis_0'}, dimensions={0}
  %all-gather-start.2 = (bf16[4,8]{1,0}, bf16[16,8]{1,0}) all-gather-start(%q), channel_id=2, replica_groups=[2,4]<=[8], dimensions={0}
  %all-gather-done.2 = bf16[16,8]{1,0} all-gather-done(%all-gather-start.2)
  %reduce-scatter.3 = f32[2,8]{1,0} reduce-scatter(%g), channel_id=3, replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}, to_apply=%add
  %all-reduce.4 = (f32[10]{0}, f32[3,3]{1,0}) all-reduce(%a, %b), channel_id=4, replica_groups=[1,8]<=[8], to_apply=%add
  ROOT %collective-permute.5 = f32[6]{0} collective-permute(%c), channel_id=5, source_target_pairs={{0,1},{1,0}}
}
"""


def test_parser_counts_each_kind_in_bytes_per_device():
  found = {c.name: c for c in collectives(HLO)}
  assert found['all-gather.1'].bytes == 32 * 8 * 4 and found['all-gather.1'].group_size == 8
  assert found['all-gather-start.2'].bytes == 16 * 8 * 2  # the result of the async pair, once
  assert found['reduce-scatter.3'].bytes == 2 * 8 * 4 * 4  # the unreduced input: result × group
  assert collective_bytes(HLO) == {'all-gather': 32 * 8 * 4 + 16 * 8 * 2, 'reduce-scatter': 256,
                                   'all-reduce': (10 + 9) * 4, 'all-to-all': 0,
                                   'collective-permute': 24}


UNITS = {'B': 1, 'KiB': 2**10, 'MiB': 2**20, 'GiB': 2**30}


def _table(stdout: str):
  """(parameters, {kind: bytes}, {kind: (largest bytes, its shape)}) from the dry run's report."""
  params = int(re.search(r'([\d,]+) parameters', stdout).group(1).replace(',', ''))
  moved, largest = {}, {}
  for kind, v, u, rest in re.findall(
      r'^\s+(all-gather|reduce-scatter|all-reduce|all-to-all|collective-permute)\s+([\d.]+) (B|KiB|MiB|GiB)(.*)$',
      stdout, re.M):
    moved[kind] = float(v) * UNITS[u]
    if m := re.search(r'largest ([\d.]+) (B|KiB|MiB|GiB) (\S+)', rest):
      largest[kind] = (float(m.group(1)) * UNITS[m.group(2)], m.group(3))
  return params, moved, largest


def test_fsdp_dry_run_all_gathers_parameters_not_activations(tmp_path):
  """Mesh (1, 8, 1), batch 64: the all-gathers stay within 2.2× the parameter bytes (one gather for
  the forward, one for the backward), and none is the size of an activation."""
  config = make_tiny_config(str(tmp_path / 'no_data_here'))
  config.data.name = 'kinetics400'  # a dry run needs no data
  config.model.num_classes = 400
  config.mode = 'dry_run'
  config.mesh_shape = (1, 8, 1)
  config.batch_size = 64
  path = write_config_file(tmp_path / 'tiny.py', config)
  out = run_python(['main.py', f'--config={path}', f'--workdir={tmp_path / "run"}'], devices=8).stdout
  params, moved, largest = _table(out)
  assert set(moved) == {'all-gather', 'reduce-scatter', 'all-reduce', 'all-to-all', 'collective-permute'}
  param_bytes = 4 * params  # float32 compute
  assert 0 < moved['all-gather'] <= 2.2 * param_bytes, (moved, param_bytes)
  assert moved['all-to-all'] == 0 and moved['collective-permute'] == 0
  # The largest gather is a parameter (the head kernel, 32 × 400 floats), not an activation: every
  # activation of this model leads with the batch of 64 clips (or 64 × 4 frames).
  biggest_bytes, biggest_shape = largest['all-gather']
  assert biggest_bytes <= 4 * 32 * 400, largest
  assert not re.match(r'\w+\[(64|256),', biggest_shape), largest


def test_topk_metric_counted_per_row_equals_lax_top_k_with_ties():
  """The train step's top-k accuracy avoids lax.top_k (gathered over the batch by XLA's SPMD
  partitioner) and must still agree with it, ties included (the lower class index wins)."""
  import jax
  import numpy as np
  from laps_jax.train.train_state import _topk_correct
  rng = np.random.default_rng(0)
  logits = rng.integers(0, 4, (64, 7)).astype(np.float32)  # many ties
  labels = rng.integers(0, 7, 64)
  for k in (1, 3, 5, 10):
    _, top = jax.lax.top_k(logits, min(k, 7))
    want = (np.asarray(top) == labels[:, None]).any(axis=-1)
    np.testing.assert_array_equal(_topk_correct(logits, labels, k), want.astype(np.float32))
