"""
The policy exchange format: actor weights as plain arrays with a version and a hash.

TF-free (numpy, hashlib, json, zipfile): the vehicle-side agent node loads policies
with it and must not import TensorFlow. Nothing here ever unpickles.

A ``PolicyBlob`` is what ``tspace_interfaces/msg/PolicyUpdate`` carries:

- ``algorithm`` (a registered algorithm: ``agents.registry``), ``version``
  (int >= 0, the trainer's update count), ``state_dim`` and ``action_dim``;
- ``weights``: an ordered list of named float32 arrays (the Keras weights in
  ``model.weights`` order), serialized as ``format`` 'npz';
- ``metadata``: free JSON values (network sizes, ...) and top-level numeric numpy
  arrays (e.g. the state normaliser's mean and std);
- optionally an inference ``model`` in ``model_format`` 'tflite' (LiteRT flatbuffer).

The npz (the message's ``weights`` bytes, hashed by ``sha256``) holds the entries
``w0000``, ``w0001``, ... (the weights, in order), ``m0000``, ... (metadata arrays)
and ``__manifest__``: a 0-d unicode string array with the JSON manifest
(format version, algorithm, version, dimensions, each weight's name, key, shape and
dtype, metadata and the metadata arrays' names). It is written deterministically
(fixed zip timestamps, stored, not compressed), so equal policies hash equally, and
read with ``np.load(..., allow_pickle=False)`` after its zip directory is checked.

Every problem on load (hash mismatch, wrong algorithm or dimensions, shapes other
than an expected spec, missing or unexpected entries, non-finite values, object
arrays, truncated or garbage bytes) raises ``PolicyError`` with the reason.
"""

import array
import hashlib
import io
import json
import os
import re
import tempfile
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union
import zipfile

import numpy as np

from tspace_ros.agents import registry

WEIGHTS_FORMAT = 'npz'
MODEL_FORMAT_TFLITE = 'tflite'
MODEL_FORMATS = ('', MODEL_FORMAT_TFLITE)
FORMAT_VERSION = 1
MANIFEST_KEY = '__manifest__'
# Upper bound of the uncompressed npz content (a zip bomb stops here).
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
MAX_ENTRIES = 4096
MAX_UINT32 = 2**32 - 1
MAX_UINT64 = 2**64 - 1

_SHA256_RE = re.compile(r'^[0-9a-f]{64}$')
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_FILE_MAGIC = 'tspace_ros.policy_file'

WeightSpec = Sequence[Tuple[str, Sequence[int]]]


class PolicyError(ValueError):
    """A policy that cannot be used: corrupt, mismatched or not what was expected."""


def sha256_hex(data: bytes) -> str:
    """Return the lowercase hex sha256 of data."""
    return hashlib.sha256(data).hexdigest()


def _as_bytes(data: Any, what: str) -> bytes:
    """Return data (bytes, bytearray, memoryview, array('B'), list of ints) as bytes."""
    if isinstance(data, bytes):
        return data
    try:
        return memoryview(data).tobytes()
    except TypeError:
        pass
    try:
        return bytes(data)
    except (TypeError, ValueError) as error:
        raise PolicyError(f'{what} must be bytes, got {type(data).__name__}: {error}')


def _check_uint(value: Any, what: str, minimum: int, maximum: int) -> int:
    """Return value as an int within [minimum, maximum], else raise PolicyError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise PolicyError(f'{what} must be an integer, got {value!r}')
    value = int(value)
    if not minimum <= value <= maximum:
        raise PolicyError(f'{what} must be in [{minimum}, {maximum}], got {value}')
    return value


def _check_algorithm(algorithm: Any) -> str:
    """Return algorithm if it is a registered algorithm, else raise PolicyError."""
    if not isinstance(algorithm, str) or algorithm not in registry.names():
        raise PolicyError(f'algorithm must be one of {registry.names()}, got {algorithm!r}')
    return algorithm


def _check_weight(name: Any, value: Any, where: str) -> np.ndarray:
    """Return value as a read-only, finite float32 array, else raise PolicyError."""
    if not isinstance(name, str) or not name:
        raise PolicyError(f'{where}: weight names must be non-empty strings, got {name!r}')
    arr = np.asarray(value)
    if arr.dtype.kind not in 'fiu' or arr.dtype.kind == 'f' and arr.dtype.itemsize > 8:
        raise PolicyError(f'{where}: weight {name!r} has dtype {arr.dtype}, expected float32')
    arr = np.array(arr, dtype=np.float32, copy=True)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise PolicyError(f'{where}: weight {name!r} has {bad} non-finite value(s)')
    arr.setflags(write=False)
    return arr


def _check_metadata(metadata: Optional[Mapping[str, Any]]
                    ) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """Split metadata into (JSON values, numeric arrays), validating both."""
    if metadata is None:
        return {}, {}
    if not isinstance(metadata, Mapping):
        raise PolicyError(f'metadata must be a mapping, got {type(metadata).__name__}')
    plain: Dict[str, Any] = {}
    arrays: Dict[str, np.ndarray] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise PolicyError(f'metadata keys must be non-empty strings, got {key!r}')
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in 'biuf':
                raise PolicyError(f'metadata array {key!r} has dtype {value.dtype}; '
                                  'only numeric arrays are allowed')
            arr = np.array(value, copy=True)
            if arr.dtype.kind == 'f' and not np.all(np.isfinite(arr)):
                raise PolicyError(f'metadata array {key!r} has non-finite values')
            arr.setflags(write=False)
            arrays[key] = arr
            continue
        if isinstance(value, np.generic):
            value = value.item()
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise PolicyError(f'metadata {key!r} is neither a numeric numpy array nor a '
                              f'finite JSON value: {error}')
        plain[key] = json.loads(json.dumps(value))
    return plain, arrays


def _check_model(model: Any, model_format: Any) -> Tuple[bytes, str]:
    """Return (model bytes, model format) if consistent, else raise PolicyError."""
    model = _as_bytes(model if model is not None else b'', 'model')
    if model_format not in MODEL_FORMATS:
        raise PolicyError(f'model_format must be one of {MODEL_FORMATS}, got {model_format!r}')
    if model_format == '' and model:
        raise PolicyError('model bytes given without a model_format')
    if model_format and not model:
        raise PolicyError(f'model_format {model_format!r} given without model bytes')
    if model_format == MODEL_FORMAT_TFLITE and (len(model) < 8 or model[4:8] != b'TFL3'):
        raise PolicyError('model is not a TFLite flatbuffer (no TFL3 identifier)')
    return model, model_format


def _write_npz(entries: Iterable[Tuple[str, np.ndarray]]) -> bytes:
    """Return an .npz archive of entries, written deterministically (as numpy.savez)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', compression=zipfile.ZIP_STORED) as archive:
        for key, arr in entries:
            info = zipfile.ZipInfo(key + '.npy', date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o600 << 16
            with archive.open(info, 'w', force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(arr),
                                          allow_pickle=False)
    return buffer.getvalue()


def _read_npz(data: bytes, what: str, max_bytes: int) -> Dict[str, np.ndarray]:
    """
    Read every entry of an .npz archive without pickle; raise PolicyError on any fault.

    Sizes are checked before anything is decompressed: the number of entries,
    the uncompressed sizes the zip directory declares, and then, since a
    directory can lie, every entry is read with a hard cap of what is left of
    max_bytes (a zip bomb stops at the cap, its CRC never reached). Each
    entry must be a plain .npy array (no Python objects).
    """
    if not data:
        raise PolicyError(f'{what} are empty')
    result: Dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_ENTRIES:
                raise PolicyError(f'{what}: {len(infos)} npz entries, at most {MAX_ENTRIES} '
                                  'allowed')
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):
                raise PolicyError(f'{what}: the npz archive has duplicate entries')
            for name in names:
                if not name.endswith('.npy'):
                    raise PolicyError(f'{what}: npz entry {name!r} is not an .npy array')
            total = sum(info.file_size for info in infos)
            if total > max_bytes:
                raise PolicyError(f'{what}: {total} bytes uncompressed, more than the limit '
                                  f'of {max_bytes}')
            left = max_bytes
            for info in infos:
                with archive.open(info) as member:
                    raw = member.read(left + 1)
                if len(raw) > left:
                    raise PolicyError(f'{what}: npz entry {info.filename!r} decompresses to '
                                      f'more than the limit of {max_bytes} bytes')
                left -= len(raw)
                key = info.filename[:-len('.npy')]
                result[key] = _read_npy(raw, key, what)
    except PolicyError:
        raise
    except Exception as error:  # noqa: B902 - any fault of untrusted input is a PolicyError
        raise PolicyError(f'{what} are not a valid npz archive (truncated or garbage): '
                          f'{type(error).__name__}: {error}') from None
    return result


def _read_npy(raw: bytes, name: str, what: str) -> np.ndarray:
    """Parse one .npy entry; PolicyError unless it is a plain numeric (or text) array."""
    try:
        array = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    except ValueError as error:
        if 'pickle' in str(error) or 'Object arrays' in str(error):
            raise PolicyError(f'{what}: entry {name!r} holds Python objects (pickled data); '
                              'refused') from None
        raise PolicyError(f'{what}: entry {name!r} is not an .npy array: {error}') from None
    if not isinstance(array, np.ndarray) or array.dtype.hasobject or \
            array.dtype.kind not in 'biufU':
        raise PolicyError(f'{what}: entry {name!r} is not a numeric array '
                          f'(dtype {getattr(array, "dtype", type(array).__name__)})')
    return array


def _manifest_text(entries: Mapping[str, np.ndarray], what: str) -> str:
    """Return the JSON text of the manifest entry, else raise PolicyError."""
    if MANIFEST_KEY not in entries:
        raise PolicyError(f'{what}: missing key {MANIFEST_KEY!r} (not a tspace_ros policy)')
    manifest = entries[MANIFEST_KEY]
    if manifest.dtype.kind != 'U' or manifest.size != 1:
        raise PolicyError(f'{what}: {MANIFEST_KEY!r} must be one unicode string, got '
                          f'dtype {manifest.dtype} shape {manifest.shape}')
    return str(manifest.reshape(()).item())


def _field(manifest: Mapping[str, Any], key: str, kind: Any, what: str) -> Any:
    """Return manifest[key] if present and of type kind, else raise PolicyError."""
    if key not in manifest:
        raise PolicyError(f'{what}: manifest lacks key {key!r}')
    value = manifest[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise PolicyError(f'{what}: manifest {key!r} has the wrong type '
                          f'({type(value).__name__})')
    return value


class PolicyBlob:
    """
    An actor policy as exchanged between the trainer and the agents.

    Immutable: the weight and metadata arrays are read-only copies. The npz bytes
    and their sha256 are computed once, on first use.
    """

    def __init__(self, algorithm: str, version: int,
                 weights: Union[Sequence[Tuple[str, Any]], Mapping[str, Any]],
                 state_dim: int, action_dim: int,
                 metadata: Optional[Mapping[str, Any]] = None,
                 model: bytes = b'', model_format: str = '',
                 format: str = WEIGHTS_FORMAT):  # noqa: A002 - the message's field name
        """Validate and keep a policy; raise PolicyError if any part is invalid."""
        self._algorithm = _check_algorithm(algorithm)
        self._version = _check_uint(version, 'version', 0, MAX_UINT64)
        self._state_dim = _check_uint(state_dim, 'state_dim', 1, MAX_UINT32)
        self._action_dim = _check_uint(action_dim, 'action_dim', 1, MAX_UINT32)
        if format != WEIGHTS_FORMAT:
            raise PolicyError(f'weights format must be {WEIGHTS_FORMAT!r}, got {format!r}')
        items = list(weights.items()) if isinstance(weights, Mapping) else list(weights)
        if not items:
            raise PolicyError('a policy needs at least one weight array')
        checked: List[Tuple[str, np.ndarray]] = []
        for i, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise PolicyError(f'weights[{i}] must be a (name, array) pair')
            checked.append((item[0], _check_weight(item[0], item[1], 'weights')))
        names = [name for name, _ in checked]
        if len(set(names)) != len(names):
            dupes = sorted({name for name in names if names.count(name) > 1})
            raise PolicyError(f'weight names must be unique; repeated: {dupes}')
        self._weights = tuple(checked)
        self._metadata, self._metadata_arrays = _check_metadata(metadata)
        self._model, self._model_format = _check_model(model, model_format)
        self._bytes: Optional[bytes] = None
        self._sha256: Optional[str] = None
        self._model_sha256: Optional[str] = None

    # --- read-only properties --------------------------------------------------

    @property
    def algorithm(self) -> str:
        """Return 'ddpg' or 'rdpg'."""
        return self._algorithm

    @property
    def version(self) -> int:
        """Return the policy version: the trainer's update count at export."""
        return self._version

    @property
    def format(self) -> str:  # noqa: A003 - the message's field name
        """Return the weights' serialization format, always 'npz'."""
        return WEIGHTS_FORMAT

    @property
    def state_dim(self) -> int:
        """Return the length of the state vector the policy expects."""
        return self._state_dim

    @property
    def action_dim(self) -> int:
        """Return the length of the action vector the policy produces."""
        return self._action_dim

    @property
    def weights(self) -> Tuple[Tuple[str, np.ndarray], ...]:
        """Return the (name, read-only float32 array) pairs, in order."""
        return self._weights

    @property
    def weight_names(self) -> List[str]:
        """Return the weight names, in order."""
        return [name for name, _ in self._weights]

    @property
    def weight_arrays(self) -> List[np.ndarray]:
        """Return the weight arrays, in order (as Keras ``set_weights`` takes them)."""
        return [arr for _, arr in self._weights]

    @property
    def spec(self) -> List[Tuple[str, Tuple[int, ...]]]:
        """Return the (name, shape) pairs of the weights, in order."""
        return [(name, arr.shape) for name, arr in self._weights]

    @property
    def metadata(self) -> Dict[str, Any]:
        """Return the metadata: JSON values and read-only numpy arrays, by key."""
        merged: Dict[str, Any] = json.loads(json.dumps(self._metadata))
        merged.update(self._metadata_arrays)
        return merged

    @property
    def model(self) -> bytes:
        """Return the inference model bytes (b'' when absent)."""
        return self._model

    @property
    def model_format(self) -> str:
        """Return the inference model's format ('tflite', or '' when absent)."""
        return self._model_format

    @property
    def model_sha256(self) -> str:
        """Return the lowercase hex sha256 of the model ('' when absent)."""
        if self._model_sha256 is None:
            self._model_sha256 = sha256_hex(self._model) if self._model else ''
        return self._model_sha256

    @property
    def sha256(self) -> str:
        """Return the lowercase hex sha256 of the serialized weights (``to_bytes()``)."""
        if self._sha256 is None:
            self._sha256 = sha256_hex(self.to_bytes())
        return self._sha256

    def __repr__(self) -> str:
        """Return a short description (no array contents)."""
        model = f', model={self._model_format}:{len(self._model)}B' if self._model else ''
        return (f'PolicyBlob({self._algorithm} v{self._version}, state_dim={self._state_dim}, '
                f'action_dim={self._action_dim}, {len(self._weights)} arrays{model})')

    def with_model(self, model: bytes, model_format: str = MODEL_FORMAT_TFLITE) -> 'PolicyBlob':
        """Return a copy of this blob with the given inference model."""
        return PolicyBlob(self._algorithm, self._version, self._weights, self._state_dim,
                          self._action_dim, self.metadata, model, model_format)

    # --- checks -----------------------------------------------------------------

    def verify(self, algorithm: Optional[str] = None, state_dim: Optional[int] = None,
               action_dim: Optional[int] = None, spec: Optional[WeightSpec] = None,
               check_names: bool = True) -> 'PolicyBlob':
        """
        Check the blob against what the caller expects; return it, or raise PolicyError.

        spec is a sequence of (name, shape) pairs in order (e.g. from the model the
        weights go into); with check_names False only the count and the shapes must
        match (Keras numbers auto-named layers per process, so names may differ).
        """
        if algorithm is not None and algorithm != self._algorithm:
            raise PolicyError(f'policy is for {self._algorithm!r}, expected {algorithm!r}')
        if state_dim is not None and int(state_dim) != self._state_dim:
            raise PolicyError(f'policy has state_dim {self._state_dim}, expected {state_dim}')
        if action_dim is not None and int(action_dim) != self._action_dim:
            raise PolicyError(f'policy has action_dim {self._action_dim}, '
                              f'expected {action_dim}')
        if spec is not None:
            expected = list(spec)
            if len(expected) != len(self._weights):
                raise PolicyError(f'policy has {len(self._weights)} weight arrays, '
                                  f'expected {len(expected)}')
            for i, ((name, arr), (want_name, want_shape)) in enumerate(
                    zip(self._weights, expected)):
                if check_names and name != want_name:
                    raise PolicyError(f'weight {i} is named {name!r}, expected {want_name!r}')
                if tuple(arr.shape) != tuple(int(d) for d in want_shape):
                    raise PolicyError(f'weight {i} ({name!r}) has shape {tuple(arr.shape)}, '
                                      f'expected {tuple(want_shape)}')
        return self

    # --- npz --------------------------------------------------------------------

    def _manifest(self) -> Dict[str, Any]:
        """Return the JSON manifest stored in the npz."""
        return {
            'format_version': FORMAT_VERSION,
            'algorithm': self._algorithm,
            'version': self._version,
            'state_dim': self._state_dim,
            'action_dim': self._action_dim,
            'weights': [{'name': name, 'key': f'w{i:04d}', 'shape': list(arr.shape),
                         'dtype': 'float32'} for i, (name, arr) in enumerate(self._weights)],
            'metadata': self._metadata,
            'metadata_arrays': [{'name': name, 'key': f'm{i:04d}'}
                                for i, name in enumerate(self._metadata_arrays)],
        }

    def to_bytes(self) -> bytes:
        """Return the weights serialized as npz (the message's ``weights``)."""
        if self._bytes is None:
            manifest = json.dumps(self._manifest(), sort_keys=True, allow_nan=False)
            entries = [(MANIFEST_KEY, np.array(manifest))]
            entries += [(f'w{i:04d}', arr) for i, (_, arr) in enumerate(self._weights)]
            entries += [(f'm{i:04d}', arr)
                        for i, arr in enumerate(self._metadata_arrays.values())]
            self._bytes = _write_npz(entries)
        return self._bytes

    @classmethod
    def from_bytes(cls, data: Any, sha256: Optional[str] = None, model: Any = b'',
                   model_format: str = '', model_sha256: Optional[str] = None,
                   algorithm: Optional[str] = None, state_dim: Optional[int] = None,
                   action_dim: Optional[int] = None, spec: Optional[WeightSpec] = None,
                   check_names: bool = True,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> 'PolicyBlob':
        """
        Load a blob from npz weights bytes (and an optional model); verify it.

        sha256 and model_sha256, when given, must match the bytes; algorithm,
        state_dim, action_dim and spec are checked as in ``verify``. Raises
        PolicyError on any fault; never unpickles.
        """
        data = _as_bytes(data, 'weights')
        if sha256 is not None:
            _check_hash(data, sha256, 'weights')
        model = _as_bytes(model if model is not None else b'', 'model')
        if model_sha256 is not None and (model or model_sha256):
            _check_hash(model, model_sha256, 'model')
        entries = _read_npz(data, 'weights', max_bytes)
        try:
            manifest = json.loads(_manifest_text(entries, 'weights'))
        except json.JSONDecodeError as error:
            raise PolicyError(f'weights: the manifest is not valid JSON: {error}') from None
        if not isinstance(manifest, dict):
            raise PolicyError('weights: the manifest is not a JSON object')
        what = 'weights'
        format_version = _field(manifest, 'format_version', int, what)
        if format_version != FORMAT_VERSION:
            raise PolicyError(f'weights: format version {format_version} is not supported '
                              f'(this reader knows {FORMAT_VERSION})')
        weight_entries = _field(manifest, 'weights', list, what)
        array_entries = _field(manifest, 'metadata_arrays', list, what)
        expected_keys = {MANIFEST_KEY}
        weights = []
        for i, entry in enumerate(weight_entries):
            if not isinstance(entry, dict):
                raise PolicyError(f'weights: manifest weight {i} is not an object')
            key = _field(entry, 'key', str, what)
            name = _field(entry, 'name', str, what)
            shape = _field(entry, 'shape', list, what)
            if key not in entries:
                raise PolicyError(f'weights: missing key {key!r} (weight {name!r})')
            arr = entries[key]
            if arr.dtype.kind != 'f' or arr.dtype.itemsize != 4:
                raise PolicyError(f'weights: {name!r} has dtype {arr.dtype}, expected float32')
            if list(arr.shape) != shape:
                raise PolicyError(f'weights: {name!r} has shape {list(arr.shape)}, the '
                                  f'manifest says {shape}')
            expected_keys.add(key)
            weights.append((name, arr))
        metadata = dict(_field(manifest, 'metadata', dict, what))
        for entry in array_entries:
            if not isinstance(entry, dict):
                raise PolicyError('weights: a manifest metadata array is not an object')
            key = _field(entry, 'key', str, what)
            name = _field(entry, 'name', str, what)
            if key not in entries:
                raise PolicyError(f'weights: missing key {key!r} (metadata {name!r})')
            if name in metadata:
                raise PolicyError(f'weights: metadata {name!r} is given twice')
            expected_keys.add(key)
            metadata[name] = entries[key]
        unexpected = sorted(set(entries) - expected_keys)
        if unexpected:
            raise PolicyError(f'weights: unexpected npz entries {unexpected}')
        blob = cls(_field(manifest, 'algorithm', str, what),
                   _field(manifest, 'version', int, what), weights,
                   _field(manifest, 'state_dim', int, what),
                   _field(manifest, 'action_dim', int, what), metadata, model, model_format)
        blob._bytes = data
        return blob.verify(algorithm, state_dim, action_dim, spec, check_names)

    # --- PolicyUpdate -----------------------------------------------------------

    def to_update_fields(self) -> Dict[str, Any]:
        """Return the PolicyUpdate fields (all but header) as a dict; bytes for uint8[]."""
        return {
            'algorithm': self._algorithm,
            'version': self._version,
            'format': WEIGHTS_FORMAT,
            'weights': self.to_bytes(),
            'sha256': self.sha256,
            'model_format': self._model_format,
            'model': self._model,
            'model_sha256': self.model_sha256,
            'state_dim': self._state_dim,
            'action_dim': self._action_dim,
        }

    @classmethod
    def from_update_fields(cls, algorithm: str, version: int, format: str,  # noqa: A002
                           weights_bytes: Any, sha256: str, model_format: str,
                           model_bytes: Any, model_sha256: str, state_dim: int,
                           action_dim: int, expected_algorithm: Optional[str] = None,
                           spec: Optional[WeightSpec] = None, check_names: bool = True,
                           max_bytes: int = DEFAULT_MAX_BYTES) -> 'PolicyBlob':
        """
        Load and verify a blob from PolicyUpdate fields; raise PolicyError on any fault.

        The hashes are mandatory; the message's algorithm, version and dimensions must
        equal those inside the weights; expected_algorithm and spec are checked too.
        """
        if format != WEIGHTS_FORMAT:
            raise PolicyError(f'weights format {format!r} is not supported '
                              f'(expected {WEIGHTS_FORMAT!r})')
        _check_algorithm(algorithm)
        if not sha256:
            raise PolicyError('the message has no sha256 for the weights')
        model_bytes = _as_bytes(model_bytes if model_bytes is not None else b'', 'model')
        if model_bytes and not model_sha256:
            raise PolicyError('the message has a model but no model_sha256')
        blob = cls.from_bytes(weights_bytes, sha256=sha256, model=model_bytes,
                              model_format=model_format, model_sha256=model_sha256 or '',
                              spec=spec, check_names=check_names, max_bytes=max_bytes)
        for field, told, inside in (('algorithm', algorithm, blob.algorithm),
                                    ('version', version, blob.version),
                                    ('state_dim', state_dim, blob.state_dim),
                                    ('action_dim', action_dim, blob.action_dim)):
            if told != inside:
                raise PolicyError(f'the message says {field} {told!r} but the weights '
                                  f'say {inside!r}')
        return blob.verify(algorithm=expected_algorithm)

    def to_msg(self, stamp: Any = None) -> Any:
        """Return a ``tspace_interfaces.msg.PolicyUpdate``; stamp: builtin_interfaces Time."""
        from tspace_interfaces.msg import PolicyUpdate
        msg = PolicyUpdate()
        if stamp is not None:
            msg.header.stamp = stamp
        for key, value in self.to_update_fields().items():
            # array('B') from bytes is a memcpy; rclpy checks it without iterating.
            setattr(msg, key, array.array('B', value) if isinstance(value, bytes) else value)
        return msg

    @classmethod
    def from_msg(cls, msg: Any, expected_algorithm: Optional[str] = None,
                 spec: Optional[WeightSpec] = None, check_names: bool = True,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> 'PolicyBlob':
        """Load and verify a blob from a PolicyUpdate message (see from_update_fields)."""
        return cls.from_update_fields(
            msg.algorithm, msg.version, msg.format, msg.weights, msg.sha256,
            msg.model_format, msg.model, msg.model_sha256, msg.state_dim, msg.action_dim,
            expected_algorithm=expected_algorithm, spec=spec, check_names=check_names,
            max_bytes=max_bytes)

    # --- files ------------------------------------------------------------------

    def save(self, path: Union[str, os.PathLike]) -> None:
        """
        Write the blob (weights npz, model and both hashes) to one file, atomically.

        The file is itself an npz of uint8 arrays and a JSON manifest; ``load`` checks
        both hashes.
        """
        manifest = json.dumps({'magic': _FILE_MAGIC, 'sha256': self.sha256,
                               'model_format': self._model_format,
                               'model_sha256': self.model_sha256})
        data = _write_npz([(MANIFEST_KEY, np.array(manifest)),
                           ('weights', np.frombuffer(self.to_bytes(), np.uint8)),
                           ('model', np.frombuffer(self._model, np.uint8))])
        path = os.fspath(path)
        fd, tmp = tempfile.mkstemp(prefix='.policy_', dir=os.path.dirname(path) or '.')
        try:
            with os.fdopen(fd, 'wb') as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: Union[str, os.PathLike], algorithm: Optional[str] = None,
             state_dim: Optional[int] = None, action_dim: Optional[int] = None,
             spec: Optional[WeightSpec] = None, check_names: bool = True,
             max_bytes: int = DEFAULT_MAX_BYTES) -> 'PolicyBlob':
        """Read a file written by ``save`` and verify it; raise PolicyError on any fault."""
        try:
            with open(path, 'rb') as handle:
                data = handle.read(max_bytes + 1)
        except OSError as error:
            raise PolicyError(f'cannot read policy file {os.fspath(path)!r}: {error}') from None
        if len(data) > max_bytes:
            raise PolicyError(f'policy file {os.fspath(path)!r} exceeds {max_bytes} bytes')
        what = f'policy file {os.fspath(path)!r}'
        entries = _read_npz(data, what, max_bytes)
        try:
            manifest = json.loads(_manifest_text(entries, what))
        except json.JSONDecodeError as error:
            raise PolicyError(f'{what}: the manifest is not valid JSON: {error}') from None
        if not isinstance(manifest, dict) or manifest.get('magic') != _FILE_MAGIC:
            raise PolicyError(f'{what} is not a tspace_ros policy file')
        if set(entries) != {MANIFEST_KEY, 'weights', 'model'}:
            raise PolicyError(f'{what}: expected entries weights and model, got '
                              f'{sorted(set(entries) - {MANIFEST_KEY})}')
        for key in ('weights', 'model'):
            if entries[key].dtype != np.uint8 or entries[key].ndim != 1:
                raise PolicyError(f'{what}: entry {key!r} must be a 1-d uint8 array')
        return cls.from_bytes(entries['weights'].tobytes(),
                              sha256=_field(manifest, 'sha256', str, what),
                              model=entries['model'].tobytes(),
                              model_format=_field(manifest, 'model_format', str, what),
                              model_sha256=_field(manifest, 'model_sha256', str, what),
                              algorithm=algorithm, state_dim=state_dim,
                              action_dim=action_dim, spec=spec, check_names=check_names,
                              max_bytes=max_bytes)


def _check_hash(data: bytes, expected: Any, what: str) -> None:
    """Raise PolicyError unless expected is a lowercase hex sha256 equal to data's."""
    if not isinstance(expected, str) or not _SHA256_RE.match(expected):
        raise PolicyError(f'{what}: sha256 must be 64 lowercase hex digits, got {expected!r}')
    actual = sha256_hex(data)
    if actual != expected:
        raise PolicyError(f'{what}: sha256 mismatch: the bytes hash to {actual}, the message '
                          f'says {expected} ({len(data)} bytes; corrupted or truncated)')
