"""
Trainer side of the policy exchange: Keras actor -> TFLite flatbuffer and PolicyBlob.

Imports TensorFlow; the vehicle side uses ``policy_exchange`` and ``litert`` only.

``export_tflite`` converts an actor with a static batch of 1 and builtin TFLite ops
only (what ``ai_edge_litert`` runs without the Flex delegate). The path is Keras'
own (``keras.export.ExportArchive`` -> SavedModel -> ``TFLiteConverter.
from_saved_model``), which freezes the Keras 3 variables into constants; measured
here (TF 2.21), ``from_concrete_functions(..., trackable_obj=model)`` instead keeps
them as resource variables that the flatbuffer never initialises (wrong outputs).

The exported model has one signature, ``serving_default``, whose inputs and outputs
are named (TFLite sorts and reorders them; the names are the contract):

- feed-forward actor ``Model(state) -> action``: input ``state`` [1, S], output
  ``action`` [1, A];
- recurrent step actor ``Model([state, last_action, h1, c1, ..., hL, cL]) ->
  [action, h1', c1', ..., hL', cL']``: inputs ``state`` [1, S], ``last_action``
  [1, A], ``h1``, ``c1``, ... [1, H_i]; outputs ``action`` [1, A] and the new
  ``h1``, ``c1``, ... under the same names as the inputs they replace.

An LSTM layer (rather than LSTMCell) converts too: with the static batch it becomes
a TFLite WHILE loop; ``unroll=True`` in the step actor avoids the loop (faster).
"""

import tempfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from tspace_ros.agents.policy_exchange import (MODEL_FORMAT_TFLITE, PolicyBlob, PolicyError,
                                               WeightSpec)


class ExportError(RuntimeError):
    """A model that cannot be converted to TFLite, or whose conversion does not agree."""


def default_input_names(count: int) -> List[str]:
    """Return the conventional input names for an actor with count inputs."""
    if count == 1:
        return ['state']
    if count >= 4 and count % 2 == 0:
        names = ['state', 'last_action']
        for layer in range(1, (count - 2) // 2 + 1):
            names += [f'h{layer}', f'c{layer}']
        return names
    raise ExportError(f'no conventional names for {count} inputs: pass input_names')


def default_output_names(count: int) -> List[str]:
    """Return the conventional output names for an actor with count outputs."""
    if count == 1:
        return ['action']
    if count >= 3 and count % 2 == 1:
        names = ['action']
        for layer in range(1, (count - 1) // 2 + 1):
            names += [f'h{layer}', f'c{layer}']
        return names
    raise ExportError(f'no conventional names for {count} outputs: pass output_names')


def _sample_shapes(model: keras.Model,
                   input_shapes: Optional[Sequence[Sequence[int]]]) -> List[Tuple[int, ...]]:
    """Return each input's shape without the batch dimension, all dimensions known."""
    model_shapes = [tuple(t.shape) for t in model.inputs] if _has_inputs(model) else None
    if input_shapes is None:
        if model_shapes is None:
            raise ExportError('the model has no known inputs: pass input_shapes')
        input_shapes = [shape[1:] for shape in model_shapes]
    shapes = []
    for i, shape in enumerate(input_shapes):
        shape = tuple(shape)
        if model_shapes is not None and i < len(model_shapes) \
                and len(shape) == len(model_shapes[i]) and shape[:1] in ((1,), (None,)):
            shape = shape[1:]  # given with its batch dimension: drop it
        if not shape or any(d is None or int(d) <= 0 for d in shape):
            raise ExportError(f'input {i} shape {shape} must be fully known, without batch')
        shapes.append(tuple(int(d) for d in shape))
    if model_shapes is not None and len(shapes) != len(model_shapes):
        raise ExportError(f'{len(shapes)} input shapes for a model with '
                          f'{len(model_shapes)} inputs')
    return shapes


def _has_inputs(model: keras.Model) -> bool:
    """Return whether the model knows its symbolic inputs (functional models do)."""
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def export_tflite(model: keras.Model, input_shapes: Optional[Sequence[Sequence[int]]] = None,
                  input_names: Optional[Sequence[str]] = None,
                  output_names: Optional[Sequence[str]] = None,
                  check: bool = True, atol: float = 1e-4) -> bytes:
    """
    Convert an actor to a TFLite flatbuffer with a static batch of 1; return its bytes.

    input_shapes: one shape per model input without the batch dimension (default:
    the model's own). input_names / output_names: the signature names, in the
    model's input / output order (defaults: ``default_input_names`` /
    ``default_output_names``). With check, the converted model is run once with
    LiteRT on random inputs and must agree with Keras within atol, and its
    signature must have exactly these names; ExportError otherwise.
    """
    shapes = _sample_shapes(model, input_shapes)
    in_names = list(input_names) if input_names is not None else default_input_names(
        len(shapes))
    if len(in_names) != len(shapes) or len(set(in_names)) != len(in_names):
        raise ExportError(f'input_names {in_names} do not name {len(shapes)} inputs uniquely')
    specs = [tf.TensorSpec((1,) + shape, tf.float32, name=name)
             for shape, name in zip(shapes, in_names)]
    probe = _call(model, [np.zeros((1,) + s, np.float32) for s in shapes])
    out_names = list(output_names) if output_names is not None else default_output_names(
        len(probe))
    if len(out_names) != len(probe) or len(set(out_names)) != len(out_names):
        raise ExportError(f'output_names {out_names} do not name {len(probe)} outputs '
                          'uniquely')

    def serve(*args):
        return dict(zip(out_names, _call(model, list(args))))

    try:
        with tempfile.TemporaryDirectory(prefix='tspace_tflite_') as saved_model_dir:
            archive = keras.export.ExportArchive()
            archive.track(model)
            archive.add_endpoint('serve', serve, input_signature=specs)
            archive.write_out(saved_model_dir, verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            flatbuffer = bytes(converter.convert())
    except Exception as error:  # noqa: B902 - TF raises many types; report them as one
        raise ExportError(f'TFLite conversion failed: {type(error).__name__}: {error}') \
            from error
    if check:
        _check_conversion(model, flatbuffer, shapes, in_names, out_names, atol)
    return flatbuffer


def _call(model: keras.Model, inputs: List[Any]) -> List[Any]:
    """Call the model (one input bare, several as a list); return its outputs as a list."""
    out = model(inputs[0] if len(inputs) == 1 else inputs, training=False)
    if isinstance(out, Mapping):
        raise ExportError('models with dict outputs are not supported: return a list')
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _check_conversion(model: keras.Model, flatbuffer: bytes, shapes: List[Tuple[int, ...]],
                      in_names: List[str], out_names: List[str], atol: float) -> None:
    """Run the flatbuffer once with LiteRT and compare with Keras; raise ExportError."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    signatures = interpreter.get_signature_list()
    got = signatures.get('serving_default', {})
    if sorted(got.get('inputs', [])) != sorted(in_names) \
            or sorted(got.get('outputs', [])) != sorted(out_names):
        raise ExportError(f'the converted signature is {signatures}, expected inputs '
                          f'{in_names} and outputs {out_names}')
    rng = np.random.default_rng(0)
    feeds = [rng.uniform(-1, 1, (1,) + shape).astype(np.float32) for shape in shapes]
    result = interpreter.get_signature_runner('serving_default')(**dict(zip(in_names, feeds)))
    expected = [np.asarray(o) for o in _call(model, feeds)]
    for name, want in zip(out_names, expected):
        diff = float(np.max(np.abs(result[name] - want)))
        if not diff <= atol:
            raise ExportError(f'LiteRT output {name!r} differs from Keras by {diff:g} '
                              f'(more than {atol:g})')


def weight_spec(model: keras.Model) -> List[Tuple[str, Tuple[int, ...]]]:
    """Return the model's (name, shape) weight pairs, in ``model.weights`` order."""
    return list(zip(_weight_names(model), (tuple(w.shape) for w in model.weights)))


def _weight_names(model: keras.Model) -> List[str]:
    """Return unique names of the model's weights (Keras paths, numbered if repeated)."""
    names: List[str] = []
    seen: Dict[str, int] = {}
    for i, weight in enumerate(model.weights):
        name = getattr(weight, 'path', None) or getattr(weight, 'name', None) or f'weight_{i}'
        if name in seen:
            seen[name] += 1
            name = f'{name}#{seen[name]}'
        else:
            seen[name] = 0
        names.append(name)
    return names


def weights_to_blob(model: keras.Model, algorithm: str, version: int,
                    state_dim: Optional[int] = None, action_dim: Optional[int] = None,
                    metadata: Optional[Mapping[str, Any]] = None,
                    inference_model: Optional[keras.Model] = None,
                    model_bytes: bytes = b'', **export_kwargs: Any) -> PolicyBlob:
    """
    Return a PolicyBlob of the model's weights (``model.weights`` order, Keras paths).

    state_dim / action_dim default to the last dimension of the model's first input /
    first output. inference_model (e.g. the RDPG step actor that shares the trained
    actor's weights, or the actor itself) is exported with ``export_tflite(...,
    **export_kwargs)`` into the blob; or pass ready model_bytes (TFLite).
    """
    if inference_model is not None and model_bytes:
        raise ExportError('pass inference_model or model_bytes, not both')
    if state_dim is None or action_dim is None:
        if not _has_inputs(model):
            raise ExportError('the model has no known inputs: pass state_dim and action_dim')
        state_dim = state_dim if state_dim is not None else int(model.inputs[0].shape[-1])
        action_dim = action_dim if action_dim is not None else int(model.outputs[0].shape[-1])
    if inference_model is not None:
        model_bytes = export_tflite(inference_model, **export_kwargs)
    weights = [(name, np.asarray(w.numpy() if hasattr(w, 'numpy') else w, np.float32))
               for name, w in zip(_weight_names(model), model.weights)]
    return PolicyBlob(algorithm, version, weights, state_dim, action_dim, metadata,
                      model_bytes, MODEL_FORMAT_TFLITE if model_bytes else '')


def blob_to_weights(blob: PolicyBlob, model: keras.Model, algorithm: Optional[str] = None,
                    check_names: bool = False) -> None:
    """
    Set the model's weights from the blob after checking count and shapes.

    Names are compared only with check_names: Keras numbers auto-named layers per
    process ('dense_3' here, 'dense' there), so equal networks may disagree on them.
    Raises PolicyError on a mismatch; the model is unchanged then.
    """
    spec: WeightSpec = weight_spec(model)
    blob.verify(algorithm=algorithm, spec=spec, check_names=check_names)
    try:
        model.set_weights(blob.weight_arrays)
    except ValueError as error:
        raise PolicyError(f'cannot set the weights: {error}') from None
