"""Training, evaluation and the dry run: `laps_jax.train.run(config, workdir)`.

Modules, in the order a run uses them: mesh (devices and axis rules), optimizer (optax),
train_state (state created sharded; the jitted steps), checkpointing (Orbax), metrics (clu
writers), evaluate (single- and multi-view), dry_run (compile-only memory/FLOPs report), and
trainer (the loop, top to bottom).
"""
from laps_jax.train import tensorboard as _tensorboard

_tensorboard.install()  # before anything imports clu.metric_writers (see tensorboard.py)
