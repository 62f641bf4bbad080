"""Whole models: equivalences, the LAPS block against a loop, gradients, sizes and config errors."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from laps_jax import models
from laps_jax.models.leap_attention import leap_pairs
from laps_jax.models.vit import VideoSelfAttention
from model_configs import tiny_lvt, tiny_vit
from test_leap_attention import softmax_attention_loop


def clip(config, batch=2, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, config.num_frames, config.image_size, config.image_size, 3))


def params_of(model):
  return nnx.state(model, nnx.Param)


def copy_shared_params(source, target):
  """Copy every parameter the two models share (same path) from source into target."""
  src = dict(nnx.to_flat_state(params_of(source)))
  flat = nnx.to_flat_state(params_of(target))
  for path, var in flat:
    if path in src:
      var.set_value(src[path].get_value())
  nnx.update(target, nnx.from_flat_state(flat))


def randomise(model, seed=0):
  """Give zero-initialised parameters (head, cls, temporal_fc) random values so tests see them."""
  flat = nnx.to_flat_state(params_of(model))
  for i, (_, var) in enumerate(flat):
    var.set_value(0.2 * jax.random.normal(jax.random.key(seed + i), var.get_value().shape))
  nnx.update(model, nnx.from_flat_state(flat))


def test_laps_and_vit2d_have_identical_parameter_trees():
  laps = models.build(tiny_vit('laps'), nnx.Rngs(0))
  vit2d = models.build(tiny_vit('vit2d'), nnx.Rngs(0))
  shapes = lambda m: jax.tree.map(lambda v: v.shape, params_of(m))
  assert shapes(laps) == shapes(vit2d)


def test_laps_without_leap_and_shift_equals_vit2d():
  vit2d = models.build(tiny_vit('vit2d'), nnx.Rngs(0))
  randomise(vit2d)
  laps = models.build(tiny_vit('laps', leap_levels=(None,), shift_div=0), nnx.Rngs(1))
  copy_shared_params(vit2d, laps)
  x = clip(tiny_vit())
  np.testing.assert_allclose(laps.frame_logits(x), vit2d.frame_logits(x), atol=1e-5)
  # and the real LAPS differs, so the comparison above is not vacuous
  laps_full = models.build(tiny_vit('laps'), nnx.Rngs(1))
  copy_shared_params(vit2d, laps_full)
  assert np.abs(np.asarray(laps_full(x) - vit2d(x))).max() > 1e-3


def test_clip_logits_are_the_mean_of_frame_logits():
  model = models.build(tiny_vit('laps'), nnx.Rngs(0))
  randomise(model)
  x = clip(tiny_vit())
  np.testing.assert_allclose(model(x), model.frame_logits(x).mean(1), atol=1e-6)


def test_vit2d_treats_frames_independently():
  """Changing one frame changes only that frame's logits in the 2D model."""
  model = models.build(tiny_vit('vit2d'), nnx.Rngs(0))
  randomise(model)
  x = clip(tiny_vit())
  y = x.at[:, 3].set(0.0)
  diff = np.abs(np.asarray(model.frame_logits(x) - model.frame_logits(y))).max(axis=(0, 2))
  assert diff[3] > 1e-3 and np.all(np.delete(diff, 3) < 1e-6)


@pytest.mark.parametrize('level,shift_div', [(1, 4), (2, 4), (3, 0), (None, 4)])
def test_laps_attention_block_equals_loop(level, shift_div):
  """qkv -> attention inside leap pairs -> per-head periodic shift -> output projection, as a loop."""
  b, t, l, c, h = 2, 8, 3, 16, 2
  d = c // h
  attn = VideoSelfAttention(c, h, pattern='leap' if level else 'frame', leap_level=level, shift_div=shift_div,
                            attention_impl='xla', dropout_rate=0.0, dtype=jnp.float32, rngs=nnx.Rngs(0))
  x = np.asarray(jax.random.normal(jax.random.key(1), (b, t, l, c)))
  got = np.asarray(attn(jnp.asarray(x), train=False))
  w_qkv = np.asarray(attn.qkv.kernel[...]).reshape(c, 3 * c)   # columns: q | k | v, head-major inside
  b_qkv = np.asarray(attn.qkv.bias[...]).reshape(3 * c)
  qkv = x @ w_qkv + b_qkv
  q, k, v = (qkv[..., i * c:(i + 1) * c].reshape(b, t, l, h, d) for i in range(3))
  groups = leap_pairs(t, level) if level else [(i,) for i in range(t)]
  o = np.zeros_like(q)
  for bi in range(b):
    for group in groups:
      cat = lambda z: np.concatenate([z[bi, f] for f in group], axis=0)
      out = softmax_attention_loop(cat(q), cat(k), cat(v))
      for n, f in enumerate(group):
        o[bi, f] = out[n * l:(n + 1) * l]
  if shift_div:
    fold = d // shift_div
    shifted = o.copy()
    for ti in range(t):
      shifted[:, ti, :, :, :fold] = o[:, ti + 1, :, :, :fold] if ti + 1 < t else 0
      shifted[:, ti, :, :, fold:2 * fold] = o[:, ti - 1, :, :, fold:2 * fold] if ti > 0 else 0
    o = shifted
  merged = o.reshape(b, t, l, c)  # head-major merge
  want = merged @ np.asarray(attn.proj.kernel[...]).reshape(c, c) + np.asarray(attn.proj.bias[...])
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_divided_with_zero_temporal_branch_equals_vit2d():
  """TimeSformer's temporal_fc starts at zero, so divided attention starts as the image model."""
  vit2d = models.build(tiny_vit('vit2d'), nnx.Rngs(0))
  randomise(vit2d)
  divided = models.build(tiny_vit('divided'), nnx.Rngs(1))
  copy_shared_params(vit2d, divided)
  x = clip(tiny_vit())
  np.testing.assert_allclose(divided(x), vit2d(x), atol=1e-5)


def test_joint_attention_on_one_frame_equals_vit2d():
  vit2d = models.build(tiny_vit('vit2d', num_frames=1), nnx.Rngs(0))
  randomise(vit2d)
  joint = models.build(tiny_vit('joint', num_frames=1), nnx.Rngs(1))
  copy_shared_params(vit2d, joint)
  x = clip(tiny_vit(num_frames=1))
  np.testing.assert_allclose(joint(x), vit2d(x), atol=1e-5)


def test_joint_attention_mixes_frames():
  joint = models.build(tiny_vit('joint'), nnx.Rngs(0))
  randomise(joint)
  x = clip(tiny_vit())
  y = x.at[:, 3].set(0.0)
  diff = np.abs(np.asarray(joint.frame_logits(x) - joint.frame_logits(y))).max(axis=(0, 2))
  assert np.all(diff > 1e-4)


def test_lvt_temporal_embedding_slots_repeat():
  model = models.build(tiny_lvt(temporal_embed_frames=4, shift_segment_frames=4), nnx.Rngs(0))
  slots = jax.random.normal(jax.random.key(0), model.temporal_embed[...].shape)
  model.temporal_embed.set_value(slots)
  emb = model.temporal_embedding(8)
  np.testing.assert_array_equal(emb[:, 5], slots[:, 1])
  np.testing.assert_array_equal(emb[:, :4], emb[:, 4:])


def test_lvt_grid_is_17_at_224():
  from laps_jax.models.lvt import patch_grid_size
  assert patch_grid_size(224, 16, 14, 8) == 17


ALL_CONFIGS = {
    'vit2d': tiny_vit('vit2d'), 'laps': tiny_vit('laps'), 'joint': tiny_vit('joint'),
    'divided': tiny_vit('divided'), 'lvt': tiny_lvt(),
    'laps_remat_dropout': tiny_vit('laps', remat=True, dropout_rate=0.1, drop_path_rate=0.1),
    'lvt_shared_gate_remat': tiny_lvt(shared_gate=True, remat=True, dropout_rate=0.1, drop_path_rate=0.1),
}


@pytest.mark.parametrize('name', list(ALL_CONFIGS))
def test_forward_and_backward_under_jit(name):
  config = ALL_CONFIGS[name]
  model = models.build(config, nnx.Rngs(params=0, dropout=1))
  randomise(model)  # the head starts at zero, which would leave every other gradient at zero
  x = clip(config)
  labels = jnp.array([1, 3])

  @nnx.jit
  def loss_and_grads(model, x):
    def loss_fn(model):
      logits = model(x, train=True)
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)), logits
    return nnx.value_and_grad(loss_fn, has_aux=True)(model)

  (loss, logits), grads = loss_and_grads(model, x)
  assert logits.shape == (2, config.num_classes) and logits.dtype == jnp.float32
  assert np.isfinite(float(loss))
  leaves = jax.tree.leaves(grads)
  assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  # every block's attention receives gradient (the graph is connected end to end)
  assert float(jnp.abs(grads['blocks'][0]['attn']['qkv']['kernel'][...]).sum()) > 0


def test_bfloat16_compute_keeps_float32_params():
  config = tiny_vit('laps', dtype='bfloat16')
  model = models.build(config, nnx.Rngs(0))
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(params_of(model)))
  assert model(clip(config)).dtype == jnp.float32


def count_params(config):
  abstract = nnx.eval_shape(lambda: models.build(config, nnx.Rngs(0)))
  return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params_of(abstract)))


def test_full_size_laps_vitb16_has_86_106_million_parameters():
  config = tiny_vit('laps', image_size=224, patch_size=16, hidden_size=768, num_layers=12, num_heads=12,
                    mlp_dim=3072, num_classes=400)
  assert abs(count_params(config) - 86.106e6) < 0.01e6
  assert count_params(config) == count_params(tiny_vit('vit2d', image_size=224, patch_size=16, hidden_size=768,
                                                       num_layers=12, num_heads=12, mlp_dim=3072, num_classes=400))


def test_full_size_lvt_has_about_52_1_million_parameters():
  """52.1 M is the shared-gate model (`pgate`, SSv2/K600); K400's two gates add 24 x (3d·d + d)."""
  config = tiny_lvt(image_size=224, hidden_size=512, num_layers=12, num_heads=8, mlp_dim=2048, num_frames=16,
                    head_mlp_dim=768, num_classes=400, temporal_embed_frames=16, shift_segment_frames=16,
                    shared_gate=True)
  assert abs(count_params(config) - 52.1e6) < 0.01e6
  assert count_params(config) == 52_097_168
  config.shared_gate = False
  assert count_params(config) == 52_097_168 + 24 * (3 * 64 * 64 + 64)


def test_config_errors_name_the_key():
  config = tiny_vit('laps')
  config.leap_level = 1  # misspelt
  with pytest.raises(ValueError, match=r"unknown keys \['leap_level'\]"):
    models.build(config, nnx.Rngs(0))
  config = tiny_vit('laps')
  del config['shift_div']
  with pytest.raises(ValueError, match=r"missing keys \['shift_div'\]"):
    models.build(config, nnx.Rngs(0))
  with pytest.raises(ValueError, match='unknown model.name'):
    models.build(ml_collections.ConfigDict(dict(name='vit3d')), nnx.Rngs(0))
  with pytest.raises(ValueError, match="name='laps'"):
    models.build(tiny_vit('vit2d', shift_div=4), nnx.Rngs(0))
  with pytest.raises(ValueError, match='num_frames=8'):
    models.build(tiny_vit('laps'), nnx.Rngs(0))(jnp.zeros((1, 4, 16, 16, 3)))
