"""Training, evaluation and the dry run: `laps_jax.train.run(config, workdir)`.

Modules, in the order a run uses them: mesh (devices and axis rules), optimizer (optax),
train_state (state created sharded; the jitted steps), checkpointing (Orbax), metrics (clu
writers), evaluate (single- and multi-view), dry_run (compile-only memory/FLOPs report), and
trainer (the loop, top to bottom). tensorboard makes clu's TensorBoard writer work without
TensorFlow (metrics.py calls it where the writers are made).
"""


def run(config, workdir: str) -> dict:
  """Runs `config.mode` ('train', 'eval' or 'dry_run') in `workdir`; see `trainer.run`."""
  from laps_jax.train import trainer  # pylint: disable=g-import-not-at-top  (jax, data on use)
  return trainer.run(config, workdir)
