"""Resemblyzer's GE2E speaker encoder as an ONNX graph, built from its torch state dict.

The network is ``VoiceEncoder`` of Resemblyzer 0.1.4: a 3-layer LSTM (40 -> 256) over a
partial utterance of mel frames, the last layer's final hidden state through
``Linear(256, 256)`` and ReLU, then L2 normalisation of each row.

Graph: input ``mels`` float32 ``(N, T, 40)``, output ``embedding`` float32 ``(N, 256)``, both
with dynamic ``N`` and ``T`` (the front end feeds ``T = 160``). The torch LSTM weights are
re-laid out for the ONNX ``LSTM`` operator (gate order and bias packing differ, see
:func:`_lstm_weights`). The final division is guarded so an all-zero ReLU output gives an
all-zero embedding instead of NaN.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import CheckpointError
from . import versions

#: Bumped whenever the graph this module builds changes, so cached ONNX files are rebuilt.
CONVERTER_VERSION = versions.GE2E

INPUT_NAME = "mels"
OUTPUT_NAME = "embedding"

N_MELS = 40
HIDDEN = 256
EMBEDDING = 256
NUM_LAYERS = 3

OPSET = 17
IR_VERSION = 8

#: Floor of the row norm before dividing: rows of zeros stay zeros instead of becoming NaN.
NORM_EPS = 1e-12

# torch stacks the LSTM gates as (input, forget, cell, output); ONNX as (input, output,
# forget, cell). Block k of the ONNX tensor is block _GATE_ORDER[k] of the torch one.
_GATE_ORDER = (0, 3, 1, 2)


def _param(state: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...]) -> np.ndarray:
    if key not in state:
        raise CheckpointError(f"GE2E checkpoint lacks {key!r}")
    value = np.asarray(state[key])
    if value.shape != shape:
        raise CheckpointError(f"GE2E checkpoint: {key} has shape {value.shape}, expected {shape}")
    return value.astype(np.float32)


def _reorder_gates(x: np.ndarray) -> np.ndarray:
    blocks = np.split(x, 4, axis=0)
    return np.concatenate([blocks[k] for k in _GATE_ORDER], axis=0)


def _lstm_weights(
    state: Mapping[str, np.ndarray], layer: int, input_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W, R, B) of one torch LSTM layer in ONNX layout (one direction)."""
    gates = 4 * HIDDEN
    w_ih = _param(state, f"lstm.weight_ih_l{layer}", (gates, input_size))
    w_hh = _param(state, f"lstm.weight_hh_l{layer}", (gates, HIDDEN))
    b_ih = _param(state, f"lstm.bias_ih_l{layer}", (gates,))
    b_hh = _param(state, f"lstm.bias_hh_l{layer}", (gates,))
    w = _reorder_gates(w_ih)[np.newaxis]
    r = _reorder_gates(w_hh)[np.newaxis]
    b = np.concatenate([_reorder_gates(b_ih), _reorder_gates(b_hh)])[np.newaxis]
    return w, r, b


def build_onnx(state: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """The ONNX model of Resemblyzer's ``VoiceEncoder.forward`` with the given weights.

    ``state`` is the checkpoint's ``model_state`` (``lstm.*`` and ``linear.*`` entries; other
    keys such as ``similarity_weight`` are ignored). Raises :class:`CheckpointError` when a
    needed tensor is missing or has the wrong shape.
    """
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    # (N, T, F) -> (T, N, F): the ONNX LSTM's default (and widely supported) layout.
    nodes.append(helper.make_node("Transpose", [INPUT_NAME], ["x0"], perm=[1, 0, 2]))
    axis0 = const("axis0", np.array([0], dtype=np.int64))
    axis1 = const("axis1", np.array([1], dtype=np.int64))

    x = "x0"
    input_size = N_MELS
    last_h = ""
    for layer in range(NUM_LAYERS):
        w, r, b = _lstm_weights(state, layer, input_size)
        y, y_h = f"lstm{layer}_y", f"lstm{layer}_h"
        nodes.append(
            helper.make_node(
                "LSTM",
                [x, const(f"lstm{layer}_W", w), const(f"lstm{layer}_R", r), const(f"lstm{layer}_B", b)],
                [y, y_h],
                hidden_size=HIDDEN,
                direction="forward",
                name=f"lstm{layer}",
            )
        )
        if layer < NUM_LAYERS - 1:
            # Y is (T, num_directions=1, N, H); the next layer wants (T, N, H).
            x = f"x{layer + 1}"
            nodes.append(helper.make_node("Squeeze", [y, axis1], [x]))
        last_h = y_h
        input_size = HIDDEN

    # Y_h of the last layer is (1, N, H) -> (N, H), then relu(h @ W^T + b).
    nodes.append(helper.make_node("Squeeze", [last_h, axis0], ["h_last"]))
    lin_w = _param(state, "linear.weight", (EMBEDDING, HIDDEN))
    lin_b = _param(state, "linear.bias", (EMBEDDING,))
    nodes.append(
        helper.make_node(
            "Gemm",
            ["h_last", const("linear_W", lin_w), const("linear_B", lin_b)],
            ["linear_out"],
            transB=1,
        )
    )
    nodes.append(helper.make_node("Relu", ["linear_out"], ["raw"]))

    # raw / max(||raw||_2, eps), row-wise.
    nodes.append(helper.make_node("ReduceSumSquare", ["raw"], ["sumsq"], axes=[1], keepdims=1))
    nodes.append(helper.make_node("Sqrt", ["sumsq"], ["norm"]))
    eps = const("norm_eps", np.array(NORM_EPS, dtype=np.float32))
    nodes.append(helper.make_node("Max", ["norm", eps], ["norm_safe"]))
    nodes.append(helper.make_node("Div", ["raw", "norm_safe"], [OUTPUT_NAME]))

    graph = helper.make_graph(
        nodes,
        "ge2e_resemblyzer",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", "T", N_MELS])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", EMBEDDING])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="speakerid.models.ge2e",
        producer_version=CONVERTER_VERSION,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model
