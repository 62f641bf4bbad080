"""Prepares one dataset: decode the videos once, write JPEG frames as ArrayRecord (TFDS).

  python -m laps_jax.data.prepare --dataset=kinetics400 --manual_dir=DIR --data_dir=DATA_DIR
  python -m laps_jax.data.prepare --dataset=ssv2 --manual_dir=DIR --data_dir=DATA_DIR
  python -m laps_jax.data.prepare --dataset=synthetic_motion --data_dir=DATA_DIR

The layout expected in each dataset's manual dir is in the docstring of its module
(`laps_jax/data/kinetics.py`, `laps_jax/data/ssv2.py`). Output: `DATA_DIR/<dataset>/<version>/`
(2.0.0 for every builder; Kinetics / SSv2 keep one record per frame), with `skipped_<split>.txt` listing the videos that could not be
used and why. An existing prepared dataset is reused; delete its folder to rebuild. Nothing
touches the network.

Disk: Kinetics-400 at the default short side 320 and JPEG quality 90 takes roughly 15-25 kB per
frame, i.e. ~1 TB for the ~240k train clips at 25 fps; `--short_side=256` (LVT's scale jitter
tops at 320, LAPS's at 360 though) or `--jpeg_quality=80` shrink it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import tensorflow_datasets as tfds

from laps_jax.data import builder_common
from laps_jax.data import registry

log = logging.getLogger(__name__)


def prepare(dataset: str, data_dir: str, manual_dir: str | None = None, **builder_kwargs):
  """Builds `dataset` into `data_dir` (no-op when prepared); returns the TFDS builder.

  builder_kwargs: short_side, jpeg_quality, num_processes (all builders), strict_num_classes
  (kinetics*, ssv2), num_train, num_validation, seed, num_frames, size (synthetic_motion).
  """
  builder = registry.get_builder(dataset, data_dir, **builder_kwargs)
  if dataset != 'synthetic_motion' and not builder.is_prepared():
    builder_common.check_manual_dir(manual_dir, dataset,
                                    f'the layout described in {registry.MODULES[dataset]}')
  config = tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(manual_dir) if manual_dir else None)
  builder.download_and_prepare(download_config=config, file_format='array_record')
  return builder


def summary(builder) -> str:
  """One line per split: examples written and videos skipped."""
  lines = []
  for split, info in sorted(builder.info.splits.items()):
    skip_path = os.path.join(str(builder.data_path),
                             builder_common.SKIP_FILE_TEMPLATE.format(split=split))
    skipped = (len(builder_common.read_skip_file(str(builder.data_path), split))
               if os.path.exists(skip_path) else 0)
    lines.append(f'  {split}: {info.num_examples} examples, {skipped} videos skipped '
                 f'({skip_path})')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m laps_jax.data.prepare', description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--dataset', required=True, choices=sorted(registry.BUILDERS))
  parser.add_argument('--data_dir', required=True, help='where prepared datasets live')
  parser.add_argument('--manual_dir', default=None,
                      help='downloaded videos + annotations (not needed for synthetic_motion)')
  parser.add_argument('--short_side', type=int, default=320, help='stored frame short side')
  parser.add_argument('--jpeg_quality', type=int, default=90)
  parser.add_argument('--num_processes', type=int, default=None,
                      help='decoding processes (default: all CPUs)')
  parser.add_argument('--allow_class_subset', action='store_true',
                      help='accept annotations with fewer classes than the dataset has')
  parser.add_argument('--num_train', type=int, default=None, help='synthetic_motion only')
  parser.add_argument('--num_validation', type=int, default=None, help='synthetic_motion only')
  parser.add_argument('--seed', type=int, default=None, help='synthetic_motion only')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')

  kwargs = dict(short_side=args.short_side, jpeg_quality=args.jpeg_quality,
                num_processes=args.num_processes)
  if args.dataset == 'synthetic_motion':
    for key in ('num_train', 'num_validation', 'seed'):
      if getattr(args, key) is not None:
        kwargs[key] = getattr(args, key)
    kwargs.pop('short_side')
  else:
    if args.num_train is not None or args.num_validation is not None or args.seed is not None:
      parser.error('--num_train/--num_validation/--seed are for synthetic_motion only')
    kwargs['strict_num_classes'] = not args.allow_class_subset
  try:
    builder = prepare(args.dataset, args.data_dir, args.manual_dir, **kwargs)
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'{args.dataset} prepared in {builder.data_path}:\n{summary(builder)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
