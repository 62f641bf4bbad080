"""Minimal reproductions of what made our CPU train step slow under XLA:CPU (jax 0.10.2).

    python experiments/xla_cpu_repro.py [--pin_cpu 1]

1. A dense layer on (B, T, L, C) activations, forward + backward, written as
   `jnp.einsum('...i,io->...o', x, w)` (three contracting dims in the weight gradient) against the
   same layer on `x.reshape(-1, C)` (one contracting dim). XLA:CPU lowers the first weight
   gradient by first writing a transposed copy of the activations (a `copy`/`transpose` fusion of
   shape (C, B·T·L)), the second straight into a GEMM. Same FLOPs, same result.
2. Softmax attention (B·T/2, 2·197, 12, 64), forward + backward: `jax.nn.dot_product_attention`
   (implementation='xla') against the same function written as two einsums and `jax.nn.softmax`,
   and as the project's `xla_attention` (heads moved first, two batched matmuls); forward alone,
   einsums against `xla_attention` (XLA:CPU fuses the einsum form's whole attention into one
   slow YNNPACK fusion).
3. PyTorch's dense layer (`x @ w` on the 4-D tensor, autograd) and the plain GEMM for scale: the
   GEMM itself is where XLA:CPU (YNNPACK / Eigen) stays behind PyTorch's oneDNN/MKL kernels.

4. The backward GEMMs of one dense layer (1576, 3072) x (3072, 768): dx = g·wᵀ as a dot with
   the transposed operand (what autodiff of `x @ w` gives) against a plain GEMM on a transposed copy
   of w, and the whole layer forward + backward as `x @ w` against `laps_jax.models.layers.matmul`
   (the project's custom VJP with those layouts).
5. Exact GELU: `jax.nn.gelu(x, approximate=False)` (erfc) against PyTorch's formula
   x·(1 + erf(x/√2))/2 (`laps_jax.models.layers.gelu`), forward and forward + backward, and
   PyTorch's `F.gelu`, on the ViT-B MLP hidden (8, 197, 3072).
6. Page faults (`--faults`): a jitted program with a 1.2 GB temporary buffer, run in a fresh process
   with glibc malloc's defaults and with `laps_jax.cpu_defaults`' settings; minor page faults and
   kernel CPU time per call. XLA:CPU allocates the buffer per call from a worker thread; glibc
   serves it from a fresh mmap there.
7. The written-out backward passes: attention (heads first) with autodiff of its forward against
   `xla_attention`'s custom VJP (saved probabilities, dS = P ∘ (dP − rowsum(dP ∘ P)), queries
   pre-scaled), and LayerNorm with autodiff of the two-pass formula against `layers.layer_norm`'s
   custom VJP; PyTorch's attention (the official code's form) and `nn.LayerNorm` for scale. In
   the backward, dv = Pᵀ·dO contracting the (q, k) matrix over its rows against the same product
   as (dOᵀ·P)ᵀ on a small transposed copy of dO; the forward alone with the probabilities
   normalised (what a backward needs) against `xla_attention`'s forward, which divides the (q, d)
   output instead.
8. Row sums of a product, sum(a·b, -1) on the model's (1, 8, 197, 768) activations, as XLA:CPU's
   YNNPACK reduce fusion against the same sums as an einsum (a dot), and sum(a·a, -1) for scale:
   the product form runs ~11× slower than the einsum and ~20× slower than the square (on the same
   data flattened to (1576, 768) it does not; LayerNorm's backward needs such a sum, and
   `layers.layer_norm` takes the einsum).
9. LAPS against vit2d in one layer's attention: the forward of the leap-pair problem (4, 394, 12, 64)
   against the per-frame problem (8, 197, 12, 64) of the same 8 frames: twice the products'
   FLOPs and twice the softmax's elements, which the FLOP count of the whole model (1.041×) weighs
   at the rate of the large GEMMs.

XLA:CPU's own flags: `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_dot` hands single
dots to Eigen instead of YNNPACK; run this script with and without it to compare. The script does
not apply `laps_jax.cpu_defaults` itself (LAPS_JAX_CPU_DEFAULTS=0), so XLA_FLAGS is what you pass.

Each program is jitted, warmed up, then timed `--repeats` times in alternation; the table gives
the minimum process CPU time (pin to one core with `--pin_cpu` on a shared machine), and how many
transposing `copy`/`transpose` ops the compiled HLO holds.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time

os.environ.setdefault('LAPS_JAX_CPU_DEFAULTS', '0')  # this script measures the flags it is given
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)


def cpu_min(fn, repeats: int) -> float:
  fn()
  best = float('inf')
  for _ in range(repeats):
    start = time.process_time()
    fn()
    best = min(best, time.process_time() - start)
  return best


def transposes_in(compiled) -> int:
  """Ops of the compiled HLO that write a transposed copy (layout-changing copies / transposes)."""
  text = compiled.as_text()
  return len(re.findall(r'= f32\[[\d,]+\]\{[\d,]+\} (?:copy|transpose)\(', text)) + len(
      re.findall(r'%(?:copy|transpose)[\w_.]*fusion[\w.]* = ', text))


def fault_probe(tuned: bool) -> None:
  """One process: minor page faults and kernel CPU time per call of a program whose temporary
  buffer is 1.2 GB, with glibc's defaults or (tuned) `laps_jax.cpu_defaults`' malloc settings."""
  if tuned:
    from laps_jax import cpu_defaults  # pylint: disable=import-outside-toplevel
    if not cpu_defaults._tune_malloc():  # pylint: disable=protected-access
      print('malloc settings unavailable (not glibc, or MALLOC_* set)')
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  @jax.jit
  def program(x):  # x (4096, 4096): temporaries of 6 × 64 MB arrays kept alive to the end
    ys = [jnp.sin(x * float(i)) for i in range(1, 19)]
    return sum(y.sum() for y in ys)
  x = jnp.ones((4096, 4096), jnp.float32)
  program(x).block_until_ready()
  temp = program.lower(x).compile().memory_analysis().temp_size_in_bytes
  faults, system = [], []
  for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF)
    program(x).block_until_ready()
    after = resource.getrusage(resource.RUSAGE_SELF)
    faults.append(after.ru_minflt - before.ru_minflt)
    system.append(after.ru_stime - before.ru_stime)
  print(f'{"cpu_defaults malloc" if tuned else "glibc defaults"}: temp buffer {temp / 2**30:.2f} GiB, '
        f'minor faults per call {min(faults)}, kernel CPU s per call {min(system):.3f}')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--pin_cpu', type=int, default=-1)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--faults', action='store_true', help='only the page-fault probe (6.)')
  parser.add_argument('--fault_probe', choices=('plain', 'tuned'), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.pin_cpu >= 0:
    os.sched_setaffinity(0, {args.pin_cpu})
  if args.fault_probe:
    fault_probe(args.fault_probe == 'tuned')
    return
  if args.faults:
    for mode in ('plain', 'tuned'):
      env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}
      subprocess.run([sys.executable, os.path.abspath(__file__), f'--fault_probe={mode}',
                      f'--pin_cpu={args.pin_cpu}'], env=env, check=True)
    return
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  b, t, l, c, o = 1, 8, 197, 768, 3072
  x = jnp.asarray(rng.standard_normal((b, t, l, c), np.float32))
  w = jnp.asarray(0.02 * rng.standard_normal((c, o), np.float32))

  def dense_einsum(x, w):
    return jnp.einsum('...i,io->...o', x, w)

  def dense_flat(x, w):
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])

  def fwd_bwd(f):
    return jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(jnp.square(f(x, w))), argnums=(0, 1)))

  q, k, v = (jnp.asarray(rng.standard_normal((4, 394, 12, 64), np.float32)) for _ in range(3))

  def attention_library(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, implementation='xla')

  def attention_einsum(q, k, v):
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) * q.shape[-1] ** -0.5
    return jnp.einsum('bhqk,bkhd->bqhd', jax.nn.softmax(logits, axis=-1), v)

  def attention_fwd_bwd(f):
    return jax.jit(jax.value_and_grad(lambda q, k, v: jnp.sum(jnp.square(f(q, k, v))), argnums=(0, 1, 2)))

  x2 = x.reshape(-1, c)
  programs = {
      'GEMM (1576,768)x(768,3072), forward only': (jax.jit(jnp.matmul), (x2, w)),
      'dense (1,8,197,768)x(768,3072) fwd+bwd, einsum ...i,io->...o': (fwd_bwd(dense_einsum), (x, w)),
      'dense, flattened to (1576,768)x(768,3072)': (fwd_bwd(dense_flat), (x, w)),
      'attention (4,394,12,64) fwd+bwd, jax.nn.dot_product_attention': (attention_fwd_bwd(attention_library), (q, k, v)),
      'attention, two einsums + jax.nn.softmax': (attention_fwd_bwd(attention_einsum), (q, k, v)),
  }
  from laps_jax.models.layers import gelu, matmul  # pylint: disable=import-outside-toplevel
  h = jnp.asarray(rng.standard_normal((m := b * t * l, o), np.float32))
  g = jnp.asarray(rng.standard_normal((m, c), np.float32))
  w2 = jnp.asarray(0.02 * rng.standard_normal((o, c), np.float32))
  contract_last = (((1,), (1,)), ((), ()))
  dense_loss = lambda f: jax.jit(jax.value_and_grad(lambda h, w: jnp.sum(f(h, w) * g), argnums=(0, 1)))
  from laps_jax.models.softmax_attention import xla_attention  # pylint: disable=import-outside-toplevel
  heads_first = lambda q, k, v: xla_attention(q, k, v, q.shape[-1] ** -0.5)
  programs.update({
      'attention, xla_attention (heads first, custom VJP)': (attention_fwd_bwd(heads_first), (q, k, v)),
      'attention forward only, two einsums': (jax.jit(attention_einsum), (q, k, v)),
      'attention forward only, xla_attention': (jax.jit(heads_first), (q, k, v)),
  })
  programs.update({
      'dx = g·wᵀ, g (1576,768), w (3072,768): dot with the transposed operand': (
          jax.jit(lambda g, w: jax.lax.dot_general(g, w, contract_last)), (g, w2)),
      'dx, the same on a transposed copy of w (plain GEMM)': (
          jax.jit(lambda g, w: g @ jax.lax.optimization_barrier(w.T)), (g, w2)),
      'dense (1576,3072)x(3072,768) fwd+bwd, x @ w': (dense_loss(jnp.matmul), (h, w2)),
      'dense, layers.matmul (custom VJP layouts)': (dense_loss(matmul), (h, w2)),
      'GELU (8,197,3072) forward, jax.nn.gelu (erfc)': (
          jax.jit(lambda x: jax.nn.gelu(x, approximate=False)), (h.reshape(t, l, o),)),
      'GELU forward, x·(1+erf(x/√2))/2 (layers.gelu)': (jax.jit(gelu), (h.reshape(t, l, o),)),
      'GELU forward + backward, jax.nn.gelu (erfc)': (
          jax.jit(jax.grad(lambda x: jnp.sum(jax.nn.gelu(x, approximate=False)))), (h.reshape(t, l, o),)),
      'GELU forward + backward, layers.gelu': (jax.jit(jax.grad(lambda x: jnp.sum(gelu(x)))), (h.reshape(t, l, o),)),
  })
  from laps_jax.models.layers import layer_norm  # pylint: disable=import-outside-toplevel

  def attention_heads_first_autodiff(q, k, v):  # xla_attention's forward before its custom VJP
    qh, kh, vh = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)
    probs = jax.nn.softmax(jnp.matmul(qh, kh) * q.shape[-1] ** -0.5, axis=-1)
    return jnp.matmul(probs, vh).transpose(0, 2, 1, 3)

  def layer_norm_autodiff(x, scale, bias):  # LayerNorm as written before its custom VJP
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + 1e-6) * scale + bias

  ln_x = x.reshape(t, l, c)
  ln_scale, ln_bias = (jnp.asarray(rng.standard_normal(c), np.float32) for _ in range(2))
  ln_loss = lambda f: jax.jit(jax.value_and_grad(lambda x, s, b: jnp.sum(jnp.square(f(x, s, b))),
                                                 argnums=(0, 1, 2)))
  programs.update({  # 16-18: the written-out backward passes
      'attention, heads first, autodiff of the forward (before the custom VJP)': (
          attention_fwd_bwd(attention_heads_first_autodiff), (q, k, v)),
      'LayerNorm (8,197,768) fwd+bwd, autodiff of the two-pass formula': (
          ln_loss(layer_norm_autodiff), (ln_x, ln_scale, ln_bias)),
      'LayerNorm fwd+bwd, layers.layer_norm (custom VJP)': (
          ln_loss(lambda x, s, b: layer_norm(x, s, b, 1e-6)), (ln_x, ln_scale, ln_bias)),
  })
  from laps_jax.models import softmax_attention  # pylint: disable=import-outside-toplevel
  probs = jax.nn.softmax(jnp.asarray(rng.standard_normal((4, 12, 394, 394)), jnp.float32), axis=-1)
  grad_out = jnp.asarray(rng.standard_normal((4, 12, 394, 64)), jnp.float32)
  programs.update({  # 19-21: the backward's dv layout; the forward with and without a backward
      'attention dv = Pᵀ·dO -> (b, k, H, d), P (4,12,394,394): einsum contracting P over its rows': (
          jax.jit(lambda p, g: jnp.einsum('bhqk,bhqd->bhkd', p, g).transpose(0, 2, 1, 3)), (probs, grad_out)),
      'attention dv as (dOᵀ·P)ᵀ on a transposed copy of dO (plain GEMM)': (
          jax.jit(lambda p, g: jnp.matmul(jnp.swapaxes(g, 2, 3), p).transpose(0, 3, 1, 2)), (probs, grad_out)),
      'attention forward, probabilities normalised (the forward kept for a backward)': (
          jax.jit(lambda q, k, v: softmax_attention._attention_fwd(q, k, v, q.shape[-1] ** -0.5)[0]), (q, k, v)),  # pylint: disable=protected-access
  })
  rows_a, rows_b = (jnp.asarray(rng.standard_normal((b, t, l, c)), jnp.float32) for _ in range(2))
  programs.update({  # 22-24: row-wise sums of a product (LayerNorm's backward), (1, 8, 197, 768)
      'row sums of a product, sum(a·b, -1), (1,8,197,768)': (
          jax.jit(lambda a, b: jnp.sum(a * b, axis=-1)), (rows_a, rows_b)),
      'the same row sums as einsum ...c,...c->... (a dot)': (
          jax.jit(lambda a, b: jnp.einsum('...c,...c->...', a, b)), (rows_a, rows_b)),
      'for scale: row sums of a square, sum(a·a, -1)': (
          jax.jit(lambda a, b: jnp.sum(a * a, axis=-1)), (rows_a, rows_b)),
  })
  frame_q, frame_k, frame_v = (jnp.asarray(rng.standard_normal((8, 197, 12, 64)), jnp.float32)
                               for _ in range(3))
  programs.update({  # 25: the per-frame problem of the same 8 frames, for LAPS / vit2d
      'attention forward only, xla_attention, per frame (8,197,12,64)': (
          jax.jit(heads_first), (frame_q, frame_k, frame_v)),
  })
  compiled = {name: f.lower(*a).compile() for name, (f, a) in programs.items()}
  results = {name: [] for name in programs}
  for _ in range(args.repeats):
    for name, (_, a) in programs.items():
      results[name].append(cpu_min(lambda: jax.block_until_ready(compiled[name](*a)), 1))
  # Each rewrite computes the same values as the program it replaces (by name: a KeyError, not a
  # silent mismatch, if a name changes).
  same_values = [
      ('attention (4,394,12,64) fwd+bwd, jax.nn.dot_product_attention',
       'attention, xla_attention (heads first, custom VJP)'),
      ('attention, two einsums + jax.nn.softmax',
       'attention, xla_attention (heads first, custom VJP)'),
      ('attention forward only, two einsums',
       'attention forward only, xla_attention'),
      ('dx = g·wᵀ, g (1576,768), w (3072,768): dot with the transposed operand',
       'dx, the same on a transposed copy of w (plain GEMM)'),
      ('dense (1576,3072)x(3072,768) fwd+bwd, x @ w',
       'dense, layers.matmul (custom VJP layouts)'),
      ('GELU (8,197,3072) forward, jax.nn.gelu (erfc)',
       'GELU forward, x·(1+erf(x/√2))/2 (layers.gelu)'),
      ('GELU forward + backward, jax.nn.gelu (erfc)',
       'GELU forward + backward, layers.gelu'),
      ('attention, heads first, autodiff of the forward (before the custom VJP)',
       'attention, xla_attention (heads first, custom VJP)'),
      ('LayerNorm (8,197,768) fwd+bwd, autodiff of the two-pass formula',
       'LayerNorm fwd+bwd, layers.layer_norm (custom VJP)'),
      ('attention dv = Pᵀ·dO -> (b, k, H, d), P (4,12,394,394): einsum contracting P over its rows',
       'attention dv as (dOᵀ·P)ᵀ on a transposed copy of dO (plain GEMM)'),
      ('attention forward, probabilities normalised (the forward kept for a backward)',
       'attention forward only, xla_attention'),
      ('row sums of a product, sum(a·b, -1), (1,8,197,768)',
       'the same row sums as einsum ...c,...c->... (a dot)'),
  ]
  v1, v2 = (compiled[n](x, w)[0] for n in ('dense (1,8,197,768)x(768,3072) fwd+bwd, einsum ...i,io->...o',
                                              'dense, flattened to (1576,768)x(768,3072)'))
  np.testing.assert_allclose(v1, v2, rtol=1e-4)
  for a, b2 in same_values:
    for u, v_ in zip(jax.tree.leaves(compiled[a](*programs[a][1])), jax.tree.leaves(compiled[b2](*programs[b2][1]))):
      np.testing.assert_allclose(np.asarray(u), np.asarray(v_), rtol=1e-4, atol=1e-4)
  rows = [(name, min(times), transposes_in(compiled[name])) for name, times in results.items()]
  try:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(1 if args.pin_cpu >= 0 else torch.get_num_threads())
    xt = torch.from_numpy(np.array(x)).requires_grad_()
    wt = torch.from_numpy(np.array(w)).requires_grad_()

    def torch_step():
      xt.grad = wt.grad = None
      torch.square(xt @ wt).sum().backward()
    rows.append(('PyTorch dense, same shapes, autograd', min(cpu_min(torch_step, 1) for _ in range(args.repeats)), None))
    x2t = torch.from_numpy(np.array(x2))
    with torch.no_grad():
      rows.append(('PyTorch GEMM (1576,768)x(768,3072), forward only',
                   min(cpu_min(lambda: x2t @ wt, 1) for _ in range(args.repeats)), None))
    gt, w2t = torch.from_numpy(np.array(g)), torch.from_numpy(np.array(w2))
    rows.append(('PyTorch dx = g·wᵀ, same shapes', min(cpu_min(lambda: gt @ w2t.t(), 1) for _ in range(args.repeats)), None))
    ht = torch.from_numpy(np.array(h)).reshape(t, l, o).requires_grad_()
    with torch.no_grad():
      rows.append(('PyTorch GELU forward (F.gelu, erf)', min(cpu_min(lambda: torch.nn.functional.gelu(ht), 1)
                                                            for _ in range(args.repeats)), None))

    def torch_gelu_grad():
      ht.grad = None
      torch.nn.functional.gelu(ht).sum().backward()
    rows.append(('PyTorch GELU forward + backward', min(cpu_min(torch_gelu_grad, 1) for _ in range(args.repeats)), None))
    qt, kt, vt = (torch.from_numpy(np.array(z)).permute(0, 2, 1, 3).contiguous().requires_grad_()
                  for z in (q, k, v))

    def torch_attention_grad():
      qt.grad = kt.grad = vt.grad = None
      probs = ((qt @ kt.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(-1)  # the official code's form
      torch.square(probs @ vt).sum().backward()
    rows.append(('PyTorch attention (4,394,12,64) fwd+bwd', min(cpu_min(torch_attention_grad, 1)
                                                               for _ in range(args.repeats)), None))
    lnt = torch.from_numpy(np.array(ln_x)).requires_grad_()
    norm = torch.nn.LayerNorm(c, eps=1e-6)

    def torch_layer_norm_grad():
      lnt.grad = norm.weight.grad = norm.bias.grad = None
      torch.square(norm(lnt)).sum().backward()
    rows.append(('PyTorch LayerNorm (8,197,768) fwd+bwd', min(cpu_min(torch_layer_norm_grad, 1)
                                                             for _ in range(args.repeats)), None))
  except ImportError:
    pass
  print(f'jax {jax.__version__}, min process CPU time of {args.repeats} calls'
        + (f', pinned to CPU {args.pin_cpu}' if args.pin_cpu >= 0 else ''))
  print('| program | CPU s | transposing copies in the HLO |\n|---|---|---|')
  for name, seconds, copies in rows:
    print(f"| {name} | {seconds:.4f} | {'—' if copies is None else copies} |")


if __name__ == '__main__':
  main()
