"""`--config.mode=dry_run`: compiles the train step for the configured mesh without data and
reports per-device memory and FLOPs."""
import re

import pytest

from conftest import make_tiny_config, run_python, write_config_file


def test_dry_run_on_a_simulated_mesh_without_data(tmp_path):
  config = make_tiny_config(str(tmp_path / 'no_data_here'))
  config.data.name = 'kinetics400'  # not prepared: a dry run needs no data
  config.model.num_classes = 400
  config.mode = 'dry_run'
  config.mesh_shape = (2, 2, 2)
  config.batch_size = 16
  path = write_config_file(tmp_path / 'tiny.py', config)
  result = run_python(['main.py', f'--config={path}', f'--workdir={tmp_path / "run"}'], devices=8)
  out = result.stdout
  assert "mesh {'data': 2, 'fsdp': 2, 'tensor': 2}" in out
  assert 'global batch 16 (4 per device)' in out
  units = {'B': 1, 'KiB': 2**10, 'MiB': 2**20, 'GiB': 2**30}
  memory = {name: float(value) * units[unit] for name, value, unit in re.findall(
      r'^\s+(arguments|temporaries|upper bound)\s+([\d.]+) (B|KiB|MiB|GiB)$', out, re.M)}
  assert set(memory) == {'arguments', 'temporaries', 'upper bound'}
  assert 0 < memory['arguments'] <= memory['upper bound']
  scale = {'FLOP': 1, 'MFLOP': 1e6, 'GFLOP': 1e9, 'TFLOP': 1e12, 'PFLOP': 1e15}
  flops = re.search(r'FLOPs per train step .*: ([\d.]+) (\w+) per device, ([\d.]+) (\w+) in all, '
                    r'([\d.]+) (\w+) per clip', out).groups()
  per_device, total, per_clip = (float(flops[i]) * scale[flops[i + 1]] for i in (0, 2, 4))
  assert per_device > 0 and total == pytest.approx(8 * per_device, rel=1e-3)
  assert per_clip == pytest.approx(total / 16, rel=1e-3)
  # Forward + backward is about 6 FLOPs per parameter and token (4 frames x 5 tokens here), plus
  # attention; XLA's count must be of that order.
  params = int(re.search(r'([\d,]+) parameters', out).group(1).replace(',', ''))
  assert 0.5 < per_clip / (6 * params * 4 * 5) < 5
