"""Executes every notebook in experiments/notebooks/ top to bottom (nbclient, the venv's kernel) with
tiny settings, so that they cannot rot, and checks what each must produce."""
import json
import os

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
pytest.importorskip('ipykernel')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, 'experiments', 'notebooks')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """One generated synthetic_motion shared by the notebooks (each would otherwise make its own)."""
  return str(tmp_path_factory.mktemp('notebook_data'))


def run_notebook(name: str, overrides: dict) -> nbformat.NotebookNode:
  """Runs `name` with `overrides` appended to its parameters cell (papermill-style); returns the
  executed notebook. A cell that raises fails the test with the cell's traceback."""
  nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  params = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
  assert len(params) == 1, f'{name} must have exactly one cell tagged "parameters"'
  params[0].source += '\n# overrides from tests/test_notebooks.py\n' + '\n'.join(
      f'{k} = {v!r}' for k, v in overrides.items())
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                                   resources={'metadata': {'path': NOTEBOOKS}})
  client.execute()
  return nb


def text_output(nb) -> str:
  """Everything the notebook printed (stdout and result text, not stderr logging)."""
  parts = []
  for cell in nb.cells:
    for out in cell.get('outputs', []):
      if out.get('output_type') == 'stream' and out.get('name') == 'stdout':
        parts.append(out['text'])
      elif out.get('output_type') in ('execute_result', 'display_data'):
        parts.append(out.get('data', {}).get('text/plain', ''))
  return '\n'.join(parts)


def has_png(nb) -> bool:
  return any('image/png' in out.get('data', {}) for cell in nb.cells for out in cell.get('outputs', []))


def test_quickstart(tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  nb = run_notebook('quickstart.ipynb', dict(WORKDIR=workdir, DATA_DIR=data_dir, TOTAL_STEPS=12))
  with open(os.path.join(workdir, 'eval_results.json')) as f:
    results = json.load(f)
  with open(os.path.join(workdir, 'config.json')) as f:
    data = json.load(f)['data']
  # the eval cell ran the multi-view test of the checkpoint the train cell wrote
  assert results['step'] == 12 and results['test_views'] == data['test_clips'] * data['test_crops']
  assert 0.0 <= results['test']['top1'] <= results['test']['top5'] <= 1.0 and results['test']['count'] > 0
  out = text_output(nb)
  assert 'scalar tags:' in out and "'loss'" in out  # the TensorBoard events were read back
  assert has_png(nb)  # the scalars were plotted


def test_inference(tmp_path, data_dir):
  workdir = str(tmp_path / 'inference')
  nb = run_notebook('inference.ipynb', dict(WORKDIR=workdir, DATA_DIR=data_dir, DEMO_STEPS=6))
  out = text_output(nb)
  assert os.path.exists(os.path.join(workdir, 'export'))
  ranks = [line for line in out.splitlines() if line.strip()[:2] in {f'{i}.' for i in range(1, 6)}]
  assert len(ranks) == 5 and all('%' in line for line in ranks)  # the top-5 with probabilities
  assert 'true class:' in out
  assert has_png(nb)  # the sampled frames were shown


def test_colab_tpu_falls_back_to_the_demo_on_cpu(tmp_path, data_dir):
  export_dir = str(tmp_path / 'export')
  nb = run_notebook('colab_tpu.ipynb', dict(WORKDIR=str(tmp_path / 'run'), EXPORT_DIR=export_dir,
                                            DEMO_DATA_DIR=data_dir, TOTAL_STEPS=6))
  out = text_output(nb)
  assert 'mesh:' in out and 'no TPU here' in out
  assert f'to {export_dir}: laps' in out  # exported and loaded back
  assert os.listdir(export_dir)
