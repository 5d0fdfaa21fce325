"""Clip -> speaker embedding: decode, keep speech, front end, encoder on ONNX Runtime.

Long clips. Speech up to ``EmbedOptions.window_s`` (default 60 s) is embedded whole, with the
model's own whole-clip statistics, exactly as the upstream model does. Longer speech is cut into
consecutive windows of ``window_s`` seconds; each window is embedded and the unit-norm window
embeddings are averaged, weighted by the speech each window holds, then re-normalised. A tail
shorter than ``MIN_TAIL_S`` after at least one full window is dropped. Files are decoded in blocks
(``AudioOptions.block_s``), so memory stays bounded however long the file is.

Little speech. With the default ``VadOptions.short_speech="whole"`` a clip in which the VAD finds
less than ``min_speech_ms`` of speech (or none, in a clip that is not silent) is embedded whole,
as with the VAD off, and its Embedding carries a ``too_short: ...`` warning; a silent clip raises
NoSpeechError, and less than MIN_EMBED_MS of audio always raises TooShortError.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import audio as audio_mod
from ._threads import one_blas_thread
from .config import AudioOptions, EmbedOptions, VadOptions
from .errors import (
    ConfigError,
    CorruptModelError,
    ModelMismatchError,
    NoSpeechError,
    SpeakeridError,
    TooShortError,
)
from .features import front_end_for
from .models import store
from .models.registry import DEFAULT_MODEL
from .models.spec import ONNX_FILE, ModelSpec
from .progress import Progress
from .vad import SAMPLE_RATE_HZ as VAD_RATE_HZ
from .vad import SileroVad

Source = str | os.PathLike | np.ndarray
#: Drop a trailing window shorter than this when the clip already gave a full window.
MIN_TAIL_S = 1.0
#: Less speech than this never gives an embedding (TooShortError), whatever the options say:
#: 10 frames of the 25 ms / 10 ms front ends (CAM++ fails below one frame).
MIN_EMBED_MS = 100.0
#: A clip quieter than this (RMS over the clip) is silence: NoSpeechError when the VAD finds no
#: speech in it, whatever VadOptions.short_speech says.
SILENCE_DBFS = -60.0
log = logging.getLogger("speakerid")
#: Partials sent to the encoder at once (GE2E, AutoSpeech).
PARTIAL_BATCH = 64
#: Clips Embedder.embed_batch prepares and encodes together, after sorting by length.
BATCH_BUCKET = 8
#: Whole-window models (CAM++) run windows of one length stacked only up to this many frames:
#: 8 stacked 3 s windows took as long as 8 runs of one (357 vs 356 ms CPU, 1 thread), 8 stacked
#: 10 s windows 9 % longer (1340 vs 1226 ms), so longer windows run one by one.
STACK_MAX_FRAMES = 400
_AUDIO, _VAD, _EMBED = AudioOptions(), VadOptions(), EmbedOptions()


@dataclass(frozen=True)
class Embedding:
    """One clip's embedding (float32, L2-normalised) and what it was made from."""

    vector: np.ndarray
    model: str
    duration_s: float
    speech_s: float
    source: str = ""
    #: What was wrong with the input but did not stop the embedding (a truncated file...).
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Prepared:
    """A clip made ready for the encoder by :meth:`Embedder.prepare` (no model run yet).

    ``features`` holds one model input per speech window (Kaldi fbank ``(frames, bins)``, or
    partials ``(n, frames, bins)``) and ``weights`` the speech samples of each window.
    """

    source: str
    model: str
    duration_s: float
    speech_s: float
    features: tuple[np.ndarray, ...]
    weights: tuple[float, ...]
    warnings: tuple[str, ...] = ()

    @property
    def nbytes(self) -> int:
        return sum(f.nbytes for f in self.features)


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def _session(path: Path, threads: int | None, spec: ModelSpec):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        fix = ("pull the model again (forced) to convert it anew" if spec.builtin
               else "remove it and add it again from its ONNX file")
        detail = " ".join(str(exc).split())  # one line
        raise CorruptModelError(f"model {spec.name}: ONNX Runtime cannot load {path}: {detail}; {fix}") from None


class Embedder:
    """Speaker embeddings from a named model (see :func:`speakerid.available_models`).

    Sessions are created once; ``embed`` and ``embed_batch`` may be called from several threads,
    and so may the two halves of ``embed_detailed``: :meth:`prepare` (decode, VAD, front end)
    and :meth:`encode` (the model; partials of several clips batched).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        audio: AudioOptions = _AUDIO,
        vad: VadOptions = _VAD,
        embed: EmbedOptions = _EMBED,
        progress: Progress | None = None,
    ) -> None:
        self.spec, model_dir = store.resolve(model, progress=progress)
        if audio.sample_rate_hz != self.spec.sample_rate_hz:
            audio = AudioOptions(**{**audio.__dict__, "sample_rate_hz": self.spec.sample_rate_hz})
        self.audio_options, self.vad_options, self.embed_options = audio, vad, embed
        self._session = _session(model_dir / ONNX_FILE, embed.threads, self.spec)
        self._check_io()
        self._frontend = front_end_for(self.spec, model_dir)
        self._vad: SileroVad | None = None
        if vad.enabled:
            if self.spec.sample_rate_hz != VAD_RATE_HZ:
                raise ConfigError(
                    f"model {self.spec.name} runs at {self.spec.sample_rate_hz} Hz but Silero VAD "
                    f"needs {VAD_RATE_HZ} Hz; embed with the VAD disabled"
                )
            # The sequence form of Silero VAD gives bit-identical probabilities to the
            # stateful model at about half the cost (benchmarks/results/embed.md); the gated
            # schedule runs it on a third of the windows of continuous speech (vad.GATE_STRIDE).
            self._vad = SileroVad(store.vad_sequence_onnx_path(progress), vad, threads=1, schedule="auto")

    # -- properties ---------------------------------------------------------
    @property
    def model(self) -> str:
        return self.spec.name

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def weights_sha256(self) -> str:
        return self.spec.weights_sha256

    @property
    def default_threshold(self) -> float:
        return self.spec.default_threshold

    @property
    def vad(self) -> SileroVad | None:
        """The VAD the Embedder runs (None when disabled), e.g. to time it alone."""
        return self._vad

    @property
    def batches_clips(self) -> bool:
        """Whether :meth:`encode` runs several clips together (models on fixed-length partials)."""
        return self._frontend.partials

    # -- internals ----------------------------------------------------------
    def _check_io(self) -> None:
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        if self.spec.input_name not in inputs or self.spec.output_name not in outputs:
            raise ModelMismatchError(
                f"model {self.spec.name}: ONNX graph has inputs {list(inputs)} and outputs "
                f"{list(outputs)}, spec expects {self.spec.input_name} -> {self.spec.output_name}"
            )
        last = outputs[self.spec.output_name].shape[-1]
        if isinstance(last, int) and last != self.spec.dim:
            raise ModelMismatchError(f"model {self.spec.name}: graph gives {last}-d, spec says {self.spec.dim}")

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out = self._session.run([self.spec.output_name], {self.spec.input_name: np.ascontiguousarray(batch, np.float32)})[0]
        return np.asarray(out, dtype=np.float32).reshape(len(batch), -1)

    def _run_batches(self, batch: np.ndarray) -> np.ndarray:
        """The encoder on ``batch``, ``PARTIAL_BATCH`` inputs at a time."""
        outs = [self._run(batch[i : i + PARTIAL_BATCH]) for i in range(0, len(batch), PARTIAL_BATCH)]
        return np.concatenate(outs, axis=0)

    def _encode_window(self, feats: np.ndarray) -> np.ndarray:
        """One window's features -> its (unnormalised) embedding."""
        fe = self._frontend
        return fe.reduce(self._run_batches(fe.batch(feats)))

    def _blocks(
        self, source: Source, sample_rate_hz: int | None, warnings: list[str]
    ) -> tuple[Iterator[np.ndarray], str]:
        if isinstance(source, np.ndarray):
            if sample_rate_hz is None:
                raise ConfigError("sample_rate_hz is required when embedding samples in memory")
            samples = audio_mod.prepare(source, sample_rate_hz, self.audio_options)
            step = int(self.audio_options.block_s * self.audio_options.sample_rate_hz)
            return (samples[i : i + step] for i in range(0, len(samples), step)), "<samples>"
        return audio_mod.iter_blocks(source, self.audio_options, warnings), str(source)

    def _speech_windows(self, blocks: Iterable[np.ndarray], vad: SileroVad | None) -> Iterator[np.ndarray]:
        """Consecutive windows of speech (``window_s`` long, the last one shorter)."""
        window = int(self.embed_options.window_s * self.audio_options.sample_rate_hz)
        pieces = vad.speech_stream(blocks, check=False) if vad is not None else blocks
        buf: list[np.ndarray] = []
        buffered = 0
        for piece in pieces:
            buf.append(piece)
            buffered += len(piece)
            while buffered >= window:
                joined = np.concatenate(buf)
                yield joined[:window]
                buf, buffered = [joined[window:]], len(joined) - window
        if buffered:
            yield np.concatenate(buf)

    # -- public -------------------------------------------------------------
    def embed_detailed(self, source: Source, sample_rate_hz: int | None = None) -> Embedding:
        """Embed one clip (a path, or samples with their rate) and say what it was made from."""
        sr = self.audio_options.sample_rate_hz
        name, outs, weights, total, speech, warnings = self._per_window(
            source, sample_rate_hz, lambda win: l2_normalize(self._encode_window(self._frontend.features(win)))
        )
        return self._combine(name, outs, weights, total / sr, speech / sr, warnings)

    def prepare(self, source: Source, sample_rate_hz: int | None = None) -> Prepared:
        """Everything but the encoder: decode, VAD and front end (thread-safe, no model run).

        ``encode([prepare(x)])[0]`` equals ``embed_detailed(x)`` bit for bit; errors are the
        same and raised here (NoSpeechError, AudioDecodeError...).
        """
        sr = self.audio_options.sample_rate_hz
        name, feats, weights, total, speech, warnings = self._per_window(
            source, sample_rate_hz, self._frontend.features
        )
        return Prepared(
            source=name, model=self.model, duration_s=total / sr, speech_s=speech / sr,
            features=tuple(feats), weights=tuple(weights), warnings=warnings,
        )

    def encode(self, prepared: Sequence[Prepared]) -> list[Embedding]:
        """Run the encoder on prepared clips.

        Models on fixed-length partials (GE2E, AutoSpeech) run the partials of all the clips
        together, ``PARTIAL_BATCH`` at a time; a single clip is run exactly as
        :meth:`embed_detailed` runs it. Kaldi-fbank models (CAM++) take whole variable-length
        windows: windows of the same number of frames (up to STACK_MAX_FRAMES) run together, up
        to PARTIAL_BATCH at a time, any other window alone, since padding would change the
        statistics pooling (the results equal one-by-one runs within float rounding;
        :meth:`embed_batch` sorts clips by length).
        """
        for p in prepared:
            if not isinstance(p, Prepared):
                raise ConfigError(f"encode takes Prepared clips, got {type(p).__name__}")
            if p.model != self.model:
                raise ModelMismatchError(f"{p.source} was prepared for model {p.model}, not {self.model}")
        fe = self._frontend
        if fe.partials and len(prepared) > 1:
            feats = [f for p in prepared for f in p.features]
            outs = self._run_batches(np.concatenate(feats)) if feats else np.zeros((0, self.dim), np.float32)
            ends = np.cumsum([len(f) for f in feats])[:-1]
            per_window = iter([fe.reduce(o) for o in np.split(outs, ends)])
            window_vecs = [[l2_normalize(next(per_window)) for _ in p.features] for p in prepared]
        elif len(prepared) > 1:
            window_vecs = self._encode_same_length(prepared)
        else:
            window_vecs = [[l2_normalize(self._encode_window(f)) for f in p.features] for p in prepared]
        return [
            self._combine(p.source, vecs, list(p.weights), p.duration_s, p.speech_s, p.warnings)
            for p, vecs in zip(prepared, window_vecs)
        ]

    def _encode_same_length(self, prepared: Sequence[Prepared]) -> list[list[np.ndarray]]:
        """Whole-window models: windows of one shape run stacked, PARTIAL_BATCH at a time."""
        fe = self._frontend
        flat = [(i, j, f) for i, p in enumerate(prepared) for j, f in enumerate(p.features)]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for k, (_, _, f) in enumerate(flat):
            by_shape.setdefault(f.shape, []).append(k)
        vecs: list[np.ndarray | None] = [None] * len(flat)
        for shape, ks in by_shape.items():
            step = PARTIAL_BATCH if shape[0] <= STACK_MAX_FRAMES else 1
            for s in range(0, len(ks), step):
                group = ks[s : s + PARTIAL_BATCH]
                if len(group) == 1:
                    vecs[group[0]] = l2_normalize(self._encode_window(flat[group[0]][2]))
                    continue
                outs = self._run(np.concatenate([fe.batch(flat[k][2]) for k in group]))
                for k, o in zip(group, outs):
                    vecs[k] = l2_normalize(fe.reduce(o[None]))
        out: list[list[np.ndarray]] = [[] for _ in prepared]
        for (i, _, _), v in zip(flat, vecs):
            out[i].append(v)  # type: ignore[arg-type]
        return out

    def _per_window(
        self, source: Source, sample_rate_hz: int | None, fn: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[str, list[np.ndarray], list[float], int, int, tuple[str, ...]]:
        """``fn`` of each speech window: (name, outputs, weights, samples read, speech samples,
        warnings)."""
        with one_blas_thread():  # small products: a second BLAS thread only spins (speakerid._threads)
            warnings: list[str] = []
            blocks, name = self._blocks(source, sample_rate_hz, warnings)
            try:
                outs, weights, total, speech, sumsq = self._windows_of(blocks, fn, self._vad)
                short = self._check_speech(speech, total, sumsq)
                if short is not None:
                    warnings.append(short)
                    if self._vad is not None and self.vad_options.short_speech == "whole":
                        blocks, _ = self._blocks(source, sample_rate_hz, [])  # decoded again, VAD off
                        outs, weights, total, _, _ = self._windows_of(blocks, fn, None)
                if not outs:
                    raise NoSpeechError("nothing to embed")
            except NoSpeechError as exc:  # say which clip; keep the type (TooShortError...)
                if name in str(exc):
                    raise
                raise type(exc)(f"{name}: {exc}") from None
            return name, outs, weights, total, speech, tuple(warnings)

    def _check_speech(self, speech: int, total: int, sumsq: float) -> str | None:
        """None when ``speech`` samples are enough; the ``too_short`` warning when the options
        accept less; NoSpeechError (none at all) or TooShortError otherwise.

        With ``short_speech="whole"`` a clip in which the VAD found no speech is embedded whole
        too, unless it is silent (RMS under SILENCE_DBFS): Silero hears no speech in some clips
        of real speech (noise at 5 dB SNR, a 2 s crop with one short word), which the bare model
        embeds well (benchmarks/results/conditions.md)."""
        opts, sr = self.vad_options, self.audio_options.sample_rate_hz
        what = "speech" if self._vad is not None else "audio"
        if total <= 0:
            raise NoSpeechError("the clip holds no audio")
        dbfs = 10.0 * np.log10(max(sumsq / total, 1e-20))
        if speech <= 0 and (self._vad is None or opts.short_speech != "whole" or dbfs < SILENCE_DBFS):
            raise NoSpeechError(f"no speech found in the clip ({dbfs:.0f} dBFS)")
        ms = 1000.0 * speech / sr
        if ms >= max(opts.min_speech_ms, MIN_EMBED_MS):
            return None
        whole = self._vad is not None and opts.short_speech == "whole"
        if opts.short_speech == "error":
            need = max(opts.min_speech_ms, MIN_EMBED_MS)
            raise TooShortError(f"only {ms:.0f} ms of {what} found, less than the {need:g} ms needed")
        if (total if whole else speech) < MIN_EMBED_MS * sr / 1000:
            got = f"{1000.0 * total / sr:.0f} ms of audio" if whole else f"{ms:.0f} ms of {what}"
            raise TooShortError(f"only {got}, less than the {MIN_EMBED_MS:g} ms needed")
        used = "the whole clip" if whole else f"the {what}"
        log.debug("too short: %.0f ms of %s; embedding %s", ms, what, used)
        return (f"too_short: {ms:.0f} ms of {what}, less than the {opts.min_speech_ms:g} ms wanted; "
                f"embedded {used} ({1000.0 * total / sr:.0f} ms)")

    def _windows_of(
        self, blocks: Iterator[np.ndarray], fn: Callable[[np.ndarray], np.ndarray], vad: SileroVad | None
    ) -> tuple[list[np.ndarray], list[float], int, int, float]:
        total, sumsq = 0, 0.0

        def counting(it: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
            nonlocal total, sumsq
            for b in it:
                total += len(b)
                sumsq += float(np.dot(b, b))
                yield b

        sr = self.audio_options.sample_rate_hz
        outs: list[np.ndarray] = []
        weights: list[float] = []
        speech = 0
        for win in self._speech_windows(counting(blocks), vad):
            speech += len(win)
            if outs and len(win) < MIN_TAIL_S * sr:
                continue
            if len(win) >= MIN_EMBED_MS * sr / 1000:  # shorter: _check_speech refuses the clip
                outs.append(fn(win))
                weights.append(float(len(win)))
        return outs, weights, total, speech, sumsq

    def _combine(
        self, name: str, vecs: list[np.ndarray], weights: list[float], duration_s: float, speech_s: float,
        warnings: tuple[str, ...] = (),
    ) -> Embedding:
        """Weighted mean of unit window embeddings -> the clip's Embedding."""
        w = np.asarray(weights, dtype=np.float64)[:, None]
        vector = l2_normalize((np.stack(vecs) * w).sum(axis=0) / w.sum())
        if not np.all(np.isfinite(vector)):
            raise SpeakeridError(f"{name}: model {self.model} produced a non-finite embedding")
        return Embedding(vector=vector, model=self.model, duration_s=duration_s, speech_s=speech_s, source=name,
                         warnings=warnings)

    def embed(self, source: Source, sample_rate_hz: int | None = None) -> np.ndarray:
        """The float32 L2-normalised embedding of one clip."""
        return self.embed_detailed(source, sample_rate_hz).vector

    def embed_batch(
        self,
        sources: Sequence[Source],
        *,
        workers: int = 1,
        sample_rate_hz: int | None = None,
        errors: str = "raise",
        on_done: Callable[[int, Embedding | SpeakeridError], None] | None = None,
        bucket: int = BATCH_BUCKET,
    ) -> list[Embedding | SpeakeridError]:
        """Embed many clips of any lengths; ``workers`` buckets run at once in threads.

        Clips are sorted by length and taken ``bucket`` at a time (fewer when there are not
        ``bucket`` clips per worker): each bucket is prepared, then
        encoded together (:meth:`encode`: partials batched, windows of equal length stacked), so
        the results equal one-by-one :meth:`embed_detailed` within float rounding; ``bucket=1``
        embeds them one by one. With ``errors="return"`` a clip that fails yields its
        :class:`SpeakeridError` in place of an embedding instead of stopping the batch.
        ``on_done(i, result)`` is called as each clip finishes (for progress bars), in
        completion order.
        """
        if errors not in ("raise", "return"):
            raise ConfigError("errors must be 'raise' or 'return'")
        if isinstance(bucket, bool) or not isinstance(bucket, int) or bucket < 1:
            raise ConfigError(f"bucket must be a positive integer, got {bucket!r}")
        results: list[Embedding | SpeakeridError | None] = [None] * len(sources)

        def finish(i: int, res: Embedding | SpeakeridError) -> None:
            results[i] = res
            if on_done is not None:
                on_done(i, res)

        def one(i: int) -> None:
            try:
                res: Embedding | SpeakeridError = self.embed_detailed(sources[i], sample_rate_hz)
            except SpeakeridError as exc:
                if errors == "raise":
                    raise
                res = exc
            finish(i, res)

        def run_bucket(idx: list[int]) -> None:
            if len(idx) == 1:
                return one(idx[0])
            ready: list[tuple[int, Prepared]] = []
            for i in idx:
                try:
                    ready.append((i, self.prepare(sources[i], sample_rate_hz)))
                except SpeakeridError as exc:
                    if errors == "raise":
                        raise
                    finish(i, exc)
            try:
                embs = self.encode([p for _, p in ready])
            except SpeakeridError:  # one bad clip: one by one, to give each its own result
                for i, _ in ready:
                    one(i)
                return
            for (i, _), e in zip(ready, embs):
                finish(i, e)

        # at least one bucket per worker: two clips on two workers still run side by side
        bucket = min(bucket, max(1, -(-len(sources) // max(workers, 1))))
        if bucket > 1:
            order = sorted(range(len(sources)), key=lambda i: self._length_hint(sources[i], sample_rate_hz))
            buckets = [order[s : s + bucket] for s in range(0, len(order), bucket)]
        else:
            buckets = [[i] for i in range(len(sources))]
        if workers <= 1 or len(buckets) <= 1:
            for b in buckets:
                run_bucket(b)
        else:
            with one_blas_thread(), ThreadPoolExecutor(max_workers=workers) as pool:
                for f in [pool.submit(run_bucket, b) for b in buckets]:
                    f.result()
        return results  # type: ignore[return-value]

    def _length_hint(self, source: Source, sample_rate_hz: int | None) -> float:
        """Seconds in ``source`` (from the header for a file; 0 when unknown), to sort by."""
        if isinstance(source, np.ndarray):
            return float(len(source)) / float(sample_rate_hz or self.audio_options.sample_rate_hz)
        try:
            return audio_mod.probe(source).duration_s
        except SpeakeridError:
            return 0.0  # embed_detailed reports the error


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings (raw, in [-1, 1])."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ModelMismatchError(f"embeddings of different sizes: {a.size} and {b.size}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise SpeakeridError("cannot compare a zero embedding")
    return float(a @ b / (na * nb))
