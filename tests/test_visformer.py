"""Visformer pieces against loops written here in NumPy (float64), from the official PyTorch code
(VideoNetworks/LAPS-transformer visformer/models_LAPS.py)."""
import numpy as np
import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from scipy.special import erf

from laps_jax.models import registry
from laps_jax.models.batch_norm import BatchNorm
from laps_jax.models.visformer import (VideoConvAttention, VideoVisformer, VisformerBlock, VisformerConfig,
                                       stage_leap_levels)

TINY = dict(image_size=64, num_frames=4, num_classes=5, stem_channels=8, hidden_size=16,
            stage_depths=(1, 2, 2), num_heads=2, attention_impl='xla', leap_levels=((1, 2), (2, 1)))


def gelu(x):
  return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def conv_loop(x, w, stride=1, padding=0, groups=1):
  """x (N, H, W, I) channels-last, w HWIO (kh, kw, I/groups, O): a direct loop over outputs."""
  n, h, wd, _ = x.shape
  kh, kw, ig, o = w.shape
  og = o // groups
  x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  ho, wo = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
  out = np.zeros((n, ho, wo, o))
  for i in range(ho):
    for j in range(wo):
      window = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
      for oc in range(o):
        g = oc // og
        out[:, i, j, oc] = np.einsum('nabc,abc->n', window[..., g * ig:(g + 1) * ig], w[..., oc])
  return out


def f64(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def randomise_batch_stats(model, seed=0):
  """Non-trivial running statistics, so eval-mode tests see them."""
  rng = np.random.default_rng(seed)
  stats = nnx.state(model, nnx.BatchStat)
  pure = nnx.to_pure_dict(stats)
  pure = jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.asarray(rng.uniform(0.5, 1.5, v.shape) if str(path[-1].key) == 'var'
                                  else rng.normal(0, 0.2, v.shape), jnp.float32), pure)
  nnx.replace_by_pure_dict(stats, pure)
  nnx.update(model, stats)


def test_batch_norm_train_and_eval_match_pytorch_rules():
  rng = np.random.default_rng(0)
  bn = BatchNorm(3, rngs=nnx.Rngs(0))
  bn.scale[...] = jnp.asarray([1.0, 2.0, 0.5])
  bn.bias[...] = jnp.asarray([0.0, -1.0, 0.3])
  x = rng.normal(1.0, 2.0, (4, 5, 6, 3))
  y = np.asarray(bn(jnp.asarray(x, jnp.float32), train=True))
  flat = x.reshape(-1, 3)
  mean, var = flat.mean(0), flat.var(0)  # biased normalises
  want = (x - mean) / np.sqrt(var + 1e-5) * np.array([1.0, 2.0, 0.5]) + np.array([0.0, -1.0, 0.3])
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
  # running averages: momentum 0.1 towards the batch mean and the UNBIASED batch variance
  np.testing.assert_allclose(bn.mean[...], 0.9 * 0.0 + 0.1 * mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(bn.var[...], 0.9 * 1.0 + 0.1 * flat.var(0, ddof=1), rtol=1e-5)
  before = (np.asarray(bn.mean[...]), np.asarray(bn.var[...]))
  x2 = rng.normal(size=(2, 3, 3, 3))
  y2 = np.asarray(bn(jnp.asarray(x2, jnp.float32), train=False))
  want2 = (x2 - before[0]) / np.sqrt(before[1] + 1e-5) * np.array([1.0, 2.0, 0.5]) + np.array([0.0, -1.0, 0.3])
  np.testing.assert_allclose(y2, want2, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(bn.mean[...], before[0])  # eval leaves the statistics alone
  assert isinstance(bn.mean, nnx.BatchStat) and isinstance(bn.scale, nnx.Param)


def test_stage1_conv_block_matches_loop():
  block = VisformerBlock(16, 32, attention=None, spatial_groups=8, dropout_rate=0.0, drop_path_rate=0.0,
                         dtype=jnp.float32, rngs=nnx.Rngs(1))
  randomise_batch_stats(block)
  x = np.random.default_rng(1).normal(size=(2, 5, 5, 16))
  y = np.asarray(block(jnp.asarray(x, jnp.float32), train=False))
  p = f64(nnx.to_pure_dict(nnx.state(block, (nnx.Param, nnx.BatchStat))))
  bn = p['norm2']
  h = (x - bn['mean']) / np.sqrt(bn['var'] + 1e-5) * bn['scale'] + bn['bias']
  h = gelu(conv_loop(h, p['mlp']['conv1'][None, None]))          # 1x1: 16 -> 32
  h = gelu(conv_loop(h, p['mlp']['conv2'], padding=1, groups=8))  # grouped 3x3, 8 groups of 4
  h = conv_loop(h, p['mlp']['conv3'][None, None])                 # 1x1: 32 -> 16
  np.testing.assert_allclose(y, x + h, rtol=1e-4, atol=1e-4)
  assert p['mlp']['conv2'].shape == (3, 3, 4, 32) and block.attn is None


def official_pairs(n_seg, level):
  """`Attention.get_t_index` of models_LAPS.py: list A gets each frame not yet used, B its partner."""
  step = n_seg // 2 ** level
  a, b = [], []
  for t in range(n_seg):
    if t not in a + b:
      a.append(t)
      b.append(t + step)
  return list(zip(a, b))


def attention_loop(x, qkv, proj, t, heads, level, shift_div, joint=False, plain=False):
  """Official attention on channels-last frames x (B·T, H, W, C); qkv (C, 3, heads, d); proj (heads, d, C)."""
  bt, hh, ww, c = x.shape
  d = c // heads
  tokens = x.reshape(bt // t, t, hh * ww, c)
  q, k, v = (np.einsum('btnc,chd->bthnd', tokens, qkv[:, i]) for i in range(3))  # (B, T, heads, N, d)
  scale = d ** -0.25
  out = np.zeros_like(q)
  for bi in range(bt // t):
    if joint:
      groups = [list(range(t))]
    elif level is None:
      groups = [[f] for f in range(t)]
    else:
      groups = [list(p) for p in official_pairs(t, level)]
    for frames in groups:
      for h in range(heads):
        qq = np.concatenate([q[bi, f, h] for f in frames]) * scale
        kk = np.concatenate([k[bi, f, h] for f in frames]) * scale
        vv = np.concatenate([v[bi, f, h] for f in frames])
        o = softmax(qq @ kk.T) @ vv
        for j, f in enumerate(frames):
          out[bi, f, h] = o[j * hh * ww:(j + 1) * hh * ww]
  merged = out.transpose(0, 1, 3, 2, 4).reshape(bt // t, t, hh * ww, heads * d)  # head-major channels
  if shift_div:
    width = heads * d if plain else d
    fold = width // shift_div
    shifted = merged.copy()
    for start in range(0, heads * d, width):  # per head (periodic) or once over all channels (plain)
      a, b = start, start + fold
      shifted[:, :, :, a:b] = 0
      shifted[:, :-1, :, a:b] = merged[:, 1:, :, a:b]
      shifted[:, :, :, b:b + fold] = 0
      shifted[:, 1:, :, b:b + fold] = merged[:, :-1, :, b:b + fold]
    merged = shifted
  y = np.einsum('btnc,co->btno', merged, proj.reshape(heads * d, c))
  return y.reshape(bt, hh, ww, c)


@pytest.mark.parametrize('level,shift_div,joint,plain', [
    (None, 0, False, False), (1, 4, False, False), (2, 0, False, False), (None, 4, False, False),
    (None, 0, True, False), (None, 4, False, True)])
def test_conv_attention_split_scale_matches_loop(level, shift_div, joint, plain):
  t, heads = 4, 2
  attn = VideoConvAttention(16, heads, num_frames=t, leap_level=level, joint=joint, shift_div=shift_div,
                            shift_kind='plain' if plain else 'periodic', attention_impl='xla',
                            dropout_rate=0.0, dtype=jnp.float32, rngs=nnx.Rngs(2))
  x = np.random.default_rng(2).normal(size=(2 * t, 3, 3, 16))
  y = np.asarray(attn(jnp.asarray(x, jnp.float32), train=False))
  want = attention_loop(x, np.asarray(attn.qkv[...], np.float64), np.asarray(attn.proj[...], np.float64),
                        t, heads, level, shift_div, joint, plain)
  np.testing.assert_allclose(y, want, rtol=2e-4, atol=2e-5)


def test_per_stage_leap_levels_reach_each_block():
  config = VisformerConfig.variant(
      'Mu', **TINY | dict(stage_depths=(1, 4, 3), leap_levels=((1, 2, None, 1), (2,))))
  model = nnx.eval_shape(lambda: VideoVisformer(config, nnx.Rngs(0)))
  assert [b.attn.leap_level for b in model.stage2] == [1, 2, None, 1]
  assert [b.attn.leap_level for b in model.stage3] == [2, 2, 2]
  assert stage_leap_levels(config, 1) == [2, 2, 2]
  assert all(b.attn.shift_div == 4 for b in list(model.stage2) + list(model.stage3))
  s = VisformerConfig.variant('S')
  assert s.leap_levels == ((1, 2, 3, 1), (2, 3, 1, 2)) and s.shift_div == 4
  with pytest.raises(ValueError, match='divisible by 2\\*\\*3'):
    VisformerConfig.variant('Mu', **TINY | dict(leap_levels=((3,), (None,))))  # 8 does not divide T=4
  with pytest.raises(ValueError, match='pair'):
    VisformerConfig.variant('Mu', **TINY | dict(leap_levels=((1,),)))


def test_laps_without_leap_and_shift_is_the_2d_model_frame_by_frame():
  laps = VisformerConfig.variant('Mu', **TINY, shift_div=4)
  flat = laps.replace(leap_levels=((None,), (None,)), shift_div=0)
  single = flat.replace(num_frames=1)
  models = [VideoVisformer(c, nnx.Rngs(4)) for c in (laps, flat, single)]
  trees = [jax.tree.map(lambda v: v.shape, nnx.to_pure_dict(nnx.state(m, (nnx.Param, nnx.BatchStat)))) for m in models]
  assert trees[0] == trees[1] == trees[2]  # one parameter / statistics tree for all settings
  randomise_batch_stats(models[0])
  for m in models[1:]:
    nnx.update(m, nnx.state(models[0], (nnx.Param, nnx.BatchStat)))
  videos = jnp.asarray(np.random.default_rng(4).normal(size=(2, 4, 64, 64, 3)), jnp.float32)
  per_frame = np.stack([np.asarray(models[2].frame_logits(videos[:, f:f + 1]))[:, 0] for f in range(4)], 1)
  np.testing.assert_allclose(models[1].frame_logits(videos), per_frame, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(models[1](videos), per_frame.mean(1), rtol=1e-4, atol=1e-5)
  assert float(jnp.abs(models[0].frame_logits(videos) - per_frame).max()) > 1e-4  # LAPS mixes frames


def test_training_step_updates_running_statistics_and_eval_uses_them():
  config = VisformerConfig.variant('Mu', **TINY)
  model = VideoVisformer(config, nnx.Rngs(5))
  videos = jnp.asarray(np.random.default_rng(5).normal(size=(2, 4, 64, 64, 3)), jnp.float32)
  before = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
  eval_logits = model(videos)

  @nnx.jit
  def step(m, v):
    return nnx.grad(lambda mm: mm(v, train=True).sum())(m)

  grads = step(model, videos)
  after = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
  assert not np.allclose(before['stem']['bn']['mean'], after['stem']['bn']['mean'])
  assert 'mean' not in str(jax.tree_util.tree_structure(nnx.to_pure_dict(grads)))  # no gradient for stats
  assert float(jnp.abs(model(videos) - eval_logits).max()) > 0  # eval reads the moved statistics


def test_registry_builds_visformer_from_a_config_dict():
  config = VisformerConfig.variant('Mu', **TINY).to_config_dict()
  assert registry.family('visformer').config_class is VisformerConfig
  model = registry.build(config, nnx.Rngs(0))
  assert isinstance(model, VideoVisformer)
  config.unknown = 1
  with pytest.raises(ValueError, match='unknown'):
    registry.build(config, nnx.Rngs(0))


def test_visformer_s_has_the_official_parameter_count():
  model = nnx.eval_shape(lambda: VideoVisformer(VisformerConfig.variant('S'), nnx.Rngs(0)))
  count = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert count == 39_758_192  # MODEL_ZOO.md: 39.758 M for every Visformer-S 8x8 K400 variant
