"""Parsing the `:key=value,...` variant argument of a config file (`configs/x.py:key=value`)."""


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
