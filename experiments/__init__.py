"""Experiments: FLOPs/params tables and speed/memory scaling (run as `python experiments/<script>.py`)."""
