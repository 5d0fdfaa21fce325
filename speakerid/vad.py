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

Streaming: :meth:`SileroVad.stream` returns a :class:`VadStream` fed with consecutive
blocks of any length; it returns each segment as soon as it is final, and its segments
equal :meth:`SileroVad.segments` of the whole input. :meth:`SileroVad.speech_stream` turns
an iterable of blocks (e.g. :func:`speakerid.audio.iter_blocks`) into speech-only audio
pieces whose concatenation equals :meth:`SileroVad.keep_speech` of the whole input, keeping
only a short tail of audio in memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .config import VadOptions
from .errors import InvalidAudioError, ModelError, NoSpeechError, TooShortError

__all__ = ["MAX_VAD_GAIN_DB", "SAMPLE_RATE_HZ", "WINDOW", "SileroVad", "VadStream", "require_min_speech", "vad_gain"]

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
#: VadOptions.level_dbfs amplifies a quiet clip by at most this much (a near-silent clip stays quiet).
MAX_VAD_GAIN_DB = 30.0


def vad_gain(samples: np.ndarray, level_dbfs: float | None) -> float:
    """The gain the VAD applies to a clip whose first block is ``samples``: up to ``level_dbfs``
    RMS, never down, at most MAX_VAD_GAIN_DB (1.0 when ``level_dbfs`` is None)."""
    if level_dbfs is None or samples.size == 0:
        return 1.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
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

    def __init__(self, session: Any, opts: VadOptions) -> None:
        self._runner = _runner(session)
        self._seg = _Segmenter(opts)
        self._level = opts.level_dbfs
        #: Set from the first block pushed (see :func:`vad_gain`); the model hears ``gain * x``.
        self.gain: float | None = None
        self._rest = np.zeros(0, dtype=np.float32)
        #: Samples pushed so far.
        self.n_samples = 0
        self._finished = False

    def _probs(self, frames: np.ndarray) -> np.ndarray:
        if self.gain is not None and self.gain != 1.0:
            frames = np.clip(frames * np.float32(self.gain), -1.0, 1.0)
        return self._runner(frames)

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
            if self._rest.size:
                last = np.zeros((1, WINDOW), dtype=np.float32)
                last[0, : self._rest.size] = self._rest
                self._seg.feed(self._probs(last))
            self._seg.finish(self.n_samples)
        return self._seg.pop()


class SileroVad:
    """Silero VAD on one ONNX Runtime session; thread-safe, one model state per call.

    ``onnx_path`` is ``silero_vad.onnx`` (one window per call, as silero_vad's reference) or
    ``silero_vad_16k_sequence.onnx`` (many windows per call, same results, faster); see
    :func:`speakerid.models.store.vad_sequence_onnx_path`. ``threads`` sets ONNX Runtime's
    intra-op threads (None: 1).
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        opts: VadOptions = DEFAULT_OPTIONS,
        threads: int | None = None,
    ) -> None:
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

    def stream(self) -> VadStream:
        """A fresh :class:`VadStream` (new model state)."""
        return VadStream(self._session, self.opts)

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
