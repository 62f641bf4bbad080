"""laps_jax: efficient video transformers (LAPS, LVT and baselines) in JAX / Flax NNX."""

from laps_jax import cpu_defaults as _cpu_defaults

_cpu_defaults.apply()  # malloc and XLA:CPU settings, before JAX starts its CPU backend
