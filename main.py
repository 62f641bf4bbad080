"""Train, evaluate or dry-run a config:

  python main.py --config=configs/demo.py --workdir=/tmp/demo
  python main.py --config=configs/laps_vitb.py:res=384 --workdir=DIR --config.batch_size=64
  python main.py --config=configs/laps_vitb.py --workdir=DIR --config.mode=dry_run
  python main.py --config=configs/laps_vitb.py --workdir=DIR --config.mode=eval

A run resumes from the latest checkpoint in --workdir. Several hosts: start the same command on
each with --coordinator_address=HOST:PORT --num_processes=N --process_id=I (on TPU pods and SLURM
/ Kubernetes GPU clusters JAX finds these itself; pass --distributed to initialise anyway).

Exit status: 0 when the run finished (results written); 1 with one `ERROR (...)` line for a
problem with the config, the data or the checkpoints; `config.preemption_exit_code` (default 143 =
128 + SIGTERM: "start me again") when a SIGTERM preempted training: the last finished step is saved,
and the same command, which it prints, resumes from it (laps_jax/train/preemption.py).
"""
import functools
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from laps_jax import config_args

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs', 'demo.py')
# No flag default: config_args.parse_flags passes _DEFAULT_CONFIG when --config is not given, so a
# bad --config.KEY=VALUE is reported as one line there (a default is parsed at import).
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, f'Config file, with optional :variant args (default: {_DEFAULT_CONFIG}).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.',
                               required=True)
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'Multi-host: HOST:PORT of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Multi-host: index of this process.')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False,
                                 'Call jax.distributed.initialize() with automatic cluster '
                                 'detection (TPU pods, SLURM, Open MPI, Kubernetes).')


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  if _COORDINATOR.value or _NUM_PROCESSES.value is not None or _PROCESS_ID.value is not None:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()

  from laps_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from laps_jax.train import errors, preemption, trainer  # pylint: disable=g-import-not-at-top
  try:
    preemption.exit_code(_CONFIG.value)  # checked now, not first at a preemption
    results = trainer.run(_CONFIG.value, _WORKDIR.value)
  except (pipeline.DatasetNotPreparedError, errors.ConfigError, errors.NonFiniteLossError,
          FileNotFoundError) as e:
    logging.error('%s: %s', type(e).__name__, e)
    print(f'ERROR ({type(e).__name__}): {e}', file=sys.stderr, flush=True)
    sys.exit(1)
  preemption.exit_if_preempted(results, _CONFIG.value)


if __name__ == '__main__':
  # A bad --config or --config.KEY=VALUE is one `ERROR (ConfigError): ...` line (config_args).
  app.run(main, flags_parser=functools.partial(config_args.parse_flags,
                                               default_config=_DEFAULT_CONFIG))
