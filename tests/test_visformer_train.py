"""A short Visformer run through the trainer: BatchNorm running averages move in training, precise
BN recomputes them at the end (config.precise_bn), and the checkpoint and the export hold them."""
import logging
import os

import numpy as np
from flax import traverse_util

from laps_jax import checkpoints, export
from laps_jax.models.visformer import VisformerConfig
from laps_jax.train import checkpointing, trainer


def test_visformer_run_keeps_batch_norm_statistics(tiny_config, tmp_path, caplog):
  config = tiny_config()
  config.model = VisformerConfig.variant('Mu', image_size=32, num_frames=4, num_classes=6,
                                         leap_levels=((1, 2), (2, 1)), attention_impl='xla').to_config_dict()
  config.data.update(dict(image_size=32, num_frames=4, scale_jitter=(32, 40), test_short_side=32))
  config.total_steps = 2
  config.precise_bn.update(dict(num_batches=2, every_epochs=1))
  workdir = str(tmp_path / 'run')
  with caplog.at_level(logging.INFO):
    results = trainer.run(config, workdir)
  assert results['step'] == 2 and results['validation']['count'] == 40
  assert 'Precise BN at step 2: BatchNorm statistics of 2 training batches.' in caplog.text

  saved = checkpointing.Checkpointer(workdir, keep=10).restore_model_arrays(2)
  flat = traverse_util.flatten_dict(saved, sep='/')
  var = np.asarray(flat['stage2/0/norm1/var'])
  assert var.shape == (32,) and not np.allclose(var, 1.0)  # moved away from the initial 1

  out = str(tmp_path / 'export')
  export.export(workdir, out)
  model, _ = checkpoints.load_model(out)
  np.testing.assert_array_equal(np.asarray(model.stage2[0].norm1.var[...]), var)
