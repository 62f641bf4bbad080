"""LVT: Linear Video Transformer with feature fixation and neighbourhood association (Lu et al. 2022).

Backbone (docs/DESIGN.md 1.2): overlapping patch embedding per frame (conv p×p, stride `patch_stride`,
zero padding `patch_padding`; 16/14/8 gives a 17×17 grid at 224²) -> LayerNorm (eps 1e-5) -> a
learned temporal embedding (1, S, 1, C), zero-initialised, frame t taking slot t mod S. No cls
token, no spatial position embedding. Each block (TimeSformer order) on tokens (B, T, N, C):
  x += TemporalAttn(temporal_norm1(x))   linear attention over T per location; k, v spatially shifted
  x += SpatialAttn(norm1(x))              linear attention over N per frame; k, v temporally shifted
  x += MixFFN(norm2(x))                  fc1 -> depthwise 3×3 conv on the frame grid -> GELU -> fc2
Head (the official VVTHead): final norm on every token -> dropout -> mean over N -> mean over T ->
LayerNorm (eps 1e-5) -> Linear(C -> head_mlp_dim) -> GELU -> dropout -> Linear(-> classes).
"""
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from laps_jax.models.feature_fixation import FeatureFixation
from laps_jax.models.layers import (DropPath, LayerNorm, Linear, apply_block, compute_dtype,
                                    depthwise_conv, drop_path_rates, gelu, remat_policy,
                                    sharded_param, trunc_normal_02, zeros)
from laps_jax.models.linear_attention import kernel_feature_map, linear_attention
from laps_jax.models.neighbourhood_shift import spatial_shift, temporal_shift
from laps_jax.models.registry import SizeVariants, register
from laps_jax.models.softmax_attention import HeadsOutProjection, QKVProjection

BLOCK_NORM_EPS = 1e-6
EMBED_AND_HEAD_NORM_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class LVTConfig(SizeVariants):
  """Hyper-parameters of LVT; the fields are exactly the `config.model` keys of name='lvt'.

  Sizes: 'base' is the published backbone (width 512, 12 layers, 8 heads, MLP 2048, overlapping
  16×16 patches at stride 14 with padding 8: a 17×17 grid at 224², VVT head 768); 'Mu' is the CPU
  demo model. The defaults are the Kinetics-400 setting (two gates, temporal shift div 8).
  `temporal_embed_frames` / `shift_segment_frames` = None (a placeholder) follow num_frames: one
  embedding slot per frame and one shift segment per clip (the official Kinetics checkpoints
  need 8 / 8 instead: set them to load those).
  """
  SIZES = {
      'Mu': dict(hidden_size=64, num_layers=4, num_heads=4, mlp_dim=128, patch_size=8, patch_stride=8,
                 patch_padding=0, head_mlp_dim=64),
      'base': dict(hidden_size=512, num_layers=12, num_heads=8, mlp_dim=2048, patch_size=16,
                   patch_stride=14, patch_padding=8, head_mlp_dim=768),
  }

  name: str = 'lvt'
  image_size: int = 224
  patch_size: int = 16
  hidden_size: int = 512
  num_layers: int = 12
  num_heads: int = 8
  mlp_dim: int = 2048
  num_frames: int = 16
  num_classes: int = 400
  dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  attention_impl: str = 'auto'  # unused by linear attention; kept so every family takes it
  dtype: str = 'float32'
  remat: bool | str | None = None  # None/'none'/False | 'full'/True | 'dots' | ... (layers.remat_policy)
  patch_stride: int = 14
  patch_padding: int = 8
  fixation: bool = True  # feature fixation (the gates); False = plain linear attention
  shared_gate: bool = False  # one gate for q and k (SSv2, K600) or two (K400)
  temporal_shift_div: int = 8  # k/v temporal shift in the spatial pass (0 = off)
  spatial_shift: bool = True  # k/v spatial shift in the temporal pass
  head_mlp_dim: int = 768
  head_dropout_rate: float = 0.0
  # Dropout on the gated features q̂, k̂ (independent masks), as the official LinearAttention's
  # attn_drop after its gates; the official rate (XVIT.BACKBONE.DROP_ATTN_RATE) is 0 in every
  # released config. 0 adds no module (and so no state).
  attention_dropout_rate: float = 0.0
  temporal_embed_frames: int | None = None  # None = num_frames
  shift_segment_frames: int | None = None  # None = num_frames

  def __post_init__(self):
    if self.name != 'lvt':
      raise ValueError(f"LVTConfig.name must be 'lvt', got {self.name!r}")
    if self.hidden_size % self.num_heads:
      raise ValueError(f'model.hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}')
    remat_policy(self.remat)  # a clear error for an unknown policy name
    if self.temporal_shift_div < 0:
      raise ValueError(f'model.temporal_shift_div must be >= 0, got {self.temporal_shift_div}')
    resolved = self.resolved()
    for key in ('temporal_embed_frames', 'shift_segment_frames'):
      if getattr(resolved, key) < 1:
        raise ValueError(f'model.{key} must be >= 1, got {getattr(resolved, key)}')
    if self.num_frames % resolved.shift_segment_frames:
      raise ValueError(f'model.shift_segment_frames={resolved.shift_segment_frames} does not divide '
                       f'num_frames={self.num_frames}')

  def resolved(self) -> 'LVTConfig':
    """The placeholders (None) replaced by num_frames. Kept unresolved in the config itself, so
    that one flag (--config.model.num_frames=8) still moves them."""
    changes = {key: self.num_frames for key in ('temporal_embed_frames', 'shift_segment_frames')
               if getattr(self, key) is None}
    return dataclasses.replace(self, **changes) if changes else self


def patch_grid_size(image_size: int, patch_size: int, stride: int, padding: int) -> int:
  """Side of the token grid of the overlapping patch embedding (17 for 224 / 16 / 14 / 8)."""
  return (image_size + 2 * padding - patch_size) // stride + 1


class OverlappingPatchEmbedding(nnx.Module):
  """Conv p×p (cross-correlation, bias), stride s, zero padding; (B, H, W, 3) -> (B, Hg·Wg, C), row-major."""

  def __init__(self, patch_size: int, stride: int, padding: int, hidden_size: int, *, dtype, rngs: nnx.Rngs):
    self.stride = stride
    self.padding = padding
    self.dtype = dtype
    self.kernel = sharded_param(rngs, trunc_normal_02, (patch_size, patch_size, 3, hidden_size),
                                ('patch', None, None, 'embed'))
    self.bias = sharded_param(rngs, zeros, (hidden_size,), ('embed',))

  def __call__(self, images: jax.Array) -> jax.Array:
    y = jax.lax.conv_general_dilated(
        images.astype(self.dtype), self.kernel[...].astype(self.dtype), (self.stride, self.stride),
        [(self.padding, self.padding)] * 2, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    y = y + self.bias[...].astype(self.dtype)
    return y.reshape(y.shape[0], -1, y.shape[-1])


class LinearVideoAttention(nnx.Module):
  """One pass of LVT attention on x (B, T, N, C) -> (B, T, N, C).

  over='space': sequences are each frame's N tokens; k, v are first shifted along time
  (`temporal_shift_div`, 0 = off). over='time': sequences are each location's T tokens; k, v are
  first shifted on the token grid (`spatial_shift`). Then φ, optional feature fixation, linear
  attention per head, and the output projection.
  """

  def __init__(self, hidden_size: int, num_heads: int, *, over: str, grid_size: tuple[int, int],
               temporal_shift_div: int, shift_segment_frames: int, spatial_shift: bool, fixation: bool,
               shared_gate: bool, dropout_rate: float, dtype, rngs: nnx.Rngs,
               attention_dropout_rate: float = 0.0):
    c, heads = hidden_size, num_heads
    self.over = over
    self.grid_size = grid_size
    self.temporal_shift_div = temporal_shift_div if over == 'space' else 0
    self.shift_segment_frames = shift_segment_frames
    self.spatial_shift = bool(spatial_shift) and over == 'time'
    self.qkv = QKVProjection(c, heads, dtype=dtype, rngs=rngs)
    self.fixation = (FeatureFixation(c // heads, shared_gate=shared_gate, dtype=dtype, rngs=rngs)
                     if fixation else None)
    self.proj = HeadsOutProjection(heads, c // heads, c, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.gated_dropout = (nnx.Dropout(attention_dropout_rate, rngs=rngs)
                          if fixation and attention_dropout_rate > 0 else None)

  def _shift_kv(self, z: jax.Array) -> jax.Array:
    """z (B, T, N, H, d): the neighbourhood shift over the merged head-major channels."""
    b, t, n, h, d = z.shape
    merged = z.reshape(b, t, n, h * d)
    if self.temporal_shift_div:
      merged = temporal_shift(merged, self.temporal_shift_div, self.shift_segment_frames)
    if self.spatial_shift:
      merged = spatial_shift(merged, self.grid_size)
    return merged.reshape(b, t, n, h, d)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    b, t, n, _ = x.shape
    q, k, v = self.qkv(x)  # (B, T, N, H, d)
    k, v = self._shift_kv(k), self._shift_kv(v)
    h, d = q.shape[-2:]
    if self.over == 'space':
      to_seq = lambda z: z.reshape(b * t, n, h, d)
      from_seq = lambda z: z.reshape(b, t, n, h, d)
    else:
      to_seq = lambda z: z.transpose(0, 2, 1, 3, 4).reshape(b * n, t, h, d)
      from_seq = lambda z: z.reshape(b, n, t, h, d).transpose(0, 2, 1, 3, 4)
    q, k, v = to_seq(q), to_seq(k), to_seq(v)
    q_features, k_features = kernel_feature_map(q), kernel_feature_map(k)
    if self.fixation is not None:
      q_features, k_features = self.fixation(q_features, k_features, v)
      if self.gated_dropout is not None:  # the official attn_drop on the gated q̂, k̂
        q_features = self.gated_dropout(q_features, deterministic=not train)
        k_features = self.gated_dropout(k_features, deterministic=not train)
    o = from_seq(linear_attention(q_features, k_features, v))
    return self.dropout(self.proj(o), deterministic=not train)


class MixFFN(nnx.Module):
  """fc1 (C -> M) -> depthwise 3×3 conv (bias, zero pad 1) on each frame's grid -> GELU -> fc2.

  (B, T, N, C) -> (B, T, N, C). No activation between fc1 and the conv (as the official code).
  """

  def __init__(self, hidden_size: int, mlp_dim: int, grid_size: tuple[int, int], *, dropout_rate: float,
               dtype, rngs: nnx.Rngs):
    self.grid_size = grid_size
    self.dtype = dtype
    self.fc1 = Linear(hidden_size, mlp_dim, axes=('embed', 'mlp'), dtype=dtype, rngs=rngs)
    self.dwconv_kernel = sharded_param(rngs, trunc_normal_02, (3, 3, 1, mlp_dim), (None, None, None, 'mlp'))
    self.dwconv_bias = sharded_param(rngs, zeros, (mlp_dim,), ('mlp',))
    self.fc2 = Linear(mlp_dim, hidden_size, axes=('mlp', 'embed'), dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    b, t, n, _ = x.shape
    hg, wg = self.grid_size
    y = self.fc1(x).reshape(b * t, hg, wg, -1)
    y = depthwise_conv(y, self.dwconv_kernel[...].astype(self.dtype), padding=1)
    y = gelu(y + self.dwconv_bias[...].astype(self.dtype)).reshape(b, t, n, -1)
    y = self.dropout(y, deterministic=not train)
    return self.dropout(self.fc2(y), deterministic=not train)


class LVTBlock(nnx.Module):
  """Divided linear-attention block: temporal, then spatial, then Mix-FFN (all pre-LN, eps 1e-6)."""

  def __init__(self, config: LVTConfig, grid_size: tuple[int, int], *, drop_path_rate: float, dtype,
               rngs: nnx.Rngs):
    c = config.hidden_size
    attention = dict(grid_size=grid_size, temporal_shift_div=config.temporal_shift_div,
                     shift_segment_frames=config.shift_segment_frames, spatial_shift=config.spatial_shift,
                     fixation=config.fixation, shared_gate=config.shared_gate,
                     dropout_rate=config.dropout_rate, dtype=dtype, rngs=rngs,
                     attention_dropout_rate=config.attention_dropout_rate)
    self.temporal_norm1 = LayerNorm(c, epsilon=BLOCK_NORM_EPS, rngs=rngs)
    self.temporal_attn = LinearVideoAttention(c, config.num_heads, over='time', **attention)
    self.norm1 = LayerNorm(c, epsilon=BLOCK_NORM_EPS, rngs=rngs)
    self.attn = LinearVideoAttention(c, config.num_heads, over='space', **attention)
    self.norm2 = LayerNorm(c, epsilon=BLOCK_NORM_EPS, rngs=rngs)
    self.mlp = MixFFN(c, config.mlp_dim, grid_size, dropout_rate=config.dropout_rate, dtype=dtype, rngs=rngs)
    self.drop_path = DropPath(drop_path_rate, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = x + self.drop_path(self.temporal_attn(self.temporal_norm1(x), train), train)
    x = x + self.drop_path(self.attn(self.norm1(x), train), train)
    return x + self.drop_path(self.mlp(self.norm2(x), train), train)


class VVTHead(nnx.Module):
  """(B, T, C) frame features -> logits: mean over T -> LayerNorm(1e-5) -> hidden -> GELU -> dropout -> out."""

  def __init__(self, hidden_size: int, head_mlp_dim: int, num_classes: int, *, dropout_rate: float,
               dtype, rngs: nnx.Rngs):
    self.norm = LayerNorm(hidden_size, epsilon=EMBED_AND_HEAD_NORM_EPS, rngs=rngs)
    self.hidden = Linear(hidden_size, head_mlp_dim, axes=('embed', 'mlp'), dtype=dtype, rngs=rngs)
    self.out = Linear(head_mlp_dim, num_classes, axes=('mlp', 'classes'), dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

  def __call__(self, frame_features: jax.Array, train: bool) -> jax.Array:
    x = self.norm(frame_features.mean(axis=1))
    x = self.dropout(gelu(self.hidden(x)), deterministic=not train)
    return self.out(x)


@register('lvt', LVTConfig, default_frame_stride=16)
class LVT(nnx.Module):
  """Linear Video Transformer. __call__(videos (B, T, H, W, 3), train) -> logits float32 (B, K)."""

  def __init__(self, config: LVTConfig, rngs: nnx.Rngs):
    config = config.resolved()
    c = config.hidden_size
    dtype = compute_dtype(config.dtype)
    side = patch_grid_size(config.image_size, config.patch_size, config.patch_stride, config.patch_padding)
    self.grid_size = (side, side)
    self.num_frames = config.num_frames
    self.remat = config.remat
    self.dtype = dtype
    self.patch_embed = OverlappingPatchEmbedding(config.patch_size, config.patch_stride, config.patch_padding,
                                                 c, dtype=dtype, rngs=rngs)
    self.patch_norm = LayerNorm(c, epsilon=EMBED_AND_HEAD_NORM_EPS, rngs=rngs)
    self.temporal_embed = sharded_param(rngs, zeros, (1, config.temporal_embed_frames, 1, c),
                                        (None, 'time', None, 'embed'))
    rates = drop_path_rates(config.drop_path_rate, config.num_layers)
    self.blocks = nnx.List([LVTBlock(config, self.grid_size, drop_path_rate=r, dtype=dtype, rngs=rngs)
                            for r in rates])
    self.norm = LayerNorm(c, epsilon=BLOCK_NORM_EPS, rngs=rngs)
    self.token_dropout = nnx.Dropout(config.head_dropout_rate, rngs=rngs)
    self.head = VVTHead(c, config.head_mlp_dim, config.num_classes, dropout_rate=config.head_dropout_rate,
                        dtype=dtype, rngs=rngs)

  def temporal_embedding(self, num_frames: int) -> jax.Array:
    """(1, T, 1, C): slot t mod S for frame t (S = temporal_embed_frames)."""
    slots = self.temporal_embed[...]
    reps = -(-num_frames // slots.shape[1])
    return jnp.tile(slots, (1, reps, 1, 1))[:, :num_frames]

  def __call__(self, videos: jax.Array, train: bool = False) -> jax.Array:
    b, t = videos.shape[:2]
    if t != self.num_frames:
      raise ValueError(f'the model was built for num_frames={self.num_frames}, got a clip of {t} frames')
    x = self.patch_norm(self.patch_embed(videos.reshape(b * t, *videos.shape[2:])))
    x = x.reshape(b, t, *x.shape[1:]) + self.temporal_embedding(t).astype(self.dtype)  # (B, T, N, C)
    for block in self.blocks:
      x = apply_block(block, x, train, self.remat)
    x = self.token_dropout(self.norm(x), deterministic=not train)
    return self.head(x.mean(axis=2), train).astype(jnp.float32)
