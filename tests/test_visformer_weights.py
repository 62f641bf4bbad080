"""Visformer checkpoints in the official key naming -> name='visformer', against a NumPy float64
forward written here from the official PyTorch code (visformer/models_LAPS.py in VideoNet),
reading the official names and NCHW layouts (nothing of laps_jax)."""
import numpy as np
import jax.numpy as jnp
import pytest
from flax import nnx
from safetensors import numpy as safetensors_numpy

from laps_jax import checkpoints, models, weights
from laps_jax.models.visformer import VisformerConfig
from reference_numpy import gelu, laps_pair_2_video, laps_shift, laps_video_2_pair, softmax, to_float64

torch = pytest.importorskip('torch')

LEVELS = ((1, 2), (2, 1))
TINY = dict(image_size=64, num_frames=4, num_classes=5, stem_channels=8, hidden_size=16,
            stage_depths=(1, 2, 2), num_heads=2, attention_impl='xla', leap_levels=LEVELS)


# ---------------------------------------------------------------------------------------------
# The official model in NumPy (NCHW, official names).
# ---------------------------------------------------------------------------------------------
def conv(x, w, b=None, stride=1, padding=0, groups=1):
  """nn.Conv2d: x (N, I, H, W), w (O, I/groups, kh, kw)."""
  n, _, h, wd = x.shape
  o, ig, kh, kw = w.shape
  og = o // groups
  x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
  ho, wo = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
  out = np.zeros((n, o, ho, wo))
  for g in range(groups):
    xs = x[:, g * ig:(g + 1) * ig]
    for i in range(kh):
      for j in range(kw):
        patch = xs[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
        out[:, g * og:(g + 1) * og] += np.einsum('nchw,oc->nohw', patch, w[g * og:(g + 1) * og, :, i, j])
  return out if b is None else out + b[None, :, None, None]


def batch_norm(x, sd, name):
  """nn.BatchNorm2d in eval mode (running statistics), eps 1e-5."""
  e = lambda leaf: sd[f'{name}.{leaf}'][None, :, None, None]
  return (x - e('running_mean')) / np.sqrt(e('running_var') + 1e-5) * e('weight') + e('bias')


def attention(x, sd, name, heads, n_seg, level, fold_div):
  bt, c, h, w = x.shape
  d = c // heads
  qkv = conv(x, sd[name + '.qkv.weight'])
  qkv = qkv.reshape(bt, 3, heads, d, h * w).transpose(1, 0, 2, 4, 3)  # 'b (x y z) h w -> x b y (h w) z'
  q, k, v = qkv
  if level is not None:
    q, k, v = (laps_video_2_pair(z, n_seg, level) for z in (q, k, v))
  scale = d ** -0.25
  out = softmax((q * scale) @ (k.swapaxes(-2, -1) * scale)) @ v
  if level is not None:
    out = laps_pair_2_video(out, n_seg, level)
  if fold_div:
    out = laps_shift(out, n_seg, fold_div)
  out = out.transpose(0, 1, 3, 2).reshape(bt, heads * d, h, w)  # 'b y (h w) z -> b (y z) h w'
  return conv(out, sd[name + '.proj.weight'])


def official_frame_logits(sd, videos, *, heads, levels, fold_div, groups=8):
  """VideoNet(Visformer_LAPS) with peframe=True: (B, T, H, W, 3) -> (B, T, classes)."""
  b, t = videos.shape[:2]
  x = videos.reshape(b * t, *videos.shape[2:]).transpose(0, 3, 1, 2)
  x = np.maximum(batch_norm(conv(x, sd['stem.0.weight'], stride=2, padding=3), sd, 'stem.1.bn'), 0)
  for s, p in ((1, 4), (2, 2), (3, 2)):
    x = conv(x, sd[f'patch_embed{s}.proj.weight'], sd[f'patch_embed{s}.proj.bias'], stride=p)
    x = batch_norm(x, sd, f'patch_embed{s}.norm.bn') + sd[f'pos_embed{s}']
    i = 0
    while f'stage{s}.{i}.norm2.bn.weight' in sd:
      blk = f'stage{s}.{i}.'
      if s > 1:
        x = x + attention(batch_norm(x, sd, blk + 'norm1.bn'), sd, blk + 'attn', heads, t,
                          levels[s - 2][i], fold_div)
      y = gelu(conv(batch_norm(x, sd, blk + 'norm2.bn'), sd[blk + 'mlp.conv1.weight']))
      if s == 1:
        y = gelu(conv(y, sd[blk + 'mlp.conv2.weight'], padding=1, groups=groups))
      x = x + conv(y, sd[blk + 'mlp.conv3.weight'])
      i += 1
  x = batch_norm(x, sd, 'norm.bn').mean(axis=(2, 3))
  logits = x @ sd['head.weight'].T + sd['head.bias']
  return logits.reshape(b, t, -1)


def random_official_visformer(rng, *, stem, c, depths, classes, image):
  """A random state dict in the official naming (BatchNorm as `<name>.bn.*`)."""
  sd = {}

  def bn(name, dim):
    sd.update({f'{name}.bn.weight': rng.uniform(0.5, 1.5, dim), f'{name}.bn.bias': rng.normal(0, 0.1, dim),
               f'{name}.bn.running_mean': rng.normal(0, 0.2, dim),
               f'{name}.bn.running_var': rng.uniform(0.5, 1.5, dim),
               f'{name}.bn.num_batches_tracked': np.array(100)})

  w = lambda *shape: rng.normal(0, 1.0 / np.sqrt(np.prod(shape[1:])), shape)
  sd['stem.0.weight'] = w(stem, 3, 7, 7)
  bn('stem.1', stem)
  widths, grid, cin = (c // 2, c, 2 * c), image // 2, stem
  for s, (p, width) in enumerate(zip((4, 2, 2), widths), start=1):
    grid //= p
    sd[f'patch_embed{s}.proj.weight'] = w(width, cin, p, p)
    sd[f'patch_embed{s}.proj.bias'] = rng.normal(0, 0.1, width)
    bn(f'patch_embed{s}.norm', width)
    sd[f'pos_embed{s}'] = rng.normal(0, 0.1, (1, width, grid, grid))
    for i in range(depths[s - 1]):
      blk = f'stage{s}.{i}.'
      hidden = 2 * width if s == 1 else 4 * width
      if s > 1:
        bn(blk + 'norm1', width)
        sd[blk + 'attn.qkv.weight'] = w(3 * width, width, 1, 1)
        sd[blk + 'attn.proj.weight'] = w(width, width, 1, 1)
      bn(blk + 'norm2', width)
      sd[blk + 'mlp.conv1.weight'] = w(hidden, width, 1, 1)
      if s == 1:
        sd[blk + 'mlp.conv2.weight'] = w(hidden, hidden // 8, 3, 3)
      sd[blk + 'mlp.conv3.weight'] = w(width, hidden, 1, 1)
    cin = width
  bn('norm', 2 * c)
  sd['head.weight'] = w(classes, 2 * c)
  sd['head.bias'] = rng.normal(0, 0.1, classes)
  return sd


def to_timm_names(sd):
  """timm's visformer uses plain nn.BatchNorm2d: `<name>.bn.weight` -> `<name>.weight`."""
  return {k.replace('.bn.', '.'): v for k, v in sd.items()}


def save_torch(path, checkpoint):
  def tensors(d):
    return {k: torch.as_tensor(np.asarray(v, np.float32) if np.asarray(v).dtype.kind == 'f' else np.asarray(v))
            for k, v in d.items()}
  torch.save({k: tensors(v) if isinstance(v, dict) else v for k, v in checkpoint.items()}, path)


@pytest.fixture(scope='module')
def official():
  rng = np.random.default_rng(0)
  sd = random_official_visformer(rng, stem=8, c=16, depths=(1, 2, 2), classes=5, image=64)
  videos = rng.normal(size=(2, 4, 64, 64, 3))
  return sd, videos


def build(**overrides):
  config = VisformerConfig.variant('Mu', **TINY | overrides).to_config_dict()
  return models.build(config, nnx.Rngs(0)), config


@pytest.mark.parametrize('levels,fold_div', [(LEVELS, 4), (((None,), (None,)), 0)])
def test_laps_checkpoint_matches_official_forward(official, tmp_path, levels, fold_div):
  sd, videos = official
  path = str(tmp_path / 'visformer_laps.pth.tar')
  save_torch(path, {'epoch': 3, 'best_acc1': 1.0, 'state_dict': {'module.base_model.' + k: v for k, v in sd.items()}})
  model, config = build(leap_levels=levels, shift_div=fold_div)
  converted = weights.import_weights('laps-pytorch', path, model, config)
  assert not converted.keep_initialised
  assert sorted(n for n, _ in converted.dropped) == sorted('module.base_model.' + k for k in sd
                                                            if k.endswith('num_batches_tracked'))
  ref_levels = tuple(tuple(stage) * 2 for stage in levels)  # per block (the tuples cycle)
  want = official_frame_logits(to_float64(sd), videos, heads=2, levels=ref_levels, fold_div=fold_div)
  got = model.frame_logits(jnp.asarray(videos, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(model(jnp.asarray(videos, jnp.float32)), want.mean(1), rtol=1e-4, atol=1e-4)
  # the export keeps the BatchNorm running averages
  checkpoints.save_model(str(tmp_path / 'export'), model, config)
  loaded, _ = checkpoints.load_model(str(tmp_path / 'export'), seed=7)
  np.testing.assert_allclose(loaded.frame_logits(jnp.asarray(videos, jnp.float32)), got, rtol=1e-6, atol=1e-6)


def test_imagenet_sources_official_and_timm_names_give_the_same_weights(official, tmp_path):
  sd, _ = official
  imagenet = dict(sd, **{'head.weight': np.ones((7, 32)), 'head.bias': np.zeros(7)})  # 7 "ImageNet" classes
  save_torch(str(tmp_path / 'visformer_small.pth'), {'model': imagenet, 'epoch': 299})
  safetensors_numpy.save_file({k: np.asarray(v, np.float32 if np.asarray(v).dtype.kind == 'f' else np.int64)
                              for k, v in to_timm_names(imagenet).items()}, str(tmp_path / 'timm.safetensors'))
  results = []
  for source, name in (('laps-pytorch', 'visformer_small.pth'), ('timm', 'timm.safetensors')):
    model, config = build(image_size=96)  # another resolution: position embeddings resized
    converted = weights.import_weights(source, str(tmp_path / name), model, config)
    assert set(converted.keep_initialised) == {'head/kernel', 'head/bias'}
    assert any('pos_embed1 resized bilinearly from 8x8 to 12x12' in n for n in converted.notes)
    results.append(nnx.to_pure_dict(nnx.state(model, (nnx.Param, nnx.BatchStat))))
  assert np.asarray(results[0]['pos_embed1']).shape == (1, 12, 12, 8)
  np.testing.assert_array_equal(results[0]['stem']['bn']['var'], sd['stem.1.bn.running_var'].astype(np.float32))
  np.testing.assert_array_equal(results[0]['stage2'][1]['attn']['qkv'], results[1]['stage2'][1]['attn']['qkv'])
  np.testing.assert_array_equal(results[0]['norm']['mean'], results[1]['norm']['mean'])


def test_strict_errors_name_keys_and_settings(official, tmp_path):
  sd, _ = official
  broken = {'module.base_model.' + k: v for k, v in sd.items() if k != 'stage2.1.attn.proj.weight'}
  broken['module.base_model.stage2.9.extra'] = np.zeros(3)
  path = str(tmp_path / 'broken.pth.tar')
  save_torch(path, {'state_dict': broken})
  model, config = build(leap_levels=LEVELS)
  with pytest.raises(weights.WeightImportError) as e:
    weights.import_weights('laps-pytorch', path, model, config)
  assert 'stage2.1.attn.proj.weight' in str(e.value) and 'stage2.9.extra' in str(e.value)
  good = str(tmp_path / 'good.pth.tar')
  save_torch(good, {'state_dict': {'module.base_model.' + k: v for k, v in sd.items()}})
  model, config = build(num_classes=9)
  with pytest.raises(weights.WeightImportError, match='num_classes=5'):
    weights.import_weights('laps-pytorch', good, model, config)
  model, config = build(image_size=96)  # a trained video model is not resized silently
  with pytest.raises(weights.WeightImportError, match='image_size=64'):
    weights.import_weights('laps-pytorch', good, model, config)
