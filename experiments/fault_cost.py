"""What a preemption, a crash and a damaged checkpoint cost a training run, measured on main.py.

    python experiments/fault_cost.py --out experiments/results/fault_cost

Each scenario runs the real command (`python main.py --config=configs/demo.py ...`, one process
group of its own, as a scheduler starts it), interrupts it once it has logged `--interrupt_at`
steps, restarts the same command and reads both logs:

  preemption       SIGTERM to the process group: the run saves the step it finished and exits
                   with config.preemption_exit_code; the restart continues from that step.
  crash            SIGKILL to the process group (an OOM kill, a lost node): the restart continues
                   from the last periodic checkpoint (config.checkpoint.every_steps).
  damaged          SIGKILL, then a file of the newest checkpoint truncated: the restart passes
                   over it (warning, the folder kept under checkpoints_set_aside/) and continues
                   from the one before.

Reported per scenario: the exit code, seconds from the signal to the end of the process, the
step the restart resumed from, the steps computed twice (finished before the interrupt and
trained again after it), seconds from the restart's launch to its first trained step (imports,
restore and compilation; the persistent compilation cache is on as in any run) against the same
for a fresh start, and the seconds of training lost (steps computed twice × the median step time
of the fresh run).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# absl's log line: 'I1202 05:22:38.116163 <thread> logging_writer.py:48] [1] ... loss=...'
STEP_LINE = re.compile(r'^\w(\d{4} \d\d:\d\d:\d\d\.\d+) .*\] \[(\d+)\] .*\bloss=', re.MULTILINE)
RESUMED_LINE = re.compile(r'Resuming from the checkpoint at step (\d+)')


def _command(workdir: str, args) -> list[str]:
  return [sys.executable, 'main.py', '--config=configs/demo.py', f'--workdir={workdir}',
          f'--config.total_steps={args.total_steps}', '--config.log_every_steps=1',
          f'--config.checkpoint.every_steps={args.checkpoint_every}',
          '--config.eval.every_steps=0', '--config.test.at_end=False']


def _log_time(stamp: str) -> float:
  """'MMDD HH:MM:SS.ffffff' of an absl log line (local time, this year) -> seconds since the epoch."""
  parsed = datetime.datetime.strptime(f'{datetime.date.today().year}{stamp}', '%Y%m%d %H:%M:%S.%f')
  return parsed.timestamp()


class Run:
  """One launch of main.py, its log file and the time at which each step was logged (the log
  line's own timestamp, so buffering cannot shift it)."""

  def __init__(self, workdir: str, log_path: str, args):
    self.log_path = log_path
    self.started = time.time()
    self.step_times: dict[int, float] = {}
    self._log = open(log_path, 'a')
    # Unbuffered: a step is in the log when it is done, also for a run that is then SIGKILLed.
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    self.process = subprocess.Popen(_command(workdir, args), cwd=REPO, stdout=self._log, env=env,
                                    stderr=subprocess.STDOUT, start_new_session=True)

  def poll_steps(self) -> int:
    """Reads the log for the steps it has logged so far; the largest."""
    with open(self.log_path) as f:
      for match in STEP_LINE.finditer(f.read()):
        self.step_times.setdefault(int(match.group(2)), _log_time(match.group(1)))
    return max(self.step_times, default=0)

  def wait_for_step(self, step: int, timeout: float = 900) -> None:
    while self.poll_steps() < step:
      if self.process.poll() is not None:
        raise RuntimeError(f'the run ended before step {step}; see {self.log_path}')
      if time.time() - self.started > timeout:
        raise RuntimeError(f'timed out waiting for step {step}; see {self.log_path}')
      time.sleep(0.02)

  def signal_group(self, signum: int) -> float:
    """Signals the process group; seconds until the process ended."""
    sent = time.monotonic()
    os.killpg(self.process.pid, signum)
    self.process.wait(timeout=600)
    return time.monotonic() - sent

  def finish(self) -> int:
    code = self.process.wait(timeout=1800)
    self.poll_steps()
    self._log.close()
    return code

  def resumed_from(self) -> int:
    with open(self.log_path) as f:
      found = RESUMED_LINE.findall(f.read())
    return int(found[-1]) if found else 0

  def seconds_to_first_step(self) -> float:
    return min(self.step_times.values()) - self.started

  def median_step_seconds(self) -> float:
    times = [self.step_times[s] for s in sorted(self.step_times)]
    return statistics.median(b - a for a, b in zip(times[1:], times[2:]))  # the first is compile


def _truncate_newest_checkpoint(workdir: str) -> str:
  """Cuts the largest array file of the newest checkpoint's model item to half; its path."""
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())
  files = [f for f in glob.glob(os.path.join(workdir, 'checkpoints', str(steps[-1]), 'model', '**', '*'),
                                recursive=True) if os.path.isfile(f)]
  victim = max(files, key=os.path.getsize)
  with open(victim, 'r+b') as f:
    f.truncate(os.path.getsize(victim) // 2)
  return os.path.relpath(victim, workdir)


def scenario(name: str, root: str, args) -> dict:
  workdir = os.path.join(root, name)
  first = Run(workdir, workdir + '.log', args)
  first.wait_for_step(args.interrupt_at)
  last_done = first.poll_steps()
  seconds_to_stop = first.signal_group(signal.SIGTERM if name == 'preemption' else signal.SIGKILL)
  exit_code = first.process.returncode
  last_done = max(last_done, first.poll_steps())
  damaged = _truncate_newest_checkpoint(workdir) if name == 'damaged' else ''
  second = Run(workdir, workdir + '.restart.log', args)
  code = second.finish()
  if code != 0:
    raise RuntimeError(f'the restart of {name} exited {code}; see {second.log_path}')
  resumed = second.resumed_from()
  return {'scenario': name, 'interrupted_after_step': last_done, 'exit_code': exit_code,
          'seconds_signal_to_exit': seconds_to_stop, 'resumed_from_step': resumed,
          'steps_computed_twice': last_done - resumed, 'damaged_file': damaged,
          'restart_seconds_to_first_step': second.seconds_to_first_step()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--total_steps', type=int, default=80)
  parser.add_argument('--checkpoint_every', type=int, default=20)
  parser.add_argument('--interrupt_at', type=int, default=50)
  parser.add_argument('--out', default=os.path.join(REPO, 'experiments', 'results', 'fault_cost'))
  args = parser.parse_args()
  root = tempfile.mkdtemp(prefix='fault_cost_')

  fresh = Run(os.path.join(root, 'fresh'), os.path.join(root, 'fresh.log'), args)
  if fresh.finish() != 0:
    raise RuntimeError(f'the uninterrupted run failed; see {fresh.log_path}')
  step_seconds, fresh_start = fresh.median_step_seconds(), fresh.seconds_to_first_step()
  rows = [scenario(name, root, args) for name in ('preemption', 'crash', 'damaged')]
  for row in rows:
    row['training_seconds_lost'] = row['steps_computed_twice'] * step_seconds

  header = (f'configs/demo.py, {args.total_steps} steps, a checkpoint every {args.checkpoint_every} '
            f'steps, interrupted once {args.interrupt_at} steps were logged; 2-core CPU. '
            f'Uninterrupted: {fresh_start:.1f} s from launch to the first step (imports, data, '
            f'compile), then {step_seconds * 1e3:.0f} ms per step (median).')
  lines = [header, '', '| fault | exit code | s from signal to exit | interrupted after step | '
           'resumed from step | steps computed twice | training lost (s) | restart: s to first step |',
           '|---|---:|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    lines.append(f"| {r['scenario']} | {r['exit_code']} | {r['seconds_signal_to_exit']:.2f} | "
                 f"{r['interrupted_after_step']} | {r['resumed_from_step']} | {r['steps_computed_twice']} | "
                 f"{r['training_seconds_lost']:.1f} | {r['restart_seconds_to_first_step']:.1f} |")
  table = '\n'.join(lines)
  print(table)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out + '.md', 'w') as f:
    f.write(table + '\n')
  with open(args.out + '.json', 'w') as f:
    json.dump({'args': vars(args), 'fresh_seconds_to_first_step': fresh_start,
               'median_step_seconds': step_seconds, 'scenarios': rows}, f, indent=2)


if __name__ == '__main__':
  main()
