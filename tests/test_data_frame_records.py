"""Builder version 2.0.0 stores one record per frame; data of the old layout gets a clear error."""

import os

import ml_collections
import pytest
from array_record.python import array_record_data_source

from configs import demo
from laps_jax.data import datasets
from laps_jax.data import frame_records
from laps_jax.data import prepare
from laps_jax.data import video_decode
from test_data_builders import make_kinetics_manual_dir


@pytest.fixture(scope='module')
def kinetics(tmp_path_factory):
  root = tmp_path_factory.mktemp('kinetics')
  manual, data = str(root / 'manual'), str(root / 'data')
  videos = make_kinetics_manual_dir(manual, 'cvdf')
  builder = prepare.prepare('kinetics400', data, manual, short_side=24, num_processes=1,
                            strict_num_classes=False)
  return builder, manual, data, videos


def test_video_records_hold_no_frames_and_the_frames_file_holds_them_all(kinetics):
  builder, manual, _, videos = kinetics
  records = builder.as_data_source('train')
  assert all('frames' not in records[i] for i in range(len(records)))
  path = frame_records.frames_path(builder.data_dir, 'kinetics400', 'train')
  stored = array_record_data_source.ArrayRecordDataSource([path])
  assert len(stored) == sum(int(records[i]['num_frames']) for i in range(len(records)))
  source = frame_records.open_split(builder, 'train')
  for i in range(len(source)):
    example = source[i]
    video_id = example['video_id'].decode()
    expected = video_decode.decode_video_file(
        os.path.join(manual, 'train', f'{video_id}.mp4'), short_side=24).frames
    assert len(example['frames']) == len(expected) == videos[video_id][1]
    # Frame j of this video is record first_frame + j: the very JPEG preparation made.
    assert [example['frames'][j] for j in range(len(expected))] == expected
    with pytest.raises(IndexError):
      example['frames'][len(expected)]


def test_data_of_the_old_layout_is_refused_with_the_prepare_command(kinetics, tmp_path):
  _, _, data, _ = kinetics
  c = ml_collections.ConfigDict(demo.get_config().data.to_dict())
  c.update(name='kinetics400', data_dir=data)
  assert datasets.num_examples(c, 'train') == 4            # the 2.0.0 data reads
  old = tmp_path / 'kinetics400' / '1.0.0'
  old.mkdir(parents=True)
  (old / 'dataset_info.json').write_text('{}')
  c.data_dir = str(tmp_path)
  with pytest.raises(datasets.DatasetNotPreparedError) as error:
    datasets.ensure_prepared(c)
  message = str(error.value)
  assert 'prepared by builder version 1.0.0' in message and 'one record per frame' in message
  assert f'python -m laps_jax.data.prepare --dataset=kinetics400 --manual_dir=DIR ' \
         f'--data_dir={tmp_path}' in message
