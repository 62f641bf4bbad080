"""PyTorch files are read with weights_only=True: pickled code is refused before it runs."""
import os
import pickle

import numpy as np
import pytest

from laps_jax.weights import UnsafeCheckpointError
from laps_jax.weights.tensor_files import read_state_dict_file
from laps_jax.weights.torch_io import load_torch_file

torch = pytest.importorskip('torch')


class WritesMarkerWhenUnpickled:
  """A pickle payload: unpickling it calls `open(marker, 'w')`, i.e. runs code from the file."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, 'w'))


@pytest.mark.parametrize('writer', ['torch.save', 'pickle'])
def test_malicious_pickle_is_refused_and_does_not_run(tmp_path, writer):
  marker = str(tmp_path / 'pwned')
  path = str(tmp_path / 'checkpoint.pth')
  if writer == 'torch.save':
    payload = {'state_dict': {'w': torch.zeros(2)}, 'extra': WritesMarkerWhenUnpickled(marker)}
    torch.save(payload, path)   # zip format
  else:
    payload = {'state_dict': {'w': [0.0, 0.0]}, 'extra': WritesMarkerWhenUnpickled(marker)}
    with open(path, 'wb') as f:  # legacy plain pickle, protocol 2 as torch's legacy format
      pickle.dump(payload, f, protocol=2)
  assert not os.path.exists(marker)
  with pytest.raises(UnsafeCheckpointError, match='refusing to load') as info:
    read_state_dict_file(path)
  assert 'open' in str(info.value)  # names the refused global
  assert not os.path.exists(marker)


def test_training_checkpoint_metadata_still_loads(tmp_path):
  """What training scripts put beside the weights (optimizer and scheduler state, a Counter, a
  NumPy scalar accuracy) is data, not code, and loads."""
  model = torch.nn.Linear(3, 2)
  optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
  scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [10, 15])
  path = str(tmp_path / 'ckpt.pth.tar')
  torch.save({'epoch': 3, 'state_dict': model.state_dict(), 'optimizer': optimizer.state_dict(),
              'scheduler': scheduler.state_dict(), 'best_acc1': np.float64(71.5)}, path)
  assert load_torch_file(path)['best_acc1'] == 71.5
  tensors = read_state_dict_file(path)
  assert sorted(tensors) == ['bias', 'weight']
  np.testing.assert_array_equal(tensors['weight'], model.weight.detach().numpy())
