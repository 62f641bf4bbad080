"""The CPU-step rewrites keep the model's values: `layers.matmul` (custom VJP), `layers.gelu`,
`xla_attention` (heads first); and `laps_jax.cpu_defaults` respects the user's settings."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from laps_jax.models.layers import gelu, matmul
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
