"""
YAML from outside, read within bounds: every configuration file, bag metadata and overrides.

``yaml.safe_load`` builds only plain types, but a hostile or broken file can
still be huge, nested thousands deep (a RecursionError out of the parser), or
an alias bomb (a few lines that expand to billions of nodes once something
walks them). ``load_bounded`` refuses all of these with a ``YamlBoundsError``
(a ValueError) that says what is wrong and where, before anything is built:
at most ``max_bytes``, nesting ``max_depth`` deep, ``max_nodes`` nodes, no
anchors or aliases, valid UTF-8. Anything the YAML parser itself refuses is a
YamlBoundsError too.
"""

import re
from typing import Any, Union

import yaml

MAX_BYTES = 4 << 20
MAX_DEPTH = 64
MAX_NODES = 1_000_000
MAX_INDENT = 512
_BRACKETS = re.compile(rb'[\[\]{}]')
_LOADER = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)


class YamlBoundsError(ValueError):
    """YAML that is not valid, or beyond the bounds; the message names the file."""


def check_bounds(data: bytes, where: str, max_depth: int = MAX_DEPTH,
                 max_nodes: int = MAX_NODES) -> None:
    """Raise YamlBoundsError for YAML that would be slow or huge to build."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(data):  # quoted brackets count too: an upper bound
        depth += 1 if match.group() in (b'[', b'{') else -1
        deepest = max(deepest, depth)
        if deepest > max_depth:
            raise YamlBoundsError(f'{where}: nested more than {max_depth} deep')
    for line in data.splitlines():
        if len(line) - len(line.lstrip(b' -')) > MAX_INDENT:
            raise YamlBoundsError(f'{where}: indented more than {MAX_INDENT} columns')
    depth = events = 0
    for event in yaml.parse(data, Loader=_LOADER):
        events += 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, 'anchor', None):
            raise YamlBoundsError(f'{where}: YAML anchors and aliases are not allowed '
                                  '(write the values out)')
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > max_depth:
                raise YamlBoundsError(f'{where}: nested more than {max_depth} deep')
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        if events > max_nodes:
            raise YamlBoundsError(f'{where}: more than {max_nodes} YAML nodes')


def load_bounded(text: Union[str, bytes], where: str, max_bytes: int = MAX_BYTES,
                 max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> Any:
    """Parse YAML within the bounds (safe types only); YamlBoundsError otherwise."""
    if isinstance(text, str):
        data = text.encode('utf-8', 'surrogatepass')
    elif isinstance(text, (bytes, bytearray, memoryview)):
        data = bytes(text)
    else:
        raise YamlBoundsError(f'{where}: expected YAML text, got {type(text).__name__}')
    if len(data) > max_bytes:
        raise YamlBoundsError(f'{where}: {len(data)} bytes, more than {max_bytes}')
    try:
        data.decode('utf-8')
        check_bounds(data, where, max_depth, max_nodes)
        return yaml.load(data, Loader=_LOADER)
    except YamlBoundsError:
        raise
    except UnicodeError as error:
        raise YamlBoundsError(f'{where}: not UTF-8 text ({error.reason} at byte '
                              f'{getattr(error, "start", "?")})') from None
    except (yaml.YAMLError, ValueError, TypeError, RecursionError, MemoryError) as error:
        detail = ' '.join(str(error).split())[:300]
        raise YamlBoundsError(f'{where}: not valid YAML: {detail}') from None


def read_bounded(path, what: str = 'file', max_bytes: int = MAX_BYTES) -> Any:
    """Read and parse a YAML file within the bounds; OSError if it cannot be read."""
    with open(path, 'rb') as stream:
        data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise YamlBoundsError(f'{path}: the {what} is larger than {max_bytes} bytes')
    return load_bounded(data, str(path), max_bytes)
