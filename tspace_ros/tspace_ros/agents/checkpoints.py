"""
Checkpoint directories shared by the agents: atomic replacement and a JSON manifest.

An agent writes its files into a temporary sibling directory, ``agent.json``
(format, algorithm, sizes, config, counters, noise and sampling state) is added,
and the directory is swapped in as a whole, so a crash never leaves a
half-written checkpoint under the name. No pickle anywhere.
"""

import json
import os
import pathlib
import shutil
from typing import Callable, Union

CHECKPOINT_FORMAT = 1
MANIFEST = 'agent.json'


def write_checkpoint(directory: Union[str, os.PathLike], algorithm: str, manifest: dict,
                     write_files: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """Write files (write_files(tmp)) and the manifest, then replace directory atomically."""
    directory = pathlib.Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f'.{directory.name}.tmp-{os.getpid()}'
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_files(tmp)
    meta = {'format': CHECKPOINT_FORMAT, 'algorithm': algorithm, **manifest}
    (tmp / MANIFEST).write_text(json.dumps(meta, indent=1))
    old = directory.parent / f'.{directory.name}.old-{os.getpid()}'
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def read_manifest(directory: Union[str, os.PathLike], algorithm: str) -> dict:
    """Return a checkpoint's manifest; ValueError unless it is this algorithm's and format."""
    directory = pathlib.Path(directory)
    meta = json.loads((directory / MANIFEST).read_text())
    if meta.get('format') != CHECKPOINT_FORMAT or meta.get('algorithm') != algorithm:
        raise ValueError(f'{directory}: not a {algorithm.upper()} checkpoint of format '
                         f'{CHECKPOINT_FORMAT}')
    return meta
