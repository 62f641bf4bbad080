"""What a compiled step moves between devices: its collectives by kind, read off the compiled HLO.

`collective_bytes(compiled.as_text())` -> {kind: bytes per device}, kinds all-gather, reduce-scatter,
all-reduce, all-to-all, collective-permute. The bytes of one collective are those of its full
buffer on one device: the gathered result of an all-gather, the (unreduced) input of a
reduce-scatter (its result times the group size), the buffer of an all-reduce, all-to-all or
collective-permute. Async pairs (`-start` / `-done`) count once. A tuple-shaped (combined)
collective counts every element.

With parameters sharded over `fsdp` (ZeRO-3), a step should all-gather about the parameters once
for the forward and once more for the backward (in the compute dtype) and reduce-scatter the
gradients; data parallelism all-reduces the gradients once; tensor parallelism all-reduces
activations inside each block. Anything much larger means activations move.
"""
import dataclasses
import math
import re

KINDS = ('all-gather', 'reduce-scatter', 'all-reduce', 'all-to-all', 'collective-permute')
_DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 'f8e4m3fn': 1, 'f8e5m2': 1, 's16': 2, 'u16': 2,
                'f16': 2, 'bf16': 2, 's32': 4, 'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8,
                'c64': 8, 'c128': 16}
_INSTRUCTION = re.compile(
    r'^\s*(?:ROOT\s+)?%?([\w.-]+)\s*=\s*(.+?)\s+(' + '|'.join(KINDS) + r')(-start)?\((.*)$')
_ARRAY = re.compile(r'\b([a-z]+\d*(?:e\dm\d(?:fn)?)?)\[([\d,]*)\]')


@dataclasses.dataclass(frozen=True)
class Collective:
  """One collective of a compiled program: its kind, bytes per device and result shape text."""
  name: str
  kind: str
  bytes: int
  shape: str
  group_size: int


def _array_bytes(shape_text: str) -> int:
  """Bytes of every array in an HLO shape (a tuple counts all of its elements)."""
  total = 0
  for dtype, dims in _ARRAY.findall(shape_text):
    if dtype not in _DTYPE_BYTES:
      continue
    total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(',') if d)
  return total


def _group_size(attributes: str) -> int:
  """Devices in each replica group: `mesh[...] {'axis_0'}`, `[groups,size]<=[n]` or `{{0,1},{2,3}}`."""
  if m := re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", attributes):
    sizes = dict((name, int(size)) for name, size in re.findall(r"'([^']+)'=(\d+)", m.group(1)))
    return math.prod(sizes[a] for a in re.findall(r"'([^']+)'", m.group(2))) or 1
  if m := re.search(r'replica_groups=\[(\d+),(\d+)\]<=', attributes):
    return int(m.group(2))
  if m := re.search(r'replica_groups=\{\{([^}]*)\}', attributes):
    return len(m.group(1).split(','))
  if m := re.search(r'source_target_pairs=', attributes):
    return 2
  return 1


def collectives(hlo_text: str) -> list[Collective]:
  """Every collective in a compiled HLO module's text (`compiled.as_text()`)."""
  found = []
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    name, shape, kind, is_start, rest = m.groups()
    group = _group_size(rest)
    if is_start and kind != 'all-reduce':
      # an async start's shape is ((operands), (results)[, scratch]): the results are the second part
      parts = _split_tuple(shape)
      shape = parts[1] if len(parts) > 1 else shape
    size = _array_bytes(shape)
    if kind == 'reduce-scatter':
      size *= group
    found.append(Collective(name, kind, size, shape, group))
  return found


def _split_tuple(shape: str) -> list[str]:
  """Top-level elements of a tuple shape '(a, (b, c), d)'."""
  shape = shape.strip()
  if not shape.startswith('('):
    return [shape]
  parts, depth, start = [], 0, 1
  for i, ch in enumerate(shape):
    if ch in '([{':
      depth += 1
    elif ch in ')]}':
      depth -= 1
    elif ch == ',' and depth == 1:
      parts.append(shape[start:i])
      start = i + 1
  parts.append(shape[start:-1])
  return [p.strip() for p in parts]


def collective_bytes(hlo_text: str) -> dict[str, int]:
  """{kind: bytes per device} over every kind in KINDS (0 where none)."""
  totals = dict.fromkeys(KINDS, 0)
  for c in collectives(hlo_text):
    totals[c.kind] += c.bytes
  return totals
