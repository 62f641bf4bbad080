"""The grain pipeline on a tiny prepared synthetic_motion: batches, determinism, resumption, eval."""

import os
import subprocess
import sys

import grain.python as grain
import jax
import ml_collections
import numpy as np
import pytest

from configs import demo
from conftest import REPO, python_env
from laps_jax.data import augment
from laps_jax.data import device_augment
from laps_jax.data import loaders
from laps_jax.data import pipeline
from laps_jax.data import prepare
from laps_jax.data import registry
from laps_jax.data import sampling
from laps_jax.data import synthetic_motion

NUM_TRAIN, NUM_VALIDATION = 64, 20


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('data'))
  prepare.prepare('synthetic_motion', directory, num_train=NUM_TRAIN,
                  num_validation=NUM_VALIDATION, seed=1, num_processes=1)
  return directory


def config(data_dir, **overrides):
  # A plain copy of the demo's data config (which ties test_short_side to image_size; the tests
  # set them apart), with the overrides.
  values = demo.get_config().data.to_dict()
  values.update(data_dir=data_dir, num_workers=0)
  values.update(overrides)
  return ml_collections.ConfigDict(values)


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


# ----------------------------------------------------------------------------------------------
# Config and preparation.
# ----------------------------------------------------------------------------------------------

def test_validate_config_names_missing_and_unknown_keys(data_dir):
  c = config(data_dir)
  pipeline.validate_config(c)
  assert set(c.keys()) == set(pipeline.CONFIG_KEYS)
  del c['flip']
  c.flipp = True
  with pytest.raises(ValueError) as error:
    pipeline.validate_config(c)
  assert "missing keys ['flip']" in str(error.value)
  assert "unknown keys ['flipp']" in str(error.value)
  for key, value, words in [('sampling', 'random', 'sampling'),
                            ('scale_jitter', (24, 40), 'scale_jitter'),
                            ('test_crops', 2, 'test_crops'),
                            ('auto_augment', 'augmix', 'auto_augment'),
                            ('name', 'kinetics', 'name'),
                            ('color_jitter', 1.5, 'color_jitter')]:
    with pytest.raises(ValueError, match=words):
      pipeline.validate_config(config(data_dir, **{key: value}))


def test_unprepared_dataset_error_prints_the_prepare_command(tmp_path):
  c = config(str(tmp_path), name='kinetics400')
  command = (f'python -m laps_jax.data.prepare --dataset=kinetics400 --manual_dir=DIR '
             f'--data_dir={tmp_path}')
  for call in (lambda: pipeline.ensure_prepared(c), lambda: pipeline.num_examples(c, 'train'),
               lambda: pipeline.make_train_loader(c, global_batch_size=2, seed=0,
                                                  num_classes=400)):
    with pytest.raises(pipeline.DatasetNotPreparedError) as error:
      call()
    assert command in str(error.value)


def test_ensure_prepared_generates_synthetic_motion_once(tmp_path, monkeypatch):
  monkeypatch.setattr(synthetic_motion, 'DEFAULT_NUM_TRAIN', 16)
  monkeypatch.setattr(synthetic_motion, 'DEFAULT_NUM_VALIDATION', 8)
  c = config(str(tmp_path / 'fresh'))
  pipeline.ensure_prepared(c)
  assert pipeline.num_examples(c, 'train') == 16
  assert pipeline.num_examples(c, 'validation') == 8
  assert pipeline.label_names(c) == list(synthetic_motion.CLASS_NAMES)
  info = os.path.join(registry.dataset_dir('synthetic_motion', str(tmp_path / 'fresh')),
                      'dataset_info.json')
  stamp = os.stat(info).st_mtime_ns
  pipeline.ensure_prepared(c)
  assert os.stat(info).st_mtime_ns == stamp
  with pytest.raises(ValueError, match="no split 'test'"):
    pipeline.num_examples(c, 'test')


# ----------------------------------------------------------------------------------------------
# Training batches.
# ----------------------------------------------------------------------------------------------

def test_train_batches_are_uint8_with_the_device_augmentation_parameters(data_dir):
  c = config(data_dir, label_smoothing=0.1)
  loader = pipeline.make_train_loader(c, global_batch_size=8, seed=0, num_classes=6)
  batch = next(iter(loader))
  assert batch['videos'].shape == (8, 8, 32, 32, 3) and batch['videos'].dtype == np.uint8
  assert batch['videos'].std() > 25   # the clips are not blank
  assert batch['labels'].shape == (8,) and batch['labels'].dtype == np.int32
  assert batch['color'].shape == (8, 4) and batch['erase_box'].shape == (8, 4)
  assert batch['erase_seed'].dtype == np.uint32
  assert batch['mix_weight'].shape == batch['mix_lam'].shape == (8,)
  assert 'targets' not in batch   # made in the train step (laps_jax.data.device_augment)
  out = device_augment.DeviceAugment.from_config(c, 6).train(batch)
  assert out['videos'].dtype == np.float32
  # (x / 255 - 0.5) / 0.5 lies in [-1, 1].
  assert out['videos'].min() >= -1.0 and out['videos'].max() <= 1.0
  expected = np.full((8, 6), 0.1 / 6, np.float32)
  expected[np.arange(8), batch['labels']] += 0.9
  np.testing.assert_allclose(out['targets'], expected, rtol=1e-6)
  with pytest.raises(ValueError, match='num_classes=8'):
    pipeline.make_train_loader(c, global_batch_size=8, seed=0, num_classes=8)


def test_train_batches_with_mixup_have_soft_targets(data_dir):
  c = config(data_dir, mixup_alpha=0.8, cutmix_alpha=1.0, sampling='segment', num_frames=4,
             auto_augment='rand-m7-n2', random_erasing=0.5, color_jitter=0.3, flip=True)
  batch = next(iter(pipeline.make_train_loader(c, global_batch_size=4, seed=0, num_classes=6)))
  assert batch['videos'].shape == (4, 4, 32, 32, 3)
  out = device_augment.DeviceAugment.from_config(c, 6).train(batch)
  np.testing.assert_allclose(out['targets'].sum(1), 1.0, rtol=1e-5)
  assert (np.asarray(out['targets']) > 0).sum(1).max() == 2   # each clip mixed with one partner


def test_train_loader_is_deterministic_and_reshuffles_every_epoch(data_dir):
  c = config(data_dir)

  def first(seed, n):
    return take(iter(pipeline.make_train_loader(c, global_batch_size=16, seed=seed,
                                                num_classes=6)), n)
  a, b, other = first(3, 8), first(3, 8), first(4, 2)
  assert_same_batches(a, b)
  assert not np.array_equal(a[0]['videos'], other[0]['videos'])
  # 64 records, 16 per batch: each epoch is 4 batches holding every record once, so the label
  # counts of an epoch are those of the split; the two epochs come in different orders.
  source = pipeline.data_source(c, 'train')
  split_counts = np.bincount([int(source[i]['label']) for i in range(len(source))], minlength=6)
  epochs = [np.concatenate([x['labels'] for x in a[:4]]), np.concatenate([x['labels'] for x in a[4:]])]
  for labels in epochs:
    np.testing.assert_array_equal(np.bincount(labels, minlength=6), split_counts)
  assert not np.array_equal(epochs[0], epochs[1])


def test_iterator_state_resumes_exactly(data_dir):
  c = config(data_dir, color_jitter=0.5, flip=True, mixup_alpha=0.4)
  make = lambda: iter(pipeline.make_train_loader(c, global_batch_size=8, seed=11, num_classes=6))
  iterator = make()
  take(iterator, 3)
  state = iterator.get_state()
  expected = take(iterator, 4)
  fresh = make()
  fresh.set_state(state)
  assert_same_batches(take(fresh, 4), expected)


def orbax_round_trip(make, directory: str, consumed: int, count: int):
  """(the `count` batches after `consumed` ones, those a fresh `make()` restored from an Orbax
  checkpoint taken there gives), with the Orbax args the trainer uses."""
  import orbax.checkpoint as ocp
  iterator = make()
  take(iterator, consumed)
  with ocp.CheckpointManager(directory) as manager:
    manager.save(consumed, args=ocp.args.Composite(data_iter=pipeline.iterator_save_args(iterator)))
    manager.wait_until_finished()
    expected = take(iterator, count)
    fresh = make()
    manager.restore(consumed,
                    args=ocp.args.Composite(data_iter=pipeline.iterator_restore_args(fresh)))
  return expected, take(fresh, count)


def test_orbax_checkpoint_of_the_iterator_with_a_worker_process(data_dir, tmp_path):
  """The worker path (num_workers=1)."""
  c = config(data_dir, num_workers=1, prefetch=2, flip=True)
  make = lambda: iter(pipeline.make_train_loader(c, global_batch_size=8, seed=5, num_classes=6))
  expected, restored = orbax_round_trip(make, str(tmp_path / 'ckpt'), 2, 3)
  assert_same_batches(restored, expected)
  # Same batches as the in-process loader: workers change where the work runs, not the data.
  in_process = iter(pipeline.make_train_loader(config(data_dir, flip=True), global_batch_size=8,
                                               seed=5, num_classes=6))
  assert_same_batches(take(in_process, 5)[2:], expected)


def test_device_prefetcher_saves_the_consumed_position(data_dir, tmp_path):
  """Made-ahead batches are not lost: the checkpoint holds the position after the consumed one."""
  c = config(data_dir, flip=True, color_jitter=0.5)
  made = []
  make = lambda: made.append(pipeline.DevicePrefetcher(
      iter(pipeline.make_train_loader(c, global_batch_size=8, seed=7, num_classes=6)),
      put=lambda batch: batch, size=2)) or made[-1]
  expected, restored = orbax_round_trip(make, str(tmp_path / 'ckpt'), 3, 3)
  assert_same_batches(restored, expected)
  for prefetcher in made:
    prefetcher.close()


# ----------------------------------------------------------------------------------------------
# Evaluation batches.
# ----------------------------------------------------------------------------------------------

def test_eval_single_view_covers_the_split_once_with_padding(data_dir):
  c = config(data_dir)
  loader = pipeline.make_eval_loader(c, split='validation', global_batch_size=8, multi_view=False)
  batches = list(loader)
  assert len(batches) == 3                               # ceil(20 / 8)
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.tolist() == [True] * NUM_VALIDATION + [False] * 4
  source = pipeline.data_source(c, 'validation')
  labels = np.concatenate([b['labels'] for b in batches])[:NUM_VALIDATION]
  assert labels.tolist() == [int(source[i]['label']) for i in range(NUM_VALIDATION)]
  videos = np.concatenate([b['videos'] for b in batches])
  assert videos.shape == (24, 8, 32, 32, 3)
  assert not videos[NUM_VALIDATION:].any()                # padding rows are zeros
  # Example 5 is its centre clip (8 frames, stride 2, of 16) resized to 32, centre crop.
  frames = source[5]['frames']
  indices = sampling.test_indices(len(frames), 8, 'dense', 2, 1)
  expected = augment.eval_views(frames, indices, 32, 32, 1)[0]
  np.testing.assert_array_equal(videos[5], expected)
  assert_same_batches(list(loader), batches)              # iterating again: same batches


def test_eval_multi_view(data_dir):
  c = config(data_dir, test_clips=1, test_crops=3, test_short_side=40)
  multi = list(pipeline.make_eval_loader(c, split='validation', global_batch_size=10,
                                         multi_view=True))
  single = list(pipeline.make_eval_loader(c, split='validation', global_batch_size=10,
                                          multi_view=False))
  assert multi[0]['videos'].shape == (10, 3, 8, 32, 32, 3)
  for m, s in zip(multi, single):
    np.testing.assert_array_equal(m['videos'][:, 1], s['videos'])   # view 1 = centre crop
    assert not np.array_equal(m['videos'][:, 0], m['videos'][:, 2])  # left != right
  c = config(data_dir, test_clips=4, test_crops=3)
  batch = next(iter(pipeline.make_eval_loader(c, split='validation', global_batch_size=4,
                                              multi_view=True)))
  assert batch['videos'].shape == (4, 12, 8, 32, 32, 3)


def test_eval_split_over_two_processes(data_dir, monkeypatch):
  """Simulated 2-process run: equal batch counts, every example once, in order."""
  c = config(data_dir)
  everything = list(pipeline.make_eval_loader(c, split='validation', global_batch_size=8,
                                              multi_view=False))
  parts = []
  for process in range(2):
    monkeypatch.setattr(grain, 'ShardByJaxProcess',
                        lambda drop_remainder, p=process: grain.ShardOptions(p, 2, drop_remainder))
    monkeypatch.setattr(loaders, '_local_batch_size', lambda b: (b // 2, 2))
    parts.append(list(pipeline.make_eval_loader(c, split='validation', global_batch_size=8,
                                                multi_view=False)))
  assert len(parts[0]) == len(parts[1]) == 3        # 24 padded rows, 12 per process, 4 a batch
  assert all(b['videos'].shape[0] == 4 for part in parts for b in part)
  joined = {key: np.concatenate([b[key] for part in parts for b in part]) for key in everything[0]}
  for key in everything[0]:
    np.testing.assert_array_equal(joined[key], np.concatenate([b[key] for b in everything]))
  assert joined['mask'].sum() == NUM_VALIDATION


def test_to_global_builds_sharded_arrays(data_dir):
  c = config(data_dir)
  batch = next(iter(pipeline.make_eval_loader(c, split='validation', global_batch_size=4,
                                              multi_view=False)))
  mesh = jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Explicit,))
  arrays = pipeline.to_global(batch, mesh)   # 'fsdp' is not in this mesh: ignored
  for key, value in batch.items():
    assert isinstance(arrays[key], jax.Array)
    assert arrays[key].shape == value.shape
    assert arrays[key].sharding.spec == jax.sharding.PartitionSpec(('data',))
    np.testing.assert_array_equal(np.asarray(arrays[key]), value)


def test_num_workers_auto_shares_the_cpus_of_this_process(data_dir, monkeypatch):
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: set(range(16)))
  for name in ('LOCAL_WORLD_SIZE', 'SLURM_NTASKS_PER_NODE', 'OMPI_COMM_WORLD_LOCAL_SIZE'):
    monkeypatch.delenv(name, raising=False)
  assert loaders.num_workers(config(data_dir, num_workers='auto')) == 15
  monkeypatch.setenv('LOCAL_WORLD_SIZE', '8')           # 8 processes (GPUs) on this host
  assert loaders.num_workers(config(data_dir, num_workers='auto')) == 1
  monkeypatch.setenv('LOCAL_WORLD_SIZE', '2')
  assert loaders.num_workers(config(data_dir, num_workers='auto')) == 7
  assert loaders.num_workers(config(data_dir, num_workers=3)) == 3
  pipeline.validate_config(config(data_dir, num_workers='auto'))
  with pytest.raises(ValueError, match='num_workers'):
    pipeline.validate_config(config(data_dir, num_workers=-1))


def test_multi_view_host_buffers_of_the_laps_vitb_test_stay_under_2_gb():
  """configs/laps_vitb.py: test batch 16 x 30 views of 8 x 224^2, 8 workers (from the shapes)."""
  from configs import laps_vitb
  c = laps_vitb.get_config()
  figures = loaders.multi_view_buffer_bytes(c.data, c.test.batch_size)
  video = 30 * 8 * 224 * 224 * 3
  assert figures['video'] == video
  assert figures['workers'] == int(c.data.num_workers) * 2 * video
  assert figures['total'] == (2 * int(c.data.num_workers) + 2 * 16 + 1) * video < 2e9


SHARED_MEMORY_SCRIPT = r'''
import sys
import jax
from test_data_pipeline import config
from laps_jax.data import pipeline


def main(data_dir):
  c = config(data_dir, num_workers=1, prefetch=2)
  for multi_view in (False, True):  # every pass runs to its end, as an evaluation does
    batches = list(pipeline.make_eval_loader(c, split='validation', global_batch_size=8,
                                             multi_view=multi_view))
    assert sum(len(b['labels']) for b in batches) == 24, [len(b['labels']) for b in batches]
  mesh = jax.sharding.Mesh(jax.devices(), ('data',))
  train = pipeline.DevicePrefetcher(
      iter(pipeline.make_train_loader(c, global_batch_size=8, seed=0, num_classes=6)),
      put=lambda batch: pipeline.to_global(batch, mesh), size=2)
  held = [next(train) for _ in range(3)]  # device arrays that may alias the workers' memory
  del held
  train.close()
  print('OK')


if __name__ == '__main__':  # the workers are spawned: they re-import this file
  main(sys.argv[1])
'''


def test_loaders_with_workers_leave_no_shared_memory_behind(data_dir, tmp_path):
  """Full eval passes and a closed train prefetcher leave no shared-memory block for
  multiprocessing's resource_tracker to report as leaked at exit (`worker_lifetime.
  release_shared_memory`; grain keeps the last element of a pass in a reference cycle and unlinks
  on a background thread)."""
  script = tmp_path / 'shared_memory_probe.py'
  script.write_text(SHARED_MEMORY_SCRIPT)
  env = python_env()
  env['PYTHONPATH'] = os.pathsep.join([os.path.join(REPO, 'tests'), env['PYTHONPATH']])
  result = subprocess.run([sys.executable, str(script), data_dir], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0 and 'OK' in result.stdout, result.stderr[-4000:]
  assert 'leaked shared_memory' not in result.stderr, result.stderr[-2000:]
