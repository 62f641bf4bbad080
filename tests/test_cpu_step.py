"""The CPU-step rewrites keep the model's values and gradients: `layers.matmul` (custom VJP),
`layers.gelu`, `layers.layer_norm` (custom VJP), `xla_attention` (heads first, custom VJP); and
`laps_jax.cpu_defaults` respects the user's settings."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from laps_jax.models.layers import gelu, layer_norm, matmul
from laps_jax.models.softmax_attention import xla_attention

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('k,n', [(8, 24), (24, 8), (16, 16)])
def test_matmul_value_and_gradients_equal_autodiff(k, n):
  rng = np.random.default_rng(0)
  x, w = jnp.asarray(rng.standard_normal((10, k)), jnp.float32), jnp.asarray(rng.standard_normal((k, n)), jnp.float32)
  g = jnp.asarray(rng.standard_normal((10, n)), jnp.float32)
  y, vjp = jax.vjp(matmul, x, w)
  y_ref, vjp_ref = jax.vjp(jnp.matmul, x, w)
  np.testing.assert_allclose(y, y_ref, rtol=1e-6)
  for got, want in zip(vjp(g), vjp_ref(g)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  jitted = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(matmul(x, w))), argnums=(0, 1)))(x, w)
  reference = jax.grad(lambda x, w: jnp.sum(jnp.sin(x @ w)), argnums=(0, 1))(x, w)
  for got, want in zip(jitted, reference):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_matmul_keeps_the_plain_gradient_off_cpu(monkeypatch):
  """The CPU layout is a custom VJP; on other backends the plain product and XLA's gradient."""
  x, w = jnp.ones((4, 8)), jnp.ones((8, 3))
  assert 'custom_vjp_call' in str(jax.make_jaxpr(matmul)(x, w))
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  # a new function: make_jaxpr caches traces per function and shapes
  assert 'custom_vjp_call' not in str(jax.make_jaxpr(lambda a, b: matmul(a, b))(x, w))


def test_matmul_keeps_dtypes():
  x, w = jnp.ones((4, 8), jnp.bfloat16), jnp.ones((8, 3), jnp.bfloat16)
  dx, dw = jax.grad(lambda x, w: jnp.sum(matmul(x, w)).astype(jnp.float32), argnums=(0, 1))(x, w)
  assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16


def test_gelu_is_the_exact_gelu():
  x = jnp.linspace(-12.0, 12.0, 2001, dtype=jnp.float32)
  np.testing.assert_allclose(gelu(x), jax.nn.gelu(x, approximate=False), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(jax.vmap(jax.grad(gelu))(x),
                             jax.vmap(jax.grad(lambda z: jax.nn.gelu(z, approximate=False)))(x),
                             rtol=1e-5, atol=1e-6)


def test_xla_attention_equals_the_library():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((2, 7, 3, 8)), jnp.float32) for _ in range(3))
  np.testing.assert_allclose(xla_attention(q, k, v, 8 ** -0.5),
                             jax.nn.dot_product_attention(q, k, v, implementation='xla'),
                             rtol=1e-5, atol=1e-6)


def _applied(env_updates: dict[str, str | None]) -> dict:
  """laps_jax.cpu_defaults.applied and XLA_FLAGS in a fresh process with `env_updates`."""
  env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_') and k != 'XLA_FLAGS'}
  env.update({'JAX_PLATFORMS': 'cpu', 'LAPS_JAX_CPU_DEFAULTS': '1'})
  for key, value in env_updates.items():
    if value is None:
      env.pop(key, None)
    else:
      env[key] = value
  code = ('import json, os, laps_jax; from laps_jax import cpu_defaults; '
          'print(json.dumps({"applied": cpu_defaults.applied, "flags": os.environ.get("XLA_FLAGS", "")}))')
  out = subprocess.run([sys.executable, '-c', code], env=env, cwd=REPO, capture_output=True, text=True,
                       check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_cpu_defaults_add_the_flag_and_keep_the_users():
  plain = _applied({})
  assert plain['flags'] == '--xla_cpu_experimental_ynn_fusion_type=-individual_dot'
  user = _applied({'XLA_FLAGS': '--xla_force_host_platform_device_count=2 '
                                '--xla_cpu_experimental_ynn_fusion_type=dot'})
  assert user['flags'] == ('--xla_force_host_platform_device_count=2 '
                           '--xla_cpu_experimental_ynn_fusion_type=dot')
  assert user['applied']['xla_flags'] == []


def test_cpu_defaults_can_be_turned_off_and_leave_malloc_to_the_user():
  off = _applied({'LAPS_JAX_CPU_DEFAULTS': '0'})
  assert off == {'applied': {'malloc': False, 'xla_flags': []}, 'flags': ''}
  assert _applied({'MALLOC_ARENA_MAX': '4'})['applied']['malloc'] is False
  assert _applied({'JAX_PLATFORMS': 'tpu'})['applied'] == {'malloc': False, 'xla_flags': []}


@pytest.mark.parametrize('scale', [8 ** -0.5, 0.125])  # a power of two scales q, else the logits
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_xla_attention_gradients_equal_autodiff_of_the_library(scale, dtype):
  """The written-out backward (custom VJP) against autodiff of jax's own XLA attention."""
  rng = np.random.default_rng(1)
  q, k, v, g = (jnp.asarray(rng.standard_normal((2, 7, 3, 8)), dtype) for _ in range(4))
  library = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, scale=scale, implementation='xla')
  out, vjp = jax.vjp(lambda q, k, v: xla_attention(q, k, v, scale), q, k, v)
  out_ref, vjp_ref = jax.vjp(library, q, k, v)
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  assert out.dtype == dtype
  np.testing.assert_allclose(np.float32(out), np.float32(out_ref), rtol=tol, atol=tol)
  for got, want in zip(vjp(g), vjp_ref(g)):
    assert got.dtype == dtype
    np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=tol, atol=tol)
  # jitted, through a loss, against the same loss over the library
  loss = lambda f: lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v).astype(jnp.float32)))
  got = jax.jit(jax.grad(loss(lambda q, k, v: xla_attention(q, k, v, scale)), argnums=(0, 1, 2)))(q, k, v)
  want = jax.grad(loss(library), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(got, want):
    np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=tol, atol=tol)


def _plain_layer_norm(x, scale, bias, epsilon):
  x32 = x.astype(jnp.float32)
  mean = x32.mean(-1, keepdims=True)
  var = jnp.square(x32 - mean).mean(-1, keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(var + epsilon) * scale + bias).astype(x.dtype)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('shape', [(2, 5, 16), (3, 24)])
def test_layer_norm_value_and_gradients_equal_autodiff(shape, dtype):
  """The written-out LayerNorm backward (custom VJP) against autodiff of the plain formula, with
  an input whose rows have large means (the centring must happen before the variance)."""
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.standard_normal(shape) * 3 + 50, dtype)
  scale = jnp.asarray(rng.standard_normal(shape[-1:]), jnp.float32)
  bias = jnp.asarray(rng.standard_normal(shape[-1:]), jnp.float32)
  g = jnp.asarray(rng.standard_normal(shape), dtype)
  out, vjp = jax.vjp(lambda *a: layer_norm(*a, 1e-6), x, scale, bias)
  out_ref, vjp_ref = jax.vjp(lambda *a: _plain_layer_norm(*a, 1e-6), x, scale, bias)
  tol = 2e-5 if dtype == jnp.float32 else 3e-2
  assert out.dtype == dtype
  np.testing.assert_allclose(np.float32(out), np.float32(out_ref), rtol=tol, atol=tol)
  for got, want in zip(vjp(g), vjp_ref(g)):
    assert got.dtype == want.dtype
    np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=tol, atol=tol)
  # a loss on top, jitted: the gradient of a sum over rows also checks the bias and scale sums
  loss = lambda f: lambda x, s, b: jnp.sum(jnp.sin(f(x, s, b, 1e-6).astype(jnp.float32)))
  got = jax.jit(jax.grad(loss(layer_norm), argnums=(0, 1, 2)))(x, scale, bias)
  want = jax.grad(loss(_plain_layer_norm), argnums=(0, 1, 2))(x, scale, bias)
  for a, b in zip(got, want):
    np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=tol, atol=tol)
