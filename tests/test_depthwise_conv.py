"""layers.depthwise_conv (k² shifted multiply-adds) equals XLA's grouped convolution, values and
gradients (LVT's Mix-FFN uses it: XLA:CPU runs the grouped convolution ~17× slower)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from laps_jax.models.layers import depthwise_conv


@pytest.mark.parametrize('k,padding,shape', [(3, 1, (2, 5, 7, 6)), (3, 0, (1, 6, 6, 4)), (5, 2, (1, 7, 5, 3))])
def test_depthwise_conv_equals_grouped_conv(k, padding, shape):
  x = jax.random.normal(jax.random.key(0), shape)
  kernel = jax.random.normal(jax.random.key(1), (k, k, 1, shape[-1]))

  def grouped(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), [(padding, padding)] * 2,
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                        feature_group_count=shape[-1])
  np.testing.assert_allclose(depthwise_conv(x, kernel, padding), grouped(x, kernel), atol=1e-5)
  loss = lambda f: lambda x, kernel: jnp.sum(jnp.sin(f(x, kernel)))
  got = jax.grad(loss(lambda x, kr: depthwise_conv(x, kr, padding)), argnums=(0, 1))(x, kernel)
  want = jax.grad(loss(grouped), argnums=(0, 1))(x, kernel)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=1e-4)
