"""Visformer MACs by operator: the jaxpr walk against the closed form, and the published fvcore
figures of the LAPS model zoo (Visformer-S 8×224, 400 classes) within 0.5 %."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import visformer_macs  # noqa: E402
from experiments.model_configs import PAPER_ROWS  # noqa: E402
from laps_jax.models.visformer import VisformerConfig  # noqa: E402

NO_LEAP = ((None,), (None,))


@pytest.mark.parametrize('overrides', [dict(leap_levels=((1, 2), (2, 1))), dict(leap_levels=NO_LEAP, shift_div=0),
                                       dict(leap_levels=NO_LEAP, temporal_attention='joint', shift_div=0),
                                       dict(image_size=72, leap_levels=((1,), (None,)))])
def test_jaxpr_split_equals_the_closed_form_on_a_tiny_model(overrides):
  config = VisformerConfig.variant('Mu', **dict(image_size=64, num_frames=4, num_classes=5, stem_channels=8,
                                                hidden_size=16, stage_depths=(1, 2, 2), num_heads=2) | overrides)
  assert visformer_macs.forward_macs_by_operator(config) == visformer_macs.analytic_macs_by_operator(config)


@pytest.mark.parametrize('label', ['Visformer-S 2D', 'Visformer-S LAPS', 'Visformer-S Base3D (joint)'])
def test_visformer_s_8x224_matches_the_model_zoo(label):
  row = next(r for r in PAPER_ROWS if r.label == label and r.frames == 8)
  config = VisformerConfig(**row.config().to_dict())
  ops = visformer_macs.forward_macs_by_operator(config)
  assert sum(ops.values()) / 1e9 == pytest.approx(row.published_gmacs, rel=5e-3)
  published = visformer_macs.published_by_operator(config)
  if published is not None:
    for key, value in published.items():
      assert ops[key] / 1e9 == pytest.approx(value, rel=5e-3, abs=1e-3), key
