"""The train state (model + optimizer), created already sharded, and the jitted train/eval steps.

The state travels through `jax.jit` as a plain pytree (`nnx.State` of a `TrainState` module):
`graphdef, state = nnx.split(train_state)`; each step does `nnx.merge(graphdef, state)`, runs,
and returns the new `nnx.state(...)`. That keeps the shardings explicit (`in_shardings`,
`out_shardings`, state donated) and lets Orbax and the dry run work on the same tree.

    state['model']      parameters (f32) + the dropout RNG stream of the model
    state['optimizer']  step count + optax state (optax.apply_if_finite's counts of non-finite
                        steps around the momenta and MultiSteps accumulators; setup.py); absent
                        in the state of an evaluation, which has no optimizer
    state['ema']        the EMA of the weights (config.ema.decay > 0; laps_jax/train/ema.py)
"""
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from laps_jax import models
from laps_jax.train import ema as ema_lib
from laps_jax.train import mesh as mesh_lib
from laps_jax.train import summaries


class TrainState(nnx.Module):
  """Everything a train step updates and a checkpoint holds."""

  def __init__(self, model: nnx.Module, optimizer: nnx.Optimizer | None,
               ema: ema_lib.EMA | None = None):
    self.model = model
    self.optimizer = optimizer
    self.ema = ema


def make_init_fn(model_config, tx: optax.GradientTransformation | None,
                 seed: int, ema_config=None) -> Callable[[], TrainState]:
  """A function that builds a fresh TrainState (run it under the mesh and the axis rules).
  With `tx=None` the state has no optimizer: what evaluation needs. With `ema_config.decay` > 0
  it holds an EMA of the weights too."""
  def init() -> TrainState:
    model = models.build(model_config, nnx.Rngs(params=seed, dropout=seed + 1))
    optimizer = None if tx is None else nnx.Optimizer(model, tx, wrt=nnx.Param)
    return TrainState(model, optimizer, ema_lib.maybe_create(model, ema_config))
  return init


def abstract_train_state(init_fn, mesh: jax.sharding.Mesh):
  """(graphdef, abstract state): ShapeDtypeStructs with NamedShardings on `mesh`, no memory.

  Call inside `mesh_lib.activate(mesh, rules)` so the logical names resolve. The shardings are
  tied to the concrete mesh, so the tree also serves as Orbax restore target and for the dry run.
  """
  return nnx.get_abstract_model(init_fn, mesh)


def shardings_of(abstract_state):
  """The NamedSharding tree of an abstract (or concrete) state."""
  return jax.tree.map(lambda x: x.sharding, abstract_state)


def create_train_state(init_fn, shardings):
  """Initialises the state directly into its shardings: each device computes only its shards
  (no full copy on one device first). Call inside `mesh_lib.activate`."""
  return jax.jit(lambda: nnx.state(init_fn()), out_shardings=shardings)()


# ---------------------------------------------------------------------------------------------
# Steps. `graphdef` is static; `state` and `batch` are global jax.Arrays.
# ---------------------------------------------------------------------------------------------
def _topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """float32[B]: 1 where `labels` is among the top-k logits (ties to the lower index, as
  `lax.top_k`). Counted per row instead of `lax.top_k`, which XLA's SPMD partitioner runs on the
  all-gathered batch."""
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  classes = jnp.arange(logits.shape[-1])
  ahead = (logits > label_logit) | ((logits == label_logit) & (classes < labels[:, None]))
  return (ahead.sum(axis=-1) < k).astype(jnp.float32)


def train_step(graphdef, state, batch: dict[str, jax.Array], *, skip_nonfinite: bool = False):
  """One optimizer micro-step.

  batch: videos float[B, T, H, W, 3], targets float32[B, K] (soft labels: label smoothing /
  mixup / cutmix are already in them), labels int32[B] (for accuracy).
  Returns (new state, metrics): scalars loss, top1, top5 (this batch), grad_norm (global L2
  norm of this micro-batch's gradient, before clipping), and param_norm, update_norm,
  update_ratio (`summaries.step_norms`). The EMA, if the state has one, follows the update.

  `skip_nonfinite` (config.skip_nonfinite_updates > 0): the optimizer's `optax.apply_if_finite`
  (setup.make_optimizer) drops a micro-step whose gradient is not finite; here a non-finite loss
  makes the gradient so too, and metrics['skipped_updates'] is 1 for a dropped step (all on the
  devices: the host sees it with the other metrics, no sync per step).
  """
  ts = nnx.merge(graphdef, state)

  def loss_fn(model):
    logits = model(batch['videos'], train=True).astype(jnp.float32)  # float32[B, K], any compute dtype
    loss = optax.softmax_cross_entropy(logits, batch['targets']).mean()
    return loss, logits

  (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(ts.model)
  if skip_nonfinite:
    finite = jnp.isfinite(loss)
    grads = jax.tree.map(lambda g: jnp.where(finite, g, jnp.nan), grads)
    for g in jax.tree.leaves(grads):  # what apply_if_finite checks
      finite &= jnp.all(jnp.isfinite(g))
  params_before = nnx.as_pure(nnx.state(ts.model, nnx.Param))
  updates = ts.optimizer.update(ts.model, grads)
  if ts.ema is not None:
    # apply_if_finite (max_consecutive_errors=0 when not skipping) applies every micro-step that
    # is finite or, when not skipping, every one; nnx.Optimizer.step counts dropped ones too.
    reached_optimizer = finite if skip_nonfinite else jnp.bool_(True)
    ts.ema.update(ts.model, weights_updated(ts.optimizer.opt_state, reached_optimizer))
  metrics = {
      'loss': loss,
      'top1': _topk_correct(logits, batch['labels'], 1).mean(),
      'top5': _topk_correct(logits, batch['labels'], 5).mean(),
      'grad_norm': optax.tree.norm(grads),
      **summaries.step_norms(params_before, updates),
  }
  if skip_nonfinite:
    metrics['skipped_updates'] = 1.0 - finite.astype(jnp.float32)
  return nnx.state(ts), metrics


def weights_updated(opt_state, reached_optimizer: jax.Array) -> jax.Array:
  """Whether the micro-step just taken changed the weights (bool scalar): it reached the inner
  optimizer (`reached_optimizer`: not dropped by `optax.apply_if_finite`) and, with gradient
  accumulation, completed an update: `optax.MultiSteps` counts only the micro-steps that reach it
  and its `mini_step` is back at 0 exactly when it has just applied the accumulated update."""
  mini_step = optax.tree_utils.tree_get(opt_state, 'mini_step', None)
  if mini_step is None:  # no accumulation: every micro-step that reaches the optimizer updates
    return reached_optimizer
  return reached_optimizer & (mini_step[...] == 0)


def aggregate_views(logits: jax.Array, how: str) -> jax.Array:
  """logits float32[B, V, K] of V views -> scores [B, K] used for accuracy.

  'sum_logits': sum of the views' logits (LAPS's test meter);
  'sum_probs':  sum of the views' softmax probabilities (PySlowFast's test meter with softmax heads).
  """
  if how == 'sum_logits':
    return logits.sum(axis=1)
  if how == 'sum_probs':
    return jax.nn.softmax(logits, axis=-1).sum(axis=1)
  raise ValueError(f"config.eval.aggregate must be 'sum_logits' or 'sum_probs', got {how!r}")


def eval_step(graphdef, state, batch: dict[str, jax.Array], *, aggregate: str = 'sum_logits'):
  """Sums over the real (mask=True) examples of a batch: loss, top-1/top-5 hits and the count,
  and per class (float32[K]): class_hits (top-1) and class_count.

  batch: videos float[B, T, H, W, 3] (one view) or float[B, V, T, H, W, 3] (V views),
  labels int32[B], mask bool[B]. The loss is the cross-entropy of the mean logits (or of the mean
  probabilities for 'sum_probs').
  """
  model = nnx.merge(graphdef, state).model
  videos = batch['videos']
  if videos.ndim == 6:
    b, v = videos.shape[:2]
    logits = model(videos.reshape(b * v, *videos.shape[2:]), train=False).reshape(b, v, -1)
    scores = aggregate_views(logits, aggregate)
    if aggregate == 'sum_probs':
      log_probs = jnp.log(scores / v + 1e-12)
    else:
      log_probs = jax.nn.log_softmax(logits.mean(axis=1))
  else:
    scores = model(videos, train=False)
    log_probs = jax.nn.log_softmax(scores)
  labels, mask = batch['labels'], batch['mask'].astype(jnp.float32)
  loss = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  top1 = _topk_correct(scores, labels, 1) * mask
  one_hot = jax.nn.one_hot(labels, scores.shape[-1], dtype=jnp.float32) * mask[:, None]  # [B, K]
  return {
      'loss': (loss * mask).sum(),
      'top1': top1.sum(),
      'top5': (_topk_correct(scores, labels, 5) * mask).sum(),
      'count': mask.sum(),
      'class_hits': (one_hot * top1[:, None]).sum(axis=0),
      'class_count': one_hot.sum(axis=0),
  }


def with_prepared_batch(step_fn: Callable, prepare_batch: Callable | None) -> Callable:
  """step_fn(graphdef, state, batch, **kw) run on prepare_batch(batch): the host's uint8 batch made
  into the model's input inside the same compiled step (laps_jax.data.device_augment)."""
  if prepare_batch is None:
    return step_fn

  def step(graphdef, state, batch, **kwargs):
    return step_fn(graphdef, state, prepare_batch(batch), **kwargs)
  return step


def jit_train_step(graphdef, state_shardings, mesh: jax.sharding.Mesh,
                   prepare_batch: Callable | None = None, skip_nonfinite: bool = False):
  """train_step compiled with explicit shardings; the input state is donated (updated in place).
  `prepare_batch` (e.g. DeviceAugment.train) turns the host batch into `train_step`'s inside it."""
  return jax.jit(
      functools.partial(with_prepared_batch(train_step, prepare_batch), graphdef,
                        skip_nonfinite=skip_nonfinite),
      in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh)),
      out_shardings=(state_shardings, mesh_lib.replicated(mesh)),
      donate_argnums=(0,))


def jit_eval_step(graphdef, state_shardings, mesh: jax.sharding.Mesh, aggregate: str,
                  prepare_batch: Callable | None = None, weights_view: Callable | None = None):
  """eval_step compiled with the state's shardings. `weights_view(state)` (e.g. `ema.as_model`)
  picks other weights of the same structure to evaluate; None evaluates state['model']."""
  step_fn = with_prepared_batch(eval_step, prepare_batch)

  def step(state, batch):
    state = state if weights_view is None else weights_view(state)
    return step_fn(graphdef, state, batch, aggregate=aggregate)
  return jax.jit(step, in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh)),
                 out_shardings=mesh_lib.replicated(mesh))


def abstract_batch(batch_size: int, num_frames: int, image_size: int, num_classes: int,
                   mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """ShapeDtypeStructs of a training batch (for the dry run: compile without data)."""
  sharding = mesh_lib.batch_sharding(mesh)
  return {
      'videos': jax.ShapeDtypeStruct((batch_size, num_frames, image_size, image_size, 3),
                                     jnp.float32, sharding=sharding),
      'labels': jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=sharding),
      'targets': jax.ShapeDtypeStruct((batch_size, num_classes), jnp.float32, sharding=sharding),
  }
