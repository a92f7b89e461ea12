"""
Benchmark: single-observation actor inference, Keras tf.function vs LiteRT.

Cases (tspace's sizes): the DDPG actor, state 90 (3 signals x 30 samples) -> 2 x 256
ReLU -> 68 actions (4 rows x 17 pedal columns, tanh); the RDPG step actor, state 90
and last action 68 -> Dense 256 -> 2 x LSTM 256 -> 68, carrying its h/c state, built
from LSTMCells (what converts to plain TFLite ops) and from one-step LSTM layers
(which convert to a TFLite WHILE loop).

Keras runs the model in a ``tf.function`` with a fixed batch-1 signature (numpy in,
numpy out); LiteRT runs the exported flatbuffer through ``tspace_ros.agents.litert``
(input checks and locking included), one interpreter thread. The process is pinned
to one core (``os.sched_setaffinity``) and TensorFlow to one thread. Goals: p99
under 1 ms for DDPG and under 5 ms for RDPG. Also prints the peak RSS of a process
that runs both LiteRT actors without TensorFlow, and of this one (TensorFlow).

Prints median and p99 in microseconds. Run after ``scripts/bootstrap``:
``source scripts/env.sh && python bench/inference_latency.py [--count N] [--cpu K]``.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

STATE_DIM, ACTION_DIM, HIDDEN = 90, 68, 256
GOALS_US = {'ddpg': 1000.0, 'rdpg': 5000.0}
PACKAGE_ROOT = pathlib.Path(__file__).resolve().parents[1] / 'tspace_ros'


def percentiles(samples_s):
    """Return (median, p99) in microseconds."""
    ordered = sorted(samples_s)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return statistics.median(ordered) * 1e6, p99 * 1e6


def peak_rss_mb():
    """Return this process's peak RSS (VmHWM; ru_maxrss survives exec) in MB."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def time_calls(call, inputs, count, warmup=200):
    """Call call(x) for inputs cycled count times after a warm-up; return seconds each."""
    for i in range(warmup):
        call(inputs[i % len(inputs)])
    samples = []
    for i in range(count):
        x = inputs[i % len(inputs)]
        t0 = time.perf_counter()
        call(x)
        samples.append(time.perf_counter() - t0)
    return samples


def ddpg_actor(keras):
    """Return tspace's DDPG actor: 90 -> 256 -> 256 -> 68 (tanh)."""
    state = keras.Input((STATE_DIM,), name='state')
    x = keras.layers.Dense(HIDDEN, activation='relu')(state)
    x = keras.layers.Dense(HIDDEN, activation='relu')(x)
    action = keras.layers.Dense(ACTION_DIM, activation='tanh')(x)
    return keras.Model(state, action)


def rdpg_step_actor(keras, cells):
    """Return tspace's RDPG actor as a step model: Dense 256 + 2 x LSTM 256 + tanh."""
    state = keras.Input((STATE_DIM,), name='state')
    last_action = keras.Input((ACTION_DIM,), name='last_action')
    carry = [keras.Input((HIDDEN,), name=n) for n in ('h1', 'c1', 'h2', 'c2')]
    x = keras.layers.Dense(HIDDEN, activation='relu')(
        keras.layers.Concatenate()([state, last_action]))
    if cells:
        x, (h1, c1) = keras.layers.LSTMCell(HIDDEN)(x, carry[:2])
        x, (h2, c2) = keras.layers.LSTMCell(HIDDEN)(x, carry[2:])
    else:
        x = keras.layers.Reshape((1, HIDDEN))(x)
        x, h1, c1 = keras.layers.LSTM(HIDDEN, return_sequences=True, return_state=True)(
            x, initial_state=carry[:2])
        x, h2, c2 = keras.layers.LSTM(HIDDEN, return_state=True)(x, initial_state=carry[2:])
    action = keras.layers.Dense(ACTION_DIM, activation='tanh')(x)
    return keras.Model([state, last_action] + carry, [action, h1, c1, h2, c2])


def report(name, kind, runtime, samples):
    """Print one result line with the goal check."""
    median, p99 = percentiles(samples)
    goal = GOALS_US[kind]
    verdict = 'ok' if p99 < goal else 'MISSED'
    print(f'{name:<34} {runtime:<18} median {median:8.1f} us   p99 {p99:8.1f} us   '
          f'goal p99 < {goal:.0f} us: {verdict}', flush=True)


def litert_process_rss(paths):
    """Run the LiteRT actors in a fresh process without TensorFlow; return its report."""
    code = (
        'import json, sys\n'
        'import numpy as np\n'
        'from tspace_ros.agents.litert import LiteRtActor, LiteRtRecurrentActor\n'
        'from tspace_ros.agents.policy_exchange import PolicyBlob\n'
        f'ff = LiteRtActor(open({str(paths[0])!r}, "rb").read())\n'
        f'rec = LiteRtRecurrentActor(open({str(paths[1])!r}, "rb").read())\n'
        'for _ in range(100):\n'
        f'    ff.infer(np.zeros({STATE_DIM}, np.float32))\n'
        f'    rec.step(np.zeros({STATE_DIM}, np.float32))\n'
        'hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")]\n'
        'print(json.dumps({"rss_mb": hwm[0] / 1024, "tf": [m for m in sys.modules\n'
        '                  if m.split(".")[0] in ("tensorflow", "keras")]}))\n')
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(PACKAGE_ROOT), env.get('PYTHONPATH', '')])
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            env=env, timeout=120, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    """Run every case and print its latency and the goal check."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--count', type=int, default=2000, help='timed calls per case')
    parser.add_argument('--cpu', type=int, default=None,
                        help='core to pin to (default: the last one allowed)')
    parser.add_argument('--no-pin', action='store_true', help='do not pin to one core')
    args = parser.parse_args()
    pinned = 'not pinned'
    if not args.no_pin and hasattr(os, 'sched_setaffinity'):
        cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        pinned = f'pinned to core {cpu}'

    import keras
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from tspace_ros.agents.export import export_tflite
    from tspace_ros.agents.litert import LiteRtActor, LiteRtRecurrentActor

    print(f'inference latency, one observation, {args.count} calls per case, {pinned}, '
          f'TF {tf.__version__} 1 thread, LiteRT 1 thread', flush=True)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    states = [rng.uniform(0, 1, (1, STATE_DIM)).astype(np.float32) for _ in range(64)]

    ddpg = ddpg_actor(keras)
    keras_ddpg = tf.function(lambda s: ddpg(s, training=False), reduce_retracing=True,
                             input_signature=[tf.TensorSpec((1, STATE_DIM), tf.float32)])
    report('ddpg 90-256-256-68', 'ddpg', 'keras tf.function',
           time_calls(lambda s: keras_ddpg(s).numpy(), states, args.count))
    ddpg_bytes = export_tflite(ddpg)
    actor = LiteRtActor(ddpg_bytes)
    report('ddpg 90-256-256-68', 'ddpg', 'litert',
           time_calls(lambda s: actor.infer(s[0]), states, args.count))

    step_bytes = None
    for cells, label in ((True, 'rdpg step, LSTMCell x2 256'),
                         (False, 'rdpg step, LSTM layer x2 256')):
        step = rdpg_step_actor(keras, cells)
        specs = [tf.TensorSpec((1, d), tf.float32)
                 for d in (STATE_DIM, ACTION_DIM) + (HIDDEN,) * 4]
        keras_step = tf.function(lambda *a: step(list(a), training=False),
                                 input_signature=specs)
        memory = {'carry': [np.zeros((1, HIDDEN), np.float32)] * 4,
                  'last': np.zeros((1, ACTION_DIM), np.float32)}

        def keras_call(s):
            out = [o.numpy() for o in keras_step(s, memory['last'], *memory['carry'])]
            memory['last'], memory['carry'] = out[0], out[1:]

        report(label, 'rdpg', 'keras tf.function', time_calls(keras_call, states, args.count))
        flatbuffer = export_tflite(step)
        step_bytes = step_bytes or flatbuffer
        recurrent = LiteRtRecurrentActor(flatbuffer)
        report(label, 'rdpg', 'litert',
               time_calls(lambda s: recurrent.step(s[0]), states, args.count))

    with tempfile.TemporaryDirectory() as tmp:
        paths = [pathlib.Path(tmp) / 'ddpg.tflite', pathlib.Path(tmp) / 'rdpg.tflite']
        paths[0].write_bytes(ddpg_bytes)
        paths[1].write_bytes(step_bytes)
        lite = litert_process_rss(paths)
    print(f'peak RSS: LiteRT-only process (both actors, no TensorFlow: '
          f'{"yes" if not lite["tf"] else "NO"}) {lite["rss_mb"]:.0f} MB; this TensorFlow '
          f'process {peak_rss_mb():.0f} MB; flatbuffers: ddpg {len(ddpg_bytes) / 1e3:.0f} kB, '
          f'rdpg {len(step_bytes) / 1e3:.0f} kB', flush=True)


if __name__ == '__main__':
    main()
