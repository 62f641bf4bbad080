"""TFDS builders on real (tiny) mp4 / webm files written with PyAV into a temporary manual dir."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from laps_jax.data import builder_common
from laps_jax.data import frame_records
from laps_jax.data import prepare
from laps_jax.data import registry
from laps_jax.data import video_decode

HEIGHT, WIDTH = 32, 48
HEADER = 'label,youtube_id,time_start,time_end,split\n'


def frame_colour(video, t):
  """The flat colour of frame t of test video `video` (each frame distinct)."""
  return np.array([20 + 25 * (video % 8), 10 + 18 * t, 200 - 30 * (video // 8)], np.float64)


def write_test_video(path, video, num_frames):
  frames = np.stack([np.broadcast_to(frame_colour(video, t), (HEIGHT, WIDTH, 3))
                     for t in range(num_frames)]).astype(np.uint8)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  video_decode.write_video(path, frames, fps=25)


def write_csv(path, rows, header=HEADER):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(header)
    for row in rows:
      f.write(','.join(str(x) for x in row) + '\n')


def read_split(builder, split):
  """All examples of a split as {video_id: example}."""
  source = frame_records.open_split(builder, split)
  out = {}
  for i in range(len(source)):
    example = source[i]
    out[example['video_id'].decode()] = example
  return out


def mean_colour(jpeg):
  return np.asarray(video_decode.decode_jpeg(jpeg), np.float64).reshape(-1, 3).mean(0)


# ----------------------------------------------------------------------------------------------
# Kinetics.
# ----------------------------------------------------------------------------------------------

# (label, youtube id, start, end, number of frames or a failure kind)
TRAIN = [
    ('zumba', 'aaaaaaaaaaa', 0, 10, 10),
    ('abseiling', 'bbbbbbbbbbb', 5, 15, 7),
    ('"bowling, ten-pin"', 'ccccccccccc', 12, 22, 12),  # a quoted label with a comma
    ('zumba', 'ddddddddddd', 100, 110, 9),
    ('abseiling', 'eeeeeeeeeee', 0, 10, 'missing'),
    ('zumba', 'fffffffffff', 30, 40, 'empty'),
    ('abseiling', 'ggggggggggg', 1, 11, 'corrupt'),
]
VALIDATION = [
    ('abseiling', 'hhhhhhhhhhh', 3, 13, 8),
    ('zumba', 'iiiiiiiiiii', 0, 10, 6),
]


def make_kinetics_manual_dir(root, layout):
  """Writes TRAIN / VALIDATION in the 'cvdf' or 'activitynet' layout (see kinetics.py)."""
  videos = {}
  for split, rows in (('train', TRAIN), ('validation', VALIDATION)):
    for i, (label, yid, start, end, what) in enumerate(rows):
      name = f'{yid}_{start:06d}_{end:06d}.mp4'
      if layout == 'cvdf':
        path = os.path.join(root, 'train' if split == 'train' else 'val', name)
      else:
        folder = label.strip('"').replace(' ', '_')
        path = os.path.join(root, 'videos', split, folder, name)
      video_index = len(videos)
      videos[name[:-4]] = (video_index, what, label.strip('"'))
      if what == 'missing':
        continue
      os.makedirs(os.path.dirname(path), exist_ok=True)
      if what == 'empty':
        open(path, 'wb').close()
      elif what == 'corrupt':
        with open(path, 'wb') as f:
          f.write(b'\x00\x00\x00\x18ftypmp42' + os.urandom(2000))
      else:
        write_test_video(path, video_index, what)
  rows = lambda r: [(label, yid, start, end, 'x') for label, yid, start, end, _ in r]
  if layout == 'cvdf':
    write_csv(os.path.join(root, 'annotations', 'train.csv'), rows(TRAIN))
    write_csv(os.path.join(root, 'annotations', 'val.csv'), rows(VALIDATION))
  else:
    write_csv(os.path.join(root, 'kinetics_400_train.csv'), rows(TRAIN))
    write_csv(os.path.join(root, 'kinetics_400_validate.csv'), rows(VALIDATION))
  return videos


@pytest.mark.parametrize('layout,processes', [('cvdf', 1), ('activitynet', 2)])
def test_kinetics_builder(tmp_path, layout, processes):
  manual, data = tmp_path / 'manual', tmp_path / 'data'
  videos = make_kinetics_manual_dir(str(manual), layout)
  builder = prepare.prepare('kinetics400', str(data), str(manual), short_side=24,
                            num_processes=processes, strict_num_classes=False)

  names = ['abseiling', 'bowling, ten-pin', 'zumba']  # sorted train labels
  assert builder.info.features['label'].names == names
  assert set(builder.info.splits.keys()) == {'train', 'validation'}  # no test CSV given
  assert builder.info.splits['train'].num_examples == 4
  assert builder.info.splits['validation'].num_examples == 2
  assert builder.info.metadata['short_side'] == 24

  for split in ('train', 'validation'):
    for video_id, example in read_split(builder, split).items():
      index, num_frames, label = videos[video_id]
      assert example['label'] == names.index(label)
      assert example['num_frames'] == num_frames == len(example['frames'])
      assert example['original_num_frames'] == num_frames
      assert example['fps'] == pytest.approx(25.0)
      assert (example['height'], example['width']) == (24, 36)   # short side 32 -> 24
      for t in (0, num_frames - 1):
        assert video_decode.decode_jpeg(example['frames'][t]).size == (36, 24)
        assert np.abs(mean_colour(example['frames'][t]) - frame_colour(index, t)).max() < 8

  skipped = builder_common.read_skip_file(registry.dataset_dir('kinetics400', str(data)), 'train')
  reasons = {video_id: reason.split(':')[0] for video_id, _, reason in skipped}
  assert reasons == {'eeeeeeeeeee_000000_000010': 'missing',
                     'fffffffffff_000030_000040': 'empty',
                     'ggggggggggg_000001_000011': 'undecodable'}
  assert builder_common.read_skip_file(str(builder.data_path), 'validation') == []
  assert 'train: 4 examples, 3 videos skipped' in prepare.summary(builder)


def test_kinetics_test_split_only_when_labelled(tmp_path):
  manual, data = tmp_path / 'manual', tmp_path / 'data'
  make_kinetics_manual_dir(str(manual), 'cvdf')
  write_csv(str(manual / 'annotations' / 'test.csv'), [('jjjjjjjjjjj', 0, 10, 'test')],
            header='youtube_id,time_start,time_end,split\n')
  builder = prepare.prepare('kinetics400', str(data / 'a'), str(manual), short_side=24,
                            num_processes=1, strict_num_classes=False)
  assert 'test' not in builder.info.splits

  write_test_video(str(manual / 'test' / 'jjjjjjjjjjj_000000_000010.mp4'), 20, 5)
  write_csv(str(manual / 'annotations' / 'test.csv'), [('zumba', 'jjjjjjjjjjj', 0, 10, 'test')])
  builder = prepare.prepare('kinetics400', str(data / 'b'), str(manual), short_side=24,
                            num_processes=1, strict_num_classes=False)
  test = read_split(builder, 'test')
  assert list(test) == ['jjjjjjjjjjj_000000_000010']
  assert test['jjjjjjjjjjj_000000_000010']['label'] == 2   # zumba
  assert test['jjjjjjjjjjj_000000_000010']['num_frames'] == 5


def test_kinetics_errors_name_the_file_and_what_was_expected(tmp_path):
  manual = tmp_path / 'manual'
  make_kinetics_manual_dir(str(manual), 'cvdf')
  # Wrong number of classes for kinetics400 (strict by default).
  with pytest.raises(ValueError, match=r'train\.csv: 3 distinct labels, kinetics400 has 400'):
    prepare.prepare('kinetics400', str(tmp_path / 'd1'), str(manual), num_processes=1)
  # Wrong columns.
  write_csv(str(manual / 'annotations' / 'val.csv'), [('zumba', 'x', 0, 10)],
            header='label,youtube_id,start,end\n')
  with pytest.raises(ValueError) as error:
    prepare.prepare('kinetics400', str(tmp_path / 'd2'), str(manual), num_processes=1,
                    strict_num_classes=False)
  assert 'val.csv' in str(error.value)
  assert 'label,youtube_id,time_start,time_end,split' in str(error.value)
  # Missing validation CSV.
  os.remove(manual / 'annotations' / 'val.csv')
  with pytest.raises(FileNotFoundError, match='no validation annotation CSV'):
    prepare.prepare('kinetics400', str(tmp_path / 'd3'), str(manual), num_processes=1,
                    strict_num_classes=False)
  # A validation label that is not a train label.
  write_csv(str(manual / 'annotations' / 'val.csv'), [('yoga', 'x' * 11, 0, 10, 'val')])
  with pytest.raises(ValueError, match="label 'yoga'"):
    prepare.prepare('kinetics400', str(tmp_path / 'd4'), str(manual), num_processes=1,
                    strict_num_classes=False)
  # Empty or absent manual dir.
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='is empty'):
    prepare.prepare('kinetics600', str(tmp_path / 'd5'), str(tmp_path / 'empty'))
  with pytest.raises(FileNotFoundError, match='does not exist'):
    prepare.prepare('kinetics700', str(tmp_path / 'd6'), str(tmp_path / 'nowhere'))
  with pytest.raises(ValueError, match='no manual_dir'):
    prepare.prepare('kinetics400', str(tmp_path / 'd7'), None)


def test_prepare_command_line(tmp_path, capsys):
  manual = tmp_path / 'manual'
  make_kinetics_manual_dir(str(manual), 'cvdf')
  argv = ['--dataset=kinetics400', f'--manual_dir={manual}', f'--data_dir={tmp_path / "data"}',
          '--short_side=24', '--num_processes=1']
  assert prepare.main(argv) == 1     # 3 classes, not 400
  assert 'kinetics400 has 400' in capsys.readouterr().err
  assert prepare.main(argv + ['--allow_class_subset']) == 0
  out = capsys.readouterr().out
  assert 'train: 4 examples, 3 videos skipped' in out
  assert 'validation: 2 examples, 0 videos skipped' in out


# ----------------------------------------------------------------------------------------------
# Something-Something v2.
# ----------------------------------------------------------------------------------------------

def test_ssv2_builder(tmp_path):
  manual, data = tmp_path / 'manual', tmp_path / 'data'
  labels = {'Pushing something from left to right': '1', 'Holding something': '0',
            'Putting something on something': '2'}
  train = [
      {'id': '101', 'label': 'holding a cup', 'template': 'Holding [something]',
       'placeholders': ['a cup']},
      {'id': '102', 'label': 'pushing pen from left to right',
       'template': 'Pushing [something] from left to right', 'placeholders': ['pen']},
      {'id': '103', 'label': 'putting cup on table', 'template': 'Putting [something] on '
       '[something]', 'placeholders': ['cup', 'table']},
      {'id': '104', 'label': 'holding x', 'template': 'Holding [something]', 'placeholders': []},
  ]
  validation = [{'id': '201', 'label': 'putting a on b',
                 'template': 'Putting [something] on [something]', 'placeholders': ['a', 'b']}]
  manual.mkdir()
  for name, content in (('labels', labels), ('train', train), ('validation', validation)):
    (manual / f'something-something-v2-{name}.json').write_text(json.dumps(content))
  frames = {'101': 6, '102': 9, '103': 4, '201': 7}      # 104 is missing
  for i, (video_id, n) in enumerate(frames.items()):
    write_test_video(str(manual / '20bn-something-something-v2' / f'{video_id}.webm'), i, n)

  builder = prepare.prepare('ssv2', str(data), str(manual), short_side=320, num_processes=1,
                            strict_num_classes=False)
  assert builder.info.features['label'].names == [
      'Holding something', 'Pushing something from left to right',
      'Putting something on something']
  train_examples = read_split(builder, 'train')
  assert {k: int(v['label']) for k, v in train_examples.items()} == {'101': 0, '102': 1, '103': 2}
  assert {k: int(v['num_frames']) for k, v in train_examples.items()} == {
      '101': 6, '102': 9, '103': 4}
  # webm has no frame count; the announced count comes from duration x rate. Frames smaller
  # than the short side keep their size.
  assert int(train_examples['102']['original_num_frames']) == 9
  assert (int(train_examples['102']['height']), int(train_examples['102']['width'])) == (32, 48)
  assert np.abs(mean_colour(train_examples['102']['frames'][8]) - frame_colour(1, 8)).max() < 8
  validation_examples = read_split(builder, 'validation')
  assert list(validation_examples) == ['201'] and validation_examples['201']['label'] == 2
  skipped = builder_common.read_skip_file(str(builder.data_path), 'train')
  assert [(v, r.split(':')[0]) for v, _, r in skipped] == [('104', 'missing')]


def test_ssv2_errors(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  (manual / 'something-something-v2-labels.json').write_text(json.dumps({'Holding something': '0'}))
  with pytest.raises(FileNotFoundError, match='something-something-v2-train.json'):
    prepare.prepare('ssv2', str(tmp_path / 'd1'), str(manual), num_processes=1,
                    strict_num_classes=False)
  (manual / 'something-something-v2-train.json').write_text(json.dumps(
      [{'id': '1', 'template': 'Dropping [something]', 'label': 'x', 'placeholders': []}]))
  (manual / 'something-something-v2-validation.json').write_text('[]')
  with pytest.raises(ValueError, match="template 'Dropping something'"):
    prepare.prepare('ssv2', str(tmp_path / 'd2'), str(manual), num_processes=1,
                    strict_num_classes=False)
  with pytest.raises(ValueError, match='1 labels, ssv2 has 174'):
    prepare.prepare('ssv2', str(tmp_path / 'd3'), str(manual), num_processes=1)


# ----------------------------------------------------------------------------------------------
# Decoding failures, one by one.
# ----------------------------------------------------------------------------------------------

def test_decode_failures_have_reasons(tmp_path):
  good = str(tmp_path / 'good.mp4')
  write_test_video(good, 0, 12)
  video = video_decode.decode_video_file(good, short_side=16)
  assert len(video.frames) == 12 and (video.height, video.width) == (16, 24)
  data = open(good, 'rb').read()
  cases = {
      'missing': str(tmp_path / 'nothing.mp4'),
      'empty': str(tmp_path / 'empty.mp4'),
      'undecodable': str(tmp_path / 'text.mp4'),
      'truncated_header': str(tmp_path / 'cut.mp4'),
  }
  open(cases['empty'], 'wb').close()
  open(cases['undecodable'], 'w').write('not a video\n' * 50)
  # libx264 in mp4 writes its index (moov) at the end: half a file has none.
  open(cases['truncated_header'], 'wb').write(data[:len(data) // 2])
  expected = {'missing': 'missing', 'empty': 'empty', 'undecodable': 'undecodable',
              'truncated_header': 'undecodable'}
  for case, path in cases.items():
    with pytest.raises(video_decode.VideoDecodeError) as error:
      video_decode.decode_video_file(path)
    assert str(error.value).startswith(expected[case]), (case, str(error.value))
