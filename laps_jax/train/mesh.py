"""The device mesh, the logical-axis rules, and the checks that a config fits them.

The mesh has three named axes:
  * `data`   — pure data parallelism (parameters replicated),
  * `fsdp`   — data parallelism with parameters and optimizer state sharded (ZeRO-3 style),
  * `tensor` — tensor (model) parallelism: attention heads and the MLP width are split.
The batch is split over `('data', 'fsdp')`. Parameters carry logical axis names (`embed`, `mlp`,
`heads`, ...); `config.axis_rules` maps them onto mesh axes (MaxText style), e.g.
`('embed', 'fsdp')` shards every `embed` dimension over `fsdp`.

The mesh axes are `AxisType.Auto`: the models annotate their parameters and pin their activations
at block boundaries and inside attention and the MLP (`laps_jax.models.layers.constrain`: the batch
over `batch`, heads and the MLP width over `tensor`); XLA's propagation places the rest. (With
`Explicit` axes every op would need an unambiguous sharding in its type.)
"""
import contextlib
import math
from typing import Sequence

import jax
import numpy as np
from flax import nnx
from flax.core import spmd as flax_spmd

from laps_jax.train.errors import ConfigError

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')

# Logical axes -> mesh axes: the batch over data x fsdp, FSDP shards the model width, tensor
# parallelism splits heads and the MLP (`batch`, `heads`, `mlp` also name activation dimensions).
# Every logical name the models use appears, so a model that adds a name adds it here once (the
# configs use this table as `config.axis_rules`).
DEFAULT_AXIS_RULES = (
    ('batch', BATCH_AXES),
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('kv', None),
    ('classes', None),
    ('patch', None),
    ('time', None),
    ('tokens', None),
)


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Replaces one -1 in `shape` by what is left of `num_devices`; checks the product.

  >>> resolve_mesh_shape((-1, 2, 1), 8)
  (4, 2, 1)
  """
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise ConfigError(f'config.mesh_shape must have {len(MESH_AXES)} entries {MESH_AXES}, got {shape}')
  if shape.count(-1) > 1:
    raise ConfigError(f'config.mesh_shape may hold at most one -1, got {shape}')
  if any(s == 0 or s < -1 for s in shape):
    raise ConfigError(f'config.mesh_shape entries must be positive or -1, got {shape}')
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ConfigError(f'config.mesh_shape {shape}: {num_devices} devices are not divisible by {known}')
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ConfigError(f'config.mesh_shape {shape} needs {math.prod(shape)} devices, '
                     f'but {num_devices} are available')
  return shape


def make_mesh(mesh_shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A ('data', 'fsdp', 'tensor') mesh over `devices` (default: all devices of all processes)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(mesh_shape, len(devices))
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  if len(devices) == jax.device_count():
    # jax.make_mesh orders devices for the physical topology (ICI links on TPU / NVLink on GPU).
    mesh = jax.make_mesh(shape, MESH_AXES, axis_types=auto)
  else:
    mesh = jax.sharding.Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)
  check_tensor_axis_within_processes(mesh.devices)
  return mesh


@contextlib.contextmanager
def activate(mesh: jax.sharding.Mesh, rules):
  """Context in which models are built and steps traced: the mesh plus the logical-axis rules."""
  with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(tuple(tuple(r) for r in rules)):
    yield


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int = 1) -> jax.sharding.NamedSharding:
  """Leading (batch) axis split over ('data', 'fsdp'); other axes replicated."""
  return jax.sharding.NamedSharding(mesh, jax.P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, jax.P())


def batch_shards(mesh: jax.sharding.Mesh) -> int:
  """How many ways the batch is split (data × fsdp)."""
  return mesh.shape['data'] * mesh.shape['fsdp']


# ---------------------------------------------------------------------------------------------
# Checks that run before anything is compiled, with messages that say what to change.
# ---------------------------------------------------------------------------------------------
def check_rules(rules, logical_names: set[str]) -> None:
  """Every logical axis name used by a parameter must have a rule (an unknown name would be taken
  for a mesh axis and fail deep inside jit)."""
  mapped = {name for name, _ in rules}
  if missing := sorted(logical_names - mapped - {None}):
    raise ConfigError(f'config.axis_rules has no rule for the logical axes {missing}; '
                     f'add e.g. ({missing[0]!r}, None) to replicate them')
  for name, target in rules:
    targets = target if isinstance(target, (tuple, list)) else (target,)
    for t in targets:
      if t is not None and t not in MESH_AXES:
        raise ConfigError(f'config.axis_rules maps {name!r} to {t!r}, which is not a mesh axis {MESH_AXES}')


def check_tensor_axis_within_processes(devices: np.ndarray) -> None:
  """The devices along `tensor` (the last axis of the mesh's device array) must belong to one
  process. The batch is replicated along `tensor`, and every process reads only its own part of
  the data: replicas fed by two processes would silently hold different batches."""
  process = np.vectorize(lambda d: d.process_index)(devices)
  if (process != process[..., :1]).any():
    count = len(np.unique(process))
    raise ConfigError(f'config.mesh_shape {tuple(devices.shape)} (data, fsdp, tensor): the tensor axis '
                      f'spans several of the {count} processes ({devices.size // count} devices '
                      'each); make the tensor axis divide the devices of one process')


def check_batch(batch_size: int, mesh: jax.sharding.Mesh, what: str = 'config.batch_size') -> None:
  """The global batch must split evenly over the batch shards and over the processes."""
  shards = batch_shards(mesh)
  if batch_size % shards:
    raise ConfigError(f'{what}={batch_size} is not divisible by the {shards} batch shards of the mesh '
                     f'(data={mesh.shape["data"]} × fsdp={mesh.shape["fsdp"]})')
  if batch_size % jax.process_count():
    raise ConfigError(f'{what}={batch_size} is not divisible by the {jax.process_count()} processes')


def check_model_fits(model_config, mesh: jax.sharding.Mesh) -> None:
  """Attention heads are split over `tensor`, so their number must be divisible by it (a family
  without `num_heads` is left to check_param_shardings)."""
  tensor = mesh.shape['tensor']
  if model_config.get('num_heads') is not None and model_config.num_heads % tensor:
    raise ConfigError(f'model.num_heads={model_config.num_heads} is not divisible by the tensor axis '
                     f'of the mesh ({tensor}); change config.mesh_shape or the model')


def check_param_shardings(abstract_state, mesh: jax.sharding.Mesh) -> None:
  """Every sharded parameter dimension must be divisible by the mesh axes it is split over."""
  problems = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_state):
    sharding = getattr(leaf, 'sharding', None)
    if not isinstance(sharding, jax.sharding.NamedSharding):
      continue
    for dim, axes in zip(leaf.shape, sharding.spec):
      if axes is None:
        continue
      axes = axes if isinstance(axes, tuple) else (axes,)
      size = math.prod(mesh.shape[a] for a in axes)
      if dim % size:
        problems.append(f'{jax.tree_util.keystr(path)} {leaf.shape}: dim {dim} over {axes} ({size})')
  if problems:
    raise ConfigError('parameters do not divide over the mesh (change config.mesh_shape or '
                     'config.axis_rules):\n  ' + '\n  '.join(problems[:10]))


def logical_axis_names(abstract_model_state) -> set[str]:
  """All logical axis names found in the `out_sharding` metadata of a model's variables."""
  names = set()
  for var in jax.tree.leaves(abstract_model_state, is_leaf=lambda x: isinstance(x, nnx.Variable)):
    if isinstance(var, nnx.Variable):
      names.update(n for n in (var.get_metadata().get('out_sharding') or ()) if n is not None)
  return names
