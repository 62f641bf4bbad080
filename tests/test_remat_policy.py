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


def _loss_and_grads(remat, config_of=lambda remat: tiny_vit('laps', remat=remat)):
  config = config_of(remat)
  model = models.build(config, nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape), params)
  nnx.update(model, params)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = jax.random.normal(jax.random.key(0), (2, 8, config.image_size, config.image_size, 3))

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


def test_every_family_reads_the_policy():
  """LVT and Visformer take the same policy names: 'none' is no remat (a non-empty string is
  truthy, so a family testing `if remat:` would rematerialise), 'full' recomputes."""
  from laps_jax.models.lvt import LVTConfig
  from laps_jax.models.visformer import VisformerConfig
  for family in (LVTConfig, VisformerConfig):
    config_of = lambda remat: family.variant('Mu', num_classes=4, num_frames=8, image_size=32,
                                             remat=remat)
    _, _, dots_off = _loss_and_grads(False, config_of)
    _, _, dots_none = _loss_and_grads('none', config_of)
    _, _, dots_full = _loss_and_grads('full', config_of)
    assert dots_none == dots_off < dots_full, family.__name__
    with pytest.raises(ValueError, match="model.remat must be"):
      family.variant('Mu', num_classes=4, remat='some')
