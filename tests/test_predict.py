"""`python -m laps_jax.predict`: decode, test views, top-5 names; corrupt files reported, others run.
Also the shipped label-name lists."""
import json

import ml_collections
import numpy as np
import pytest
from flax import nnx

import reference_numpy as ref
from laps_jax import checkpoints, models, predict, weights
from laps_jax.data import augment, sampling, video_decode
from laps_jax.models.vit import ViTConfig

FRAMES, CLASSES, IMAGE = 4, 5, 32
NAMES = ['waving', 'clapping', 'jumping', 'sitting', 'running']


def tiny_laps_config():
  return ViTConfig.variant('Mu/8', name='laps', image_size=IMAGE, hidden_size=32, num_layers=2, num_heads=2,
                           mlp_dim=64, num_frames=FRAMES, num_classes=CLASSES, attention_impl='xla',
                           leap_levels=(1, 2)).to_config_dict()


@pytest.fixture(scope='module')
def exported_model(tmp_path_factory):
  """A tiny LAPS model with random (non-zero) weights, exported as convert / export write it."""
  from safetensors.numpy import save_file
  root = tmp_path_factory.mktemp('predict')
  source = str(root / 'vit.safetensors')
  save_file(ref.random_timm_vit(np.random.default_rng(0), hidden=32, layers=2, heads=2, mlp=64, patch=8,
                                image=IMAGE, classes=CLASSES), source)
  config = tiny_laps_config()
  model = models.build(config, nnx.Rngs(0))
  weights.import_weights('timm', source, model, config)
  directory = str(root / 'model')
  checkpoints.save_model(directory, model, config)
  return directory


@pytest.fixture(scope='module')
def video_files(tmp_path_factory):
  root = tmp_path_factory.mktemp('videos')
  rng = np.random.default_rng(1)
  good = str(root / 'moving_square.mp4')
  frames = np.zeros((20, 48, 64, 3), np.uint8)
  for t in range(20):  # a bright square moving right over a noisy background
    frames[t] = rng.integers(0, 60, (48, 64, 3))
    frames[t, 16:32, 2 * t:2 * t + 16] = 230
  video_decode.write_video(good, frames, fps=10)
  corrupt = str(root / 'corrupt.mp4')
  with open(corrupt, 'wb') as f:
    f.write(b'\x00\x00\x00\x18ftypmp42' + rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
  labels = str(root / 'labels.txt')
  with open(labels, 'w') as f:
    f.write('\n'.join(NAMES) + '\n')
  return good, corrupt, labels


def test_json_output_top5_and_corrupt_file(exported_model, video_files, capsys):
  good, corrupt, labels = video_files
  code = predict.main(['predict', f'--model={exported_model}', '--json', f'--labels={labels}', '--test_clips=2',
                       '--test_crops=3', '--frame_stride=2', good, corrupt])
  captured = capsys.readouterr()
  assert code == 1  # one video failed
  assert f'{corrupt}: cannot decode' in captured.err
  output = json.loads(captured.out)
  ok, failed = output['results']
  assert failed['video'] == corrupt and 'cannot decode' in failed['error']
  assert ok['video'] == good and ok['views'] == 6
  top5 = ok['top5']
  assert [e['label'] for e in top5] == [NAMES[e['index']] for e in top5]
  assert sorted(e['index'] for e in top5) == list(range(CLASSES))
  probabilities = np.array([e['probability'] for e in top5])
  assert np.all(np.diff(probabilities) <= 0) and abs(probabilities.sum() - 1) < 1e-6

  # The probabilities are the softmax of the view-averaged logits of the evaluation views.
  model, config = checkpoints.load_model(exported_model)
  video = video_decode.decode_video_file(good, short_side=IMAGE)
  indices = sampling.test_indices(len(video.frames), FRAMES, 'dense', 2, 2)
  views = augment.eval_views(video.frames, indices, IMAGE, IMAGE, 3, (0.5,) * 3, (0.5,) * 3)
  logits = np.asarray(model(views)).mean(axis=0)
  expected = np.exp(logits - logits.max())
  expected /= expected.sum()
  for entry in top5:
    assert entry['probability'] == pytest.approx(expected[entry['index']], abs=1e-5)


def test_text_output_uses_config_data_settings_and_label_set(exported_model, video_files, tmp_path, capsys):
  good, _, _ = video_files
  config_file = tmp_path / 'config.py'
  config_file.write_text(
      'import ml_collections\n'
      'def get_config():\n'
      '  return ml_collections.ConfigDict(dict(data=ml_collections.ConfigDict(dict(\n'
      "      name='kinetics400', test_clips=3, test_crops=1, sampling='segment', frame_stride=1,\n"
      '      test_short_side=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))))\n')
  # 400 Kinetics names for a 5-class model: refused with a clear message...
  assert predict.main(['predict', f'--model={exported_model}', f'--config={config_file}', good]) == 1
  assert '400 class names for a model with 5 classes' in capsys.readouterr().err
  # ... the views still come from the config when the names are given explicitly.
  names = tmp_path / 'names.txt'
  names.write_text('\n'.join(NAMES))
  assert predict.main(['predict', f'--model={exported_model}', f'--config={config_file}', f'--labels={names}',
                       good]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0] == f'{good}  (3 clips x 1 crops)'
  assert len(out) == 1 + 5 and all(line.split('%  ')[1] in NAMES for line in out[1:])


def test_view_settings_precedence():
  model_config = tiny_laps_config()
  defaults = predict.view_settings(model_config, None, {})
  assert (defaults['test_clips'], defaults['test_crops'], defaults['frame_stride']) == (1, 1, 8)
  data = {'test_clips': 10, 'test_crops': 3, 'frame_stride': 4, 'test_short_side': 40}
  from_data = predict.view_settings(model_config, data, {'test_clips': None})
  assert (from_data['test_clips'], from_data['test_crops'], from_data['test_short_side']) == (10, 3, 40)
  assert predict.view_settings(model_config, data, {'test_clips': 2})['test_clips'] == 2


def test_default_normalisation_is_the_family_s():
  """Without flags or a data_config.json, a converted model is normalised as its family's
  pretrained weights expect: mean = std = 0.5 for ViT / LVT, the LAPS Visformer configs' values
  for Visformer."""
  from laps_jax.models.visformer import VisformerConfig
  vit = predict.view_settings(tiny_laps_config(), None, {})
  assert vit['mean'] == vit['std'] == (0.5, 0.5, 0.5)
  visformer = predict.view_settings(VisformerConfig.variant('Mu', num_classes=3), None, {})
  assert visformer['mean'] == (0.486, 0.457, 0.407) and visformer['std'] == (0.229, 0.224, 0.225)
  data = {'mean': (0.1, 0.2, 0.3), 'std': (1.0, 1.0, 1.0)}
  assert predict.view_settings(VisformerConfig.variant('Mu', num_classes=3), data, {})['mean'] == (0.1, 0.2, 0.3)


@pytest.mark.parametrize('name, count', [('kinetics400', 400), ('kinetics600', 600), ('kinetics700', 700),
                                         ('ssv2', 174)])
def test_shipped_label_lists(name, count):
  names = predict.read_label_file(name)
  assert len(names) == count == len(set(names))
  if name.startswith('kinetics'):
    assert names == sorted(names)  # the official class index is the sorted CSV label
  assert predict.label_names(count, None, None) == names  # chosen by the class count


def test_label_list_spot_checks():
  k400 = predict.read_label_file('kinetics400')
  assert k400[0] == 'abseiling' and k400[-1] == 'zumba'
  assert k400[308] == 'skiing (not slalom or crosscountry)' and k400[212] == 'petting animal (not cat)'
  ssv2 = predict.read_label_file('ssv2')
  assert ssv2[0] == 'Approaching something with your camera'
  assert ssv2[65] == 'Pretending to be tearing something that is not tearable'
  assert ssv2[173] == 'Wiping something off of something'
  assert predict.read_label_file('kinetics700')[29] == 'being excited'
