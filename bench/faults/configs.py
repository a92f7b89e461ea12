"""Fault class: configuration files (vehicle file, parameter file, signal mapping) made hostile."""

import pathlib
import random
import re
import tempfile

from faults import FaultTally
from tspace_ros.bounded_yaml import read_bounded, YamlBoundsError
from tspace_ros.can.windowing import SignalMapping
from tspace_ros.suite import DEFAULT_PARAMS, load_node_parameters, SuiteConfigError
from tspace_ros.vehicle.parameters import (load_vehicle_parameters, vehicle_config_path,
                                           VehicleConfigError)

BOMB = ('a: &a ["x","x","x","x","x","x","x","x","x"]\n'
        + ''.join(f'{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},'
                  f'*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n' for i in range(8)))
VALUES = ['[]', '{}', 'null', '~', '.nan', '.inf', '-.inf', '1e400', '-1', '0', '"text"',
          'true', '[1, [2, [3]]]', '99999999999999999999999', "'0x10'", '!!binary aGk=',
          '{a: {b: {c: 1}}}']


def _mapping_text() -> str:
    return ''.join(
        f'- {{name: {s.name}, unit: "{s.unit}", message: {s.message}, signal: {s.signal}, '
        f'factor: {s.factor!r}, offset: {s.offset!r}}}\n' for s in SignalMapping.default().signals)


def _hostile(text: str, rng: random.Random) -> bytes:
    kind = rng.randrange(9)
    if kind == 0:  # a value of the wrong type
        numbers = list(re.finditer(r'(?<=: )[^\s#{}\[\],]+', text))
        if numbers:
            match = rng.choice(numbers)
            text = text[:match.start()] + rng.choice(VALUES) + text[match.end():]
        return text.encode()
    if kind == 1:  # a line deleted or duplicated
        lines = text.splitlines(True)
        at = rng.randrange(len(lines))
        lines[at:at + 1] = [] if rng.random() < 0.5 else [lines[at], lines[at]]
        return ''.join(lines).encode()
    if kind == 2:
        data = bytearray(text.encode())
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 3:
        depth = rng.randrange(65, 5000)
        return ('x: ' + '[' * depth + ']' * depth + '\n').encode() + text.encode()
    if kind == 4:
        return BOMB.encode()
    if kind == 5:
        return text.encode() + b'# padding\n' * rng.randrange(1, 3) + b'z' * (5 << 20)
    if kind == 6:
        return rng.choice([b'', b'\xff\xfe\x00', b'---\n...\n', b'- 1\n- 2\n', b'null\n',
                           b'\t\tkey: value\n', b'key: [unclosed\n', b'"' * 1000])
    if kind == 7:  # truncated
        data = text.encode()
        return data[:rng.randrange(len(data))]
    return text.encode()  # the file as shipped


def run(cases: int, seed: int) -> FaultTally:
    """Load `cases` hostile configuration files; each must load or be refused clearly."""
    tally = FaultTally('config files')
    rng = random.Random(seed)
    sources = {
        'vehicle': (vehicle_config_path('sim_van').read_text(), load_vehicle_parameters,
                    (VehicleConfigError,)),
        'params': (pathlib.Path(DEFAULT_PARAMS).read_text(), load_node_parameters,
                   (SuiteConfigError,)),
        'mapping': (_mapping_text(),
                    lambda path: SignalMapping.from_dicts(read_bounded(path, 'mapping')),
                    (YamlBoundsError, ValueError)),
    }
    with tempfile.TemporaryDirectory() as where:
        for case in range(cases):
            name = rng.choice(sorted(sources))
            text, load, refusals = sources[name]
            path = pathlib.Path(where) / f'{name}{case}.yaml'
            path.write_bytes(_hostile(text, rng))
            try:
                load(path)
            except refusals as error:
                message = str(error)
                if not message or str(path) not in message and name != 'mapping':
                    tally.escape(error)  # refused, but without saying which file
                else:
                    tally.reject(f'{name}: {type(error).__name__}')
            except Exception as error:  # noqa: B902 - what the boundary let through
                tally.escape(error)
            else:
                tally.accept()
            path.unlink()
    return tally
