"""What the CPU benchmarks record about their machine (experiments/host_cpu.py) and how
experiments/peer_speed.py writes its table from a result."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root

from experiments import host_cpu, peer_speed  # noqa: E402

INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx fma f16c avx2 avx512f avx512bw avx512vl avx512_bf16 amx_tile amx_bf16

processor\t: 1
vendor_id\t: SomethingElse
model name\t: must not be read
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd sve bf16

"""
OLD_X86 = """vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 1
model name\t: AMD EPYC 7601
flags\t\t: sse4_2 avx avx2 fma avx512_fake
"""


def _cpuinfo(tmp_path, text):
  path = tmp_path / 'cpuinfo'
  path.write_text(text)
  return str(path)


def test_host_cpu_reads_the_first_processor_and_its_vector_flags(tmp_path):
  d = host_cpu.describe(_cpuinfo(tmp_path, INTEL))
  assert d['vendor'] == 'GenuineIntel' and d['model'] == 'Intel(R) Xeon(R) Platinum 8480+'
  assert d['family_model'] == '6/143'
  # only the listed vector extensions, in the list's order, not the CPU's other flags
  assert d['vector_isa'] == ['sse4_2', 'avx', 'fma', 'f16c', 'avx2', 'avx512f', 'avx512bw',
                             'avx512vl', 'avx512_bf16', 'amx_tile', 'amx_bf16']
  text = host_cpu.summary(d)
  assert text.startswith('Intel(R) Xeon(R) Platinum 8480+ (GenuineIntel family/model 6/143, ')
  assert 'amx_bf16' in text and 'must not' not in text


def test_host_cpu_exact_flag_names_and_other_architectures(tmp_path):
  d = host_cpu.describe(_cpuinfo(tmp_path, OLD_X86))
  assert d['vector_isa'] == ['sse4_2', 'avx', 'fma', 'avx2']  # 'avx512_fake' is not 'avx512f'
  arm = host_cpu.describe(_cpuinfo(tmp_path, ARM))
  assert arm['vector_isa'] == ['fp', 'asimd', 'sve', 'bf16'] and arm['vendor'] == ''
  missing = host_cpu.describe(str(tmp_path / 'absent'))
  assert missing['vector_isa'] == [] and 'vector ISA not read' in host_cpu.summary(missing)


def _cell(median, low, high):
  return {'wall': {'median_s': median, 'min_s': low, 'max_s': high}}


def test_peer_speed_table_ratios_and_machine_lines():
  table = {'ours/laps': {'forward': _cell(1.2, 1.1, 1.3), 'train': _cell(3.6, 3.3, 3.9)},
           'official/laps': {'forward': _cell(2.0, 2.0, 2.0), 'train': _cell(6.0, 6.0, 6.0)},
           'ours/vit2d': {'forward': _cell(1.0, 1.0, 1.0), 'train': _cell(3.0, 3.0, 3.0)},
           'official/vit2d': {'forward': _cell(2.5, 2.5, 2.5), 'train': _cell(7.5, 7.5, 7.5)}}
  setting = {'frames': 8, 'image_size': 224, 'num_layers': 12, 'batch': 1, 'dtype': 'float32',
             'repeats': 2, 'calls_per_process': 2, 'pin_cpu': -1, 'cpus': 2, 'threads': 2,
             'clock': 'wall', 'baseline': '', 'ours_xla_flags': '', 'load_average_1min': [0.1, 1.5],
             'versions': {'ours/laps': 'jax x', 'official/laps': 'torch y'},
             'cpu': {'vendor': 'AuthenticAMD', 'model': 'AMD EPYC', 'family_model': '26/2',
                     'machine': 'x86_64', 'vector_isa': ['avx2', 'avx512f']}}
  result = {'setting': setting, 'table': table, 'gemm_gflops': {'ours': 190.0, 'official': 90.0}}
  text = peer_speed.markdown(result)
  assert '| laps | forward | 2.000 [2.000–2.000] | 1.200 [1.100–1.300] | 0.600 |' in text
  assert '| vit2d | train step | 7.500 [7.500–7.500] | 3.000 [3.000–3.000] | 0.400 |' in text
  assert 'LAPS / vit2d forward: ours 1.200, official 0.800' in text
  assert 'CPU: AMD EPYC (AuthenticAMD family/model 26/2, x86_64: avx2 avx512f).' in text
  assert 'ours 190 GFLOP/s, official 90 GFLOP/s' in text
  del result['setting']['cpu'], result['gemm_gflops']  # a result file from before these fields
  old = peer_speed.markdown(result)
  assert 'CPU: not recorded.' in old and 'GFLOP/s' not in old
