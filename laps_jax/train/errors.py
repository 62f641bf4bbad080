"""Errors the training code raises for problems a user can fix (main.py prints them without a
traceback). Everything else is a bug and keeps its traceback."""


class ConfigError(ValueError):
  """The config does not fit the data, the model or the mesh; the message says what to change."""


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or infinite; the message names the step."""
