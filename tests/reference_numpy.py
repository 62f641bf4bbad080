"""Independent NumPy forward passes of the official models, written from their PyTorch code.

They read the OFFICIAL state-dict names and PyTorch layouts (nothing of laps_jax is used), so a
test that compares them with a converted laps_jax model checks the converter and the model
together. They follow the official code step by step, its reshapes included:

  - `laps_forward`: LAPS-transformer `timm/models/vit_laps.py` (VisionTransformer with the leap
    `Attention`) inside `model/video_net.py` (VideoNet: per-frame logits, 'avg' consensus).
  - `lvt_forward`: Linear_VideoTransformer `lvit_v2.py` + `linear_block_v2.py` (LinearBlock with
    divided time-space LinearAttention), `temporal_shift.py` (TemporalShift, SpatialShift with the
    eight-neighbour shift), `video_model_builder.py` (XVIT) and `head_helper.py` (VVTHead).

Everything runs in float64. Inputs are channels-last videos (B, T, H, W, 3) (moved to the official
(B, T, 3, H, W) / NCHW at the start). Tiny sizes only.
"""
import numpy as np
from scipy.special import erf


def gelu(x):
  return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def layer_norm(x, weight, bias, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * weight + bias


def linear(x, sd, name):
  return x @ sd[name + '.weight'].T + sd[name + '.bias']


def softmax(x):
  x = x - x.max(-1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(-1, keepdims=True)


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def to_float64(sd):
  return {k: np.asarray(v, np.float64) for k, v in sd.items()}


# ----------------------------------------------------------------------------------------------
# LAPS (vit_laps.py)
# ----------------------------------------------------------------------------------------------

def laps_t_index(n_seg, level):
  """Attention.get_t_index: frame order grouping the leap pairs, and its inverse."""
  leap_step = n_seg // (2 ** level)
  list_a, list_b = [], []
  for t in range(n_seg):
    if t not in list_a + list_b:
      list_a.append(t)
      list_b.append(t + leap_step)
  two_index = np.array(list_a + list_b).reshape(-1)
  return two_index, np.argsort(two_index)


def laps_video_2_pair(x, n_seg, level):
  """(b·t, y, hw, z) -> (b·t/2, y, 2·hw, z), as Attention.video_2_pair."""
  bt, y, hw, z = x.shape
  b = bt // n_seg
  two_index, _ = laps_t_index(n_seg, level)
  x = x.reshape(b, n_seg, y, hw, z)[:, two_index]
  ct = n_seg // 2
  x = x.reshape(b, 2, ct, y, hw, z).transpose(0, 2, 3, 1, 4, 5)
  return x.reshape(b * ct, y, 2 * hw, z)


def laps_pair_2_video(x, n_seg, level):
  """Inverse of laps_video_2_pair, as Attention.pair_2_video."""
  bct, y, tfhw, z = x.shape
  ct = n_seg // 2
  b = bct // ct
  hw = tfhw // 2
  x = x.reshape(b, ct, y, 2, hw, z).transpose(0, 3, 1, 2, 4, 5).reshape(b, n_seg, y, hw, z)
  _, reverse_index = laps_t_index(n_seg, level)
  return x[:, reverse_index].reshape(b * n_seg, y, hw, z)


def laps_shift(x, n_seg, fold_div):
  """Attention.shift on (b·t, heads, hw, d): per head, fold = d // fold_div."""
  bt, y, hw, z = x.shape
  b = bt // n_seg
  fold = z // fold_div
  x = x.reshape(b, n_seg, y, hw, z)
  out = np.zeros_like(x)
  out[:, :-1, :, :, :fold] = x[:, 1:, :, :, :fold]
  out[:, 1:, :, :, fold:2 * fold] = x[:, :-1, :, :, fold:2 * fold]
  out[:, :, :, :, 2 * fold:] = x[:, :, :, :, 2 * fold:]
  return out.reshape(bt, y, hw, z)


def laps_attention(x, sd, prefix, num_heads, n_seg, level, fold_div):
  bsz, n, c = x.shape
  qkv = linear(x, sd, prefix + 'qkv').reshape(bsz, n, 3, num_heads, c // num_heads).transpose(2, 0, 3, 1, 4)
  q, k, v = qkv[0], qkv[1], qkv[2]
  if level is not None:
    q, k, v = (laps_video_2_pair(z, n_seg, level) for z in (q, k, v))
  attn = softmax(q @ k.swapaxes(-2, -1) * (c // num_heads) ** -0.5)
  out = attn @ v
  if level is not None:
    out = laps_pair_2_video(out, n_seg, level)
  if fold_div:
    out = laps_shift(out, n_seg, fold_div)
  out = out.transpose(0, 2, 1, 3).reshape(bsz, n, c)
  return linear(out, sd, prefix + 'proj')


def laps_forward(sd, videos, *, num_heads, s2_skip_level, fold_div):
  """Official LAPS VideoNet forward.

  Args:
    sd: backbone state dict (timm ViT names, no `module.base_model.` prefix), NumPy arrays.
    videos: (B, T, H, W, 3).
    s2_skip_level: the 4 per-block levels (block k uses s2_skip_level[k % 4]; None = per frame).
    fold_div: P-Shift divisor (0 = no shift).
  Returns:
    (frame_logits (B, T, K), clip_logits (B, K)).
  """
  sd = to_float64(sd)
  b, t = videos.shape[:2]
  x = np.asarray(videos, np.float64).transpose(0, 1, 4, 2, 3).reshape(b * t, 3, *videos.shape[2:4])
  w = sd['patch_embed.proj.weight']  # (C, 3, p, p), stride p
  c, _, p, _ = w.shape
  bt, _, hh, ww = x.shape
  patches = x.reshape(bt, 3, hh // p, p, ww // p, p)
  x = np.einsum('bchpwq,ocpq->bhwo', patches, w) + sd['patch_embed.proj.bias']
  x = x.reshape(bt, -1, c)  # flatten(2).transpose(1, 2): row-major (h, w)
  cls = np.broadcast_to(sd['cls_token'], (bt, 1, c))
  x = np.concatenate([cls, x], axis=1) + sd['pos_embed']
  depth = len({k.split('.')[1] for k in sd if k.startswith('blocks.')})
  for kk in range(depth):
    pre = f'blocks.{kk}.'
    level = s2_skip_level[kk % 4]
    x = x + laps_attention(layer_norm(x, sd[pre + 'norm1.weight'], sd[pre + 'norm1.bias'], 1e-6),
                           sd, pre + 'attn.', num_heads, t, level, fold_div)
    h = layer_norm(x, sd[pre + 'norm2.weight'], sd[pre + 'norm2.bias'], 1e-6)
    x = x + linear(gelu(linear(h, sd, pre + 'mlp.fc1')), sd, pre + 'mlp.fc2')
  x = layer_norm(x, sd['norm.weight'], sd['norm.bias'], 1e-6)
  frame_logits = linear(x[:, 0], sd, 'head').reshape(b, t, -1)
  return frame_logits, frame_logits.mean(axis=1)


# ----------------------------------------------------------------------------------------------
# LVT (lvit_v2.py, linear_block_v2.py, temporal_shift.py, head_helper.py)
# ----------------------------------------------------------------------------------------------

def lvt_temporal_shift(x, n_segment, fold_div):
  """TemporalShift.forward on (n·t, heads, N, e): channels counted over heads·e."""
  nt, num_heads, d, c = x.shape
  n_batch = nt // n_segment
  x = x.reshape(n_batch, n_segment, num_heads, d, c).transpose(0, 1, 2, 4, 3).reshape(
      n_batch, n_segment, num_heads * c, d)
  fold = c * num_heads // fold_div
  out = np.zeros_like(x)
  out[:, :-1, :fold] = x[:, 1:, :fold]
  out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
  out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
  out = out.reshape(n_batch, n_segment, num_heads, c, d).transpose(0, 1, 2, 4, 3)
  return out.reshape(nt, num_heads, d, c)


def lvt_spatial_shift(x, n_segment):
  """SpatialShift.forward (eight-neighbour, shift_size 1) on (b·H·W, heads, t, e)."""
  ns, num_heads, t, c = x.shape
  n_batch = ns // n_segment
  x = x.reshape(n_batch, n_segment, num_heads, t, c).transpose(0, 1, 2, 4, 3).reshape(
      n_batch, n_segment, num_heads * c, t)
  fold = c * num_heads // 16
  side = int(round(n_segment ** 0.5))
  x = x.reshape(n_batch, side, side, num_heads * c, t)
  out = np.zeros_like(x)
  out[:, :-1, :, :fold] = x[:, 1:, :, :fold]
  out[:, 1:, :, fold:2 * fold] = x[:, :-1, :, fold:2 * fold]
  out[:, :, :-1, 2 * fold:3 * fold] = x[:, :, 1:, 2 * fold:3 * fold]
  out[:, :, 1:, 3 * fold:4 * fold] = x[:, :, :-1, 3 * fold:4 * fold]
  out[:, :, :, 4 * fold:] = x[:, :, :, 4 * fold:]
  out[:, 1:, 1:, 4 * fold:5 * fold] = x[:, :-1, :-1, 4 * fold:5 * fold]
  out[:, :-1, :-1, 5 * fold:6 * fold] = x[:, 1:, 1:, 5 * fold:6 * fold]
  out[:, 1:, :-1, 6 * fold:7 * fold] = x[:, :-1, 1:, 6 * fold:7 * fold]
  out[:, :-1, 1:, 7 * fold:8 * fold] = x[:, 1:, :-1, 7 * fold:8 * fold]
  out = out.reshape(n_batch, n_segment, num_heads, c, t).transpose(0, 1, 2, 4, 3)
  return out.reshape(ns, num_heads, t, c)


def lvt_linear_attention(x, sd, prefix, num_heads, shift):
  """LinearAttention.forward (linear_type 'relu', insert_control_point, execute=True).

  x: (B', n, C). shift: function on k / v in (B', heads, n, e) layout (the control points).
  """
  bsz, n, c = x.shape
  e = c // num_heads
  qkv = linear(x, sd, prefix + 'qkv').reshape(bsz, n, 3, c).transpose(2, 0, 1, 3)  # 'b n (k c) -> k b n c'
  qkv = qkv.reshape(3, bsz, n, num_heads, e)                                       # 'k b n (h e)'
  q, k, v = qkv[0], qkv[1], qkv[2]
  k = shift(k.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
  v = shift(v.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
  scale = e ** -0.5
  q_ = np.maximum(q, 0) + scale
  k_ = np.maximum(k, 0) + scale
  qk = np.concatenate([q_, k_, v], axis=3)
  if prefix + 'pgate.weight' in sd:
    q_ = sigmoid(linear(qk, sd, prefix + 'pgate')) * q_
    k_ = sigmoid(linear(qk, sd, prefix + 'pgate')) * k_
  elif prefix + 'q_gate.weight' in sd:
    q_ = sigmoid(linear(qk, sd, prefix + 'q_gate')) * q_
    k_ = sigmoid(linear(qk, sd, prefix + 'k_gate')) * k_
  kv_ = k_.transpose(0, 2, 3, 1) @ v.transpose(0, 2, 1, 3)       # (b, h, e, e)
  k_sum = k_.sum(axis=1, keepdims=True)                            # (b, 1, h, e)
  z_ = 1.0 / ((q_ * k_sum).sum(-1) + 1e-6)                         # (b, n, h)
  out = (q_.transpose(0, 2, 1, 3) @ kv_).transpose(0, 2, 1, 3) * z_[..., None]
  return linear(out.reshape(bsz, n, c), sd, prefix + 'proj')


def lvt_depthwise_conv(x, weight, bias):
  """nn.Conv2d(M, M, 3, 1, 1, groups=M) on (B, M, H, W); weight (M, 1, 3, 3)."""
  b, m, h, w = x.shape
  padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
  out = np.zeros_like(x)
  for i in range(3):
    for j in range(3):
      out += padded[:, :, i:i + h, j:j + w] * weight[None, :, 0, i, j, None, None]
  return out + bias[None, :, None, None]


def lvt_conv2d(x, weight, bias, stride, padding):
  """nn.Conv2d (cross-correlation) on (B, 3, H, W) -> (B, C, Ho, Wo)."""
  p = weight.shape[-1]
  padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
  windows = np.lib.stride_tricks.sliding_window_view(padded, (p, p), axis=(2, 3))[:, :, ::stride, ::stride]
  return np.einsum('bchwij,ocij->bohw', windows, weight) + bias[None, :, None, None]


def lvt_forward(sd, videos, *, num_heads, patch_stride, num_segments, shift_div,
                use_temporal_shift=True, use_spatial_shift=True):
  """Official LVT (XVIT + lvit_v2 backbone + VVTHead) forward, dropout off.

  Args:
    sd: the full XVIT state dict (`base_model.`, `consensus.` names), NumPy arrays.
    videos: (B, T, H, W, 3).
    patch_stride: the backbone's `stride`; padding is patch_size // 2 as in OverlapPatchEmbed.
    num_segments: XVIT.NUM_SEGMENTS, the TemporalShift segment length.
    shift_div: XVIT.SHIFT_DIV, TemporalShift's n_div.
  Returns:
    logits (B, K).
  """
  sd = to_float64(sd)
  b, t = videos.shape[:2]
  x = np.asarray(videos, np.float64).transpose(0, 1, 4, 2, 3).reshape(b * t, 3, *videos.shape[2:4])
  w = sd['base_model.patch_embed.proj.weight']
  p = w.shape[-1]
  x = lvt_conv2d(x, w, sd['base_model.patch_embed.proj.bias'], patch_stride, p // 2)
  _, c, hg, wg = x.shape
  x = x.reshape(b * t, c, hg * wg).transpose(0, 2, 1)
  x = layer_norm(x, sd['base_model.patch_embed.norm.weight'], sd['base_model.patch_embed.norm.bias'], 1e-5)
  temp_embed = sd['base_model.temp_embed']  # (1, S, 1, C): view(x.size(0) // S, S, N, C) + temp_embed
  slots = temp_embed.shape[1]
  x = (x.reshape(b * t // slots, slots, hg * wg, c) + temp_embed).reshape(b * t, hg * wg, c)
  n = hg * wg
  ident = lambda z: z
  spatial = (lambda z: lvt_spatial_shift(z, n)) if use_spatial_shift else ident
  temporal = (lambda z: lvt_temporal_shift(z, num_segments, shift_div)) if use_temporal_shift else ident
  depth = len({k.split('.')[2] for k in sd if k.startswith('base_model.blocks.')})
  for i in range(depth):
    pre = f'base_model.blocks.{i}.'
    # Temporal: '(b t) (h w) m -> b t (h w) m' -> transpose(1, 2) -> '(b h w) t m'.
    xt_ = x.reshape(b, t, n, c).transpose(0, 2, 1, 3).reshape(b, n * t, c)
    xt = xt_.reshape(b * n, t, c)
    res_temporal = lvt_linear_attention(
        layer_norm(xt, sd[pre + 'temporal_norm1.weight'], sd[pre + 'temporal_norm1.bias'], 1e-6),
        sd, pre + 'temporal_attn.', num_heads, spatial)
    xt = xt_ + res_temporal.reshape(b, n * t, c)
    # Spatial: 'b (h w t) m -> (b t) (h w) m'.
    xs = xt.reshape(b, n, t, c).transpose(0, 2, 1, 3).reshape(b * t, n, c)
    res_spatial = lvt_linear_attention(layer_norm(xs, sd[pre + 'norm1.weight'], sd[pre + 'norm1.bias'], 1e-6),
                                       sd, pre + 'attn.', num_heads, temporal)
    res = res_spatial.reshape(b, t, n, c).transpose(0, 2, 1, 3).reshape(b, n * t, c)
    x = (xt + res).reshape(b, n, t, c).transpose(0, 2, 1, 3).reshape(b * t, n, c)
    # Mix-FFN.
    h = linear(layer_norm(x, sd[pre + 'norm2.weight'], sd[pre + 'norm2.bias'], 1e-6), sd, pre + 'mlp.fc1')
    m = h.shape[-1]
    h = h.transpose(0, 2, 1).reshape(b * t, m, hg, wg)
    h = lvt_depthwise_conv(h, sd[pre + 'mlp.dwconv.dwconv.weight'], sd[pre + 'mlp.dwconv.dwconv.bias'])
    h = gelu(h.reshape(b * t, m, n).transpose(0, 2, 1))
    x = x + linear(h, sd, pre + 'mlp.fc2')
  x = layer_norm(x, sd['base_model.norm.weight'], sd['base_model.norm.bias'], 1e-6)
  x = x.mean(axis=1).reshape(b, t, c)  # backbone head = Dropout, then mean over tokens
  x = x.mean(axis=1)                   # VVTHead: mean over frames
  x = layer_norm(x, sd['consensus.mlp_head.0.weight'], sd['consensus.mlp_head.0.bias'], 1e-5)
  x = gelu(linear(x, sd, 'consensus.mlp_head.1'))
  return linear(x, sd, 'consensus.mlp_head.4')


# ----------------------------------------------------------------------------------------------
# Random weights under the official names (what the tests write as checkpoint files)
# ----------------------------------------------------------------------------------------------

def _linear_weights(rng, sd, name, d_in, d_out):
  sd[name + '.weight'] = rng.normal(0, 1.0 / np.sqrt(d_in), (d_out, d_in)).astype(np.float32)
  sd[name + '.bias'] = rng.normal(0, 0.1, (d_out,)).astype(np.float32)


def _norm_weights(rng, sd, name, dim):
  sd[name + '.weight'] = (1.0 + rng.normal(0, 0.1, (dim,))).astype(np.float32)
  sd[name + '.bias'] = rng.normal(0, 0.1, (dim,)).astype(np.float32)


def random_timm_vit(rng, *, hidden, layers, heads, mlp, patch, image, classes, pre_logits=False):
  """A timm VisionTransformer state dict (the LAPS backbone's names) with random values."""
  del heads  # the fused qkv does not depend on it
  sd = {}
  sd['patch_embed.proj.weight'] = rng.normal(0, 1.0 / np.sqrt(3 * patch * patch),
                                             (hidden, 3, patch, patch)).astype(np.float32)
  sd['patch_embed.proj.bias'] = rng.normal(0, 0.1, (hidden,)).astype(np.float32)
  sd['cls_token'] = rng.normal(0, 0.5, (1, 1, hidden)).astype(np.float32)
  sd['pos_embed'] = rng.normal(0, 0.5, (1, 1 + (image // patch) ** 2, hidden)).astype(np.float32)
  for i in range(layers):
    pre = f'blocks.{i}.'
    _norm_weights(rng, sd, pre + 'norm1', hidden)
    _linear_weights(rng, sd, pre + 'attn.qkv', hidden, 3 * hidden)
    _linear_weights(rng, sd, pre + 'attn.proj', hidden, hidden)
    _norm_weights(rng, sd, pre + 'norm2', hidden)
    _linear_weights(rng, sd, pre + 'mlp.fc1', hidden, mlp)
    _linear_weights(rng, sd, pre + 'mlp.fc2', mlp, hidden)
  _norm_weights(rng, sd, 'norm', hidden)
  if pre_logits:
    _linear_weights(rng, sd, 'pre_logits.fc', hidden, hidden)
  _linear_weights(rng, sd, 'head', hidden, classes)
  return sd


def random_lvt(rng, *, hidden, layers, heads, mlp, patch, classes, head_mlp, slots, gates, new_fc=True):
  """An official LVT (XVIT) state dict with random values. gates: 'two' (q_gate, k_gate), 'shared'
  (pgate) or None."""
  d = hidden // heads
  sd = {}
  sd['base_model.patch_embed.proj.weight'] = rng.normal(0, 1.0 / np.sqrt(3 * patch * patch),
                                                        (hidden, 3, patch, patch)).astype(np.float32)
  sd['base_model.patch_embed.proj.bias'] = rng.normal(0, 0.1, (hidden,)).astype(np.float32)
  _norm_weights(rng, sd, 'base_model.patch_embed.norm', hidden)
  sd['base_model.temp_embed'] = rng.normal(0, 0.5, (1, slots, 1, hidden)).astype(np.float32)
  for i in range(layers):
    pre = f'base_model.blocks.{i}.'
    for norm in ('temporal_norm1', 'norm1', 'norm2'):
      _norm_weights(rng, sd, pre + norm, hidden)
    for attn in ('temporal_attn', 'attn'):
      _linear_weights(rng, sd, f'{pre}{attn}.qkv', hidden, 3 * hidden)
      _linear_weights(rng, sd, f'{pre}{attn}.proj', hidden, hidden)
      for gate in {'two': ('q_gate', 'k_gate'), 'shared': ('pgate',), None: ()}[gates]:
        _linear_weights(rng, sd, f'{pre}{attn}.{gate}', 3 * d, d)
    _linear_weights(rng, sd, pre + 'mlp.fc1', hidden, mlp)
    sd[pre + 'mlp.dwconv.dwconv.weight'] = rng.normal(0, 1.0 / 3, (mlp, 1, 3, 3)).astype(np.float32)
    sd[pre + 'mlp.dwconv.dwconv.bias'] = rng.normal(0, 0.1, (mlp,)).astype(np.float32)
    _linear_weights(rng, sd, pre + 'mlp.fc2', mlp, hidden)
  _norm_weights(rng, sd, 'base_model.norm', hidden)
  _norm_weights(rng, sd, 'consensus.mlp_head.0', hidden)
  _linear_weights(rng, sd, 'consensus.mlp_head.1', hidden, head_mlp)
  _linear_weights(rng, sd, 'consensus.mlp_head.4', head_mlp, classes)
  if new_fc:
    _linear_weights(rng, sd, 'new_fc', hidden, classes)
  return sd


def timm_to_google_npz(sd, num_heads):
  """The same ViT under Google's Flax names (the inverse of timm's `_load_weights` for .npz)."""
  c = sd['cls_token'].shape[-1]
  d = c // num_heads
  out = {
      'embedding/kernel': sd['patch_embed.proj.weight'].transpose(2, 3, 1, 0),
      'embedding/bias': sd['patch_embed.proj.bias'],
      'cls': sd['cls_token'],
      'Transformer/posembed_input/pos_embedding': sd['pos_embed'],
      'Transformer/encoder_norm/scale': sd['norm.weight'],
      'Transformer/encoder_norm/bias': sd['norm.bias'],
  }
  depth = len({k.split('.')[1] for k in sd if k.startswith('blocks.')})
  for i in range(depth):
    pre, blk = f'blocks.{i}.', f'Transformer/encoderblock_{i}/'
    mha = blk + 'MultiHeadDotProductAttention_1/'
    out[blk + 'LayerNorm_0/scale'], out[blk + 'LayerNorm_0/bias'] = sd[pre + 'norm1.weight'], sd[pre + 'norm1.bias']
    out[blk + 'LayerNorm_2/scale'], out[blk + 'LayerNorm_2/bias'] = sd[pre + 'norm2.weight'], sd[pre + 'norm2.bias']
    w, bias = sd[pre + 'attn.qkv.weight'], sd[pre + 'attn.qkv.bias']
    for j, part in enumerate(('query', 'key', 'value')):
      out[f'{mha}{part}/kernel'] = w[j * c:(j + 1) * c].T.reshape(c, num_heads, d)
      out[f'{mha}{part}/bias'] = bias[j * c:(j + 1) * c].reshape(num_heads, d)
    out[mha + 'out/kernel'] = sd[pre + 'attn.proj.weight'].T.reshape(num_heads, d, c)
    out[mha + 'out/bias'] = sd[pre + 'attn.proj.bias']
    for j, fc in enumerate(('fc1', 'fc2')):
      out[f'{blk}MlpBlock_3/Dense_{j}/kernel'] = sd[f'{pre}mlp.{fc}.weight'].T
      out[f'{blk}MlpBlock_3/Dense_{j}/bias'] = sd[f'{pre}mlp.{fc}.bias']
  if 'pre_logits.fc.weight' in sd:
    out['pre_logits/kernel'], out['pre_logits/bias'] = sd['pre_logits.fc.weight'].T, sd['pre_logits.fc.bias']
  out['head/kernel'], out['head/bias'] = sd['head.weight'].T, sd['head.bias']
  return out
