"""INT8 CAM++ (``campplus-int8``): ONNX Runtime static quantisation of the converted CAM++ graph.

Built on the user's machine from the same pinned weights as ``campplus``: the FP32 graph of
speakerid.models.campplus is quantised with ``onnxruntime.quantization.quantize_static`` in QDQ
format, weights int8 per output channel (symmetric), activations uint8 per tensor (asymmetric),
calibrated on real speech. On x86 without VNNI the weights use 7 bits so that ONNX Runtime's
int16 pair sums cannot saturate (speakerid.models.cpu); the recipe, and so the converter
version, depends on the CPU kind, and a model built on another kind is rebuilt.

What is quantised, and why (cosine to the FP32 embedding on 20 librispeech-251 clips, min / mean;
benchmarks/bench_int8.py, README of the choice in BENCHMARKS.md "INT8 CAM++"):

* Every Conv *except* the CAM context gate (``cam_layer.linear1/linear2``: they run on one
  vector per 100 frames, so quantising them saves nothing), ``transit3`` (whose output is
  the statistics pooling's input: quantising it alone cost min cosine 0.995 -> 0.978) and the
  head's first conv ``head.conv1`` (recipe int8.2), plus the ReLUs after them (so consecutive
  QLinearConvs need no DequantizeLinear/QuantizeLinear pair between them). All Conv: 0.975 /
  0.991; without the gate and transit3: 0.995 / 0.996.
* ``head.conv1`` has one input channel, the fbank itself: quantised, the features are rounded to
  one uint8 scale before anything else (the largest loss on hard audio), and a 1-channel int8
  conv gains nothing. Kept in FP32 the graph is both closer and faster (AVX-512 VNNI, 1 thread,
  10 s: 1.77-1.87x -> 1.91-1.97x FP32's speed; mean cosine to FP32 on 47 babble-0 dB queries 0.9883
  -> 0.9907, far field 0.9933 -> 0.9951). Keeping the head's first residual stage (``layer1``)
  too brings babble to 0.9953 but the speed to 1.46-1.49x (BENCHMARKS.md "INT8 CAM++").
* Not the pre-activation BatchNorms (a per-channel Mul/Add before each dense layer): quantised
  per tensor they ruin the graph (min cosine 0.31); rewritten as depthwise 1x1 convs (per-channel
  weights) they still cost 0.72 / 0.89, because their input, the dense block's concatenation,
  then shares one activation scale across channels of very different ranges. Nor the statistics
  pooling, the Gemm, the gate and the shape arithmetic: they stay FP32.

Channel equalisation (recipe int8.3, :func:`equalise`). Activations are quantised per tensor, and
the channels of one ReLU output can differ in range several-fold, so the narrow ones get few of
the 256 levels. Before quantising, each such tensor's channels are rescaled (channel i divided by
s_i in its producer conv, input channel i of its consumer convs multiplied by s_i: the FP32
function is unchanged), with s_i from the channel's range on the calibration windows and its
consumers' weight range (SmoothQuant's balance, ``alpha`` = EQUALISE_ALPHA). A residual stage's
block outputs share one scale (the identity shortcut adds them). Same graph and speed as int8.2;
mean cosine to FP32 on 16 babble-0 dB queries 0.9906 -> 0.9926, far field 0.9952 -> 0.9965; EER
change over 8 seeds, babble 0 dB +0.59 -> +0.51 points, babble 5 dB +0.18 -> +0.02, cross +0.32 ->
-0.03 (AVX-512 VNNI, BENCHMARKS.md "INT8 CAM++").

Calibration data. The user's machine has no dataset, so the default is a small bundled set of
model inputs (``data/campplus_int8_calibration.npz``: mean-normalised 80-bin fbank, float16, of
real conversational speech from ../shared/data/conversation-sample, two speakers who are not in
the librispeech-251 evaluation set); the build is deterministic. ``calibration=DIR`` calibrates
on the user's own speech instead (audio files in DIR, cut into 3 s windows). Which of
MinMax / Entropy / Percentile: CALIBRATE_METHOD, chosen by measurement.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelError
from . import campplus, versions
from .cpu import cpu_kind, int8_weight_bits

log = logging.getLogger("speakerid")

#: The FP32 converter's version, then this recipe's (op selection, calibration set and method).
CONVERTER_VERSION = versions.QUANTIZE

CALIBRATION_FILE = Path(__file__).with_name("data") / "campplus_int8_calibration.npz"
#: Calibration windows cut from a user's audio: 3 s (the length of the bundled ones), at most
#: MAX_WINDOWS in all (calibration keeps every intermediate tensor of every window in memory).
WINDOW_S = 3.0
MAX_WINDOWS = 64
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus")
#: MinMax: see BENCHMARKS.md "INT8 CAM++" for the three methods measured.
CALIBRATE_METHOD = "MinMax"
#: Conv weights (substrings of their initialiser names) kept in FP32, and why: see the module doc.
KEEP_FP32_CONVS = ("cam_layer.linear1.", "cam_layer.linear2.", "xvector.transit3.linear.", "head.conv1.")
#: Ops quantise_static may quantise (the rest of the graph stays FP32).
QUANTISED_OPS = ("Conv", "Relu")
#: The balance of :func:`equalise` between activation and weight ranges.
EQUALISE_ALPHA = 0.5


# --- calibration data ---------------------------------------------------------------------------


def bundled_calibration() -> list[np.ndarray]:
    """The bundled calibration windows: float32 ``(frames, 80)`` model inputs."""
    try:
        with np.load(CALIBRATION_FILE, allow_pickle=False) as z:
            return [z[k].astype(np.float32) for k in sorted(z.files)]
    except (OSError, ValueError) as exc:
        raise ModelError(f"the bundled INT8 calibration set {CALIBRATION_FILE} is unreadable: {exc}") from None


def calibration_from_audio(directory: Path, frontend_options: dict | None = None) -> list[np.ndarray]:
    """Calibration windows from the speech files in ``directory`` (sorted by name; each cut into
    WINDOW_S windows, at most MAX_WINDOWS in all), as CAM++'s front end gives them."""
    from ..audio import load
    from ..features import complete_options
    from ..features.kaldi import FbankOptions, kaldi_fbank
    from .registry import BUILTIN

    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"calibration directory {directory} does not exist")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in calibration directory {directory}")
    opts = FbankOptions(**(frontend_options or complete_options("kaldi_fbank", BUILTIN["campplus"].frontend_options)))
    win = int(WINDOW_S * opts.sample_rate_hz)
    out: list[np.ndarray] = []
    for path in files:
        x = load(path)
        for start in range(0, max(len(x) - win // 2, 1), win):
            piece = x[start : start + win]
            if len(piece) >= win // 2:  # at least 1.5 s
                out.append(kaldi_fbank(piece, opts))
            if len(out) == MAX_WINDOWS:
                return out
    if not out:
        raise ConfigError(f"the audio in {directory} is too short to calibrate on (need >= {WINDOW_S / 2} s)")
    return out


def features_digest(windows: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for w in windows:
        h.update(np.ascontiguousarray(w, np.float32).tobytes())
    return h.hexdigest()


def _reader(windows: list[np.ndarray], input_name: str):
    """An onnxruntime.quantization.CalibrationDataReader over the calibration windows (batch 1)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[dict] = iter([{input_name: w[None].astype(np.float32)} for w in windows])

        def get_next(self) -> dict | None:
            return next(self._it, None)

    return Reader()


# --- quantisation -------------------------------------------------------------------------------


def equalisable_activations(model) -> list[tuple[list[str], list[str], list[str]]]:
    """Groups of ReLU outputs whose channels can be rescaled together without changing the graph's
    function: (tensors, producer Convs, consumer Convs). A tensor qualifies when it is
    ``Relu(Conv(...))`` or ``Relu(Add(a, b))`` with each of a and b a Conv's output (read by nothing
    else) or another such tensor, and every reader is a Conv (group 1, the tensor as its input) or
    such an Add. Tensors joined by an Add (a residual block's identity shortcut) form one group and
    share one scale per channel. In CAM++: the FCM head's first conv, the inner ReLU of each
    residual block, each stage's block outputs (layer1, layer2), and the CAM gates' inner ReLU."""
    producer: dict[str, object] = {}
    readers: dict[str, list] = {}
    for n in model.graph.node:
        for o in n.output:
            producer[o] = n
        for i in n.input:
            readers.setdefault(i, []).append(n)
    init = {i.name for i in model.graph.initializer}

    outputs = {o.name for o in model.graph.output}

    def plain_conv(n, bias: bool = False) -> bool:  # its own weights (and bias): rescaling touches no other node
        if n.op_type != "Conv" or next((a.i for a in n.attribute if a.name == "group"), 1) != 1 \
                or len(n.input) < (3 if bias else 2):
            return False
        return all(t in init and len(readers.get(t, [])) == 1 for t in n.input[1 : 3 if bias else 2])

    def sole_conv(t: str):  # the Conv (with a bias) producing t, if t is read only once
        p = producer.get(t)
        return p if p is not None and plain_conv(p, bias=True) and len(readers.get(t, [])) == 1 \
            and t not in outputs else None

    relu_out = {n.output[0] for n in model.graph.node if n.op_type == "Relu"}
    info: dict[str, tuple[list, list]] = {}  # tensor -> (producer convs, linked tensors), if it qualifies
    joined: dict[str, str] = {}  # the output of an Add of a qualifying Relu -> that Relu's output
    for n in model.graph.node:
        if n.op_type != "Relu" or n.output[0] in outputs:
            continue
        p = producer.get(n.input[0])
        if sole_conv(n.input[0]) is not None:
            info[n.output[0]] = ([p], [])
        elif p is not None and p.op_type == "Add" and len(readers.get(p.output[0], [])) == 1:
            convs, linked = [], []
            for t in p.input:
                c = sole_conv(t)
                if c is not None:
                    convs.append(c)
                elif t in relu_out:
                    linked.append(t)
                else:
                    break
            else:
                info[n.output[0]] = (convs, linked)
                joined[p.output[0]] = n.output[0]
    consumers: dict[str, list] = {}
    for t in list(info):
        cs = []
        for r in readers.get(t, []):
            if plain_conv(r) and r.input[0] == t:
                cs.append(r)
            elif r.output[0] not in joined or t not in info[joined[r.output[0]]][1]:
                break  # read by something other than a conv or the Add of a residual join
        else:
            if cs or readers.get(t):
                consumers[t] = cs
    # union the linked tensors; a group qualifies only if all its tensors do
    parent = {t: t for t in info}

    def root(t: str) -> str:
        while parent[t] != t:
            t = parent[t]
        return t

    for t, (_, linked) in info.items():
        for u in linked:
            if u in parent:
                parent[root(u)] = root(t)
    groups: dict[str, list[str]] = {}
    for t in info:
        groups.setdefault(root(t), []).append(t)
    out = []
    for members in groups.values():
        if not all(t in consumers and all(u in info for u in info[t][1]) for t in members):
            continue
        prods = [c.name for t in members for c in info[t][0]]
        cons = [c.name for t in members for c in consumers[t]]
        if prods and cons:
            out.append((members, prods, cons))
    return out


def equalise(fp32, windows: list[np.ndarray], *, alpha: float = EQUALISE_ALPHA, input_name: str = "feats"):
    """A copy of ``fp32`` with the channels of each :func:`equalisable_activations` group rescaled
    (the function is unchanged, up to float rounding), so that one per-tensor uint8 scale fits them
    better. Channel i is divided by s_i (the producers' weights and biases are) and input channel i
    of the consumers' weights is multiplied by s_i, with ``s_i = a_i ** alpha / w_i ** (1 - alpha)``:
    a_i the channel's largest value on ``windows`` (over the group's tensors), w_i the consumers'
    largest absolute weight on it (SmoothQuant's balance of the two ranges; alpha = 1 gives every
    channel the same range)."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    found = equalisable_activations(model)
    if not found:
        return model
    names = [t for members, _, _ in found for t in members]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for t in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    maxima: dict[str, np.ndarray] = {}
    for w in windows:
        for t, v in zip(names, sess.run(names, {input_name: w[None].astype(np.float32)})):
            m = v.max(axis=tuple(k for k in range(v.ndim) if k != 1)).astype(np.float64)
            maxima[t] = np.maximum(maxima[t], m) if t in maxima else m
    inits = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}

    def get(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name]).astype(np.float64)

    def put(name: str, value: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    for members, prods, cons in found:
        a = np.max([maxima[t] for t in members], axis=0)
        ws = [get(nodes[c].input[1]) for c in cons]
        w = np.max([np.abs(x).max(axis=tuple(k for k in range(x.ndim) if k != 1)) for x in ws], axis=0)
        ok = (a > 0) & (w > 0)
        s = np.ones_like(a)
        s[ok] = a[ok] ** alpha / w[ok] ** (1.0 - alpha)
        s[ok] /= np.exp(np.mean(np.log(s[ok])))
        for p in prods:
            pw, pb = nodes[p].input[1], nodes[p].input[2]
            x = get(pw)
            put(pw, x / s.reshape((-1,) + (1,) * (x.ndim - 1)))
            put(pb, get(pb) / s)
        for c, x in zip(cons, ws):
            put(nodes[c].input[1], x * s.reshape((1, -1) + (1,) * (x.ndim - 2)))
    return model


def kept_fp32_nodes(model) -> list[str]:
    """Names of the Conv nodes that stay FP32 (KEEP_FP32_CONVS)."""
    return [n.name for n in model.graph.node
            if n.op_type == "Conv" and any(k in n.input[1] for k in KEEP_FP32_CONVS)]


def quantise(fp32, windows: list[np.ndarray], *, method: str = CALIBRATE_METHOD,
             input_name: str = "feats", workdir: Path | None = None, weight_bits: int | None = None,
             types: tuple[str, str] = ("uint8", "int8"), alpha: float | None = EQUALISE_ALPHA):
    """The static INT8 (QDQ) form of the FP32 ``onnx.ModelProto`` ``fp32``, calibrated on ``windows``;
    weights on ``weight_bits`` (8 or 7; default: what cannot saturate on this CPU,
    :func:`speakerid.models.cpu.int8_weight_bits`). ``types``: the activations' and the weights'
    integer types; the recipe's are uint8 and int8, the others are for benchmarks/bench_int8.py.
    The graph's channels are first equalised (:func:`equalise` with ``alpha``; None: not)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in ("MinMax", "Entropy", "Percentile"):
        raise ConfigError(f"unknown calibration method {method!r}; use MinMax, Entropy or Percentile")
    if not windows:
        raise ConfigError("no calibration windows")
    kinds = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    if len(types) != 2 or not set(types) <= set(kinds):
        raise ConfigError(f"types must be two of uint8, int8 (activations, weights), not {types!r}")
    bits = int8_weight_bits() if weight_bits is None else weight_bits
    if bits not in (7, 8):
        raise ConfigError(f"weight_bits must be 7 or 8, not {bits!r}")
    if alpha is not None:
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], not {alpha!r}")
        fp32 = equalise(fp32, windows, alpha=alpha, input_name=input_name)
    reader = _reader(windows, input_name)
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".quantise-") as td:
        src, pre, out = (Path(td) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(fp32, str(src))
        # shape inference and constant folding first, as onnxruntime.quantization recommends
        quant_pre_process(str(src), str(pre))
        pre_model = onnx.load(str(pre))
        quantize_static(
            str(pre), str(out), reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTISED_OPS),
            per_channel=True,
            # uint8 activations x int8 weights (U8S8): the x86 int8 path ONNX Runtime recommends
            activation_type=kinds[types[0]],
            weight_type=kinds[types[1]],
            # 7-bit weights where MLAS's int16 pair sums would saturate (x86 without VNNI)
            reduce_range=bits == 7,
            nodes_to_exclude=kept_fp32_nodes(pre_model),
            calibrate_method=getattr(CalibrationMethod, method),
        )
        model = onnx.load(str(out))
    return model


def build_onnx(state: dict[str, np.ndarray], *, calibration: Path | None = None):
    """INT8 CAM++ from the CAM++ state dict, calibrated on ``calibration`` (a directory of
    speech) or, by default, on the bundled calibration set."""
    import onnx
    import onnxruntime

    windows = calibration_from_audio(calibration) if calibration is not None else bundled_calibration()
    what = f"{len(windows)} windows of {calibration}" if calibration is not None else \
        f"the bundled set ({len(windows)} windows of conversation-sample)"
    log.info("quantising CAM++ to INT8 (%s calibration on %s)", CALIBRATE_METHOD, what)
    bits = int8_weight_bits()
    model = quantise(campplus.build_onnx(state), windows, weight_bits=bits)
    meta = {
        "speakerid.quantisation": f"static QDQ, per-channel int8 weights on {bits} bits, "
                                  f"uint8 activations, {CALIBRATE_METHOD}",
        "speakerid.calibration": what,
        "speakerid.calibration_sha256": features_digest(windows),
        "speakerid.onnxruntime": onnxruntime.__version__,
        "speakerid.built_on_cpu": cpu_kind(),
    }
    for k, v in meta.items():
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, k: v})
    model.producer_name, model.producer_version = "speakerid", CONVERTER_VERSION
    return model


def is_quantised(model) -> bool:
    """Whether an ``onnx.ModelProto`` holds QDQ nodes and int8 weight initialisers."""
    from onnx import TensorProto

    ops = {n.op_type for n in model.graph.node}
    int8 = any(i.data_type == TensorProto.INT8 for i in model.graph.initializer)
    return {"QuantizeLinear", "DequantizeLinear"} <= ops and int8
