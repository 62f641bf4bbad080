"""The ViT video family: 2D ViT (per frame), LAPS, joint and divided space-time attention.

One backbone, four token-mixing patterns (chosen per block by `VideoSelfAttention`):
  - 'frame'   : each frame's 1 + N tokens attend among themselves (the 2D ViT, TSN style);
  - 'leap'    : Leap Attention, pairs of frames a leap apart (LAPS);
  - 'joint'   : all T·(1+N) tokens attend together (ViViT model 1);
  - 'divided' : temporal attention over T for every token position, then per-frame spatial
                attention (TimeSformer).
LAPS additionally applies the Periodic Shift to every block's attention output. `laps` and
`vit2d` share one parameter tree, so a 2D ViT checkpoint loads into LAPS with no new parameter.

Input: videos (B, T, H, W, 3), normalised. Every frame is embedded by the ViT patch embedding
(patches row-major), gets its own cls token at index 0 and the ViT's 2D position embedding.
There is no temporal position embedding in vit2d / LAPS (P-Shift breaks the frame symmetry);
joint and divided attention are permutation-invariant over frames without one, so they add a
zero-initialised `time_embed` (1, T, 1, C) (departure from a plain ViT, as in TimeSformer/ViViT).
Head: final LayerNorm, each frame's cls token -> Linear -> per-frame logits -> mean over T.
"""
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from laps_jax.models.layers import (DropPath, LayerNorm, Linear, Mlp, apply_block, at_use,
                                    compute_dtype, constrain_batch, drop_path_rates, remat_policy,
                                    sharded_param, trunc_normal_02, zeros)
from laps_jax.models.leap_attention import leap_attention, leap_step
from laps_jax.models.periodic_shift import periodic_shift
from laps_jax.models.registry import SizeVariants, register
from laps_jax.models.softmax_attention import HeadsOutProjection, QKVProjection, make_attend

LAYER_NORM_EPS = 1e-6
VIT_FAMILY = ('vit2d', 'laps', 'joint', 'divided')
LAPS_LEAP_LEVELS = (1, 2, 3, 1)  # the paper's: block k uses LAPS_LEAP_LEVELS[k % 4]
LAPS_SHIFT_DIV = 4  # the paper's Periodic Shift: a quarter of each head's channels


@dataclasses.dataclass(frozen=True)
class ViTConfig(SizeVariants):
  """Hyper-parameters of the ViT video family; the fields are exactly the `config.model` keys.

  `ViTConfig.variant('B/16', name='laps', num_frames=8)`: a named size (Ti, S, B, L, H; Mu is the
  CPU-sized demo model) with the name's defaults (laps: the paper's leap levels and shift).
  """
  SIZES = {
      'Mu': dict(hidden_size=64, num_layers=4, num_heads=4, mlp_dim=128),  # the CPU demo
      'Ti': dict(hidden_size=192, num_layers=12, num_heads=3, mlp_dim=768),
      'S': dict(hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536),
      'B': dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
      'L': dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096),
      'H': dict(hidden_size=1280, num_layers=32, num_heads=16, mlp_dim=5120),
  }

  name: str = 'vit2d'  # 'vit2d' | 'laps' | 'joint' | 'divided'
  image_size: int = 224
  patch_size: int = 16
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  num_frames: int = 8
  num_classes: int = 400
  dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  attention_impl: str = 'auto'  # 'auto' | 'xla' | 'cudnn'
  dtype: str = 'float32'  # compute dtype; parameters stay float32
  remat: bool | str | None = None  # None/'none'/False | 'full'/True | 'dots' | ... (layers.remat_policy)
  leap_levels: tuple[int | None, ...] = (None,)  # laps: block k uses leap_levels[k % len]; None = per frame
  shift_div: int = 0  # laps: Periodic Shift of 1/shift_div of each head's channels (0 = off)

  @classmethod
  def variant(cls, size: str, **overrides) -> 'ViTConfig':
    if overrides.get('name') == 'laps':
      overrides = dict(leap_levels=LAPS_LEAP_LEVELS, shift_div=LAPS_SHIFT_DIV) | overrides
    return super().variant(size, **overrides)

  def __post_init__(self):
    if self.name not in VIT_FAMILY:
      raise ValueError(f'ViTConfig.name must be one of {VIT_FAMILY}, got {self.name!r}')
    if self.image_size % self.patch_size:
      raise ValueError(f'model.image_size {self.image_size} is not divisible by patch_size {self.patch_size}')
    if self.hidden_size % self.num_heads:
      raise ValueError(f'model.hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}')
    remat_policy(self.remat)  # a clear error for an unknown policy name


class PatchEmbedding(nnx.Module):
  """Non-overlapping p×p patches -> C, as a reshape and a matmul (equal to the ViT's stride-p conv).

  kernel (p, p, 3, C) (the conv's HWIO layout), bias (C,). (B, H, W, 3) -> (B, N, C), N = (H/p)·(W/p)
  in row-major (h, w) order.
  """

  def __init__(self, patch_size: int, hidden_size: int, *, dtype, rngs: nnx.Rngs):
    self.patch_size = patch_size
    self.dtype = dtype
    self.kernel = sharded_param(rngs, trunc_normal_02, (patch_size, patch_size, 3, hidden_size),
                                ('patch', None, None, 'embed'))
    self.bias = sharded_param(rngs, zeros, (hidden_size,), ('embed',))

  def __call__(self, images: jax.Array) -> jax.Array:
    b, h, w, c = images.shape
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(f'image size {h}x{w} is not divisible by patch_size {p}')
    patches = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    n = (h // p) * (w // p)
    kernel = at_use(self.kernel, self.dtype)  # (p, p, 3, C)
    # one (B·N, p·p·3) x (p·p·3, C) matmul: a single contracting dim keeps XLA:CPU from
    # transposing the patches for the kernel's gradient
    y = patches.reshape(b * n, p * p * c).astype(self.dtype) @ kernel.reshape(p * p * c, -1)
    return y.reshape(b, n, -1) + at_use(self.bias, self.dtype)


class VideoSelfAttention(nnx.Module):
  """Multi-head softmax attention over a clip's tokens, with the token pattern of the block.

  x (B, T, L, C) -> (B, T, L, C), L = 1 + N tokens per frame.
  pattern: 'frame' | 'leap' | 'joint' | 'temporal' (over T for each of the L positions).
  leap_level: the block's level when pattern == 'leap'. shift_div: Periodic Shift (0 = off).
  """

  def __init__(self, hidden_size: int, num_heads: int, *, pattern: str, leap_level: int | None,
               shift_div: int, attention_impl: str, dropout_rate: float, dtype, rngs: nnx.Rngs,
               zero_init_out: bool = False):
    head_dim = hidden_size // num_heads
    self.pattern = pattern
    self.leap_level = leap_level
    self.shift_div = shift_div
    self.attend = make_attend(attention_impl, pattern)
    self.qkv = QKVProjection(hidden_size, num_heads, dtype=dtype, rngs=rngs)
    self.proj = HeadsOutProjection(num_heads, head_dim, hidden_size, dtype=dtype, rngs=rngs,
                                   kernel_init=zeros if zero_init_out else trunc_normal_02)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    b, t, l, _ = x.shape
    q, k, v = self.qkv(x)  # each (B, T, L, H, d)
    h, d = q.shape[-2:]
    if self.pattern == 'frame':
      o = self.attend(*(z.reshape(b * t, l, h, d) for z in (q, k, v))).reshape(b, t, l, h, d)
    elif self.pattern == 'leap':
      o = leap_attention(q, k, v, self.leap_level, self.attend)
    elif self.pattern == 'joint':
      o = self.attend(*(z.reshape(b, t * l, h, d) for z in (q, k, v))).reshape(b, t, l, h, d)
    elif self.pattern == 'temporal':
      by_position = lambda z: z.transpose(0, 2, 1, 3, 4).reshape(b * l, t, h, d)
      o = self.attend(by_position(q), by_position(k), by_position(v))
      o = o.reshape(b, l, t, h, d).transpose(0, 2, 1, 3, 4)
    else:
      raise ValueError(f'unknown attention pattern {self.pattern!r}')
    o = periodic_shift(o, self.shift_div)
    return self.dropout(self.proj(o), deterministic=not train)


class VideoViTBlock(nnx.Module):
  """Pre-LN transformer block on (B, T, L, C).

  divided: x += temporal_fc(TemporalAttn(temporal_norm(x))) first (TimeSformer; temporal_fc is
  zero-initialised so the block starts as the image block), then the per-frame spatial attention.
  """

  def __init__(self, hidden_size: int, num_heads: int, mlp_dim: int, *, pattern: str,
               leap_level: int | None, shift_div: int, attention_impl: str, dropout_rate: float,
               drop_path_rate: float, dtype, rngs: nnx.Rngs):
    c = hidden_size
    common = dict(attention_impl=attention_impl, dropout_rate=dropout_rate, dtype=dtype, rngs=rngs)
    self.divided = pattern == 'divided'
    if self.divided:
      self.temporal_norm = LayerNorm(c, epsilon=LAYER_NORM_EPS, rngs=rngs)
      self.temporal_attn = VideoSelfAttention(c, num_heads, pattern='temporal', leap_level=None,
                                              shift_div=0, **common)
      self.temporal_fc = Linear(c, c, axes=('embed', None), dtype=dtype, rngs=rngs, kernel_init=zeros)
      pattern = 'frame'
    self.norm1 = LayerNorm(c, epsilon=LAYER_NORM_EPS, rngs=rngs)
    self.attn = VideoSelfAttention(c, num_heads, pattern=pattern, leap_level=leap_level,
                                   shift_div=shift_div, **common)
    self.norm2 = LayerNorm(c, epsilon=LAYER_NORM_EPS, rngs=rngs)
    self.mlp = Mlp(c, mlp_dim, dropout_rate=dropout_rate, dtype=dtype, rngs=rngs)
    self.drop_path = DropPath(drop_path_rate, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.divided:
      x = x + self.drop_path(self.temporal_fc(self.temporal_attn(self.temporal_norm(x), train)), train)
    x = x + self.drop_path(self.attn(self.norm1(x), train), train)
    return x + self.drop_path(self.mlp(self.norm2(x), train), train)


def block_patterns(config: ViTConfig) -> list[tuple[str, int | None, int]]:
  """(pattern, leap_level, shift_div) of every block, validated at construction.

  laps: block k uses level leap_levels[k % len(leap_levels)] (None = per-frame attention) and the
  Periodic Shift with shift_div (0 = off). The other names take no leap levels and no shift.
  """
  name = config.name
  levels = tuple(config.leap_levels) if config.leap_levels is not None else (None,)
  if not levels:
    raise ValueError('model.leap_levels must not be empty (use (None,) for per-frame attention)')
  if name != 'laps' and (any(l is not None for l in levels) or config.shift_div):
    raise ValueError(f"model.name={name!r} uses neither leap attention nor the periodic shift: set "
                     f"leap_levels=(None,) and shift_div=0, or use name='laps'")
  if config.shift_div < 0:
    raise ValueError(f'model.shift_div must be >= 0, got {config.shift_div}')
  patterns = []
  for k in range(config.num_layers):
    level = levels[k % len(levels)]
    if level is not None:
      leap_step(config.num_frames, level)  # raises a clear error if 2**level does not divide T
    if name == 'laps':
      patterns.append(('leap' if level is not None else 'frame', level, config.shift_div))
    else:
      patterns.append(({'vit2d': 'frame', 'joint': 'joint', 'divided': 'divided'}[name], None, 0))
  return patterns


@register(VIT_FAMILY, ViTConfig, default_frame_stride=8)
class VideoViT(nnx.Module):
  """ViT-based video classifier (names 'vit2d', 'laps', 'joint', 'divided').

  __call__(videos (B, T, H, W, 3), train) -> logits float32 (B, num_classes), the mean of
  `frame_logits` (B, T, num_classes) over T.
  """

  def __init__(self, config: ViTConfig, rngs: nnx.Rngs):
    c = config.hidden_size
    dtype = compute_dtype(config.dtype)
    num_patches = (config.image_size // config.patch_size) ** 2
    self.num_frames = config.num_frames
    self.remat = config.remat
    self.dtype = dtype
    self.patch_embed = PatchEmbedding(config.patch_size, c, dtype=dtype, rngs=rngs)
    self.cls_token = sharded_param(rngs, zeros, (1, 1, c), (None, None, 'embed'))
    self.pos_embed = sharded_param(rngs, trunc_normal_02, (1, 1 + num_patches, c), (None, 'tokens', 'embed'))
    if config.name in ('joint', 'divided'):
      self.time_embed = sharded_param(rngs, zeros, (1, config.num_frames, 1, c), (None, 'time', None, 'embed'))
    else:
      self.time_embed = None
    self.embed_dropout = nnx.Dropout(config.dropout_rate, rngs=rngs)
    rates = drop_path_rates(config.drop_path_rate, config.num_layers)
    self.blocks = nnx.List([
        VideoViTBlock(c, config.num_heads, config.mlp_dim, pattern=pattern, leap_level=level,
                      shift_div=shift_div, attention_impl=config.attention_impl,
                      dropout_rate=config.dropout_rate, drop_path_rate=rate, dtype=dtype, rngs=rngs)
        for (pattern, level, shift_div), rate in zip(block_patterns(config), rates)])
    self.norm = LayerNorm(c, epsilon=LAYER_NORM_EPS, rngs=rngs)
    # the classifier runs in float32 whatever the compute dtype, so logits and loss are float32
    self.head = Linear(c, config.num_classes, axes=('embed', 'classes'), dtype=jnp.float32, rngs=rngs,
                       kernel_init=zeros)

  def frame_logits(self, videos: jax.Array, train: bool = False) -> jax.Array:
    """videos (B, T, H, W, 3) -> per-frame logits float32 (B, T, num_classes)."""
    b, t = videos.shape[:2]
    if t != self.num_frames:
      raise ValueError(f'the model was built for num_frames={self.num_frames}, got a clip of {t} frames')
    frames = constrain_batch(videos.reshape(b * t, *videos.shape[2:]))  # (B·T, H, W, 3)
    tokens = constrain_batch(self.patch_embed(frames))  # (B·T, N, C)
    cls = jnp.broadcast_to(at_use(self.cls_token, self.dtype), (b * t, 1, tokens.shape[-1]))
    x = jnp.concatenate([cls, tokens], axis=1) + at_use(self.pos_embed, self.dtype)
    x = constrain_batch(x.reshape(b, t, *x.shape[1:]))  # (B, T, 1 + N, C): the batch over data × fsdp
    if self.time_embed is not None:
      x = x + at_use(self.time_embed, self.dtype)
    x = self.embed_dropout(x, deterministic=not train)
    for block in self.blocks:
      x = constrain_batch(apply_block(block, x, train, self.remat))
    cls_out = self.norm(x[:, :, 0])  # (B, T, C)
    return constrain_batch(self.head(cls_out.astype(jnp.float32)))

  def __call__(self, videos: jax.Array, train: bool = False) -> jax.Array:
    return self.frame_logits(videos, train).mean(axis=1)
