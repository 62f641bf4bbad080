"""The optax optimizer and learning-rate schedule that a config describes.

Units: the schedule counts *optimizer updates*. With gradient accumulation (`optax.MultiSteps`)
one update happens every `config.optimizer.grad_accum_steps` train steps, and the schedule only
advances then. Config values are in epochs (as in the papers) and converted here with
`updates_per_epoch`.

config.optimizer:
  name              'sgd' (momentum, PyTorch-style coupled weight decay) or 'adamw'
  momentum, nesterov            SGD
  b1, b2, eps                   AdamW
  weight_decay      0 = off; SGD adds wd·param to the gradient, AdamW decouples it (lr·wd·param)
  decay_pattern     regex searched in each parameter path ('blocks/0/mlp/fc1/kernel'); only
                    matches decay. r'kernel$' decays Linear and conv weights (incl. LVT's
                    'dwconv_kernel') and leaves norms, biases, the cls token and the position /
                    temporal embeddings undecayed
  clip_norm         global-norm gradient clipping before the update (0 = off)
  grad_accum_steps  micro-batches per update (optax.MultiSteps; 1 = off)
  layer_decay       layer-wise learning-rate decay d (1.0 = off): block i of L gets lr × d**(L - i),
                    the embeddings lr × d**(L + 1), the head lr (laps_jax/train/layer_decay.py)
config.schedule:
  name              'piecewise' (×decay_factor at each of decay_epochs) or 'warmup_cosine'
  base_lr           peak learning rate (at base_batch_size, when that is set)
  base_batch_size   0 = off; else the peak learning rate is base_lr × global batch / base_batch_size,
                    the global batch being the clips per optimizer update (batch_size ×
                    grad_accum_steps), so a recipe moves between 8 and 64 devices unchanged
  warmup_epochs     linear warm-up from 0 (both schedules)
  decay_epochs      piecewise boundaries, in epochs
  decay_factor      piecewise multiplier at each boundary
  end_lr            cosine: final learning rate
"""
import re

import jax
import optax

from laps_jax import named_params
from laps_jax.train import layer_decay as layer_decay_lib


def peak_learning_rate(config) -> float:
  """config.schedule.base_lr, scaled by the global batch per update when base_batch_size > 0."""
  base_batch = config.schedule.get('base_batch_size', 0)
  if not base_batch:
    return float(config.schedule.base_lr)
  if base_batch < 0:
    raise ValueError(f'config.schedule.base_batch_size must be >= 0, got {base_batch}')
  update_batch = config.batch_size * config.optimizer.grad_accum_steps
  return float(config.schedule.base_lr) * update_batch / base_batch


def make_schedule(schedule_config, *, updates_per_epoch: float, total_updates: int,
                  peak_lr: float | None = None) -> optax.Schedule:
  """Learning rate as a function of the optimizer-update count; `peak_lr` (default base_lr) is
  the rate the schedule warms up to (`peak_learning_rate`)."""
  c = schedule_config
  base_lr = c.base_lr if peak_lr is None else peak_lr
  warmup = int(round(c.warmup_epochs * updates_per_epoch))
  if c.name == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=base_lr, warmup_steps=warmup,
        decay_steps=max(total_updates, warmup + 1), end_value=c.end_lr)
  if c.name == 'piecewise':
    boundaries = {int(round(e * updates_per_epoch)) - warmup: c.decay_factor for e in c.decay_epochs}
    constant = optax.piecewise_constant_schedule(base_lr, boundaries)
    if warmup == 0:
      return constant
    ramp = optax.linear_schedule(0.0, base_lr, warmup)
    return optax.join_schedules([ramp, constant], [warmup])
  raise ValueError(f"config.schedule.name must be 'piecewise' or 'warmup_cosine', got {c.name!r}")


def weight_decay_mask(pattern: str):
  """A mask function for optax: params tree -> tree of bools, True where the '/'-joined path
  ('blocks/0/mlp/fc1/kernel') matches `pattern`. optax calls it at init and at every update."""
  regex = re.compile(pattern)

  def mask(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: bool(regex.search(named_params.path_name(path))), params)
  return mask


def make_optimizer(config, *, updates_per_epoch: float, total_updates: int):
  """(tx, schedule) for `config.optimizer` / `config.schedule`.

  tx: clip_by_global_norm -> [weight decay] -> SGD-momentum | AdamW -> [layer decay], wrapped in
  optax.MultiSteps when grad_accum_steps > 1 (gradients are averaged over the micro-batches, as a
  loss divided by the number of micro-batches would give).
  """
  o = config.optimizer
  peak_lr = peak_learning_rate(config)
  schedule = make_schedule(config.schedule, updates_per_epoch=updates_per_epoch,
                           total_updates=total_updates, peak_lr=peak_lr)
  mask = weight_decay_mask(o.decay_pattern)
  parts = []
  if o.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(o.clip_norm))
  if o.name == 'sgd':
    if o.weight_decay > 0:
      parts.append(optax.add_decayed_weights(o.weight_decay, mask=mask))
    parts.append(optax.sgd(schedule, momentum=o.momentum or None, nesterov=o.nesterov))
  elif o.name == 'adamw':
    parts.append(optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                             mask=mask))
  else:
    raise ValueError(f"config.optimizer.name must be 'sgd' or 'adamw', got {o.name!r}")
  decay = o.get('layer_decay', 1.0)
  if not 0.0 < decay <= 1.0:
    raise ValueError(f'config.optimizer.layer_decay must be in (0, 1] (1 = off), got {decay}')
  if decay < 1.0:
    parts.append(layer_decay_lib.layer_decay(decay, peak_lr=peak_lr))
  tx = optax.chain(*parts)
  if o.grad_accum_steps < 1:
    raise ValueError(f'config.optimizer.grad_accum_steps must be >= 1, got {o.grad_accum_steps}')
  if o.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=o.grad_accum_steps)
  return tx, schedule
