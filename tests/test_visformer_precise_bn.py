"""Precise BN (laps_jax/train/precise_bn.py) against fvcore's rule written here in NumPy."""
import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx

from laps_jax.models.batch_norm import BatchNorm
from laps_jax.models.visformer import VideoVisformer, VisformerConfig
from laps_jax.train import precise_bn


class TwoNorms(nnx.Module):
  """BN -> x @ w -> BN on (N, C): the second layer's statistics depend on the first's batch stats."""

  def __init__(self, rngs):
    self.bn1 = BatchNorm(3, rngs=rngs)
    self.w = nnx.Param(jnp.asarray(np.random.default_rng(0).normal(size=(3, 2)), jnp.float32))
    self.bn2 = BatchNorm(2, rngs=rngs)

  def __call__(self, x, train=False):
    return self.bn2(self.bn1(x, train) @ self.w[...], train)


def test_precise_statistics_are_the_average_of_batch_statistics():
  model = TwoNorms(nnx.Rngs(0))
  model.bn1.scale[...] = jnp.asarray([1.0, 2.0, 0.5])
  rng = np.random.default_rng(1)
  batches = [rng.normal(i, 1 + i, size=(6, 3)) for i in range(4)]
  used = precise_bn.update_batch_norm_statistics(model, iter([jnp.asarray(b, jnp.float32) for b in batches]), 3)
  assert used == 3
  w = np.asarray(model.w[...], np.float64)
  means1, vars1, means2, vars2 = [], [], [], []
  for x in batches[:3]:  # fvcore: running stat += (batch stat - running stat) / (i + 1)
    means1.append(x.mean(0))
    vars1.append(x.var(0, ddof=1))
    h = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * np.array([1.0, 2.0, 0.5])
    h = h @ w
    means2.append(h.mean(0))
    vars2.append(h.var(0, ddof=1))
  np.testing.assert_allclose(model.bn1.mean[...], np.mean(means1, 0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(model.bn1.var[...], np.mean(vars1, 0), rtol=1e-5)
  np.testing.assert_allclose(model.bn2.mean[...], np.mean(means2, 0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(model.bn2.var[...], np.mean(vars2, 0), rtol=1e-4)
  assert model.bn1.momentum == 0.1  # the model's own momentum is untouched


def test_precise_bn_on_visformer_changes_only_the_statistics():
  config = VisformerConfig.variant('Mu', image_size=32, num_frames=2, num_classes=3, leap_levels=((1,), (None,)))
  model = VideoVisformer(config, nnx.Rngs(0))
  params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))
  rng = np.random.default_rng(2)
  batches = ({'videos': jnp.asarray(rng.normal(size=(2, 2, 32, 32, 3)), jnp.float32)} for _ in range(5))
  assert precise_bn.update_batch_norm_statistics(model, batches, 2) == 2
  after = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
  assert not np.allclose(before['stem']['bn']['var'], after['stem']['bn']['var'])
  jax.tree.map(np.testing.assert_array_equal, params, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  assert precise_bn.update_batch_norm_statistics(model, iter([]), 0) == 0


def test_due_at_the_end_of_every_nth_epoch():
  # 2.5 steps per epoch: epochs end at steps 3 (2.5), 5, 8 (7.5), 10
  assert [s for s in range(1, 11) if precise_bn.due(s, 2.5, 1)] == [3, 5, 8, 10]
  assert [s for s in range(1, 11) if precise_bn.due(s, 2.5, 2)] == [5, 10]
