"""The optimizer a config describes: weight-decay mask, schedules, clipping, accumulation; and the
train/eval steps' metrics."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import make_tiny_config
from laps_jax import models
from laps_jax.train import optimizer as optimizer_lib
from laps_jax.train import train_state as ts_lib


def _config(**optimizer):
  config = make_tiny_config('unused')
  config.optimizer.update(optimizer)
  return config


def test_weight_decay_mask_spares_norms_biases_and_embeddings():
  for name in ('laps', 'joint', 'lvt'):
    config = make_tiny_config('unused', name)
    model = nnx.eval_shape(lambda: models.build(config.model, nnx.Rngs(0)))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    mask = optimizer_lib.weight_decay_mask(config.optimizer.decay_pattern)(params)
    flat = {'/'.join(map(str, k)): v for k, v in
            ((tuple(getattr(p, 'key', p) for p in path), v) for path, v in jax.tree_util.tree_leaves_with_path(mask))}
    decayed = {k for k, v in flat.items() if v}
    assert decayed == {k for k in flat if k.endswith('kernel')}, name
    for k in flat:
      if any(s in k for s in ('norm', 'bias', 'embed', 'cls_token')) and not k.endswith('kernel'):
        assert not flat[k], k
    assert any('pos_embed' in k or 'temporal_embed' in k or 'time_embed' in k for k in flat)


def test_adamw_decays_only_masked_parameters():
  config = _config(name='adamw', weight_decay=0.5, clip_norm=0.0)
  config.schedule.update(dict(name='piecewise', base_lr=0.1, warmup_epochs=0.0, decay_epochs=()))
  tx, _ = optimizer_lib.make_optimizer(config, updates_per_epoch=1, total_updates=1)
  params = {'dense': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}, 'norm': {'scale': jnp.ones(2)}}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  assert np.allclose(updates['dense']['kernel'], -0.1 * 0.5)  # decoupled: -lr * wd * param
  assert np.allclose(updates['dense']['bias'], 0) and np.allclose(updates['norm']['scale'], 0)


def test_schedules():
  c = ml_collections.ConfigDict(dict(name='warmup_cosine', base_lr=1.0, warmup_epochs=2.0,
                                     decay_epochs=(), decay_factor=0.1, end_lr=0.01))
  cosine = optimizer_lib.make_schedule(c, updates_per_epoch=10, total_updates=100)
  assert float(cosine(0)) == 0.0 and float(cosine(10)) == pytest.approx(0.5)
  assert float(cosine(20)) == pytest.approx(1.0) and float(cosine(100)) == pytest.approx(0.01)
  c.update(dict(name='piecewise', warmup_epochs=1.0, decay_epochs=(5.0, 8.0)))
  piecewise = optimizer_lib.make_schedule(c, updates_per_epoch=10, total_updates=100)
  values = [float(piecewise(s)) for s in (5, 10, 49, 50, 79, 80)]
  assert values == pytest.approx([0.5, 1.0, 1.0, 0.1, 0.1, 0.01])
  with pytest.raises(ValueError, match='schedule.name'):
    optimizer_lib.make_schedule(ml_collections.ConfigDict(dict(c.to_dict(), name='linear')),
                                updates_per_epoch=1, total_updates=1)


def test_clipping_and_gradient_accumulation():
  config = _config(name='sgd', momentum=0.0, weight_decay=0.0, clip_norm=1.0, grad_accum_steps=1)
  config.schedule.update(dict(name='piecewise', base_lr=1.0, warmup_epochs=0.0, decay_epochs=()))
  tx, _ = optimizer_lib.make_optimizer(config, updates_per_epoch=1, total_updates=10)
  params = {'w': jnp.zeros(4)}
  updates, _ = tx.update({'w': jnp.full(4, 100.0)}, tx.init(params), params)
  assert float(jnp.linalg.norm(updates['w'])) == pytest.approx(1.0)  # clipped to norm 1

  # Two micro-batches with accumulation == one step on their mean gradient.
  config.optimizer.update(dict(clip_norm=0.0, momentum=0.9, grad_accum_steps=2))
  tx, _ = optimizer_lib.make_optimizer(config, updates_per_epoch=1, total_updates=10)
  assert isinstance(tx, optax.MultiSteps)
  state = tx.init(params)
  g1, g2 = {'w': jnp.arange(4.0)}, {'w': jnp.ones(4)}
  u1, state = tx.update(g1, state, params)
  assert np.allclose(u1['w'], 0)  # no update after the first micro-batch
  u2, state = tx.update(g2, state, params)
  np.testing.assert_allclose(u2['w'], -(np.arange(4.0) + 1) / 2, rtol=1e-6)


def test_train_and_eval_step_metrics():
  config = make_tiny_config('unused')
  config.schedule.update(dict(warmup_epochs=0.0, base_lr=1e-2))
  tx, _ = optimizer_lib.make_optimizer(config, updates_per_epoch=1, total_updates=10)
  model = models.build(config.model, nnx.Rngs(params=0, dropout=1))
  graphdef, state = nnx.split(ts_lib.TrainState(model, nnx.Optimizer(model, tx, wrt=nnx.Param)))
  rng = np.random.default_rng(0)
  K = config.model.num_classes
  labels = np.array([0, 1, 2, 3], np.int32)
  batch = dict(videos=rng.normal(size=(4, 4, 16, 16, 3)).astype(np.float32), labels=labels,
               targets=np.eye(K, dtype=np.float32)[labels])
  step = jax.jit(lambda s, b: ts_lib.train_step(graphdef, s, b))
  state, metrics = step(state, batch)
  assert float(metrics['loss']) == pytest.approx(np.log(K), abs=1e-5)  # zero-initialised head
  assert float(metrics['grad_norm']) > 0 and int(state['optimizer']['step']) == 1
  state, metrics = step(state, batch)
  assert float(metrics['loss']) < np.log(K) - 1e-3  # it learned something

  # eval_step: sums over mask=True rows only; multi-view logits are summed over views.
  logits = np.zeros((3, 2, K), np.float32)
  logits[0, :, 1] = [3.0, -1.0]  # sum favours class 1
  logits[1, :, 2] = [-2.0, 1.0]  # sum against class 2
  scores = ts_lib.aggregate_views(jnp.asarray(logits), 'sum_logits')
  assert list(np.argmax(scores, -1)[:2]) == [1, 0]
  eval_batch = dict(videos=np.stack([batch['videos'][:3]] * 2, axis=1), labels=np.array([0, 1, 2], np.int32),
                    mask=np.array([True, True, False]))
  sums = jax.jit(lambda s, b: ts_lib.eval_step(graphdef, s, b))(state, eval_batch)
  assert float(sums['count']) == 2.0 and 0 <= float(sums['top1']) <= 2 and float(sums['top5']) <= 2
  assert float(sums['loss']) > 0
