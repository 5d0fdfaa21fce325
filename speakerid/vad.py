"""Silero VAD v6 on ONNX Runtime: speech probabilities, segments and speech-only audio.

The model is stateful: it runs window by window (512 samples at 16 kHz, each preceded by
the previous window's last 64 samples) carrying an LSTM state of shape (2, 1, 128), as
silero_vad's ``OnnxWrapper`` does with ``silero_vad.onnx``. :class:`SileroVad` also takes the
same wheel's ``silero_vad_16k_sequence.onnx``, the same network taking many windows (with their
contexts) per call and its state as (h, c): it gives bit-identical probabilities and states in
one call per block instead of one per window (~2x faster; see benchmarks/bench_embed.py).
Which of the two a file holds is read from its inputs. Segments reproduce silero_vad's
``get_speech_timestamps`` (``max_speech_duration_s=inf``) with

=========================  ===============================
VadOptions                 get_speech_timestamps argument
=========================  ===============================
threshold                  threshold (neg_threshold = max(threshold - 0.15, 0.01))
min_segment_ms             min_speech_duration_ms
min_silence_ms             min_silence_duration_ms
speech_pad_ms              speech_pad_ms
=========================  ===============================

``min_speech_ms`` and ``keep_pauses_ms`` are ours. Less speech than ``min_speech_ms`` in a clip
raises TooShortError here (the Embedder may embed such a clip anyway: ``short_speech``).
``keep_pauses_ms`` > 0 makes the VAD trim only long non-speech: a pause between two segments
shorter than it is kept whole (Silero keeps only pauses under 2 * ``speech_pad_ms``), and so is a
lead-in or tail shorter than it; with 0 the segments are exactly Silero's. ``level_dbfs`` makes
the model hear a quiet clip louder (Silero reads quiet speech, e.g. far field, as non-speech): the
gain is fixed by the first block a stream is given (:func:`vad_gain`), and the segments then
depend on how the input is cut only through that first block.

Gated schedule (``SileroVad(schedule="auto")``, what the Embedder runs): when only non-speech
longer than ``keep_pauses_ms`` is cut, most windows of speech cannot change the segments. A coarse
pass runs the model on every GATE_STRIDE-th window; a block where it finds no stretch that may be
a long pause is all speech (probability 1), any other block runs the full model from the start of
the clip, giving its probabilities bit for bit (see :class:`_Gate` and
benchmarks/results/vad_gate.md for how often the two schedules differ: 1 clip in 3,888).

Streaming: :meth:`SileroVad.stream` returns a :class:`VadStream` fed with consecutive
blocks of any length; it returns each segment as soon as it is final, and its segments
equal :meth:`SileroVad.segments` of the whole input. :meth:`SileroVad.speech_stream` turns
an iterable of blocks (e.g. :func:`speakerid.audio.iter_blocks`) into speech-only audio
pieces whose concatenation equals :meth:`SileroVad.keep_speech` of the whole input, keeping
only a short tail of audio in memory.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ._io import SHARED_FILE, write_bytes
from ._scratch import FFT_OUT as _FFT_OUT, Scratch as _Scratch, fresh
from ._threads import one_blas_thread
from .config import VadOptions
from .errors import ConfigError, InvalidAudioError, ModelError, NoSpeechError, TooShortError

log = logging.getLogger("speakerid")

__all__ = ["MAX_VAD_GAIN_DB", "SAMPLE_RATE_HZ", "SCHEDULES", "WINDOW", "SileroVad", "VadStream", "require_min_speech", "vad_gain"]

#: The only rate the VAD takes.
SAMPLE_RATE_HZ = 16000
#: Samples per model window (32 ms); one probability per window.
WINDOW = 512
_CONTEXT = 64
_HIDDEN = 128
#: Windows per call of the sequence model: its input stays ~1.2 MB (16 s of audio).
_SEQUENCE_BATCH = 512
_STATEFUL_INPUTS = frozenset({"input", "state", "sr"})
_SEQUENCE_INPUTS = frozenset({"input", "h", "c"})
#: The options used when none are given.
DEFAULT_OPTIONS = VadOptions()
#: What SileroVad's ``schedule`` may say.
SCHEDULES = ("full", "auto")
#: VadOptions.level_dbfs amplifies a quiet clip by at most this much (a near-silent clip stays quiet).
MAX_VAD_GAIN_DB = 30.0
#: The gated schedule (see :class:`_Gate`): Silero first runs on every GATE_STRIDE-th window only
#: (its LSTM fed that sparse sequence); the full model runs only on blocks where that coarse pass
#: may hold a long pause. Chosen on the 3,888 clips of 8 conditions (silences, tones, far-field,
#: clean, crop-2s, telephone, white-5dB, babble-0dB; benchmarks/results/vad_gate.md): 1 clip of
#: the 511 that the full VAD trims was missed (far field, where trimming is neutral), and a clean
#: clip costs 0.45 of the full VAD (every 2nd window: 0 missed, 0.71; every 4th: 1 missed, 0.46).
GATE_STRIDE = 3
#: A coarse probability under this may be non-speech (stricter than Silero's own 0.5, so that the
#: coarse pass errs towards running the full model: at 0.5 it missed 1 to 3 trimmed clips).
GATE_THRESHOLD = 0.9
#: Coarse non-speech stretches at least this long (bridging GATE_BRIDGE high samples) run the full
#: model; must stay under VadOptions.keep_pauses_ms (shorter non-speech is never cut). 1000 ms
#: cost 0.53 on clean clips for the same 1 miss; 700 ms, 0.65.
GATE_MIN_PAUSE_MS = 1300.0
GATE_BRIDGE = 1
#: The gate is used only when VadOptions.keep_pauses_ms is at least this (with shorter kept
#: pauses every short pause matters, and the full model runs everywhere).
GATE_MIN_KEEP_MS = 1800.0
#: When the full model resumes after gated windows (files longer than one block only), its state
#: is warmed on this much of the audio before (an LSTM state from zeros differs for ~1 s).
GATE_WARMUP_MS = 2000.0
_GATE_L = math.ceil(GATE_MIN_PAUSE_MS / 32.0)
#: Windows held back at the end of each block, decided with the next one: a pause that crosses a
#: block boundary is seen whole.
_GATE_HOLD = _GATE_L + 2 * GATE_STRIDE * (GATE_BRIDGE + 1)
_GATE_WARM = math.ceil(GATE_WARMUP_MS / 32.0)


def vad_gain(samples: np.ndarray, level_dbfs: float | None) -> float:
    """The gain the VAD applies to a clip whose first block is ``samples``: up to ``level_dbfs``
    RMS, never down, at most MAX_VAD_GAIN_DB (1.0 when ``level_dbfs`` is None)."""
    if level_dbfs is None or samples.size == 0:
        return 1.0
    flat = np.ravel(samples)
    # one BLAS dot product: the float64 square-and-mean took 0.3-0.45 ms of a 10 s clip's embed
    rms = math.sqrt(max(float(np.dot(flat, flat)), 0.0) / flat.size)
    want = 10.0 ** (level_dbfs / 20.0)
    return float(min(10.0 ** (MAX_VAD_GAIN_DB / 20.0), max(1.0, want / max(rms, 1e-12))))


def require_min_speech(n_samples: int, sample_rate_hz: int, opts: VadOptions) -> None:
    """Check a clip's length when VAD is disabled: NoSpeechError if empty, TooShortError
    if shorter than ``opts.min_speech_ms``."""
    if n_samples <= 0:
        raise NoSpeechError("the clip holds no audio")
    ms = 1000.0 * n_samples / sample_rate_hz
    if ms < opts.min_speech_ms:
        raise TooShortError(f"{ms:.0f} ms of audio, less than the {opts.min_speech_ms:g} ms needed")


def _check_speech(n_samples: int, opts: VadOptions) -> None:
    if n_samples <= 0:
        raise NoSpeechError("no speech found in the clip")
    ms = 1000.0 * n_samples / SAMPLE_RATE_HZ
    if ms < opts.min_speech_ms:
        raise TooShortError(
            f"only {ms:.0f} ms of speech found, less than the {opts.min_speech_ms:g} ms needed"
        )


def _as_samples(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise InvalidAudioError(f"VAD takes 1-D 16 kHz samples, got shape {x.shape}")
    return x


class _StatefulRunner:
    """One model state: runs consecutive full windows, carrying state and context."""

    __slots__ = ("_run", "_x", "_feeds")

    def __init__(self, session: Any) -> None:
        self._run = session.run
        self._x = np.zeros((1, _CONTEXT + WINDOW), dtype=np.float32)
        self._feeds = {
            "input": self._x,
            "state": np.zeros((2, 1, 128), dtype=np.float32),
            "sr": np.array(SAMPLE_RATE_HZ, dtype=np.int64),
        }

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Probabilities of ``frames`` shaped (n, WINDOW)."""
        out = np.empty(len(frames), dtype=np.float32)
        run, feeds, x = self._run, self._feeds, self._x
        head, tail, body = x[0, :_CONTEXT], x[0, WINDOW:], x[0, _CONTEXT:]
        for i in range(len(frames)):
            head[:] = tail  # context: last 64 samples of the previous window
            body[:] = frames[i]
            prob, feeds["state"] = run(None, feeds)
            out[i] = prob[0, 0]
        return out


class _SequenceRunner:
    """As :class:`_StatefulRunner` on the sequence model: all windows of a call at once."""

    __slots__ = ("_run", "_context", "_h", "_c")

    def __init__(self, session: Any) -> None:
        self._run = session.run
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._h = np.zeros((1, 1, _HIDDEN), dtype=np.float32)
        self._c = np.zeros((1, 1, _HIDDEN), dtype=np.float32)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Probabilities of ``frames`` shaped (n, WINDOW)."""
        out = np.empty(len(frames), dtype=np.float32)
        for start in range(0, len(frames), _SEQUENCE_BATCH):
            block = frames[start : start + _SEQUENCE_BATCH]
            x = np.empty((len(block), _CONTEXT + WINDOW), dtype=np.float32)
            x[:, _CONTEXT:] = block
            x[0, :_CONTEXT] = self._context  # each window is preceded by its predecessor's tail
            x[1:, :_CONTEXT] = block[:-1, -_CONTEXT:]
            self._context = block[-1, -_CONTEXT:].copy()
            probs, self._h, self._c = self._run(
                ["speech_probs", "hn", "cn"], {"input": x, "h": self._h, "c": self._c}
            )
            out[start : start + len(block)] = probs
        return out


def _may_pause(cp: np.ndarray) -> bool:
    """Whether coarse probabilities (NaN: window not sampled) hold a stretch of at least
    GATE_MIN_PAUSE_MS under GATE_THRESHOLD, bridging up to GATE_BRIDGE samples over it."""
    pos = np.flatnonzero(~np.isnan(cp))
    low = np.flatnonzero(cp[pos] < GATE_THRESHOLD)
    if low.size == 0:
        return False
    breaks = np.flatnonzero(np.diff(low) - 1 > GATE_BRIDGE)
    starts = np.concatenate([low[:1], low[breaks + 1]])
    ends = np.concatenate([low[breaks], low[-1:]])
    return bool(np.any(pos[ends] - pos[starts] + GATE_STRIDE >= _GATE_L))


class _Gate:
    """Speech probabilities on the gated schedule (sequence model only).

    A coarse pass runs Silero on every GATE_STRIDE-th window (with its own 64-sample context),
    the LSTM carried from one sampled window to the next. Where it finds no possible long pause,
    the windows are given probability 1 (speech): with ``keep_pauses_ms`` >= GATE_MIN_KEEP_MS
    only non-speech longer than that is ever cut, so the segments are those of the full model
    unless the coarse pass misses such a pause. Where it may hold one, the full model runs on the
    whole block with its state carried from the start of the clip, so the probabilities are the
    full model's bit for bit (a clip of up to ``AudioOptions.block_s`` is one block; in a longer
    file, a block after gated ones warms the state on the GATE_WARMUP_MS before it).

    The last _GATE_HOLD windows of each block wait for the next one, so that a pause crossing the
    boundary is judged whole.
    """

    def __init__(self, session: Any) -> None:
        self._run = session.run
        z = np.zeros((1, 1, _HIDDEN), dtype=np.float32)
        self._coarse = (z, z)
        self._full = (z, z)
        self._full_at = 0  # windows consumed by the full state (contiguous from the start or a warm-up)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._n = 0  # windows received
        self._fed = 0  # windows whose probabilities were given out
        width = _CONTEXT + WINDOW
        self._rows = np.zeros((0, width), dtype=np.float32)  # windows [fed, n), with contexts
        self._cp = np.zeros(0, dtype=np.float32)  # their coarse probabilities (NaN: not sampled)
        self._fp = np.zeros(0, dtype=np.float32)  # their full probabilities (NaN: not computed)
        self._hist = np.zeros((0, width), dtype=np.float32)  # up to _GATE_WARM windows before ``fed``
        #: Model windows run so far (coarse, full and warm-up): the VAD's work.
        self.windows_run = 0

    def _seq(self, rows: np.ndarray, state: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, tuple]:
        out = np.empty(len(rows), dtype=np.float32)
        for s in range(0, len(rows), _SEQUENCE_BATCH):
            probs, h, c = self._run(["speech_probs", "hn", "cn"],
                                    {"input": rows[s : s + _SEQUENCE_BATCH], "h": state[0], "c": state[1]})
            state = (h, c)
            out[s : s + len(probs)] = probs
        self.windows_run += len(rows)
        return out, state

    def push(self, frames: np.ndarray, last: bool = False) -> np.ndarray:
        """Probabilities of the windows now decided (the first windows not given out yet);
        ``last``: ``frames`` end the input (nothing is held back)."""
        n = len(frames)
        rows = np.empty((n, _CONTEXT + WINDOW), dtype=np.float32)
        if n:
            rows[:, _CONTEXT:] = frames
            rows[0, :_CONTEXT] = self._context
            rows[1:, :_CONTEXT] = frames[:-1, -_CONTEXT:]
            self._context = frames[-1, -_CONTEXT:].copy()
        cp = np.full(n, np.nan, dtype=np.float32)
        sel = np.arange((-self._n) % GATE_STRIDE, n, GATE_STRIDE)
        if sel.size:
            cp[sel], self._coarse = self._seq(rows[sel], self._coarse)
        self._n += n
        self._rows = np.concatenate([self._rows, rows]) if len(self._rows) else rows
        self._cp = np.concatenate([self._cp, cp])
        self._fp = np.concatenate([self._fp, np.full(n, np.nan, dtype=np.float32)])
        a, total = self._fed, len(self._rows)
        # a short clip (all of it in one call) is run in full: the gate would save little
        full = (last and a == 0 and total <= _GATE_HOLD) or _may_pause(self._cp)
        if full:
            u = int(np.count_nonzero(~np.isnan(self._fp)))  # full probabilities are a prefix
            if u < total:
                if self._full_at != a + u:  # resume after gated windows: warm a fresh state
                    z = np.zeros((1, 1, _HIDDEN), dtype=np.float32)
                    self._full = (z, z)
                    if len(self._hist):
                        _, self._full = self._seq(self._hist, self._full)
                self._fp[u:], self._full = self._seq(self._rows[u:], self._full)
                self._full_at = a + total
        keep = 0 if last else min(_GATE_HOLD, total)
        out = np.where(np.isnan(self._fp[: total - keep]), np.float32(1.0), self._fp[: total - keep])
        done = total - keep
        if done:
            self._hist = np.concatenate([self._hist, self._rows[:done]])[-_GATE_WARM:]
            self._rows, self._cp, self._fp = self._rows[done:], self._cp[done:], self._fp[done:]
            self._fed += done
        return out.astype(np.float32, copy=False)


#: The sequence model's first layer is an STFT written as a Conv1d: 258 filters, the real and
#: imaginary periodic-Hann DFT of 256 samples, hop 128, over each window's 576 samples (context
#: included) reflect-padded by 64 on the right; the model then takes the magnitudes. numpy's FFT
#: gives the same magnitudes to float32 rounding at a fraction of the cost: a 104-window call (the
#: gated pass over a 10 s clip) took 4.6 ms with the Conv, 3.6 ms this way.
_STFT_OUT = "/stft/Sqrt_output_0"
_STFT_N, _STFT_HOP, _STFT_PAD = 256, 128, 64
_STFT_WINDOW = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(_STFT_N) / _STFT_N)).astype(np.float32)
#: The encoder after it (four Conv1d + ReLU over each window's 4 STFT frames, 129 -> 128 -> 64 ->
#: 64 -> 128 channels) then runs as numpy matrix products, one per kernel tap over all the windows
#: of a call: ONNX Runtime runs a Conv per window, on inputs 4 frames long. For 105 windows the
#: STFT, encoder, LSTM and decoder took 3.3 ms with the encoder in ONNX Runtime, 1.5 ms this way
#: (the whole graph: 4.4 ms). The LSTM and the decoder stay in ONNX Runtime (the "tail" graph).
_SPLIT_FORMAT = 2


def _stft_magnitude(x: np.ndarray, scratch: _Scratch | None = None) -> np.ndarray:
    """(n, 4, 129) float32 magnitudes (frames, bins) of (n, 576) windows, as the sequence
    model's STFT (in float32 as the model's Conv: 0.9 against 1.2 ms in float64 for 105
    windows); the model's tensor is their transpose (n, 129, 4). With ``scratch`` the result
    lives in its buffers (valid until the next call on the same thread)."""
    get = scratch.get if scratch is not None else fresh
    n, width = x.shape
    padded = get("pad", (n, width + _STFT_PAD))
    padded[:, :width] = x
    padded[:, width:] = x[:, width - 2 : width - 2 - _STFT_PAD : -1]  # reflect: no edge repeat
    frames = np.lib.stride_tricks.sliding_window_view(padded, _STFT_N, axis=1)[:, ::_STFT_HOP]
    windowed = np.multiply(frames, _STFT_WINDOW, out=get("frames", frames.shape))
    bins = _STFT_N // 2 + 1
    if _FFT_OUT:
        spec = np.fft.rfft(windowed, axis=2, out=get("spec", (n, frames.shape[1], bins), np.complex64))
    else:  # pragma: no cover - numpy 1.x
        spec = np.fft.rfft(windowed, axis=2)
    power = np.square(spec.real, out=get("power", spec.shape))
    power += np.square(spec.imag, out=get("imag", spec.shape))
    return np.sqrt(power, out=power)


class _Encoder:
    """Conv1d + ReLU layers over short sequences, as numpy products: ``layers`` holds, per layer,
    the taps ``(k, in, out)``, the bias ``(out,)``, the stride and the (symmetric) padding. Each
    tap is one 2-D product over all the windows' frames: a product of a strided 3-D view runs as
    one small product per window (on the AVX2 EPYC, 105 windows took 3.6 ms that way, 1.3 ms as
    2-D products)."""

    __slots__ = ("_layers",)

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray, int, int]]) -> None:
        self._layers = layers

    def __call__(self, x: np.ndarray, scratch: _Scratch | None = None) -> np.ndarray:
        """(n, frames, in) -> (n, frames out, out), float32; with ``scratch``, in its buffers."""
        get = scratch.get if scratch is not None else fresh
        n = len(x)
        for i, (taps, bias, stride, pad) in enumerate(self._layers):
            t_in, k = x.shape[1], len(taps)
            t_out = (t_in + 2 * pad - k) // stride + 1
            y = get(f"y{i % 2}", (n, t_out, taps.shape[2]))
            y[:] = bias
            for j in range(k):  # output t reads input t * stride + j - pad (zero outside)
                lo = max(0, -((j - pad) // stride))
                hi = min(t_out, (t_in - 1 - j + pad) // stride + 1)
                if lo < hi:
                    first = lo * stride + j - pad
                    src = get("src", (n, hi - lo, x.shape[2]))
                    src[:] = x[:, first : first + (hi - lo - 1) * stride + 1 : stride]
                    prod = np.matmul(src.reshape(-1, x.shape[2]), taps[j],
                                     out=get("prod", (n * (hi - lo), taps.shape[2])))
                    y[:, lo:hi] += prod.reshape(n, hi - lo, -1)
            x = np.maximum(y, 0.0, out=y)
        return x


class _SplitSequence:
    """The sequence model's session with its STFT (:func:`_stft_magnitude`) and its encoder
    (:class:`_Encoder`) in numpy and the rest of the graph (LSTM, decoder) in a second session;
    ``run`` takes and gives what the whole model's does."""

    __slots__ = ("_whole", "_encoder", "_tail", "_tail_input", "_scratch")

    def __init__(self, whole: Any, encoder: _Encoder, tail: Any) -> None:
        self._whole, self._encoder, self._tail = whole, encoder, tail
        self._tail_input = next(i.name for i in tail.get_inputs() if i.name not in ("h", "c"))
        self._scratch = _Scratch()

    def get_inputs(self) -> Any:
        return self._whole.get_inputs()

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        with one_blas_thread():  # the encoder's products are small: a second BLAS thread only spins
            encoded = self._encoder(_stft_magnitude(feeds["input"], self._scratch), self._scratch)
        return self._tail.run(names, {self._tail_input: encoded, "h": feeds["h"], "c": feeds["c"]})


def _split_model(path: str) -> bytes:
    """The sequence model at ``path`` split (an .npz, serialised): the encoder's weights, strides
    and paddings, and as ``tail`` the ONNX graph after the encoder (the nodes from the LSTM on,
    the Constants and initialisers they use, the encoder's output as the input). Raises
    ValueError when the graph is not STFT -> (Conv, Relu) x 4 -> Transpose -> LSTM."""
    import io

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(path)
    g = model.graph
    start = next(i for i, n in enumerate(g.node) if n.op_type == "Conv" and n.input and n.input[0] == _STFT_OUT)
    body = list(g.node[start:])
    lstm = next(i for i, n in enumerate(body) if n.op_type == "LSTM")
    convs, transpose = body[:lstm - 1], body[lstm - 1]
    perm = [list(a.ints) for a in transpose.attribute if a.name == "perm"]
    kinds = [n.op_type for n in convs]
    if (kinds != ["Conv", "Relu"] * (len(convs) // 2) or not convs or transpose.op_type != "Transpose"
            or perm != [[0, 2, 1]] or body[lstm].input[0] != transpose.output[0]):
        raise ValueError(f"unexpected encoder: {kinds + [transpose.op_type]}")
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    arrays: dict[str, np.ndarray] = {}
    for li, conv in enumerate(convs[::2]):
        at = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        w, b = inits[conv.input[1]], inits[conv.input[2]]  # (out, in, k), (out,)
        pads, k = list(at.get("pads", [0, 0])), w.shape[2]
        if (list(at.get("dilations", [1])) != [1] or at.get("group", 1) != 1 or len(pads) != 2
                or pads[0] != pads[1] or list(at.get("kernel_shape", [k])) != [k]):
            raise ValueError(f"unexpected Conv {conv.name}: {at}")
        arrays[f"taps{li}"] = np.ascontiguousarray(w.transpose(2, 1, 0), dtype=np.float32)
        arrays[f"bias{li}"] = b.astype(np.float32)
        arrays[f"shape{li}"] = np.array([int(at.get("strides", [1])[0]), pads[0]])
    nodes = body[lstm:]
    need = {i for n in nodes for i in n.input}
    consts = [n for n in g.node[:start] if n.op_type == "Constant" and n.output[0] in need]
    channels = arrays[f"taps{len(convs) // 2 - 1}"].shape[2]
    inputs = [helper.make_tensor_value_info(transpose.output[0], TensorProto.FLOAT, ["n", 1, channels])]
    inputs += [i for i in g.input if i.name in ("h", "c")]
    tail = helper.make_graph(consts + nodes, "silero_vad_tail", inputs, list(g.output),
                             [t for t in g.initializer if t.name in need])
    graph = helper.make_model(tail, opset_imports=model.opset_import, ir_version=model.ir_version)
    arrays["tail"] = np.frombuffer(graph.SerializeToString(), dtype=np.uint8)
    arrays["format"] = np.array([_SPLIT_FORMAT])
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _load_split(data: bytes, whole: Any, so: Any) -> _SplitSequence:
    import io

    import onnxruntime as ort

    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        if int(z["format"][0]) != _SPLIT_FORMAT:
            raise ValueError(f"split format {int(z['format'][0])}, not {_SPLIT_FORMAT}")
        layers = []
        while f"taps{len(layers)}" in z:
            i = len(layers)
            stride, pad = (int(v) for v in z[f"shape{i}"])
            layers.append((z[f"taps{i}"], z[f"bias{i}"], stride, pad))
        tail = z["tail"].tobytes()
    return _SplitSequence(whole, _Encoder(layers), ort.InferenceSession(tail, sess_options=so, providers=["CPUExecutionProvider"]))


def _split_sequence(session: Any, path: str, so: Any) -> Any:
    """:class:`_SplitSequence` over the sequence model at ``path``, or ``session`` itself (the
    whole graph, exact but slower) when the graph is not the one expected. Every load checks the
    split against the whole graph on a fixed input before using it. The split is made once
    (with the onnx package, ~0.55 s to import) and kept beside the model as ``*.split.npz``; a
    kept split that fails the check is made again."""
    split_path = Path(path).with_name(Path(path).stem + ".split.npz")
    rng = np.random.default_rng(0)
    t = np.arange(8 * (_CONTEXT + WINDOW)) / SAMPLE_RATE_HZ
    x = (0.3 * np.sin(2 * np.pi * 220.0 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    feeds = {"input": x.reshape(8, _CONTEXT + WINDOW), "h": np.zeros((1, 1, _HIDDEN), np.float32),
             "c": np.zeros((1, 1, _HIDDEN), np.float32)}
    want = session.run(["speech_probs"], feeds)[0]
    for made in (False, True):
        try:
            if not made and not split_path.is_file():
                continue
            data = _split_model(path) if made else split_path.read_bytes()
            split = _load_split(data, session, so)
            got = split.run(["speech_probs"], feeds)[0]
            if want.shape != got.shape or not np.allclose(want, got, rtol=0.0, atol=1e-5):
                raise ValueError(f"probabilities differ by {np.abs(want - got).max():.2e}")
        except Exception as exc:  # any surprise in the graph or the file: try again, else the whole model
            log.debug("VAD %s: %s split not used: %s", path, "a new" if made else "the kept", exc)
            continue
        if made:
            try:
                write_bytes(split_path, data, SHARED_FILE)
                split_path.with_name(Path(path).stem + ".tail.onnx").unlink(missing_ok=True)  # what an earlier version kept
            except OSError as exc:  # a read-only cache: made again on the next load
                log.debug("VAD split not kept at %s: %s", split_path, exc)
        return split
    return session


def _check_model(session: Any, path: str) -> None:
    inputs = frozenset(i.name for i in session.get_inputs())
    if inputs != _STATEFUL_INPUTS and inputs != _SEQUENCE_INPUTS:
        raise ModelError(f"{path} is not a Silero VAD v5/v6 model (its inputs are {sorted(inputs)})")


def _runner(session: Any) -> _StatefulRunner | _SequenceRunner:
    """A fresh model state on ``session``, for whichever of the two models it holds."""
    if frozenset(i.name for i in session.get_inputs()) == _SEQUENCE_INPUTS:
        return _SequenceRunner(session)
    return _StatefulRunner(session)


class _Segmenter:
    """get_speech_timestamps_from_probs as an incremental state machine.

    A kept segment's padded end depends on the next kept segment's start, so the last
    kept segment stays ``pending`` (padded start, raw end) until that is known, or until
    any later segment is sure to start at least 2 * pad after it.
    """

    def __init__(self, opts: VadOptions) -> None:
        self.thr = float(opts.threshold)
        self.neg = max(self.thr - 0.15, 0.01)
        self.min_speech = SAMPLE_RATE_HZ * opts.min_segment_ms / 1000
        self.min_sil = SAMPLE_RATE_HZ * opts.min_silence_ms / 1000
        self.pad = SAMPLE_RATE_HZ * opts.speech_pad_ms / 1000
        #: Non-speech shorter than ``keep`` stays whole; between two segments, shorter than
        #: ``bridge`` (2 * pad: Silero's rule) it is split in the middle, nothing cut.
        self.keep = SAMPLE_RATE_HZ * opts.keep_pauses_ms / 1000
        self.bridge = max(2 * self.pad, self.keep)
        self.n = 0  # windows seen
        self.triggered = False
        self.start = 0  # raw start of the open segment
        self.temp_end = 0
        self.start_p: int | None = None  # padded start once the open segment is sure to be kept
        self.pending: tuple[int, int] | None = None
        self.last_end: int | None = None  # raw end of the last kept segment
        self.done: list[tuple[int, int]] = []

    def feed(self, probs: np.ndarray) -> None:
        thr, neg, min_sil = self.thr, self.neg, self.min_sil
        for p in probs.tolist():
            cur = WINDOW * self.n
            self.n += 1
            if p >= thr and self.temp_end:
                self.temp_end = 0
            if p >= thr and not self.triggered:
                self.triggered, self.start, self.start_p = True, cur, None
                continue
            if p < neg and self.triggered:
                if not self.temp_end:
                    self.temp_end = cur
                if cur - self.temp_end < min_sil:
                    continue
                self._close(self.temp_end)

    def _close(self, end: int) -> None:
        if self.start_p is not None or end - self.start > self.min_speech:
            if self.start_p is None:
                self._confirm()
            self.pending = (self.start_p, end)  # type: ignore[assignment]
            self.last_end = end
        self.triggered, self.temp_end, self.start_p = False, 0, None

    def _confirm(self) -> None:
        """The open segment will be kept: fix its padded start and the pending end."""
        s, pad = self.start, self.pad
        if self.pending is not None:
            ps, e = self.pending
            gap = s - e
            self.done.append((ps, e + int(gap // 2) if gap < self.bridge else int(e + pad)))
            self.pending = None
        if self.last_end is not None and s - self.last_end < self.bridge:
            self.start_p = int(max(0, s - (s - self.last_end) // 2))
        elif self.last_end is None and s < self.keep:
            self.start_p = 0  # a short lead-in is kept whole
        else:
            self.start_p = int(max(0, s - pad))

    def settle(self) -> None:
        """Fix what is already certain (only when all windows seen are complete)."""
        seen = WINDOW * self.n  # the audio is at least this long
        if self.triggered and self.start_p is None:
            if (self.temp_end or seen) - self.start > self.min_speech:
                self._confirm()
        if self.pending is not None:
            ps, e = self.pending
            if (self.start if self.triggered else seen) - e >= self.bridge:
                self.done.append((ps, int(e + self.pad)))
                self.pending = None

    def finish(self, n_samples: int) -> None:
        if self.triggered and (self.start_p is not None or n_samples - self.start > self.min_speech):
            if self.start_p is None:
                self._confirm()
            self.pending, self.last_end = (self.start_p, n_samples), n_samples  # type: ignore[assignment]
        self.triggered = False
        if self.pending is not None:
            ps, e = self.pending
            tail = n_samples if n_samples - e < self.keep else min(n_samples, e + self.pad)
            self.done.append((ps, int(tail)))
            self.pending = None

    def partial(self) -> list[tuple[int, int]]:
        """Spans sure to be output that are not in ``done`` yet (within pending/open)."""
        spans = [self.pending] if self.pending is not None else []
        if self.triggered and self.start_p is not None:
            spans.append((self.start_p, self.temp_end or WINDOW * self.n))
        return spans

    def needed_from(self) -> int:
        """No future output sample lies before this one."""
        if self.pending is not None:
            return self.pending[1]
        if self.last_end is None and (self.start if self.triggered else WINDOW * self.n) < self.keep:
            return 0  # a segment may yet start early enough to keep the lead-in whole
        if self.triggered:
            return self.start_p if self.start_p is not None else math.floor(self.start - self.pad)
        return math.floor(WINDOW * self.n - self.pad)

    def pop(self) -> list[tuple[int, int]]:
        done, self.done = self.done, []
        return done


class VadStream:
    """Incremental VAD over consecutive 16 kHz blocks of any length (see module doc)."""

    def __init__(self, session: Any, opts: VadOptions, gated: bool = False) -> None:
        self._runner = _runner(session)
        #: The gated schedule (see :class:`_Gate`), or None: the full model on every window.
        self._gate = _Gate(session) if gated else None
        self._windows = 0
        self._seg = _Segmenter(opts)
        self._level = opts.level_dbfs
        #: Set from the first block pushed (see :func:`vad_gain`); the model hears ``gain * x``.
        self.gain: float | None = None
        self._rest = np.zeros(0, dtype=np.float32)
        #: Samples pushed so far.
        self.n_samples = 0
        self._finished = False

    def _probs(self, frames: np.ndarray, last: bool = False) -> np.ndarray:
        if self.gain is not None and self.gain != 1.0:
            frames = np.clip(frames * np.float32(self.gain), -1.0, 1.0)
        if self._gate is not None:
            return self._gate.push(frames, last)
        self._windows += len(frames)
        return self._runner(frames)

    @property
    def windows_run(self) -> int:
        """Windows of audio the model has run on so far (the VAD's work; the gated schedule runs
        fewer than the input holds)."""
        return self._gate.windows_run if self._gate is not None else self._windows

    def push(self, samples: np.ndarray) -> list[tuple[int, int]]:
        """Feed the next block; return the segments (absolute samples) now final."""
        if self._finished:
            raise RuntimeError("push() after finish()")
        x = _as_samples(samples)
        if self.gain is None and x.size:
            self.gain = vad_gain(x, self._level)
        self.n_samples += x.size
        if self._rest.size:
            x = np.concatenate([self._rest, x])
        k = x.size // WINDOW
        if k:
            self._seg.feed(self._probs(x[: k * WINDOW].reshape(k, WINDOW)))
            self._seg.settle()
        self._rest = x[k * WINDOW :].copy()
        return self._seg.pop()

    def finish(self) -> list[tuple[int, int]]:
        """End of input: run the last (zero-padded) window; return the remaining segments."""
        if not self._finished:
            self._finished = True
            last = np.zeros((1 if self._rest.size else 0, WINDOW), dtype=np.float32)
            last[:, : self._rest.size] = self._rest
            if len(last) or self._gate is not None:  # the gate gives out the windows it held
                self._seg.feed(self._probs(last, last=True))
            self._seg.finish(self.n_samples)
        return self._seg.pop()


class SileroVad:
    """Silero VAD on one ONNX Runtime session; thread-safe, one model state per call.

    ``onnx_path`` is ``silero_vad.onnx`` (one window per call, as silero_vad's reference) or
    ``silero_vad_16k_sequence.onnx`` (many windows per call, same results, faster); see
    :func:`speakerid.models.store.vad_sequence_onnx_path`. ``threads`` sets ONNX Runtime's
    intra-op threads (None: 1).

    ``schedule="full"`` runs the model on every window. ``"auto"`` runs the gated schedule
    (:class:`_Gate`: a coarse pass on every GATE_STRIDE-th window, the full model only where it
    may find a long pause) when the file is the sequence model and ``opts.keep_pauses_ms`` >=
    GATE_MIN_KEEP_MS, and the full one otherwise; it applies to :meth:`stream` and what uses it
    (:meth:`segments`, :meth:`keep_speech`, :meth:`speech_stream`), not to :meth:`probabilities`.
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        opts: VadOptions = DEFAULT_OPTIONS,
        threads: int | None = None,
        schedule: str = "full",
    ) -> None:
        if schedule not in SCHEDULES:
            raise ConfigError(f"VAD schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        import onnxruntime as ort

        so = ort.SessionOptions()
        # The stateful model runs one 32 ms window per call: more threads only add overhead
        # (2 threads measured 2.5x slower), so None means 1 here, not "all cores".
        so.intra_op_num_threads = 1 if threads is None else int(threads)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load the VAD model {onnx_path}: {exc}") from None
        _check_model(self._session, str(onnx_path))
        self.opts = opts
        self.schedule = schedule
        sequence = frozenset(i.name for i in self._session.get_inputs()) == _SEQUENCE_INPUTS
        #: "sequence" (silero_vad_16k_sequence.onnx) or "stateful" (silero_vad.onnx).
        self.kind = "sequence" if sequence else "stateful"
        #: Whether :meth:`stream` runs the gated schedule.
        self.gated = schedule == "auto" and sequence and opts.keep_pauses_ms >= GATE_MIN_KEEP_MS
        if sequence:
            self._session = _split_sequence(self._session, str(onnx_path), so)

    def stream(self) -> VadStream:
        """A fresh :class:`VadStream` (new model state)."""
        return VadStream(self._session, self.opts, gated=self.gated)

    def timed_run(self, samples16k: np.ndarray) -> int:
        """Run the VAD on ``samples16k`` as :meth:`speech_stream` does (one block), for timing it
        (benchmarks/bench_embed.py); returns the model windows run."""
        st = self.stream()
        st.push(samples16k)
        st.finish()
        return st.windows_run

    def probabilities(self, samples16k: np.ndarray) -> np.ndarray:
        """Speech probability of each 512-sample window (the last one zero-padded), of the
        samples as given (``level_dbfs`` is applied by :meth:`stream` and what uses it)."""
        x = _as_samples(samples16k)
        run, k = _runner(self._session), x.size // WINDOW
        probs = run(x[: k * WINDOW].reshape(k, WINDOW))
        if x.size > k * WINDOW:
            last = np.zeros((1, WINDOW), dtype=np.float32)
            last[0, : x.size - k * WINDOW] = x[k * WINDOW :]
            probs = np.concatenate([probs, run(last)])
        return probs

    def schedule_probabilities(self, samples16k: np.ndarray) -> np.ndarray:
        """The probabilities :meth:`stream` gives its segmenter for ``samples16k`` pushed as one
        block: :meth:`probabilities` on the full schedule; on the gated one, 1.0 for the windows
        the full model did not run on. As :meth:`probabilities`, of the samples as given."""
        if not self.gated:
            return self.probabilities(samples16k)
        x = _as_samples(samples16k)
        k = x.size // WINDOW
        gate = _Gate(self._session)
        head = gate.push(x[: k * WINDOW].reshape(k, WINDOW))
        last = np.zeros((1 if x.size > k * WINDOW else 0, WINDOW), dtype=np.float32)
        last[:, : x.size - k * WINDOW] = x[k * WINDOW :]
        return np.concatenate([head, gate.push(last, last=True)])

    def segments(self, samples16k: np.ndarray) -> list[tuple[int, int]]:
        """Speech segments as (start, end) sample indices, end exclusive."""
        st = self.stream()
        return st.push(samples16k) + st.finish()

    def keep_speech(self, samples16k: np.ndarray) -> np.ndarray:
        """The speech segments concatenated; NoSpeechError/TooShortError if too little."""
        x = _as_samples(samples16k)
        segs = self.segments(x)
        out = np.concatenate([x[a:b] for a, b in segs]) if segs else x[:0]
        _check_speech(out.size, self.opts)
        return out

    def speech_stream(self, blocks: Iterable[np.ndarray], check: bool = True) -> Iterator[np.ndarray]:
        """Speech-only pieces of consecutive 16 kHz blocks, as soon as they are certain.

        The concatenated pieces equal :meth:`keep_speech` of the concatenated blocks.
        After the last piece, raises NoSpeechError/TooShortError if too little speech
        came out (unless ``check`` is false: the caller judges, as the Embedder does). Memory holds the audio from the earliest sample that may still be
        output: normally a fraction of a second, unless probabilities linger between
        the two thresholds right after a short burst of speech.
        """
        st = self.stream()
        seg = st._seg
        buf = np.zeros(0, dtype=np.float32)
        buf0 = out = total = 0  # buf holds samples [buf0, buf0 + buf.size)
        for block in _with_end(blocks):
            if block is None:
                spans = st.finish()
            else:
                x = _as_samples(block)
                buf = np.concatenate([buf, x]) if buf.size else x.copy()
                spans = st.push(x) + seg.partial()
            for a, b in spans:
                a = max(a, out)
                if b > a:
                    total += b - a
                    yield buf[a - buf0 : b - buf0].copy()
                    out = b
            drop = min(max(out, seg.needed_from()) - buf0, buf.size)
            if drop > 0:  # copy, so the dropped audio is freed
                buf, buf0 = buf[drop:].copy(), buf0 + drop
        if check:
            _check_speech(total, self.opts)


def _with_end(blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray | None]:
    yield from blocks
    yield None
