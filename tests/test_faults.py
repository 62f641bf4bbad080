"""The fault suite: what a crash, a preemption, damaged state and bad input cost the user.

Each section is one kind of fault. Every case runs the real entry points (main.py, the
converter, the trainer) on the tiny config and checks both that nothing is lost and that the
user sees one clear line naming the problem, not a traceback.

Sections:
  1. Lost work and stray processes: kill -9 at random points, orphaned data workers, SIGTERM to
     one process of two, the preemption exit code, resuming without init_from.
  2. Damaged state: a truncated checkpoint file, a missing data-iterator file, a stray numbered
     folder, an explicit restore step, a non-finite loss.
  3. Bad input: config typos and values, model-construction errors, corrupt inputs to every
     command (convert, predict, export).
"""
import os
import subprocess
import sys

import pytest

from conftest import REPO, python_env, run_python, write_config_file  # pylint: disable=unused-import


# =============================================================================================
# 1. Lost work and stray processes
# =============================================================================================


# =============================================================================================
# 2. Damaged state
# =============================================================================================


# =============================================================================================
# 3. Bad input
# =============================================================================================
