"""
Fault class 'bags': random corruptions of a small rosbag2 bag, read with tspace_ros.bags.

A bag of two topics is written once with ``BagRecorder`` (so it carries MCAP
CRCs); each case copies it, damages the .mcap file or metadata.yaml (a byte
flipped anywhere or inside a message, a truncation, garbage written over
bytes or appended, or a hostile metadata.yaml: deep nesting, aliases, huge
or wrongly typed values) and reads it as the replay does (``bag_info`` then
every message). A BagError is a clean rejection (counted by its kind); the
exact messages and description of the good bag are an accepted case (the
damage hit nothing that matters); anything else read is data lost, any other
exception escaped.
"""

import logging
import pathlib
import random
import shutil
import tempfile

from faults import FaultTally

from tspace_ros.bags import (bag_info, BagError, BagRecorder, qos_profile_yaml, read_bag,
                             typestore_with_ours)

STRING = 'std_msgs/msg/String'
T0 = 1_795_000_000_000_000_000
INFO_KEYS = ('topics', 'types', 'counts', 'qos', 'message_count', 'start_ns', 'end_ns',
             'custom_data')
HOSTILE_YAML = (
    'rosbag2_bagfile_information: ' + '[' * 50_000 + ']' * 50_000,
    'a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n'
    'rosbag2_bagfile_information: *b\n',
    'rosbag2_bagfile_information:\n  version: 99999999999999999999999999\n',
    'rosbag2_bagfile_information: {version: nine}\n',
    'rosbag2_bagfile_information:\n' + ''.join(' ' * k + f'k{k}:\n' for k in range(1, 800)),
    '- not\n- a mapping\n',
)


def _payload(store, k: int) -> bytes:
    text = f'payload-{k:03d}-' + 'x' * (k % 7) * 5
    return bytes(store.serialize_cdr(store.types[STRING](data=text), STRING))


def _write(path: pathlib.Path, store) -> None:
    with BagRecorder(path, store, custom_data={'namespace': '/veh'}) as bag:
        bag.add_topic('/veh/a', STRING, qos_profile_yaml(depth=10))
        bag.add_topic('/veh/b', STRING, qos_profile_yaml(depth=5, reliability='best_effort'))
        for k in range(12):
            bag.write('/veh/a' if k % 3 else '/veh/b', T0 + k * 1000, _payload(store, k))


def _read(path: pathlib.Path, store):
    info = bag_info(path)
    messages = list(read_bag(path, typestore=store))
    return messages, {key: info[key] for key in INFO_KEYS}


def _corrupt(rng: random.Random, bag: pathlib.Path) -> str:
    """Damage the bag in place; return what was done."""
    mcap = next(bag.glob('*.mcap'))
    target = mcap if rng.random() < 0.6 else bag / 'metadata.yaml'
    if target.name == 'metadata.yaml' and rng.random() < 0.2:
        target.write_text(rng.choice(HOSTILE_YAML))
        return 'hostile metadata.yaml'
    data = bytearray(target.read_bytes())
    kind = rng.choice(('flip', 'flip', 'flip message', 'truncate', 'garbage', 'append'))
    if kind == 'flip message' and target == mcap:
        at = data.find(f'payload-{rng.randrange(12):03d}-'.encode())
        data[at + rng.randrange(12)] ^= rng.randrange(1, 256)
    elif kind in ('flip', 'flip message'):
        data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
    elif kind == 'truncate':
        del data[rng.randrange(len(data)):]
    elif kind == 'garbage':
        at = rng.randrange(len(data))
        data[at:at + rng.randint(1, 64)] = rng.randbytes(rng.randint(1, 64))
    else:
        data += rng.randbytes(rng.randint(1, 256))
    target.write_bytes(bytes(data))
    return f'{kind} {target.name}'


def run(cases: int, seed: int) -> FaultTally:
    """Try `cases` random corruptions of a small bag; count what became of each."""
    tally = FaultTally('bags')
    rng = random.Random(seed)
    store = typestore_with_ours()
    logger = logging.getLogger('tspace_ros.bags')
    previous, logger.disabled = logger.disabled, True  # unverified warnings: not here
    try:
        with tempfile.TemporaryDirectory(prefix='fault_bags_') as root:
            good = pathlib.Path(root) / 'good'
            _write(good, store)
            expected = _read(good, store)
            for case in range(cases):
                bag = pathlib.Path(root) / f'case{case}'
                shutil.copytree(good, bag)
                _corrupt(rng, bag)
                try:
                    got = _read(bag, store)
                except BagError as error:
                    tally.reject(f'BagError {getattr(error, "kind", "invalid")}')
                except Exception as error:  # a defect: counted, never raised
                    tally.escape(error)
                else:
                    tally.accept()
                    if got != expected:
                        tally.lose()
                shutil.rmtree(bag, ignore_errors=True)
    finally:
        logger.disabled = previous
    return tally
