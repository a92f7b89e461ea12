"""
TBox batches read straight from object storage, in place of ``get_signal`` polling.

The telematics box uploads one JSON object per second of signals to an S3
bucket, ``<prefix>/<vin>/<utc ms, 16 digits>.json`` (the name sorts by time, also
across a daylight-saving change of the vehicle's local time), each holding the
second's ``timestamp`` (``YYMMDDhhmmssXX``, local time, as ``get_signal`` gives
it) and its lists (``list_speed_1s``, ...: one list of numeric strings each).

``ObjectBatchSource.fetch`` lists the objects newer than the last one read,
reads at most ``max_per_fetch`` of them (each at most ``max_object_bytes``) and
returns them as one ``get_signal``-shaped result in a ``RemoteReply``, for the
same ``BatchDecoder`` (which still drops repeated, late and future seconds).
Never raises: an object that is not such a second (not JSON, too large, the
wrong shape) is counted and skipped, a listing or read failure is a reply with
code 3001 (no object-storage link) and the message.
"""

from collections import Counter
import json
import re
from typing import Dict, List, Optional

from tspace_ros.cloud.remote_can import RemoteCode, RemoteReply

NAME = re.compile(r'^(\d{16})\.json$')
MAX_OBJECT_BYTES = 256 * 1024
MAX_PER_FETCH = 120


def object_name(utc_ns: int) -> str:
    """Return the object name of the second that starts at utc_ns (UTC ms, 16 digits)."""
    return f'{utc_ns // 1_000_000:016d}.json'


def second_object(second: Dict[str, object]) -> bytes:
    """Return the JSON bytes the TBox uploads for one second (``timestamp`` and lists)."""
    return json.dumps(second, separators=(',', ':')).encode()


class ObjectBatchSource:
    """One vehicle's seconds in a bucket (see the module docstring)."""

    def __init__(self, filesystem, bucket: str, prefix: str, vin: str,
                 max_per_fetch: int = MAX_PER_FETCH,
                 max_object_bytes: int = MAX_OBJECT_BYTES):
        """Take a pyarrow filesystem (S3) and where the vehicle's objects are."""
        if not vin or '/' in vin:
            raise ValueError(f'vin {vin!r} cannot be a folder name')
        self.fs = filesystem
        self.folder = '/'.join(p for p in (bucket, prefix.strip('/'), vin) if p)
        self.max_per_fetch, self.max_object_bytes = int(max_per_fetch), int(max_object_bytes)
        self.last_name = ''
        self.counts: Counter = Counter()
        self.last_problem = ''

    def _problem(self, reason: str, text: str) -> None:
        self.counts[reason] += 1
        self.last_problem = f'{reason}: {text}'[:200]

    def fetch(self) -> RemoteReply:
        """Return the seconds uploaded since the last fetch as a get_signal result."""
        from pyarrow import fs as pafs
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.folder, allow_not_found=True))
        except (OSError, ValueError) as error:
            self._problem('listing_failed', str(error))
            return RemoteReply(RemoteCode.NO_OBJECT_STORAGE_LINK,
                               f'object storage: listing {self.folder}: {error}'[:300])
        names = sorted(name for name in (info.base_name for info in infos
                                         if info.type == pafs.FileType.File)
                       if NAME.match(name) and name > self.last_name)
        others = sum(1 for info in infos if not NAME.match(info.base_name))
        if others:
            self.counts['foreign_objects'] = others
        result: Dict[str, List] = {'timestamps': []}
        for name in names[:self.max_per_fetch]:
            second = self._read(f'{self.folder}/{name}')
            self.last_name = name
            if second is None:
                continue
            result['timestamps'].append(second.pop('timestamp'))
            for key, values in second.items():
                result.setdefault(key, [None] * (len(result['timestamps']) - 1)).append(values)
            for key, lists in result.items():
                if key != 'timestamps' and len(lists) < len(result['timestamps']):
                    lists.append(None)  # this second did not carry that list
        if not result['timestamps']:
            return RemoteReply(RemoteCode.NOT_ENOUGH_DATA, 'object storage: no new seconds')
        self.counts['seconds_read'] += len(result['timestamps'])
        return RemoteReply(RemoteCode.OK, f'{len(result["timestamps"])} seconds', result)

    def _read(self, path: str) -> Optional[Dict[str, object]]:
        try:
            with self.fs.open_input_stream(path) as stream:
                data = stream.read(self.max_object_bytes + 1)
        except (OSError, ValueError) as error:
            self._problem('read_failed', f'{path}: {error}')
            return None
        if len(data) > self.max_object_bytes:
            self._problem('too_large', f'{path}: more than {self.max_object_bytes} bytes')
            return None
        try:
            second = json.loads(data.decode('utf-8'), parse_constant=lambda c: None)
        except (UnicodeDecodeError, ValueError, RecursionError):
            self._problem('not_json', path)
            return None
        if not isinstance(second, dict) or not isinstance(second.get('timestamp'), str) or \
                not all(isinstance(v, list) for k, v in second.items() if k != 'timestamp'):
            self._problem('not_a_second', path)
            return None
        return second

    def stats(self) -> Dict[str, object]:
        """Return the source's counters (for the link's diagnostics)."""
        out: Dict[str, object] = {f'objects_{k}': v for k, v in self.counts.items()}
        if self.last_problem:
            out['objects_last_problem'] = self.last_problem
        return out
