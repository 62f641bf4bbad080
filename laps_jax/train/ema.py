"""An exponential moving average (EMA) of the model's weights, evaluated beside the raw weights.

config.ema.decay = d > 0 turns it on (0 = off, the default). After every optimizer update

    ema = d · ema + (1 − d) · weights          (optax.incremental_update, step size 1 − d)

over the model's WEIGHTS (parameters and BatchNorm statistics, `laps_jax.named_params`); the
first update copies the weights (so `init_from` needs no special case). The EMA moves only when
the weights did (`train_state.weights_updated`): once per `grad_accum_steps` micro-steps with
gradient accumulation, and never on a micro-step that config.skip_nonfinite_updates dropped.

The EMA lives in the train state as `state['ema']`: an `EMA` module whose `model` is a clone of
the train model, so it is built under the same logical axis rules and sharded exactly like the
parameters, checkpointed as its own Orbax item ('ema', laps_jax/train/checkpointing.py), and
evaluated by swapping it in for `state['model']` (`as_model`, the `weights_view` of
`train_state.jit_eval_step`): the same eval step, the same shardings.
`python -m laps_jax.export --ema` exports it.
"""
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from laps_jax import named_params


class EMACount(nnx.Variable):
  """The number of EMA updates so far (int32 scalar); not a parameter."""


class EMA(nnx.Module):
  """`model`: a copy of the train model holding the averaged weights; `decay` is static."""

  def __init__(self, model: nnx.Module, decay: float):
    if not 0.0 < decay < 1.0:
      raise ValueError(f'config.ema.decay must be in (0, 1) (0 = off), got {decay}')
    self.model = nnx.clone(model)
    self.decay = float(decay)
    self.count = EMACount(jnp.zeros((), jnp.int32))

  def update(self, model: nnx.Module, updated: jax.Array) -> None:
    """Moves the average towards `model`'s weights if `updated` (bool scalar): the optimizer has
    just changed them (`train_state.weights_updated`)."""
    first = self.count[...] == 0
    step_size = jnp.where(updated, jnp.where(first, 1.0, 1.0 - self.decay), 0.0)
    weights = nnx.state(model, named_params.WEIGHTS)
    averages = nnx.state(self.model, named_params.WEIGHTS)
    new = optax.incremental_update(nnx.as_pure(weights), nnx.as_pure(averages), step_size)
    nnx.update(self.model, new)
    self.count[...] += updated.astype(jnp.int32)


def maybe_create(model: nnx.Module, ema_config) -> EMA | None:
  """The EMA of `model` when config.ema.decay > 0, else None."""
  decay = float(ema_config.decay) if ema_config is not None else 0.0
  return EMA(model, decay) if decay > 0 else None


def has_ema(state) -> bool:
  """Whether a train state (or abstract state) holds an EMA."""
  return 'ema' in state and 'model' in state['ema']


def as_model(state):
  """`state` with the EMA's weights in place of the model's (same structure, same shardings)."""
  swapped = nnx.State(dict(state))
  swapped['model'] = state['ema']['model']
  return swapped

