"""
Vehicle-side actor inference with LiteRT (``ai_edge_litert``), without TensorFlow.

The agent node runs the TFLite flatbuffer that the trainer exported
(``tspace_ros.agents.export.export_tflite``) and sent in a PolicyUpdate. Importing
this module loads numpy and the LiteRT interpreter only (tens of MB, where
TensorFlow costs about 600 MB per process).

Inputs and outputs are identified by NAME, never by position: TFLite sorts and
reorders them (a step actor's inputs came out as state, h1, h2, last_action, c2, c1).
The names come from the model's ``serving_default`` signature (``state``,
``last_action``, ``h1``, ``c1``, ..., outputs ``action``, ``h1``, ``c1``, ...).
Without a signature, inputs are named by their tensor names
(``serving_default_<name>:0`` -> ``<name>``) and a feed-forward model with exactly
one input and one output is taken as state -> action. Shapes are then checked:
batch 1, float32, and each recurrent output the shape of the input it replaces.

Recurrent state layout: a tuple ``(h1, c1, h2, c2, ...)`` of 1-d float32 arrays,
layer 1 first, each of that layer's width (``state_names`` gives the names).

Thread safety: a LiteRT interpreter must not be used by two threads at once; each
actor serialises ``infer``/``step`` and state access with its own lock. For
parallel inference create one actor per thread.
"""

import threading
from typing import Dict, List, Optional, Sequence, Tuple

from ai_edge_litert.interpreter import Interpreter
import numpy as np

from tspace_ros.agents.policy_exchange import MODEL_FORMAT_TFLITE, PolicyBlob, PolicyError

SIGNATURE_KEY = 'serving_default'


class LiteRtError(PolicyError):
    """A model that LiteRT cannot load, or whose inputs/outputs are not an actor's."""


def _tensor_name(name: str) -> str:
    """Return a signature-like name for a raw tensor name ('serving_default_x:0' -> 'x')."""
    name = name.split(':')[0]
    prefix = SIGNATURE_KEY + '_'
    return name[len(prefix):] if name.startswith(prefix) else name


class _Model:
    """One interpreter and the tensor indices of its named inputs and outputs."""

    def __init__(self, model_bytes: bytes, num_threads: int):
        """Load model_bytes; raise LiteRtError if it is not a usable flatbuffer."""
        if not isinstance(model_bytes, (bytes, bytearray, memoryview)):
            raise LiteRtError(f'model must be bytes, got {type(model_bytes).__name__}')
        model_bytes = bytes(model_bytes)
        if len(model_bytes) < 8 or model_bytes[4:8] != b'TFL3':
            raise LiteRtError('model is not a TFLite flatbuffer (no TFL3 identifier)')
        self.model_bytes = model_bytes  # the interpreter reads from this buffer
        try:
            self.interpreter = Interpreter(model_content=model_bytes, num_threads=num_threads)
            self.interpreter.allocate_tensors()
            primary_in = {d['index']: d for d in self.interpreter.get_input_details()}
            primary_out = {d['index']: d for d in self.interpreter.get_output_details()}
            signatures = self.interpreter.get_signature_list()
        except (ValueError, RuntimeError) as error:
            raise LiteRtError(f'LiteRT cannot load the model: {error}') from None
        if signatures:
            key = SIGNATURE_KEY if SIGNATURE_KEY in signatures else next(iter(signatures))
            if len(signatures) > 1 and key != SIGNATURE_KEY:
                raise LiteRtError(f'model has signatures {sorted(signatures)} and no '
                                  f'{SIGNATURE_KEY!r}')
            runner = self.interpreter.get_signature_runner(key)
            self.inputs = {n: d['index'] for n, d in runner.get_input_details().items()}
            self.outputs = {n: d['index'] for n, d in runner.get_output_details().items()}
            # Tensors are set on the primary subgraph: the signature must be that one.
            if set(self.inputs.values()) != set(primary_in) \
                    or set(self.outputs.values()) != set(primary_out):
                raise LiteRtError(f'signature {key!r} is not the primary subgraph')
        else:
            self.inputs = {_tensor_name(d['name']): i for i, d in primary_in.items()}
            self.outputs = {_tensor_name(d['name']): i for i, d in primary_out.items()}
            if len(self.inputs) != len(primary_in):
                raise LiteRtError('model inputs have ambiguous names')
        self.shapes = {}
        for names, details in ((self.inputs, primary_in), (self.outputs, primary_out)):
            for name, index in names.items():
                d = details[index]
                if d['dtype'] != np.float32:
                    raise LiteRtError(f'tensor {name!r} is {np.dtype(d["dtype"])}, '
                                      'expected float32')
                shape = tuple(int(x) for x in d['shape'])
                if len(shape) != 2 or shape[0] != 1 or shape[1] <= 0:
                    raise LiteRtError(f'tensor {name!r} has shape {list(shape)}, '
                                      'expected [1, n] (static batch of 1)')
        self.in_shapes = {n: tuple(primary_in[i]['shape']) for n, i in self.inputs.items()}
        self.out_shapes = {n: tuple(primary_out[i]['shape']) for n, i in self.outputs.items()}

    def describe(self) -> str:
        """Return the inputs and outputs with their shapes, for error messages."""
        ins = ', '.join(f'{n}{list(s)}' for n, s in sorted(self.in_shapes.items()))
        outs = ', '.join(f'{n}{list(s)}' for n, s in sorted(self.out_shapes.items()))
        return f'inputs ({ins}), outputs ({outs})'

    def run(self, feeds: Dict[str, np.ndarray], wanted: Sequence[str]) -> List[np.ndarray]:
        """Set the inputs, invoke, and return copies of the wanted outputs, each 1-d."""
        interpreter = self.interpreter
        for name, value in feeds.items():
            interpreter.set_tensor(self.inputs[name], value)
        try:
            interpreter.invoke()
        except RuntimeError as error:
            raise LiteRtError(f'LiteRT invoke failed: {error}') from None
        return [interpreter.get_tensor(self.outputs[name])[0] for name in wanted]


def _vector(value, size: int, what: str) -> np.ndarray:
    """Return value as a finite float32 [1, size] array, else raise ValueError."""
    arr = np.asarray(value, dtype=np.float32)
    if arr.size != size or arr.ndim > 2 or arr.ndim == 2 and arr.shape[0] != 1:
        raise ValueError(f'{what} must have {size} values, got shape {arr.shape}')
    arr = arr.reshape(1, size)
    if not np.isfinite(arr).all():
        raise ValueError(f'{what} has non-finite values')
    return arr


def _finite_action(action: np.ndarray) -> np.ndarray:
    """Return action if all finite, else raise LiteRtError (a broken policy)."""
    if not np.isfinite(action).all():
        raise LiteRtError('the policy produced non-finite actions')
    return action


class LiteRtActor:
    """
    A feed-forward actor: ``infer(state) -> action`` (1-d float32) with LiteRT.

    The model must have an input ``state`` [1, S] and an output ``action`` [1, A]
    (or exactly one input and one output, when it has no signature).
    """

    def __init__(self, model_bytes: bytes, num_threads: int = 1,
                 state_dim: Optional[int] = None, action_dim: Optional[int] = None):
        """Load the model; check it (and the dimensions, if given); raise LiteRtError."""
        self._model = _Model(model_bytes, num_threads)
        model = self._model
        if set(model.inputs) != {'state'} or set(model.outputs) != {'action'}:
            if len(model.inputs) == 1 and len(model.outputs) == 1:
                model.inputs = {'state': next(iter(model.inputs.values()))}
                model.outputs = {'action': next(iter(model.outputs.values()))}
                model.in_shapes = {'state': next(iter(model.in_shapes.values()))}
                model.out_shapes = {'action': next(iter(model.out_shapes.values()))}
            else:
                raise LiteRtError('a feed-forward actor needs input state and output action; '
                                  f'the model has {model.describe()}')
        self.state_dim = int(model.in_shapes['state'][1])
        self.action_dim = int(model.out_shapes['action'][1])
        _check_dims(self.state_dim, self.action_dim, state_dim, action_dim)
        self._lock = threading.Lock()

    @classmethod
    def from_blob(cls, blob: PolicyBlob, num_threads: int = 1) -> 'LiteRtActor':
        """Return the actor of a verified blob's TFLite model, checked against its dims."""
        return cls(_blob_model(blob), num_threads, blob.state_dim, blob.action_dim)

    def infer(self, state) -> np.ndarray:
        """Return the action (1-d float32, action_dim) for one state (state_dim values)."""
        feed = _vector(state, self.state_dim, 'state')
        with self._lock:
            (action,) = self._model.run({'state': feed}, ('action',))
        return _finite_action(action)


class LiteRtRecurrentActor:
    """
    A recurrent step actor that carries its LSTM state explicitly between steps.

    The model maps ``state`` [1, S], ``last_action`` [1, A], ``h1``, ``c1``, ...,
    ``hL``, ``cL`` to ``action`` [1, A] and the new ``h1``, ``c1``, ... . ``step``
    feeds the carried state and keeps the new one; ``reset`` zeroes it (an episode
    starts); ``state`` gets or sets it as (h1, c1, ..., hL, cL). The action of the
    last step is remembered too (``last_action``): to resume exactly, save and
    restore both.
    """

    def __init__(self, model_bytes: bytes, num_threads: int = 1,
                 state_dim: Optional[int] = None, action_dim: Optional[int] = None):
        """Load the model; check its inputs and outputs; raise LiteRtError."""
        self._model = _Model(model_bytes, num_threads)
        model = self._model
        names = set(model.inputs) - {'state', 'last_action'}
        layers = len(names) // 2
        self.state_names: Tuple[str, ...] = tuple(
            n for layer in range(1, layers + 1) for n in (f'h{layer}', f'c{layer}'))
        expected_in = {'state', 'last_action', *self.state_names}
        expected_out = {'action', *self.state_names}
        if layers < 1 or set(model.inputs) != expected_in or set(model.outputs) != expected_out:
            raise LiteRtError('a recurrent step actor needs inputs state, last_action, h1, c1, '
                              '..., and outputs action, h1, c1, ...; the model has '
                              f'{model.describe()}')
        self.state_dim = int(model.in_shapes['state'][1])
        self.action_dim = int(model.out_shapes['action'][1])
        if model.in_shapes['last_action'][1] != self.action_dim:
            raise LiteRtError(f'last_action has {model.in_shapes["last_action"][1]} values '
                              f'but action {self.action_dim}')
        for name in self.state_names:
            if model.in_shapes[name] != model.out_shapes[name]:
                raise LiteRtError(f'recurrent state {name!r} is {list(model.in_shapes[name])} '
                                  f'in but {list(model.out_shapes[name])} out')
        _check_dims(self.state_dim, self.action_dim, state_dim, action_dim)
        self.state_sizes: Tuple[int, ...] = tuple(
            int(model.in_shapes[n][1]) for n in self.state_names)
        self._lock = threading.Lock()
        self.reset()

    @classmethod
    def from_blob(cls, blob: PolicyBlob, num_threads: int = 1) -> 'LiteRtRecurrentActor':
        """Return the step actor of a verified blob's TFLite model, checked against its dims."""
        return cls(_blob_model(blob), num_threads, blob.state_dim, blob.action_dim)

    def reset(self) -> None:
        """Zero the recurrent state and the remembered last action (a new episode)."""
        with self._lock:
            self._carry = [np.zeros((1, size), np.float32) for size in self.state_sizes]
            self._last_action = np.zeros((1, self.action_dim), np.float32)

    @property
    def state(self) -> Tuple[np.ndarray, ...]:
        """Return a copy of the recurrent state as (h1, c1, ..., hL, cL), 1-d float32."""
        with self._lock:
            return tuple(c[0].copy() for c in self._carry)

    @state.setter
    def state(self, value: Sequence[np.ndarray]) -> None:
        """Set the recurrent state from (h1, c1, ..., hL, cL); raise ValueError if unfit."""
        value = list(value)
        if len(value) != len(self.state_names):
            raise ValueError(f'the recurrent state has {len(self.state_names)} parts '
                             f'{self.state_names}, got {len(value)}')
        carry = [_vector(v, size, name)
                 for v, size, name in zip(value, self.state_sizes, self.state_names)]
        with self._lock:
            self._carry = carry

    @property
    def last_action(self) -> np.ndarray:
        """Return a copy of the remembered last action (what ``step`` feeds by default)."""
        with self._lock:
            return self._last_action[0].copy()

    @last_action.setter
    def last_action(self, value) -> None:
        """Set the remembered last action (action_dim values)."""
        feed = _vector(value, self.action_dim, 'last_action')
        with self._lock:
            self._last_action = feed

    def step(self, state, last_action=None) -> np.ndarray:
        """
        Return the action for one state and advance the recurrent state.

        last_action defaults to the action this actor returned last (zeros after
        ``reset``); pass the action actually applied when it differs.
        """
        feed_state = _vector(state, self.state_dim, 'state')
        with self._lock:
            feed_last = (self._last_action if last_action is None
                         else _vector(last_action, self.action_dim, 'last_action'))
            feeds = {'state': feed_state, 'last_action': feed_last}
            feeds.update(zip(self.state_names, self._carry))
            outputs = self._model.run(feeds, ('action',) + self.state_names)
            action = _finite_action(outputs[0])
            self._carry = [o.reshape(1, -1) for o in outputs[1:]]
            self._last_action = action.reshape(1, -1).copy()
        return action


def _check_dims(state_dim: int, action_dim: int, want_state: Optional[int],
                want_action: Optional[int]) -> None:
    """Raise LiteRtError if the model's dimensions differ from the wanted ones."""
    if want_state is not None and int(want_state) != state_dim:
        raise LiteRtError(f'the model takes {state_dim} state values, expected {want_state}')
    if want_action is not None and int(want_action) != action_dim:
        raise LiteRtError(f'the model gives {action_dim} action values, expected {want_action}')


def _blob_model(blob: PolicyBlob) -> bytes:
    """Return the blob's TFLite bytes, or raise LiteRtError if it has none."""
    if blob.model_format != MODEL_FORMAT_TFLITE or not blob.model:
        raise LiteRtError(f'policy {blob.algorithm} v{blob.version} carries no TFLite model '
                          f'(model_format {blob.model_format!r})')
    return blob.model
