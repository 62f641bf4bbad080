"""Parsing the `:key=value,...` variant argument of a config file (`configs/x.py:key=value`), and
the one-line errors of a bad `--config` or `--config.KEY=VALUE` on the command line."""
import os
import sys


def parse_config_arg(arg: str | None, defaults: dict[str, str], choices: dict[str, tuple[str, ...]],
                     config_file: str) -> dict[str, str]:
  """`arg` ('model=vit2d,res=384' or None) over `defaults`; unknown keys and values not in
  `choices[key]` are a ValueError naming the config file, the key and what it takes."""
  args = dict(defaults)
  for part in filter(None, (arg or '').split(',')):
    key, _, value = part.partition('=')
    if key not in args:
      raise ValueError(f'{config_file} takes {sorted(args)}, got {key!r}')
    args[key] = value
  for key, allowed in choices.items():
    if args[key] not in allowed:
      raise ValueError(f'{config_file}:{key}= must be one of {tuple(allowed)}, got {args[key]!r}')
  return args


# =============================================================================================
# Command-line errors in --config and its overrides: one line, no traceback
# =============================================================================================
def parse_flags(argv: list[str], flag_values=None, config_flag: str | None = 'config',
                default_config: str | None = None) -> list[str]:
  """absl's `flags_parser` for main.py (`app.run(main, flags_parser=parse_flags)`).

  Parses `argv` like absl; a mistake on the command line (a config file that does not load, an
  unknown `--config.KEY` — named with the closest real key path —, a value of the wrong type, an
  unknown or missing flag) prints one line `ERROR (Type): message` to stderr and exits 1.
  `default_config`: the config file when argv names none. (Give it here, not as the flag's
  default: ml_collections parses a default, overrides included, when the flag is defined, at
  import, where no error can be caught.) `config_flag=None`: a command without a config flag
  (laps_jax.export): only absl's own flag errors, on one line.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  flag_values = flags.FLAGS if flag_values is None else flag_values
  if config_flag is None:
    try:
      return flag_values(argv)
    except flags.Error as e:
      print(f'ERROR ({type(e).__name__}): {" ".join(str(e).split())}', file=sys.stderr, flush=True)
      sys.exit(1)
  if default_config and config_flag not in _flag_args(argv, config_flag):
    argv = [argv[0], f'--{config_flag}={default_config}', *argv[1:]]
  try:
    remaining = flag_values(argv)
    if is_config(flag_values[config_flag].value):
      return remaining
    error = None  # the config file did not load: ml_collections defers that error
  except Exception as e:  # pylint: disable=broad-except  (explained below, else re-raised)
    error = e
  explained = explain_flags_error(error, argv, flag_values, config_flag)
  if explained is None:
    raise error if error is not None else RuntimeError(f'--{config_flag} did not load')
  type_name, message = explained
  print(f'ERROR ({type_name}): {message}', file=sys.stderr, flush=True)
  sys.exit(1)


def explain_flags_error(error: Exception | None, argv: list[str], flag_values,
                        config_flag: str = 'config') -> tuple[str, str] | None:
  """(type name, one-line message) for an error of parsing `argv`, or None when it is not the
  user's (a bug in a config file keeps its traceback)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  args = _flag_args(argv, config_flag)
  config_arg = args.get(config_flag)
  if config_arg is None:  # the flag's default (a path)
    config_arg = str(flag_values[config_flag].default_as_str or '').strip('\'"')
    if not config_arg or config_arg == 'None':
      return 'ConfigError', f'no --{config_flag}=FILE given'
  try:
    config = load_config_file(config_arg)
  except ConfigFileError as e:
    return 'ConfigError', str(e)
  for name, value in args.items():
    if not name.startswith(config_flag + '.'):
      continue
    path = name[len(config_flag) + 1:]
    if (problem := unknown_key(config, path)) is not None:
      return 'ConfigError', f'--{name}{"" if value is None else "=" + value}: {problem}'
  if isinstance(error, flags.Error):
    message = ' '.join(str(error).split())  # absl's messages, on one line
    prefix = f'flag --{config_flag}.'
    if message.startswith(prefix):  # a value of the wrong type: say which type the key takes
      name_value, _, reason = message[len('flag '):].partition(': ')
      path = name_value[len(config_flag) + 3:].partition('=')[0]
      expected = _type_name(config, path)
      return 'ConfigError', (f'{name_value}: config.{path} takes {expected} ({reason})' if expected
                             else f'{name_value}: {reason}')
    return type(error).__name__, message
  return None


class ConfigFileError(ValueError):
  """A config file (with its `:args`) that does not load; the message names the file."""


def load_config_file(config_arg: str):
  """`get_config(args)` of `path[:args]`, as ml_collections loads it; a missing file, a bad
  `:args` or an unknown section key is a ConfigFileError naming the file."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, colon, arg = config_arg.partition(':')
  if not path or not os.path.isfile(path):
    raise ConfigFileError(f'--config={config_arg}: no config file {path!r}'
                          + ('' if os.path.isabs(path) else f' (relative to {os.getcwd()})'))
  spec = importlib.util.spec_from_file_location('_laps_jax_config_under_test', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    return module.get_config(*([arg] if colon else []))
  except (KeyError, TypeError, ValueError) as e:
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    raise ConfigFileError(f'--config={config_arg}: {message}') from None


def unknown_key(config, path: str) -> str | None:
  """None if `path` ('model.dtype') names a key of `config`, else why not, with the closest key
  path of the whole config."""
  import difflib  # pylint: disable=g-import-not-at-top
  node, parts = config, path.split('.')
  for depth, part in enumerate(parts):
    part = part.split('[')[0]
    if not is_config(node) or part not in node:
      where = 'config' + ''.join(f'.{p}' for p in parts[:depth])
      if depth and is_config(node):  # the section exists: the closest of its keys
        close = ['.'.join(parts[:depth] + [k]) for k in
                 difflib.get_close_matches(part, list(node.keys()), n=1, cutoff=0.6)]
      else:  # the closest key path of the whole config, as deep as the one given
        close = difflib.get_close_matches(
            path, [p for p in key_paths(config) if p.count('.') == path.count('.')], n=1, cutoff=0.6)
        sections = [k for k in node.keys() if is_config(node[k])] if is_config(node) else []
        if not close and depth + 1 < len(parts) and sections:  # a misspelt section
          close = [f'{s}.{".".join(parts[depth + 1:])}'
                   for s in difflib.get_close_matches(part, sections, n=1, cutoff=0.6)]
      hint = (f'did you mean {close[0]!r}?' if close else
              f'{where} has the keys {sorted(node.keys())}' if is_config(node) else
              f'{where} is not a section')
      return f'the config has no key {path!r}; {hint}'
    node = node[part]
  return None


def key_paths(config, prefix: str = ''):
  """Every dotted key path of `config` ('model', 'model.dtype', ...), depth first."""
  for key, value in config.items():
    yield prefix + key
    if is_config(value):
      yield from key_paths(value, f'{prefix}{key}.')


def is_config(value) -> bool:
  """Whether a parsed --config holds a config (ml_collections defers a load error to its first use)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  return isinstance(value, ml_collections.ConfigDict)


def _type_name(config, path: str) -> str | None:
  holder_path, _, field = path.rpartition('.')
  holder = config
  for part in filter(None, holder_path.split('.')):
    holder = holder[part]
  try:
    field_type = holder.get_type(field)
  except (AttributeError, KeyError, TypeError):
    return None
  name = getattr(field_type, '__name__', str(field_type))
  return f'an {name}' if name[0] in 'aeiou' else f'a {name}'


def _flag_args(argv: list[str], config_flag: str) -> dict[str, str | None]:
  """{flag name: value} of the `--name=value` flags in `argv` (after the program name, up to
  `--`; `--config_flag PATH` too); a bare `--name` (or `--noname.key`) gives None."""
  args, i = {}, 1
  while i < len(argv):
    arg = argv[i]
    i += 1
    if arg == '--':
      break
    if not arg.startswith('-'):
      continue
    name, eq, value = arg.lstrip('-').partition('=')
    if not eq and name == config_flag and i < len(argv):
      value, i = argv[i], i + 1
    elif not eq:
      value = None
    if name.startswith('no') and '.' in name and value is None:
      name = name[2:]
    args[name] = value
  return args
