"""model.attention_impl: 'auto' picks cuDNN's fused attention where it can run (NVIDIA GPU, bf16/fp16,
head dim a multiple of 8 up to 128/256), XLA elsewhere; 'cudnn' where it cannot is a clear error.
The platform is mocked, so everything runs on CPU."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from laps_jax import models
from laps_jax.models import softmax_attention
from laps_jax.models.softmax_attention import Accelerator, choose_implementation
from model_configs import tiny_vit

AMPERE, HOPPER = Accelerator('cuda', (8, 0)), Accelerator('cuda', (9, 0))
# (q_len, kv_len) of every pattern at ViT-B/16 8×224 (1 + 196 tokens per frame)
VITB_PATTERNS = {'frame': (197, 197), 'leap': (394, 394), 'joint': (1576, 1576), 'temporal': (8, 8)}


@pytest.mark.parametrize('pattern', sorted(VITB_PATTERNS))
@pytest.mark.parametrize('accelerator,dtype,head_dim,expected', [
    (AMPERE, jnp.bfloat16, 64, 'cudnn'),
    (HOPPER, jnp.float16, 64, 'cudnn'),
    (HOPPER, jnp.bfloat16, 192, 'cudnn'),   # Hopper: head dim up to 256
    (AMPERE, jnp.bfloat16, 192, 'xla'),     # before Hopper: up to 128
    (HOPPER, jnp.bfloat16, 60, 'xla'),      # not a multiple of 8
    (HOPPER, jnp.float32, 64, 'xla'),       # cuDNN's fused kernel is half precision only
    (Accelerator('cpu'), jnp.bfloat16, 64, 'xla'),
    (Accelerator('rocm'), jnp.bfloat16, 64, 'xla'),
    (Accelerator('tpu'), jnp.bfloat16, 64, 'xla'),
])
def test_auto_rule_for_every_pattern(pattern, accelerator, dtype, head_dim, expected):
  q_len, kv_len = VITB_PATTERNS[pattern]
  assert choose_implementation('auto', accelerator, dtype, head_dim, q_len, kv_len) == expected
  assert choose_implementation('xla', accelerator, dtype, head_dim, q_len, kv_len) == 'xla'


def test_cudnn_where_it_cannot_run_is_an_error_naming_the_key():
  with pytest.raises(ValueError, match=r"model\.attention_impl='cudnn'.*NVIDIA"):
    choose_implementation('cudnn', Accelerator('cpu'), jnp.bfloat16, 64, 197, 197)
  with pytest.raises(ValueError, match=r"model\.attention_impl='cudnn'.*float32.*model\.dtype"):
    choose_implementation('cudnn', HOPPER, jnp.float32, 64, 197, 197)
  assert choose_implementation('cudnn', HOPPER, jnp.bfloat16, 64, 197, 197) == 'cudnn'
  with pytest.raises(ValueError, match='model.attention_impl must be one of'):
    choose_implementation('flash', HOPPER, jnp.bfloat16, 64, 197, 197)


def test_cudnn_on_this_cpu_fails_when_the_model_runs():
  model = models.build(tiny_vit('laps', attention_impl='cudnn', dtype='bfloat16'), nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"model\.attention_impl='cudnn' cannot run here"):
    model(jnp.zeros((1, 8, 16, 16, 3)))


def _expected_shapes(pattern, b=1, t=8, l=5):
  """q shape (batch, length) each pattern gives jax.nn.dot_product_attention (tiny_vit: 1 + 4 tokens)."""
  return {'frame': (b * t, l), 'leap': (b * t // 2, 2 * l), 'joint': (b, t * l), 'temporal': (b * l, t)}[pattern]


@pytest.mark.parametrize('name,patterns', [
    ('vit2d', {'frame'}), ('laps', {'leap'}), ('joint', {'joint'}), ('divided', {'temporal', 'frame'}),
    ('laps_some_frame', {'leap', 'frame'})])
@pytest.mark.parametrize('dtype,expected', [('bfloat16', 'cudnn'), ('float32', 'xla')])
def test_models_on_a_mocked_hopper_use_cudnn_in_half_precision(monkeypatch, name, patterns, dtype, expected):
  calls = []

  def record(q, k, v, *, implementation, scale):
    calls.append((q.shape[:2], implementation))
    return jax.nn.dot_product_attention(q, k, v, scale=scale, implementation='xla')  # CPU stand-in
  monkeypatch.setattr(softmax_attention, 'current_accelerator', lambda: HOPPER)
  monkeypatch.setattr(softmax_attention, '_dot_product_attention', record)
  overrides = dict(leap_levels=(1, None, 2, 3)) if name == 'laps_some_frame' else {}
  config = tiny_vit(name.split('_')[0], attention_impl='auto', dtype=dtype, **overrides)
  model = models.build(config, nnx.Rngs(0))
  jax.jit(lambda m, x: m(x))(model, jnp.zeros((1, 8, 16, 16, 3)))
  assert {impl for _, impl in calls} == {expected}
  assert {shape for shape, _ in calls} == {_expected_shapes(p) for p in patterns}


def test_auto_on_cpu_is_xla_and_logged_once_per_pattern(caplog):
  softmax_attention._logged_choices.clear()
  q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 6, 2, 8))
  with caplog.at_level(logging.INFO):
    for _ in range(3):
      out = softmax_attention.attend(q, k, v, implementation='auto', pattern='leap')
    softmax_attention.attend(q, k, v, implementation='auto', pattern='frame')
  np.testing.assert_allclose(out, jax.nn.dot_product_attention(q, k, v, implementation='xla'), atol=1e-6)
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('attention ')]
  assert len(lines) == 2 and "attention leap: model.attention_impl='auto' -> xla" in lines[0]
