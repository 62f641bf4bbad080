"""Visformer on 4 simulated CPU devices: BatchNorm statistics over the global batch (synchronised
BatchNorm under jit), so losses and running averages match one device on every mesh, and the
parameters are sharded by their logical axis names."""
import json

from conftest import run_python

SCRIPT = r'''
import json
import jax, jax.numpy as jnp, numpy as np, optax
from flax import nnx
from laps_jax.models.visformer import VisformerConfig, VideoVisformer
from laps_jax.train import mesh as mesh_lib

config = VisformerConfig.variant('Mu', image_size=32, num_frames=4, num_classes=3, hidden_size=32,
                                 leap_levels=((1, 2), (2,)), attention_impl='xla')
rng = np.random.default_rng(0)
videos = [rng.normal(size=(8, 4, 32, 32, 3)).astype(np.float32) for _ in range(2)]
labels = [rng.integers(0, 3, 8) for _ in range(2)]

def step(graphdef, state, v, y):
  model = nnx.merge(graphdef, state)
  loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(v, train=True), y).mean()
  loss, grads = nnx.value_and_grad(loss_fn)(model)
  params = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads))
  return nnx.state(model), loss

out = {}
for shape in [(1, 1, 1), (2, 2, 1)]:
  mesh = mesh_lib.make_mesh(shape, jax.devices()[:int(np.prod(shape))])
  with mesh_lib.activate(mesh, mesh_lib.DEFAULT_AXIS_RULES):
    graphdef, abstract = nnx.get_abstract_model(lambda: VideoVisformer(config, nnx.Rngs(0)), mesh)
    shardings = jax.tree.map(lambda x: x.sharding, abstract)
    state = jax.jit(lambda: nnx.state(VideoVisformer(config, nnx.Rngs(0))), out_shardings=shardings)()
    batch = mesh_lib.batch_sharding(mesh, 5)
    jstep = jax.jit(lambda s, v, y: step(graphdef, s, v, y), in_shardings=(shardings, batch, mesh_lib.batch_sharding(mesh)),
                    out_shardings=(shardings, mesh_lib.replicated(mesh)))
    losses = []
    for v, y in zip(videos, labels):
      state, loss = jstep(state, jax.device_put(v, batch), jax.device_put(y, mesh_lib.batch_sharding(mesh)))
      losses.append(float(loss))
  qkv = state['stage2'][0]['attn']['qkv']
  out[str(shape)] = dict(losses=losses, var=np.asarray(state['stage2'][1]['norm1']['var']).tolist(),
                         qkv_spec=[str(a) for a in qkv.sharding.spec],
                         qkv_shard=list(qkv.addressable_shards[0].data.shape))
print('RESULT' + json.dumps(out))
'''


def test_synchronised_batch_norm_matches_one_device_on_every_mesh():
  result = run_python(['-c', SCRIPT], devices=4)
  out = json.loads(result.stdout.split('RESULT', 1)[1])
  reference = out['(1, 1, 1)']
  for shape in ['(2, 2, 1)']:
    for a, b in zip(out[shape]['losses'], reference['losses']):
      assert abs(a - b) < 1e-4 * max(1.0, abs(b)), (shape, out[shape]['losses'], reference['losses'])
    for a, b in zip(out[shape]['var'], reference['var']):  # running var after 2 steps: global statistics
      assert abs(a - b) < 1e-4 * max(1.0, abs(b)), shape
  assert out['(2, 2, 1)']['qkv_spec'][0] == 'fsdp' and out['(2, 2, 1)']['qkv_shard'][0] == 32 // 2
