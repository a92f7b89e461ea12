"""The policy exchange format: round trips, and every corruption refused with its reason."""

import builtins
import io
import json
import zipfile

import numpy as np
import pytest

from tspace_ros.agents.policy_exchange import (MANIFEST_KEY, PolicyBlob, PolicyError,
                                               sha256_hex)

# Not a real model, but it carries the TFLite flatbuffer identifier the blob checks.
FAKE_TFLITE = b'\x1c\x00\x00\x00TFL3' + bytes(range(200))


def make_blob(**overrides):
    rng = np.random.default_rng(3)
    kwargs = {
        'algorithm': 'ddpg', 'version': 7,
        'weights': [('actor/dense/kernel', rng.normal(size=(90, 16)).astype(np.float32)),
                    ('actor/dense/bias', np.zeros(16, np.float32)),
                    ('actor/out/kernel', rng.normal(size=(16, 68))),
                    ('actor/out/bias', np.arange(68))],
        'state_dim': 90, 'action_dim': 68,
        'metadata': {'hidden': [16], 'activation': 'relu',
                     'state_mean': np.linspace(0, 1, 90).astype(np.float32),
                     'state_std': np.full(90, 0.5)},
        'model': FAKE_TFLITE, 'model_format': 'tflite'}
    kwargs.update(overrides)
    return PolicyBlob(**kwargs)


def update_fields(blob):
    fields = blob.to_update_fields()
    renamed = {'weights': 'weights_bytes', 'model': 'model_bytes'}
    return {renamed.get(key, key): value for key, value in fields.items()}


def npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def manifest_of(blob):
    with np.load(io.BytesIO(blob.to_bytes()), allow_pickle=False) as npz:
        return json.loads(str(npz[MANIFEST_KEY]))


def entries_of(blob):
    with np.load(io.BytesIO(blob.to_bytes()), allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def repack(entries, manifest=None):
    entries = dict(entries)
    if manifest is not None:
        entries[MANIFEST_KEY] = np.array(json.dumps(manifest))
    return npz_bytes(**entries)


def test_round_trip_keeps_everything_in_order_and_as_float32():
    blob = make_blob()
    back = PolicyBlob.from_update_fields(**update_fields(blob))
    assert back.algorithm == 'ddpg' and back.version == 7 and back.format == 'npz'
    assert (back.state_dim, back.action_dim) == (90, 68)
    assert back.weight_names == blob.weight_names
    for (_, a), (_, b) in zip(blob.weights, back.weights):
        assert b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    meta = back.metadata
    assert meta['hidden'] == [16] and meta['activation'] == 'relu'
    np.testing.assert_array_equal(meta['state_mean'], blob.metadata['state_mean'])
    assert meta['state_std'].dtype == np.float64
    assert back.model == FAKE_TFLITE and back.model_format == 'tflite'
    assert back.sha256 == blob.sha256 == sha256_hex(blob.to_bytes())
    assert back.model_sha256 == sha256_hex(FAKE_TFLITE)
    assert back.spec == blob.spec


def test_serialization_is_deterministic_and_loads_with_plain_numpy():
    first, second = make_blob(), make_blob()
    assert first.to_bytes() == second.to_bytes() and first.sha256 == second.sha256
    assert make_blob(version=8).sha256 != first.sha256
    with np.load(io.BytesIO(first.to_bytes()), allow_pickle=False) as npz:
        assert sorted(npz.files) == [MANIFEST_KEY, 'm0000', 'm0001', 'w0000', 'w0001',
                                     'w0002', 'w0003']
        assert npz['w0000'].shape == (90, 16)
    manifest = manifest_of(first)
    assert [w['name'] for w in manifest['weights']] == first.weight_names
    assert manifest['metadata'] == {'activation': 'relu', 'hidden': [16]}


def test_blob_without_model_and_arrays_are_read_only():
    blob = make_blob(model=b'', model_format='', metadata=None)
    fields = blob.to_update_fields()
    assert fields['model'] == b'' and fields['model_sha256'] == '' and fields['model_format'] == ''
    back = PolicyBlob.from_update_fields(**update_fields(blob))
    assert back.model == b'' and back.metadata == {}
    with pytest.raises(ValueError):
        back.weight_arrays[0][0, 0] = 1.0


def test_message_round_trip():
    blob = make_blob()
    msg = blob.to_msg()
    assert bytes(msg.weights) == blob.to_bytes() and msg.sha256 == blob.sha256
    back = PolicyBlob.from_msg(msg, expected_algorithm='ddpg', spec=blob.spec)
    assert back.sha256 == blob.sha256 and back.model == FAKE_TFLITE


def test_file_round_trip_and_corrupt_file(tmp_path):
    blob = make_blob()
    path = tmp_path / 'policy.npz'
    blob.save(path)
    back = PolicyBlob.load(path, algorithm='ddpg', state_dim=90, action_dim=68)
    assert back.sha256 == blob.sha256 and back.model_sha256 == blob.model_sha256
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PolicyError):
        PolicyBlob.load(path)
    with pytest.raises(PolicyError, match='cannot read'):
        PolicyBlob.load(tmp_path / 'missing.npz')


@pytest.mark.parametrize('change, message', [
    ({'sha256': '0' * 64}, 'sha256 mismatch'),
    ({'sha256': 'ABC'}, '64 lowercase hex'),
    ({'sha256': ''}, 'no sha256'),
    ({'model_sha256': 'f' * 64}, 'model: sha256 mismatch'),
    ({'model_sha256': ''}, 'model but no model_sha256'),
    ({'algorithm': 'rdpg'}, "says algorithm 'rdpg'"),
    ({'algorithm': 'ppo'}, 'algorithm must be one of'),
    ({'version': 8}, 'says version 8'),
    ({'state_dim': 91}, 'says state_dim 91'),
    ({'action_dim': 17}, 'says action_dim 17'),
    ({'format': 'pickle'}, "format 'pickle' is not supported"),
    ({'model_format': ''}, 'model bytes given without a model_format'),
    ({'model_format': 'onnx'}, 'model_format must be one of'),
])
def test_message_fields_that_disagree_are_refused(change, message):
    fields = update_fields(make_blob())
    fields.update(change)
    with pytest.raises(PolicyError, match=message):
        PolicyBlob.from_update_fields(**fields)


def test_corrupted_model_bytes_are_refused_by_hash():
    fields = update_fields(make_blob())
    fields['model_bytes'] = fields['model_bytes'][:-1] + b'\x00'
    with pytest.raises(PolicyError, match='model: sha256 mismatch'):
        PolicyBlob.from_update_fields(**fields)


def test_expectations_of_the_receiver():
    fields = update_fields(make_blob())
    with pytest.raises(PolicyError, match="policy is for 'ddpg', expected 'rdpg'"):
        PolicyBlob.from_update_fields(**fields, expected_algorithm='rdpg')
    blob = make_blob()
    with pytest.raises(PolicyError, match='state_dim 90, expected 96'):
        blob.verify(state_dim=96)
    with pytest.raises(PolicyError, match='action_dim 68, expected 4'):
        blob.verify(action_dim=4)
    spec = list(blob.spec)
    spec[2] = ('actor/out/kernel', (16, 67))
    with pytest.raises(PolicyError, match=r"weight 2 \('actor/out/kernel'\) has shape "
                                          r'\(16, 68\), expected \(16, 67\)'):
        PolicyBlob.from_update_fields(**fields, spec=spec)
    with pytest.raises(PolicyError, match='has 4 weight arrays, expected 3'):
        blob.verify(spec=spec[:3])
    renamed = [('x', shape) for _, shape in blob.spec]
    with pytest.raises(PolicyError, match="named 'actor/dense/kernel', expected 'x'"):
        blob.verify(spec=renamed)
    assert blob.verify(spec=renamed, check_names=False) is blob


def resigned(data, fields):
    fields = dict(fields, weights_bytes=data, sha256=sha256_hex(data))
    return fields


@pytest.mark.parametrize('cut', [0, 10, 100, 1000, -22, -1])
def test_truncated_weights_are_refused(cut):
    blob = make_blob()
    data = blob.to_bytes()[:cut]
    with pytest.raises(PolicyError, match='sha256 mismatch'):
        PolicyBlob.from_update_fields(**update_fields(blob) | {'weights_bytes': data})
    # Even with a matching hash (a buggy or hostile sender), it is refused cleanly.
    with pytest.raises(PolicyError, match='empty|not a valid npz|corrupt'):
        PolicyBlob.from_update_fields(**resigned(data, update_fields(blob)))


@pytest.mark.parametrize('data', [b'garbage' * 50, b'\x93NUMPY' + b'\x00' * 100,
                                  b'PK\x03\x04' + b'\xff' * 200, bytes(range(256)) * 4])
def test_garbage_is_refused(data):
    with pytest.raises(PolicyError, match='not a valid npz'):
        PolicyBlob.from_bytes(data)


def test_flipped_byte_inside_an_array_is_caught_without_the_hash():
    data = bytearray(make_blob().to_bytes())
    data[len(data) // 2] ^= 0x55
    with pytest.raises(PolicyError, match='corrupt|not a valid npz'):
        PolicyBlob.from_bytes(bytes(data))


class _Payload:
    """Unpickling this would run code: the loader must never do it."""

    def __reduce__(self):
        return (exec, ('import builtins; builtins.tspace_pwned = True',))


def test_object_arrays_are_refused_and_never_unpickled():
    data = npz_bytes(**{MANIFEST_KEY: np.array('{}'),
                        'w0000': np.array([_Payload()], dtype=object)})
    with pytest.raises(PolicyError, match="'w0000' holds Python objects"):
        PolicyBlob.from_bytes(data)
    assert not hasattr(builtins, 'tspace_pwned')
    # A bare pickle is not an npz at all.
    import pickle
    with pytest.raises(PolicyError, match='not a valid npz'):
        PolicyBlob.from_bytes(pickle.dumps(_Payload()))
    assert not hasattr(builtins, 'tspace_pwned')


def test_missing_unexpected_and_malformed_entries():
    blob = make_blob()
    entries = entries_of(blob)
    manifest = manifest_of(blob)
    without = {k: v for k, v in entries.items() if k != 'w0002'}
    with pytest.raises(PolicyError, match=r"missing key 'w0002' \(weight 'actor/out/kernel'\)"):
        PolicyBlob.from_bytes(repack(without))
    with pytest.raises(PolicyError, match="missing key '__manifest__'"):
        PolicyBlob.from_bytes(repack({k: v for k, v in entries.items() if k != MANIFEST_KEY}))
    with pytest.raises(PolicyError, match=r"unexpected npz entries \['extra'\]"):
        PolicyBlob.from_bytes(repack(dict(entries, extra=np.zeros(3, np.float32))))
    with pytest.raises(PolicyError, match="manifest lacks key 'state_dim'"):
        PolicyBlob.from_bytes(repack(entries, {k: v for k, v in manifest.items()
                                               if k != 'state_dim'}))
    with pytest.raises(PolicyError, match='format version 2 is not supported'):
        PolicyBlob.from_bytes(repack(entries, dict(manifest, format_version=2)))
    with pytest.raises(PolicyError, match='not valid JSON'):
        PolicyBlob.from_bytes(repack(dict(entries, **{MANIFEST_KEY: np.array('{nope')})))
    with pytest.raises(PolicyError, match='must be one unicode string'):
        PolicyBlob.from_bytes(repack(dict(entries, **{MANIFEST_KEY: np.zeros(2)})))
    with pytest.raises(PolicyError, match=r'has shape \[90, 16\], the manifest says \[16, 90\]'):
        bad = json.loads(json.dumps(manifest))
        bad['weights'][0]['shape'] = [16, 90]
        PolicyBlob.from_bytes(repack(entries, bad))
    with pytest.raises(PolicyError, match='has dtype float64, expected float32'):
        PolicyBlob.from_bytes(repack(dict(entries, w0001=entries['w0001'].astype(np.float64))))
    with pytest.raises(PolicyError, match='algorithm must be one of'):
        PolicyBlob.from_bytes(repack(entries, dict(manifest, algorithm='sac')))
    with pytest.raises(PolicyError, match='state_dim must be in'):
        PolicyBlob.from_bytes(repack(entries, dict(manifest, state_dim=0)))


def test_non_finite_values_are_refused_both_ways():
    entries = entries_of(make_blob())
    kernel = entries['w0000'].copy()
    kernel[3, 4] = np.nan
    with pytest.raises(PolicyError, match="'actor/dense/kernel' has 1 non-finite"):
        PolicyBlob.from_bytes(repack(dict(entries, w0000=kernel)))
    with pytest.raises(PolicyError, match='non-finite'):
        make_blob(weights=[('w', np.array([1.0, np.inf]))])
    with pytest.raises(PolicyError, match="metadata array 'm' has non-finite"):
        make_blob(metadata={'m': np.array([np.nan])})
    with pytest.raises(PolicyError, match="metadata 'x' is neither"):
        make_blob(metadata={'x': float('nan')})


def test_construction_errors_are_clear():
    with pytest.raises(PolicyError, match='version must be in'):
        make_blob(version=-1)
    with pytest.raises(PolicyError, match='version must be an integer'):
        make_blob(version=1.5)
    with pytest.raises(PolicyError, match='at least one weight'):
        make_blob(weights=[])
    with pytest.raises(PolicyError, match=r"repeated: \['a'\]"):
        make_blob(weights=[('a', np.zeros(1)), ('a', np.zeros(1))])
    with pytest.raises(PolicyError, match='dtype <U1, expected float32'):
        make_blob(weights=[('a', np.array(['x']))])
    with pytest.raises(PolicyError, match='no TFL3 identifier'):
        make_blob(model=b'not a model at all')
    with pytest.raises(PolicyError, match='without model bytes'):
        make_blob(model=b'')
    with pytest.raises(PolicyError, match='only numeric arrays'):
        make_blob(metadata={'names': np.array(['a', 'b'])})


def test_zip_bombs_and_non_npy_entries_are_refused():
    blob = make_blob()
    with pytest.raises(PolicyError, match='more than the limit'):
        PolicyBlob.from_bytes(blob.to_bytes(), max_bytes=1000)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as archive:
        archive.writestr('evil.pkl', b'x')
    with pytest.raises(PolicyError, match="'evil.pkl' is not an .npy"):
        PolicyBlob.from_bytes(buffer.getvalue())


def test_accepts_the_buffer_types_rclpy_gives():
    import array
    blob = make_blob()
    fields = update_fields(blob)
    fields['weights_bytes'] = array.array('B', fields['weights_bytes'])
    fields['model_bytes'] = array.array('B', fields['model_bytes'])
    assert PolicyBlob.from_update_fields(**fields).sha256 == blob.sha256
