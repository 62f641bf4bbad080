"""Building blocks shared by every model: parameters with logical axis names, LayerNorm, Linear,
the ViT MLP and stochastic depth.

Every parameter is created through `sharded_param`, so it carries logical axis names (metadata
`out_sharding`, e.g. `('embed', 'mlp')`). The training loop maps those names onto mesh axes
(`data`, `fsdp`, `tensor`) through rules in the config; outside a mesh the names are inert.
Parameters are float32; `dtype` is the compute dtype (bfloat16 on accelerators). Activations are
pinned the same way (`constrain`): the batch over `batch` (data × fsdp), heads and the MLP width
over `tensor`.
"""
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from flax.core import spmd as flax_spmd

Initializer = Callable[..., jax.Array]
LogicalAxes = Sequence[str | None]

trunc_normal_02 = nnx.initializers.truncated_normal(stddev=0.02)
zeros = nnx.initializers.zeros_init()
ones = nnx.initializers.ones_init()


def sharded_param(rngs: nnx.Rngs, init: Initializer, shape: tuple[int, ...],
                  axes: LogicalAxes) -> nnx.Param:
  """A float32 `nnx.Param` of `shape`, initialised by `init`, annotated with logical `axes`.

  Inside `jax.set_mesh(mesh)` (and the config's logical-axis rules) the value is created sharded;
  outside a mesh (tests, weight conversion on one host) the names are only recorded.
  """
  if len(axes) != len(shape):
    raise ValueError(f'logical axes {axes} do not match parameter shape {shape}')
  mesh_active = not jax.sharding.get_abstract_mesh().empty
  return nnx.Param(init(rngs.params(), shape, jnp.float32), out_sharding=tuple(axes),
                   eager_sharding=mesh_active)


def constrain(x: jax.Array, axes: LogicalAxes) -> jax.Array:
  """Pins an activation's sharding by logical axis names, e.g. ('batch', None, None, 'mlp').

  The names resolve through the active logical-axis rules (`batch` -> ('data', 'fsdp'), `heads`
  and `mlp` -> 'tensor'); None keeps a dimension whole. Without a mesh it is the identity. Without
  these pins XLA's propagation may follow the FSDP-sharded parameters instead of the batch and
  all-gather whole activations.
  """
  if len(axes) != x.ndim:
    raise ValueError(f'logical axes {axes} do not match the activation shape {x.shape}')
  if jax.sharding.get_abstract_mesh().empty:
    return x
  return jax.lax.with_sharding_constraint(x, flax_spmd.get_pspec(jax.P(*axes)))


def at_use(param: nnx.Param, dtype=None) -> jax.Array:
  """A parameter's value as the computation uses it: cast to `dtype`, then whole along the mesh axes
  the batch is split over and still split over the others (`tensor`).

  With FSDP this is where the parameter is all-gathered, in the compute dtype; its gradient flows
  back through the same constraint, so it is reduced over the batch shards and re-split like the
  parameter. Without the pin XLA may gather activations (e.g. the logits' gradient) instead.
  """
  value = param[...] if dtype is None else param[...].astype(dtype)
  axes = param.get_metadata().get('out_sharding')
  if not axes or jax.sharding.get_abstract_mesh().empty:
    return value
  batch_axes = set(_mesh_axes_of(flax_spmd.get_pspec(jax.P('batch'))[0]))
  spec = []
  for entry in flax_spmd.get_pspec(jax.P(*axes)):
    kept = tuple(a for a in _mesh_axes_of(entry) if a not in batch_axes)
    spec.append(None if not kept else kept[0] if len(kept) == 1 else kept)
  return jax.lax.with_sharding_constraint(value, jax.P(*spec))


def is_split(logical_axis: str) -> bool:
  """Whether the active mesh splits `logical_axis` (e.g. 'heads') over more than one device."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return False
  names = _mesh_axes_of(flax_spmd.get_pspec(jax.P(logical_axis))[0])
  return any(mesh.shape[name] > 1 for name in names)


def _mesh_axes_of(entry) -> tuple[str, ...]:
  """One PartitionSpec entry (None, 'fsdp' or ('data', 'fsdp')) as a tuple of mesh axis names."""
  return entry if isinstance(entry, tuple) else (() if entry is None else (entry,))


def constrain_batch(x: jax.Array, last: str | None = None) -> jax.Array:
  """`constrain` with the leading axis over `batch`, the last over `last`, the rest whole."""
  return constrain(x, ('batch',) + (None,) * (x.ndim - 2) + (last,))


@functools.partial(jax.jit, static_argnames='padding')  # one named call: FLOP counters find it
def depthwise_conv(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
  """Depthwise k×k convolution (cross-correlation, stride 1, zero padding), as k² shifted
  multiply-adds. x (N, H, W, C), kernel (k, k, 1, C) -> (N, H + 2p - k + 1, W + 2p - k + 1, C).

  Equal to `lax.conv_general_dilated(..., feature_group_count=C)`, which XLA:CPU runs about as
  slowly as a dense convolution; the shifted sums are one elementwise fusion.
  """
  k = kernel.shape[0]
  padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  h, w = padded.shape[1] - k + 1, padded.shape[2] - k + 1
  taps = [padded[:, i:i + h, j:j + w, :] * kernel[i, j, 0] for i in range(k) for j in range(k)]
  return sum(taps[1:], taps[0])


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, as PyTorch's nn.GELU() in both papers' code: x · (1 + erf(x / √2)) / 2,
  PyTorch's own formula. `jax.nn.gelu(x, approximate=False)` computes the same through erfc, which
  XLA:CPU lowers to two fusions with an exp and runs ~4× slower in the forward (equal within
  float32 rounding, experiments/xla_cpu_repro.py)."""
  return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(2 ** -0.5, x.dtype)))


def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x (M, K) @ kernel (K, N); on CPU with a backward pass laid out for XLA:CPU's GEMMs.

  Same values as `x @ kernel` and its autodiff gradients; only the layout of the two backward
  GEMMs differs: dx = g · kernelᵀ runs as a plain (M, N) × (N, K) GEMM on a transposed copy of the
  kernel (Eigen runs the transposed-operand form 1.3–1.6× slower), and dkernel = xᵀ · g is
  computed with the wider of the two operands on the right, transposed afterwards when needed
  (experiments/xla_cpu_repro.py). GPUs and TPUs take transposed operands natively: there the
  plain product keeps XLA's own gradient (and no optimization barriers in the way of fusion).
  """
  if jax.default_backend() != 'cpu':
    return x @ kernel
  return _cpu_laid_out_matmul(x, kernel)


@jax.custom_vjp
def _cpu_laid_out_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return x @ kernel


def _matmul_fwd(x, kernel):
  return x @ kernel, (x, kernel)


def _matmul_bwd(residuals, g):
  x, kernel = residuals
  contract_rows = (((0,), (0,)), ((), ()))
  dx = g @ jax.lax.optimization_barrier(kernel.T)  # the barrier keeps XLA from folding the transpose back
  if kernel.shape[0] <= kernel.shape[1]:
    dkernel = jax.lax.dot_general(x, g, contract_rows)  # (K, N)
  else:
    dkernel = jax.lax.optimization_barrier(jax.lax.dot_general(g, x, contract_rows)).T  # (N, K)ᵀ
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


_cpu_laid_out_matmul.defvjp(_matmul_fwd, _matmul_bwd)


class LayerNorm(nnx.Module):
  """LayerNorm over the last axis, statistics in float32 (eps differs by place: 1e-6 or 1e-5)."""

  def __init__(self, features: int, *, epsilon: float, rngs: nnx.Rngs, axis_name: str = 'embed'):
    self.epsilon = epsilon
    self.scale = sharded_param(rngs, ones, (features,), (axis_name,))
    self.bias = sharded_param(rngs, zeros, (features,), (axis_name,))

  def __call__(self, x: jax.Array) -> jax.Array:
    return layer_norm(x, at_use(self.scale), at_use(self.bias), self.epsilon)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float) -> jax.Array:
  """(x − mean) / √(var + eps) · scale + bias over the last axis; x (..., C), scale and bias (C,).

  Statistics in float32, the result in x's dtype. The backward is written out (custom VJP): the
  textbook dx = rstd · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂)) with dx̂ = g · scale, two row
  reductions, where autodiff of the two-pass variance takes four plus the broadcasts between them.
  """
  return _layer_norm(x, scale, bias, float(epsilon))


def _layer_norm_fwd(x, scale, bias, epsilon):
  x32 = x.astype(jnp.float32)
  mean = x32.mean(-1, keepdims=True)
  centred = x32 - mean
  rstd = jax.lax.rsqrt(jnp.square(centred).mean(-1, keepdims=True) + epsilon)
  y = (centred * rstd * scale + bias).astype(x.dtype)
  return y, (x, mean, rstd, scale)


def _layer_norm_bwd(epsilon, residuals, g):
  del epsilon
  x, mean, rstd, scale = residuals
  g32 = g.astype(jnp.float32)
  normed = (x.astype(jnp.float32) - mean) * rstd  # x̂
  dnormed = g32 * scale
  # the row dot product as an einsum: XLA:CPU's YNNPACK reduce fusion of sum(a · b) over the last
  # axis ran ~11× slower than the same sums as a dot (experiments/xla_cpu_repro.py, item 8)
  row_dot = jnp.einsum('...c,...c->...', dnormed, normed)[..., None] / normed.shape[-1]
  dx = rstd * (dnormed - dnormed.mean(-1, keepdims=True) - normed * row_dot)
  rows = tuple(range(g.ndim - 1))
  dscale = jnp.sum(g32 * normed, axis=rows)
  dbias = jnp.sum(g32, axis=rows)
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


_layer_norm = jax.custom_vjp(lambda x, scale, bias, epsilon: _layer_norm_fwd(x, scale, bias, epsilon)[0],
                             nondiff_argnums=(3,))
_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class Linear(nnx.Module):
  """y = x @ kernel + bias over the last axis. kernel: (in, out), bias: (out,)."""

  def __init__(self, in_features: int, out_features: int, *, axes: tuple[str | None, str | None],
               rngs: nnx.Rngs, dtype=jnp.float32, kernel_init: Initializer = trunc_normal_02,
               bias_init: Initializer = zeros):
    self.dtype = dtype
    self.kernel = sharded_param(rngs, kernel_init, (in_features, out_features), axes)
    self.bias = sharded_param(rngs, bias_init, (out_features,), (axes[1],))

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = at_use(self.kernel, self.dtype)
    # flattened to one (tokens, in) x (in, out) matmul: with several contracting dims in the
    # weight gradient XLA:CPU transposes the activations first (experiments/xla_cpu_repro.py)
    y = matmul(x.reshape(-1, x.shape[-1]).astype(self.dtype), kernel)
    return y.reshape(*x.shape[:-1], kernel.shape[-1]) + at_use(self.bias, self.dtype)


class Mlp(nnx.Module):
  """The ViT MLP: fc1 (C -> mlp_dim) -> GELU -> dropout -> fc2 (mlp_dim -> C) -> dropout."""

  def __init__(self, hidden_size: int, mlp_dim: int, *, dropout_rate: float, dtype, rngs: nnx.Rngs):
    self.fc1 = Linear(hidden_size, mlp_dim, axes=('embed', 'mlp'), dtype=dtype, rngs=rngs)
    self.fc2 = Linear(mlp_dim, hidden_size, axes=('mlp', 'embed'), dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x (B, ..., C) -> (B, ..., C); the hidden (B, ..., mlp_dim) is split over `mlp` (tensor)."""
    x = self.dropout(gelu(constrain_batch(self.fc1(x), 'mlp')), deterministic=not train)
    return self.dropout(constrain_batch(self.fc2(x)), deterministic=not train)


class DropPath(nnx.Module):
  """Stochastic depth: drops a residual branch for whole examples (axis 0) during training."""

  def __init__(self, rate: float, *, rngs: nnx.Rngs):
    self.rate = rate
    self.rngs = rngs['dropout'].fork() if rate > 0 else None

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if not train or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.rngs(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def drop_path_rates(drop_path_rate: float, num_layers: int) -> list[float]:
  """Stochastic-depth rate per block, rising linearly from 0 to `drop_path_rate` (timm's rule)."""
  if num_layers == 1:
    return [0.0]
  return [drop_path_rate * i / (num_layers - 1) for i in range(num_layers)]


# model.remat: what each block keeps for the backward pass (the rest is recomputed).
REMAT_POLICIES = {
    'full': jax.checkpoint_policies.nothing_saveable,  # keep only the block's input
    'dots': jax.checkpoint_policies.checkpoint_dots,  # keep matmul outputs, recompute the rest
    'dots_no_batch': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,  # weight matmuls only
    **{name: getattr(jax.checkpoint_policies, name) for name in (
        'nothing_saveable', 'everything_saveable', 'checkpoint_dots', 'dots_saveable',
        'checkpoint_dots_with_no_batch_dims', 'dots_with_no_batch_dims_saveable')},
}


def remat_policy(remat):
  """`model.remat` -> None (no rematerialisation) or a `jax.checkpoint_policies` policy.

  'none' / False / None: keep every activation. 'full' / True: recompute the whole block.
  'dots': keep the matmul outputs. 'dots_no_batch': keep the weight matmuls' outputs (not the
  attention's). Any policy name of `jax.checkpoint_policies` is accepted as well.
  """
  if remat is None or remat is False or (isinstance(remat, str) and remat.lower() in ('none', 'false')):
    return None
  if remat is True or (isinstance(remat, str) and remat.lower() == 'true'):
    remat = 'full'
  if remat not in REMAT_POLICIES:
    raise ValueError(f"model.remat must be 'none', 'full', 'dots', 'dots_no_batch', a "
                     f"jax.checkpoint_policies name or a bool, got {remat!r}")
  return REMAT_POLICIES[remat]


def apply_block(block, x: jax.Array, train: bool, remat) -> jax.Array:
  """block(x, train), rematerialised in the backward pass as `model.remat` says."""
  policy = remat_policy(remat)
  if policy is None:
    return block(x, train)
  return nnx.remat(lambda blk, y: blk(y, train), policy=policy)(block, x)


def compute_dtype(name: str):
  """The config's `dtype` string as a jnp dtype (parameters stay float32)."""
  dtypes = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}
  if name not in dtypes:
    raise ValueError(f"model.dtype must be one of {sorted(dtypes)}, got {name!r}")
  return dtypes[name]
