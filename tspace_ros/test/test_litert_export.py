"""TFLite export (TensorFlow) and LiteRT inference (no TensorFlow) of the actors."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import threading

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from tspace_ros.agents.export import (blob_to_weights, export_tflite,  # noqa: E402
                                      ExportError, weight_spec, weights_to_blob)
from tspace_ros.agents.litert import (LiteRtActor, LiteRtError,  # noqa: E402
                                      LiteRtRecurrentActor)
from tspace_ros.agents.policy_exchange import PolicyBlob, PolicyError  # noqa: E402

S, A, H = 12, 5, 8
PACKAGE_ROOT = pathlib.Path(__file__).resolve().parents[1]


def feed_forward_actor(hidden=16, seed=0):
    keras.utils.set_random_seed(seed)
    state = keras.Input((S,), name='state')
    x = keras.layers.Dense(hidden, activation='relu')(state)
    x = keras.layers.Dense(hidden, activation='relu')(x)
    action = keras.layers.Dense(A, activation='tanh')(x)
    return keras.Model(state, action)


def step_actor(cells=True, seed=1):
    """Model([state, last_action, h1, c1, h2, c2]) -> [action, h1', c1', h2', c2']."""
    keras.utils.set_random_seed(seed)
    state = keras.Input((S,), name='state')
    last_action = keras.Input((A,), name='last_action')
    carry = [keras.Input((H,), name=n) for n in ('h1', 'c1', 'h2', 'c2')]
    x = keras.layers.Dense(H, activation='relu')(
        keras.layers.Concatenate()([state, last_action]))
    if cells:
        x, (h1, c1) = keras.layers.LSTMCell(H)(x, [carry[0], carry[1]])
        x, (h2, c2) = keras.layers.LSTMCell(H)(x, [carry[2], carry[3]])
    else:
        x = keras.layers.Reshape((1, H))(x)
        x, h1, c1 = keras.layers.LSTM(H, return_sequences=True, return_state=True)(
            x, initial_state=carry[:2])
        x, h2, c2 = keras.layers.LSTM(H, return_state=True)(x, initial_state=carry[2:])
    action = keras.layers.Dense(A, activation='tanh')(x)
    return keras.Model([state, last_action] + carry, [action, h1, c1, h2, c2])


@pytest.fixture(scope='module')
def ff():
    model = feed_forward_actor()
    return model, export_tflite(model)


@pytest.fixture(scope='module')
def step():
    model = step_actor()
    return model, export_tflite(model)


def keras_steps(model, states, carry=None):
    carry = carry or [np.zeros((1, H), np.float32) for _ in range(4)]
    last = np.zeros((1, A), np.float32)
    actions = []
    for s in states:
        out = [np.asarray(o) for o in model([s[None, :], last] + carry)]
        last, carry = out[0], out[1:]
        actions.append(last[0])
    return np.array(actions), carry


def test_feed_forward_actor_agrees_with_keras(ff):
    model, flatbuffer = ff
    actor = LiteRtActor(flatbuffer)
    assert (actor.state_dim, actor.action_dim) == (S, A)
    states = np.random.default_rng(5).normal(size=(100, S)).astype(np.float32)
    expected = np.asarray(model(states))
    got = np.array([actor.infer(s) for s in states])
    assert got.dtype == np.float32 and got.shape == (100, A)
    assert np.max(np.abs(got - expected)) < 1e-5


@pytest.mark.parametrize('cells', [True, False], ids=['LSTMCell', 'LSTM-layer'])
def test_recurrent_step_actor_agrees_with_keras_over_a_sequence(step, cells):
    model, flatbuffer = step if cells else (None, None)
    if not cells:
        model = step_actor(cells=False)
        flatbuffer = export_tflite(model)
    actor = LiteRtRecurrentActor(flatbuffer)
    assert actor.state_names == ('h1', 'c1', 'h2', 'c2') and actor.state_sizes == (H,) * 4
    states = np.random.default_rng(6).normal(size=(60, S)).astype(np.float32)
    expected, carry = keras_steps(model, states)
    got = np.array([actor.step(s) for s in states])
    assert np.max(np.abs(got - expected)) < 1e-4
    for mine, theirs in zip(actor.state, carry):
        assert np.max(np.abs(mine - theirs[0])) < 1e-4


def test_recurrent_state_get_set_reset_and_explicit_last_action(step):
    model, flatbuffer = step
    actor = LiteRtRecurrentActor(flatbuffer)
    states = np.random.default_rng(7).normal(size=(10, S)).astype(np.float32)
    first = actor.step(states[0])
    for s in states[1:5]:
        actor.step(s)
    saved, saved_last = actor.state, actor.last_action
    after = [actor.step(s) for s in states[5:]]
    actor.state, actor.last_action = saved, saved_last
    np.testing.assert_array_equal([actor.step(s) for s in states[5:]], after)
    actor.reset()
    assert all(not part.any() for part in actor.state)
    np.testing.assert_array_equal(actor.step(states[0]), first)
    # An explicit last action (the one applied) is fed instead of the remembered one.
    actor.reset()
    applied = np.full(A, 0.5, np.float32)
    zeros = [np.zeros((1, H), np.float32)] * 4
    expected = np.asarray(model([states[0][None, :], applied[None, :]] + zeros)[0])[0]
    assert np.max(np.abs(actor.step(states[0], applied) - expected)) < 1e-5
    with pytest.raises(ValueError, match='has 4 parts'):
        actor.state = saved[:3]
    with pytest.raises(ValueError, match='h2 must have 8 values'):
        actor.state = (saved[0], saved[1], np.zeros(3), saved[3])


def test_bad_inputs_and_models_are_refused_clearly(ff, step):
    ff_bytes, step_bytes = ff[1], step[1]
    with pytest.raises(LiteRtError, match='no TFL3 identifier'):
        LiteRtActor(b'definitely not a model')
    with pytest.raises(LiteRtError, match='cannot load the model'):
        LiteRtActor(ff_bytes[:len(ff_bytes) // 2])
    with pytest.raises(LiteRtError, match='must be bytes'):
        LiteRtActor('model.tflite')
    with pytest.raises(LiteRtError, match='feed-forward actor needs input state'):
        LiteRtActor(step_bytes)
    with pytest.raises(LiteRtError, match='recurrent step actor needs inputs'):
        LiteRtRecurrentActor(ff_bytes)
    with pytest.raises(LiteRtError, match='takes 12 state values, expected 90'):
        LiteRtActor(ff_bytes, state_dim=90)
    with pytest.raises(LiteRtError, match='gives 5 action values, expected 68'):
        LiteRtRecurrentActor(step_bytes, action_dim=68)
    actor = LiteRtActor(ff_bytes)
    with pytest.raises(ValueError, match='state must have 12 values'):
        actor.infer(np.zeros(13))
    with pytest.raises(ValueError, match='non-finite'):
        actor.infer(np.full(S, np.nan))
    assert isinstance(LiteRtError('x'), PolicyError)


def test_export_checks_its_arguments():
    model = feed_forward_actor()
    with pytest.raises(ExportError, match='3 input shapes for a model with 1 inputs'):
        export_tflite(model, input_shapes=[(S,), (S,), (S,)])
    inputs = [keras.Input((S,)) for _ in range(3)]
    with pytest.raises(ExportError, match='no conventional names for 3 inputs'):
        export_tflite(keras.Model(inputs, keras.layers.Add()(inputs)))
    with pytest.raises(ExportError, match='must be fully known'):
        export_tflite(model, input_shapes=[(None,)])
    with pytest.raises(ExportError, match='do not name 1 inputs uniquely'):
        export_tflite(model, input_names=['a', 'b'])


def test_blob_carries_weights_and_model_end_to_end(ff):
    model, _ = ff
    blob = weights_to_blob(model, 'ddpg', 42, metadata={'hidden': [16, 16]},
                           inference_model=model)
    assert (blob.state_dim, blob.action_dim, blob.model_format) == (S, A, 'tflite')
    received = PolicyBlob.from_msg(blob.to_msg(), expected_algorithm='ddpg')
    actor = LiteRtActor.from_blob(received)
    state = np.random.default_rng(8).normal(size=S).astype(np.float32)
    expected = np.asarray(model(state[None, :]))[0]
    assert np.max(np.abs(actor.infer(state) - expected)) < 1e-5
    # A freshly built network (other auto names, other initial weights) takes them.
    other = feed_forward_actor(seed=9)
    assert [n for n, _ in weight_spec(other)] != received.weight_names
    blob_to_weights(received, other, algorithm='ddpg')
    assert np.max(np.abs(np.asarray(other(state[None, :]))[0] - expected)) < 1e-6
    with pytest.raises(PolicyError, match='expected'):
        blob_to_weights(received, other, check_names=True)
    wider = feed_forward_actor(hidden=17)
    before = [w.copy() for w in wider.get_weights()]
    with pytest.raises(PolicyError, match=r'weight 0 .* has shape \(12, 16\), expected '
                                          r'\(12, 17\)'):
        blob_to_weights(received, wider)
    assert all(np.array_equal(a, b) for a, b in zip(before, wider.get_weights()))
    with pytest.raises(LiteRtError, match='carries no TFLite model'):
        LiteRtActor.from_blob(weights_to_blob(model, 'ddpg', 1))


def test_one_actor_is_safe_to_share_between_threads(ff):
    actor = LiteRtActor(ff[1])
    states = np.random.default_rng(10).normal(size=(200, S)).astype(np.float32)
    expected = np.array([actor.infer(s) for s in states])
    results = {}

    def work(k):
        results[k] = np.array([actor.infer(s) for s in states])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results.values():
        np.testing.assert_array_equal(got, expected)


def test_vehicle_side_imports_no_tensorflow_and_stays_small(step, tmp_path):
    model, flatbuffer = step
    path = tmp_path / 'step.tflite'
    path.write_bytes(flatbuffer)
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from tspace_ros.agents.litert import LiteRtRecurrentActor
        from tspace_ros.agents.policy_exchange import PolicyBlob
        def peak_rss_mb():
            # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child of
            # this TensorFlow test process would report the parent's peak.
            for line in open('/proc/self/status'):
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
        actor = LiteRtRecurrentActor(open({str(path)!r}, 'rb').read())
        for _ in range(20):
            action = actor.step(np.zeros({S}, np.float32))
        print(json.dumps({{
            'tensorflow': sorted(m for m in sys.modules if m.split('.')[0] in
                                 ('tensorflow', 'keras', 'tf_keras')),
            'rss_mb': peak_rss_mb(),
            'finite': bool(np.isfinite(action).all())}}))
    """)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(PACKAGE_ROOT), env.get('PYTHONPATH', '')])
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=60, env=env, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report['tensorflow'] == [] and report['finite']
    print(f"vehicle-side process peak RSS: {report['rss_mb']:.1f} MB")
    assert report['rss_mb'] < 250
