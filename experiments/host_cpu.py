"""What the benchmarks record about the host CPU: vendor, model and vector instruction sets.

CPU timings compare only on the same kind of CPU. The libraries pick their kernels per CPU: on a
2-core AMD EPYC (family 26, AVX-512) MKL, the GEMM library of the PyTorch wheels, ran the step's
largest float32 product at half the rate of XLA's Eigen GEMM (92 against 184 GFLOP/s on one core).
The same ViT-B/16 step of ours against the official PyTorch LAPS therefore gives different ratios on
different machines (README, "The compiled step against the official PyTorch LAPS (CPU)"), and every
result file says which CPU it was measured on.
"""
import platform

# The x86 vector extensions that decide which GEMM / elementwise kernels the libraries run (Linux
# /proc/cpuinfo flag names). On other architectures the kernel's 'Features' line is kept whole.
X86_VECTOR_FLAGS = ('sse4_2', 'avx', 'fma', 'f16c', 'avx2', 'avx512f', 'avx512bw', 'avx512vl',
                    'avx512_vnni', 'avx512_bf16', 'avx512_fp16', 'amx_tile', 'amx_bf16')


def _first_processor(cpuinfo_path: str) -> dict[str, str]:
  """The `key: value` fields of the first processor block of /proc/cpuinfo ({} where unreadable)."""
  fields: dict[str, str] = {}
  try:
    with open(cpuinfo_path, encoding='utf-8', errors='replace') as f:
      for line in f:
        if not line.strip():
          if fields:
            break
          continue
        key, _, value = line.partition(':')
        fields.setdefault(key.strip().lower(), value.strip())
  except OSError:
    pass
  return fields


def describe(cpuinfo_path: str = '/proc/cpuinfo') -> dict:
  """{'vendor': 'AuthenticAMD', 'model': 'AMD EPYC', 'family_model': '26/2', 'machine': 'x86_64',
  'vector_isa': ['avx', 'avx2', ...]}. Without /proc/cpuinfo (macOS, Windows) the fields fall back
  to `platform`'s strings and the ISA list is empty."""
  fields = _first_processor(cpuinfo_path)
  if 'flags' in fields:
    isa = [flag for flag in X86_VECTOR_FLAGS if flag in fields['flags'].split()]
  else:
    isa = fields.get('features', '').split()
  family_model = '/'.join(fields[k] for k in ('cpu family', 'model') if k in fields)
  return {'vendor': fields.get('vendor_id', ''),
          'model': fields.get('model name') or platform.processor() or 'unknown',
          'family_model': family_model, 'machine': platform.machine(), 'vector_isa': isa}


def summary(description: dict) -> str:
  """One line for a table header, e.g. 'AMD EPYC (AuthenticAMD family/model 26/2, x86_64: avx2
  avx512f ...)'."""
  where = ' '.join(x for x in (description.get('vendor', ''),
                               f"family/model {description['family_model']}" if description.get('family_model') else '')
                   if x)
  isa = ' '.join(description['vector_isa']) or 'vector ISA not read'
  return f"{description['model']} ({where + ', ' if where else ''}{description['machine']}: {isa})"
