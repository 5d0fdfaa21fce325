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


def kept_fp32_nodes(model) -> list[str]:
    """Names of the Conv nodes that stay FP32 (KEEP_FP32_CONVS)."""
    return [n.name for n in model.graph.node
            if n.op_type == "Conv" and any(k in n.input[1] for k in KEEP_FP32_CONVS)]


def quantise(fp32, windows: list[np.ndarray], *, method: str = CALIBRATE_METHOD,
             input_name: str = "feats", workdir: Path | None = None, weight_bits: int | None = None,
             types: tuple[str, str] = ("uint8", "int8")):
    """The static INT8 (QDQ) form of the FP32 ``onnx.ModelProto`` ``fp32``, calibrated on ``windows``;
    weights on ``weight_bits`` (8 or 7; default: what cannot saturate on this CPU,
    :func:`speakerid.models.cpu.int8_weight_bits`). ``types``: the activations' and the weights'
    integer types; the recipe's are uint8 and int8, the others are for benchmarks/bench_int8.py."""
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
