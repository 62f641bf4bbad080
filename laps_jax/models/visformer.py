"""Visformer-S LAPS: the LAPS paper's main backbone (official code: VideoNetworks/LAPS-transformer,
`visformer/models_LAPS.py` wrapped by `model/video_net.py`'s `VideoNet`).

Every frame of a clip goes through the 2D Visformer; the frames meet only inside the attention of
stages 2 and 3 (Leap Attention, Periodic Shift); the per-frame logits are averaged over T.
Channels-last throughout: frames are (B·T, H, W, C).

  stem      7×7/2 conv (no bias) -> BatchNorm -> ReLU                         (B·T, S/2, S/2, stem)
  stage 1   4×4 patch conv (bias) -> BatchNorm -> + pos_embed1 -> dropout     (B·T, S/8, S/8, C/2)
            (the later grids round down: 360² gives 45, 22, 11 as the official code)
            7 conv blocks: x += MLP(BN(x)), MLP = 1×1 conv (C/2 -> C) -> GELU -> grouped 3×3 conv
            (8 groups) -> GELU -> 1×1 conv (C -> C/2); no attention; no bias anywhere
  stage 2   2×2 patch conv -> BatchNorm -> + pos_embed2 -> dropout            (B·T, S/16, S/16, C)
            4 blocks: x += Attn(BN(x)); x += MLP(BN(x)), MLP = 1×1 conv C -> 4C -> GELU -> 1×1
  stage 3   the same at 2C                                                    (B·T, S/32, S/32, 2C)
  head      BatchNorm -> global average pool -> Linear -> per-frame logits -> mean over T

Attention (stages 2 and 3, 6 heads, head_dim = width / 6): qkv and proj are 1×1 convs without
bias; the qkv output channels read as (3, heads, head_dim) (q, k, v, then head-major); tokens are
each frame's H·W positions, row-major. The scale is split, head_dim**-0.25 on q and on k (the
official code's guard against fp16 overflow; the product is the usual head_dim**-0.5). In block k
of a stage, `leap_levels[stage][k % len]` chooses the tokens that attend together: None = one
frame (the 2D Visformer), l >= 1 = Leap Attention over frame pairs a leap T // 2**l apart
(leap_attention.py). Then the Periodic Shift (periodic_shift.py, fold = head_dim // shift_div per
direction) on the attention output, per head, before proj; shift_div 0 = off.
GELU is exact (erf); BatchNorm is PyTorch's (batch_norm.py: eps 1e-5, momentum 0.1, batch
statistics over the global batch of frames in training, running averages in evaluation).

The official ablations are settings of the one name 'visformer' (all share one parameter tree):
  2D (models.py)                  leap_levels=((None,), (None,)), shift_div=0
  P-Shift only (models_periodic_shift.py)   leap_levels=((None,), (None,)), shift_div=4
  LA only (models_LAPS.py, FOLD_DIV 0)      shift_div=0
  LAPS (models_LAPS.py)           leap_levels=((1, 2, 3, 1), (2, 3, 1, 2)), shift_div=4
  Base3D (models_base3D.py)       temporal_attention='joint', leap_levels=((None,), (None,)),
                                  shift_div=0: all T·H·W tokens of the clip attend together
  PlainShift (models_plain_shift.py)  shift_kind='plain', leap_levels=((None,), (None,)),
                                  shift_div=4: one shift over width // 4 channels of the merged
                                  heads (not per head)
(Base3D and PlainShift scale q·kᵀ by head_dim**-0.5 in one go in the official code: the same
product as the split scale used here for every setting.)
"""
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from laps_jax.models.batch_norm import BatchNorm
from laps_jax.models.layers import (DropPath, Linear, apply_block, at_use, compute_dtype, drop_path_rates,
                                    gelu, remat_policy, sharded_param, trunc_normal_02, zeros)
from laps_jax.models.leap_attention import leap_attention, leap_step
from laps_jax.models.periodic_shift import periodic_shift
from laps_jax.models.registry import SizeVariants, register
from laps_jax.models.softmax_attention import ATTENTION_IMPLS, attend

LAPS_LEAP_LEVELS = ((1, 2, 3, 1), (2, 3, 1, 2))  # visformer_LAPS_8x8.yaml: S2_SKIP_LEVEL, S3_SKIP_LEVEL
LAPS_SHIFT_DIV = 4  # FOLD_DIV
TEMPORAL_ATTENTION = ('leap', 'joint')
SHIFT_KINDS = ('periodic', 'plain')


@dataclasses.dataclass(frozen=True)
class VisformerConfig(SizeVariants):
  """Hyper-parameters of the Visformer video family; the fields are exactly the `config.model` keys.

  `VisformerConfig.variant('S', num_frames=8)`: Visformer-S (the official `visformer_small`)
  with LAPS's leap levels and shift; 'Ti' is `visformer_tiny`; 'Mu' a CPU-sized demo model.
  """
  SIZES = {
      'Mu': dict(stem_channels=8, hidden_size=32, stage_depths=(2, 2, 2), num_heads=2),  # CPU demo
      'Ti': dict(stem_channels=16, hidden_size=192, stage_depths=(7, 4, 4), num_heads=3),
      'S': dict(stem_channels=32, hidden_size=384, stage_depths=(7, 4, 4), num_heads=6),
  }

  name: str = 'visformer'
  image_size: int = 224
  num_frames: int = 8
  num_classes: int = 400
  stem_channels: int = 32
  hidden_size: int = 384  # the stage-2 width C; stage 1 is C/2, stage 3 is 2C
  stage_depths: tuple[int, int, int] = (7, 4, 4)
  num_heads: int = 6
  mlp_ratio: float = 4.0  # stages 2 and 3 (stage 1's conv MLP is 2x wide, as the official code)
  conv_groups: int = 8  # groups of stage 1's 3×3 conv
  leap_levels: tuple[tuple[int | None, ...], tuple[int | None, ...]] = LAPS_LEAP_LEVELS
  shift_div: int = LAPS_SHIFT_DIV  # 0 = no shift
  temporal_attention: str = 'leap'  # 'leap' (leap_levels decide) | 'joint' (Base3D ablation)
  shift_kind: str = 'periodic'  # 'periodic' (per head, LAPS) | 'plain' (PlainShift ablation)
  dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  attention_impl: str = 'auto'  # 'auto' | 'xla' | 'cudnn'
  dtype: str = 'float32'  # compute dtype; parameters and BatchNorm statistics stay float32
  remat: bool | str | None = None  # None/'none'/False | 'full'/True | 'dots' | ... (layers.remat_policy)

  def __post_init__(self):
    if self.name != 'visformer':
      raise ValueError(f"VisformerConfig.name must be 'visformer', got {self.name!r}")
    if len(self.stage_depths) != 3:
      raise ValueError(f'model.stage_depths must have 3 entries, got {self.stage_depths}')
    if self.image_size % 8 or self.image_size < 32:
      raise ValueError(f'model.image_size {self.image_size} must be divisible by 8 (stem /2, patch 4) '
                       'and at least 32 (a 1x1 grid in stage 3)')
    if self.hidden_size % 2 or self.hidden_size % self.num_heads:
      raise ValueError(f'model.hidden_size {self.hidden_size} must be even and divisible by '
                       f'num_heads {self.num_heads}')
    if len(self.leap_levels) != 2 or any(len(stage) == 0 for stage in self.leap_levels):
      raise ValueError('model.leap_levels must be a pair of non-empty per-stage tuples (stages 2 and 3), '
                       f'e.g. ((1, 2, 3, 1), (2, 3, 1, 2)) or ((None,), (None,)); got {self.leap_levels}')
    for stage in self.leap_levels:
      for level in stage:
        if level is not None:
          leap_step(self.num_frames, level)  # a clear error unless 2**level divides T
    if self.shift_div < 0:
      raise ValueError(f'model.shift_div must be >= 0, got {self.shift_div}')
    if self.temporal_attention not in TEMPORAL_ATTENTION:
      raise ValueError(f'model.temporal_attention must be one of {TEMPORAL_ATTENTION}, got {self.temporal_attention!r}')
    if self.temporal_attention == 'joint' and any(l is not None for s in self.leap_levels for l in s):
      raise ValueError("model.temporal_attention='joint' (Base3D) takes no leap levels: set "
                       'leap_levels=((None,), (None,))')
    if self.shift_kind not in SHIFT_KINDS:
      raise ValueError(f'model.shift_kind must be one of {SHIFT_KINDS}, got {self.shift_kind!r}')
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f'model.attention_impl must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}')
    remat_policy(self.remat)  # a clear error for an unknown policy name


# ---------------------------------------------------------------------------------------------
# Initialisers: the official `conv_init=True` (Kaiming normal, fan_out, ReLU gain) for convs.
# ---------------------------------------------------------------------------------------------
conv_kaiming = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')
qkv_kaiming = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal', in_axis=0, out_axis=(1, 2, 3))
proj_kaiming = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal', in_axis=(0, 1), out_axis=2)


def conv2d(x: jax.Array, kernel: jax.Array, *, stride: int, padding: int, groups: int = 1) -> jax.Array:
  """NHWC cross-correlation with an HWIO kernel (PyTorch's nn.Conv2d with zero padding)."""
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(stride, stride), padding=((padding, padding), (padding, padding)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups)


def pointwise(x: jax.Array, kernel: nnx.Param, dtype) -> jax.Array:
  """A 1×1 conv without bias: x (..., C_in) @ kernel (C_in, C_out), as one 2-D matmul (layers.Linear)."""
  w = at_use(kernel, dtype)
  return (x.reshape(-1, x.shape[-1]).astype(dtype) @ w).reshape(*x.shape[:-1], w.shape[-1])


class Stem(nnx.Module):
  """(N, S, S, 3) -> (N, S/2, S/2, stem): 7×7/2 conv, padding 3, no bias -> BatchNorm -> ReLU."""

  def __init__(self, channels: int, *, dtype, rngs: nnx.Rngs):
    self.dtype = dtype
    self.kernel = sharded_param(rngs, conv_kaiming, (7, 7, 3, channels), ('patch', None, None, None))
    self.bn = BatchNorm(channels, axis_name=None, rngs=rngs)

  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    x = conv2d(images.astype(self.dtype), at_use(self.kernel, self.dtype), stride=2, padding=3)
    return jax.nn.relu(self.bn(x, train))


class PatchEmbed(nnx.Module):
  """(N, H, W, C_in) -> (N, H/p, W/p, C_out): p×p/p conv with bias -> BatchNorm."""

  def __init__(self, patch_size: int, in_channels: int, out_channels: int, *, dtype, rngs: nnx.Rngs):
    self.patch_size = patch_size
    self.dtype = dtype
    # in channels unsharded: one mesh axis ('embed' -> fsdp) per kernel
    self.kernel = sharded_param(rngs, conv_kaiming, (patch_size, patch_size, in_channels, out_channels),
                                ('patch', None, None, 'embed'))
    self.bias = sharded_param(rngs, zeros, (out_channels,), ('embed',))
    self.norm = BatchNorm(out_channels, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    p = self.patch_size
    x = conv2d(x.astype(self.dtype), at_use(self.kernel, self.dtype), stride=p, padding=0)
    return self.norm(x + at_use(self.bias, self.dtype), train)


class ConvMlp(nnx.Module):
  """(N, H, W, C) -> (N, H, W, C): 1×1 conv (C -> hidden) -> GELU -> dropout [-> grouped 3×3 conv
  -> GELU] -> 1×1 conv (hidden -> C) -> dropout; no biases (the official `Mlp`)."""

  def __init__(self, width: int, hidden: int, *, spatial_groups: int | None, dropout_rate: float,
               dtype, rngs: nnx.Rngs):
    self.dtype = dtype
    self.spatial_groups = spatial_groups
    self.conv1 = sharded_param(rngs, conv_kaiming, (width, hidden), ('embed', 'mlp'))
    if spatial_groups is not None:
      if hidden % spatial_groups:
        raise ValueError(f'conv MLP width {hidden} is not divisible by conv_groups {spatial_groups}')
      self.conv2 = sharded_param(rngs, conv_kaiming, (3, 3, hidden // spatial_groups, hidden),
                                 (None, None, None, 'mlp'))
    else:
      self.conv2 = None
    self.conv3 = sharded_param(rngs, conv_kaiming, (hidden, width), ('mlp', 'embed'))
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = self.dropout(gelu(pointwise(x, self.conv1, self.dtype)), deterministic=not train)
    if self.conv2 is not None:
      x = gelu(conv2d(x, at_use(self.conv2, self.dtype), stride=1, padding=1, groups=self.spatial_groups))
    return self.dropout(pointwise(x, self.conv3, self.dtype), deterministic=not train)


def attend_prescaled(q: jax.Array, k: jax.Array, v: jax.Array, *, implementation: str,
                     pattern: str) -> jax.Array:
  """Softmax attention (softmax_attention.attend) of already scaled q and k: scale 1.
  (batch, length, H, d) -> same."""
  with jax.named_scope('attention_matmuls'):  # experiments/flops_params.py counts these apart
    return attend(q, k, v, implementation=implementation, pattern=pattern, scale=1.0)


class VideoConvAttention(nnx.Module):
  """Visformer attention with 1×1-conv qkv / proj (no bias) over the frames of a clip.

  x (B·T, H, W, C) -> (B·T, H, W, C). qkv kernel (C, 3, heads, d); proj kernel (heads, d, C).
  `leap_level` None: per-frame attention; l: Leap Attention. `joint`: all T·H·W tokens (Base3D).
  """

  def __init__(self, width: int, num_heads: int, *, num_frames: int, leap_level: int | None,
               joint: bool, shift_div: int, shift_kind: str, attention_impl: str,
               dropout_rate: float, dtype, rngs: nnx.Rngs):
    head_dim = width // num_heads
    self.num_frames = num_frames
    self.leap_level = leap_level
    self.joint = joint
    self.shift_div = shift_div
    self.shift_kind = shift_kind
    self.attention_impl = attention_impl
    self.qk_scale = head_dim ** -0.25
    self.dtype = dtype
    self.qkv = sharded_param(rngs, qkv_kaiming, (width, 3, num_heads, head_dim), ('embed', None, 'heads', 'kv'))
    self.proj = sharded_param(rngs, proj_kaiming, (num_heads, head_dim, width), ('heads', 'kv', 'embed'))
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    bt, hh, ww, c = x.shape
    t = self.num_frames
    b, n = bt // t, hh * ww
    kernel = at_use(self.qkv, self.dtype)  # (C, 3, heads, d): one (tokens, C) x (C, 3·heads·d) matmul
    qkv = x.reshape(-1, c).astype(self.dtype) @ kernel.reshape(c, -1)
    qkv = qkv.reshape(b, t, n, *kernel.shape[1:])  # (B, T, N, 3, heads, d), tokens row-major
    q, k, v = qkv[..., 0, :, :] * self.qk_scale, qkv[..., 1, :, :] * self.qk_scale, qkv[..., 2, :, :]
    heads, d = q.shape[-2:]
    pattern = 'joint' if self.joint else 'leap' if self.leap_level is not None else 'frame'
    attend_ = lambda q_, k_, v_: attend_prescaled(q_, k_, v_, implementation=self.attention_impl,
                                                  pattern=pattern)
    if self.joint:
      o = attend_(*(z.reshape(b, t * n, heads, d) for z in (q, k, v))).reshape(b, t, n, heads, d)
    elif self.leap_level is not None:
      o = leap_attention(q, k, v, self.leap_level, attend_)
    else:
      o = attend_(*(z.reshape(bt, n, heads, d) for z in (q, k, v))).reshape(b, t, n, heads, d)
    if self.shift_kind == 'plain':  # one shift over the merged (head-major) channels
      o = periodic_shift(o.reshape(b, t, n, 1, heads * d), self.shift_div).reshape(o.shape)
    else:
      o = periodic_shift(o, self.shift_div)
    proj = at_use(self.proj, self.dtype)  # (heads, d, C): head-major merge, one contracting dim
    y = o.reshape(-1, heads * d).astype(self.dtype) @ proj.reshape(heads * d, c)
    return self.dropout(y.reshape(bt, hh, ww, c), deterministic=not train)


class VisformerBlock(nnx.Module):
  """x (B·T, H, W, C): [x += drop_path(Attn(BN(x)))] ; x += drop_path(MLP(BN(x))).

  attention=None: stage 1's conv block (no attention, grouped 3×3 conv in the MLP)."""

  def __init__(self, width: int, mlp_hidden: int, *, attention: dict | None, spatial_groups: int | None,
               dropout_rate: float, drop_path_rate: float, dtype, rngs: nnx.Rngs):
    if attention is not None:
      self.norm1 = BatchNorm(width, rngs=rngs)
      self.attn = VideoConvAttention(width, dropout_rate=dropout_rate, dtype=dtype, rngs=rngs, **attention)
    else:
      self.norm1 = None
      self.attn = None
    self.norm2 = BatchNorm(width, rngs=rngs)
    self.mlp = ConvMlp(width, mlp_hidden, spatial_groups=spatial_groups, dropout_rate=dropout_rate,
                       dtype=dtype, rngs=rngs)
    self.drop_path = DropPath(drop_path_rate, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.attn is not None:
      x = x + self.drop_path(self.attn(self.norm1(x, train), train), train)
    return x + self.drop_path(self.mlp(self.norm2(x, train), train), train)


def stage_grids(image_size: int) -> tuple[int, int, int]:
  """Token-grid sides of stages 1-3: S/8, then halved by the 2×2 patch convs, rounding down as
  PyTorch's strided conv does (360 -> 45, 22, 11, the official 360² model)."""
  g1 = image_size // 8
  return g1, g1 // 2, g1 // 4


def stage1_mlp_hidden(width: int, conv_groups: int) -> int:
  """The official Mlp with spatial_conv: 2× the width (5/6× for conv_groups < 2, its 'net' setting)."""
  return width * 5 // 6 if conv_groups < 2 else width * 2


def stage_leap_levels(config: VisformerConfig, stage: int) -> list[int | None]:
  """The leap level of every block of stage `stage` (0: stage 2, 1: stage 3): levels[k % len]."""
  levels = tuple(config.leap_levels[stage])
  return [levels[k % len(levels)] for k in range(config.stage_depths[stage + 1])]


# The official LAPS Visformer video configs (visformer_*.yaml, MEAN/STD) normalise with these.
@register('visformer', VisformerConfig, default_frame_stride=8,
          default_mean=(0.486, 0.457, 0.407), default_std=(0.229, 0.224, 0.225))
class VideoVisformer(nnx.Module):
  """Visformer video classifier (name 'visformer'): `VideoNet` around the official backbone.

  __call__(videos (B, T, S, S, 3), train) -> logits float32 (B, num_classes), the mean of
  `frame_logits` (B, T, num_classes) over T. train=True uses (and updates) batch statistics.
  """

  def __init__(self, config: VisformerConfig, rngs: nnx.Rngs):
    c = config.hidden_size
    dtype = compute_dtype(config.dtype)
    s = config.image_size
    self.num_frames = config.num_frames
    self.remat = config.remat
    self.dtype = dtype
    self.stem = Stem(config.stem_channels, dtype=dtype, rngs=rngs)
    widths = (c // 2, c, 2 * c)
    grids = stage_grids(s)
    self.patch_embed1 = PatchEmbed(4, config.stem_channels, widths[0], dtype=dtype, rngs=rngs)
    self.patch_embed2 = PatchEmbed(2, widths[0], widths[1], dtype=dtype, rngs=rngs)
    self.patch_embed3 = PatchEmbed(2, widths[1], widths[2], dtype=dtype, rngs=rngs)
    self.pos_embed1, self.pos_embed2, self.pos_embed3 = (
        sharded_param(rngs, trunc_normal_02, (1, g, g, w), (None, None, None, 'embed'))
        for g, w in zip(grids, widths))
    self.pos_dropout = nnx.Dropout(config.dropout_rate, rngs=rngs)
    rates = drop_path_rates(config.drop_path_rate, sum(config.stage_depths))
    d1, d2, _ = config.stage_depths
    common = dict(dropout_rate=config.dropout_rate, dtype=dtype, rngs=rngs)
    self.stage1 = nnx.List([
        VisformerBlock(widths[0], stage1_mlp_hidden(widths[0], config.conv_groups), attention=None,
                       spatial_groups=config.conv_groups, drop_path_rate=rates[i], **common)
        for i in range(d1)])

    def attention_stage(stage: int, first: int):
      width = widths[stage + 1]
      return nnx.List([
          VisformerBlock(
              width, int(width * config.mlp_ratio), spatial_groups=None, drop_path_rate=rates[first + k],
              attention=dict(num_heads=config.num_heads, num_frames=config.num_frames, leap_level=level,
                             joint=config.temporal_attention == 'joint', shift_div=config.shift_div,
                             shift_kind=config.shift_kind, attention_impl=config.attention_impl),
              **common)
          for k, level in enumerate(stage_leap_levels(config, stage))])

    self.stage2 = attention_stage(0, d1)
    self.stage3 = attention_stage(1, d1 + d2)
    self.norm = BatchNorm(widths[2], rngs=rngs)
    self.head = Linear(widths[2], config.num_classes, axes=('embed', 'classes'), dtype=dtype, rngs=rngs)

  def _blocks(self, blocks, x: jax.Array, train: bool) -> jax.Array:
    for block in blocks:
      x = apply_block(block, x, train, self.remat)
    return x

  def frame_logits(self, videos: jax.Array, train: bool = False) -> jax.Array:
    """videos (B, T, S, S, 3) -> per-frame logits float32 (B, T, num_classes)."""
    b, t = videos.shape[:2]
    if t != self.num_frames:
      raise ValueError(f'the model was built for num_frames={self.num_frames}, got a clip of {t} frames')
    x = self.stem(videos.reshape(b * t, *videos.shape[2:]), train)
    for embed, pos, blocks in ((self.patch_embed1, self.pos_embed1, self.stage1),
                               (self.patch_embed2, self.pos_embed2, self.stage2),
                               (self.patch_embed3, self.pos_embed3, self.stage3)):
      x = embed(x, train)
      if x.shape[1:3] != pos.shape[1:3]:
        raise ValueError(f'frames of {videos.shape[2]}x{videos.shape[3]} give a {x.shape[1]}x{x.shape[2]} '
                         f'grid, the position embedding is {pos.shape[1]}x{pos.shape[2]}: set model.image_size')
      x = self.pos_dropout(x + at_use(pos, x.dtype), deterministic=not train)
      x = self._blocks(blocks, x, train)
    pooled = self.norm(x, train).astype(jnp.float32).mean(axis=(1, 2))  # (B·T, 2C)
    with jax.named_scope('head'):
      logits = self.head(pooled.astype(self.dtype))
    return logits.astype(jnp.float32).reshape(b, t, -1)

  def __call__(self, videos: jax.Array, train: bool = False) -> jax.Array:
    return self.frame_logits(videos, train).mean(axis=1)
