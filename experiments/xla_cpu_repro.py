"""Minimal reproductions of what made our CPU train step slow under XLA:CPU (jax 0.10.2).

    python experiments/xla_cpu_repro.py [--pin_cpu 1]

1. A dense layer on (B, T, L, C) activations, forward + backward, written as
   `jnp.einsum('...i,io->...o', x, w)` (three contracting dims in the weight gradient) against the
   same layer on `x.reshape(-1, C)` (one contracting dim). XLA:CPU lowers the first weight
   gradient by first writing a transposed copy of the activations (a `copy`/`transpose` fusion of
   shape (C, B·T·L)), the second straight into a GEMM. Same FLOPs, same result.
2. Softmax attention (B·T/2, 2·197, 12, 64), forward + backward: `jax.nn.dot_product_attention`
   (implementation='xla') against the same function written as two einsums and `jax.nn.softmax`.
3. PyTorch's dense layer (`x @ w` on the 4-D tensor, autograd) and the plain GEMM for scale: the
   GEMM itself is where XLA:CPU (YNNPACK / Eigen) stays behind PyTorch's oneDNN/MKL kernels.

XLA:CPU's own flags: `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_dot` hands single
dots to Eigen instead of YNNPACK; run this script with and without it to compare.

Each program is jitted, warmed up, then timed `--repeats` times in alternation; the table gives
the minimum process CPU time (pin to one core with `--pin_cpu` on a shared machine), and how many
transposing `copy`/`transpose` ops the compiled HLO holds.
"""
from __future__ import annotations

import argparse
import os
import re
import time


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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--pin_cpu', type=int, default=-1)
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args(argv)
  if args.pin_cpu >= 0:
    os.sched_setaffinity(0, {args.pin_cpu})
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
  compiled = {name: f.lower(*a).compile() for name, (f, a) in programs.items()}
  results = {name: [] for name in programs}
  for _ in range(args.repeats):
    for name, (_, a) in programs.items():
      results[name].append(cpu_min(lambda: jax.block_until_ready(compiled[name](*a)), 1))
  (v1, g1), (v2, g2) = (compiled[n](x, w) for n in list(programs)[1:3])
  np.testing.assert_allclose(v1, v2, rtol=1e-4)
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
  except ImportError:
    pass
  print(f'jax {jax.__version__}, min process CPU time of {args.repeats} calls'
        + (f', pinned to CPU {args.pin_cpu}' if args.pin_cpu >= 0 else ''))
  print('| program | CPU s | transposing copies in the HLO |\n|---|---|---|')
  for name, seconds, copies in rows:
    print(f"| {name} | {seconds:.4f} | {'—' if copies is None else copies} |")


if __name__ == '__main__':
  main()
