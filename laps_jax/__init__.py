"""laps_jax: efficient video transformers (LAPS, LVT and baselines) in JAX / Flax NNX."""
