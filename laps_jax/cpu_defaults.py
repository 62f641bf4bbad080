"""Process settings for a fast XLA:CPU step, applied when `laps_jax` is imported (before JAX starts
its CPU backend). Measured in `experiments/peer_speed.py` and the README section "The compiled step
against the official PyTorch LAPS (CPU)".

1. glibc malloc. XLA:CPU allocates each call's temporary buffer (~2.2 GB for a ViT-B/16 8×224 train
   step) with `posix_memalign` from a worker thread. A non-main glibc arena serves a request that
   large with a fresh `mmap` and `munmap`s it on free, so every step page-faults the whole buffer
   in again (573 k minor faults, ~0.9 s of kernel time per step on one core). One arena
   (M_ARENA_MAX=1), no mmap for large blocks (M_MMAP_MAX=0) and no trimming of the heap top
   (M_TRIM_THRESHOLD=-1) keep the buffer mapped between steps: the process keeps its peak memory.
   Skipped when the user sets any MALLOC_* variable or GLIBC_TUNABLES, and off glibc.
2. XLA_FLAGS: `--xla_cpu_experimental_ynn_fusion_type=-individual_dot` (single dots to Eigen
   instead of YNNPACK, faster for these GEMM shapes, experiments/xla_cpu_repro.py). Added only when
   XLA_FLAGS does not set that flag already.

Both apply only when JAX will run on the CPU (JAX_PLATFORMS names `cpu`, or is unset and no GPU / TPU
plugin is installed). `LAPS_JAX_CPU_DEFAULTS=0` turns both off. Settings made after the backend started do not apply
to it; `apply()` reports what it did.
"""
import ctypes
import ctypes.util
import importlib.util
import os
import sys

XLA_CPU_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=-individual_dot',)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc <malloc.h>

applied: dict[str, object] = {}


def _wants_cpu() -> bool:
  """True when JAX will run on the CPU: JAX_PLATFORMS names cpu, or is unset and no GPU / TPU
  plugin is installed."""
  platforms = os.environ.get('JAX_PLATFORMS', '').strip().lower()
  if platforms:
    return 'cpu' in platforms.split(',')
  plugins = ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm60_plugin', 'jax_rocm7_plugin', 'libtpu')
  return not any(importlib.util.find_spec(name) for name in plugins)


def _tune_malloc() -> bool:
  if not sys.platform.startswith('linux') or 'GLIBC_TUNABLES' in os.environ:
    return False
  if any(name.startswith('MALLOC_') for name in os.environ):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # not glibc (musl, ...)
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return all(mallopt(option, value) == 1 for option, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))


def _add_xla_flags() -> list[str]:
  current = os.environ.get('XLA_FLAGS', '')
  added = [flag for flag in XLA_CPU_FLAGS if flag.split('=')[0] not in current]
  if added:
    os.environ['XLA_FLAGS'] = ' '.join([current] + added).strip()
  return added


def apply() -> dict[str, object]:
  """Applies the settings above once per process; returns {'malloc': bool, 'xla_flags': [...]}."""
  if applied:
    return applied
  enabled = os.environ.get('LAPS_JAX_CPU_DEFAULTS', '1').strip().lower() not in ('0', 'false', 'no')
  if not enabled or not _wants_cpu():
    applied.update(malloc=False, xla_flags=[])
  else:
    applied.update(malloc=_tune_malloc(), xla_flags=_add_xla_flags())
  return applied
