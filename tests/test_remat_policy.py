"""model.remat as a policy: 'none' | 'full' | 'dots' | ... (True / False still work): same gradients,
less memory kept for the backward pass, clear errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from laps_jax import models
from laps_jax.models.layers import remat_policy
from model_configs import tiny_vit


def _loss_and_grads(remat):
  model = models.build(tiny_vit('laps', remat=remat), nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape), params)
  nnx.update(model, params)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = jax.random.normal(jax.random.key(0), (2, 8, 16, 16, 3))

  def step(params, rest):  # as the trainer does: merge inside jit, NNX's grad over the model
    model = nnx.merge(graphdef, params, rest)
    value, grads = nnx.value_and_grad(lambda m: jnp.sum(m(x, train=True) ** 2))(model)
    return value, nnx.state(grads, nnx.Param)
  step = jax.jit(step)
  value, grads = step(params, rest)
  return value, grads, step.lower(params, rest).as_text().count('stablehlo.dot_general')


def test_policies_give_the_same_gradients_and_take_effect():
  """Same loss and gradients; the lowered step recomputes the forward's matmuls in the backward
  under 'full' (more dot_generals than without remat)."""
  value, grads, dots_none = _loss_and_grads('none')
  dots = {}
  for remat in (False, True, 'full', 'dots', 'dots_no_batch', 'nothing_saveable'):
    v, g, dots[remat] = _loss_and_grads(remat)
    np.testing.assert_allclose(v, value, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g, grads)
  assert dots[False] == dots_none
  assert dots[True] == dots['full'] == dots['nothing_saveable'] > dots_none


@pytest.mark.parametrize('value,expected', [
    (None, None), (False, None), ('none', None), ('False', None),
    (True, jax.checkpoint_policies.nothing_saveable), ('full', jax.checkpoint_policies.nothing_saveable),
    ('true', jax.checkpoint_policies.nothing_saveable), ('dots', jax.checkpoint_policies.checkpoint_dots)])
def test_policy_names(value, expected):
  assert remat_policy(value) is expected


def test_unknown_policy_is_an_error_naming_the_key():
  with pytest.raises(ValueError, match="model.remat must be 'none', 'full', 'dots'"):
    models.build(tiny_vit('laps', remat='some'), nnx.Rngs(0))
