"""LVT against its official code (OpenNLPLab/Linear_VideoTransformer): the dropout on the gated
features q̂, k̂ (`attn_drop` after the gates in linear_block_v2.py), off by default as in every
released config."""
import jax.numpy as jnp
import numpy as np
from flax import nnx

from conftest import make_tiny_config
from laps_jax import models
from laps_jax.models import lvt


def _attention(rate: float):
  return lvt.LinearVideoAttention(
      16, 2, over='space', grid_size=(2, 2), temporal_shift_div=4, shift_segment_frames=2,
      spatial_shift=True, fixation=True, shared_gate=False, dropout_rate=0.0, dtype=jnp.float32,
      rngs=nnx.Rngs(params=0, dropout=1), attention_dropout_rate=rate)


def test_gated_features_are_dropped_with_independent_masks_in_training_only(monkeypatch):
  seen = {}
  real_fixation, real_attention = lvt.FeatureFixation.__call__, lvt.linear_attention

  def fixation(self, q, k, v):
    seen['gated'] = real_fixation(self, q, k, v)
    return seen['gated']

  def attention(q, k, v):
    seen['attended'] = (q, k)
    return real_attention(q, k, v)

  monkeypatch.setattr(lvt.FeatureFixation, '__call__', fixation)
  monkeypatch.setattr(lvt, 'linear_attention', attention)
  module = _attention(0.5)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 2, 4, 16)), jnp.float32)  # (B, T, N, C)

  module(x, train=True)
  masks = []
  for gated, attended in zip(seen['gated'], seen['attended']):
    gated, attended = np.asarray(gated), np.asarray(attended)
    kept = attended != 0
    np.testing.assert_allclose(attended[kept], 2.0 * gated[kept], rtol=1e-6)  # 1 / (1 - 0.5)
    assert 0.3 < kept.mean() < 0.7
    masks.append(kept)
  assert (masks[0] != masks[1]).any()  # q̂ and k̂ get their own masks, as two attn_drop calls

  module(x, train=False)
  for gated, attended in zip(seen['gated'], seen['attended']):
    np.testing.assert_array_equal(np.asarray(attended), np.asarray(gated))


def test_default_rate_adds_no_module_and_changes_nothing():
  config = make_tiny_config('unused', 'lvt')
  assert config.model.attention_dropout_rate == 0.0
  plain = models.build(config.model, nnx.Rngs(params=0, dropout=1))
  assert plain.blocks[0].attn.gated_dropout is None
  config.model.attention_dropout_rate = 0.3
  dropped = models.build(config.model, nnx.Rngs(params=0, dropout=1))
  videos = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 16, 16, 3)), jnp.float32)
  np.testing.assert_allclose(plain(videos, train=False), dropped(videos, train=False), rtol=1e-6)
