"""Clip -> speaker embedding: decode, keep speech, front end, encoder on ONNX Runtime.

Long clips. Speech up to ``EmbedOptions.window_s`` (default 60 s) is embedded whole, with the
model's own whole-clip statistics, exactly as the upstream model does. Longer speech is cut into
consecutive windows of ``window_s`` seconds; each window is embedded and the unit-norm window
embeddings are averaged, weighted by the speech each window holds, then re-normalised. A tail
shorter than ``MIN_TAIL_S`` after at least one full window is dropped. Files are decoded in blocks
(``AudioOptions.block_s``), so memory stays bounded however long the file is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import audio as audio_mod
from . import features as F
from .config import AudioOptions, EmbedOptions, VadOptions, from_mapping
from .errors import ConfigError, ModelMismatchError, NoSpeechError, SpeakeridError
from .models import store
from .models.registry import DEFAULT_MODEL
from .models.spec import ONNX_FILE, ModelSpec
from .vad import SileroVad, require_min_speech

Source = str | os.PathLike | np.ndarray
#: Drop a trailing window shorter than this when the clip already gave a full window.
MIN_TAIL_S = 1.0
#: Partials sent to the encoder at once (GE2E, AutoSpeech).
PARTIAL_BATCH = 64
_AUDIO, _VAD, _EMBED = AudioOptions(), VadOptions(), EmbedOptions()


@dataclass(frozen=True)
class Embedding:
    """One clip's embedding (float32, L2-normalised) and what it was made from."""

    vector: np.ndarray
    model: str
    duration_s: float
    speech_s: float
    source: str = ""


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


class _FrontEnd:
    """Turns one window of speech into (unnormalised mean embedding, weight)."""

    def __init__(self, spec: ModelSpec, model_dir: Path, run: Callable[[np.ndarray], np.ndarray]):
        self.spec = spec
        self.run = run
        kind = spec.frontend
        if kind == "kaldi_fbank":
            self.opts = from_mapping(F.FbankOptions, spec.frontend_options, "kaldi_fbank options")
            self.window = self._fbank_window
        elif kind == "ge2e_mel":
            self.opts = from_mapping(F.Ge2eMelOptions, spec.frontend_options, "ge2e_mel options")
            self.window = self._ge2e_window
        elif kind == "autospeech":
            self.opts = from_mapping(F.AutoSpeechOptions, spec.frontend_options, "autospeech options")
            try:
                self.mean = np.load(model_dir / spec.files["mean"]).astype(np.float32)
                self.std = np.load(model_dir / spec.files["std"]).astype(np.float32)
            except (KeyError, OSError, ValueError) as exc:
                raise ConfigError(f"model {spec.name}: cannot read its mean/std files: {exc}") from None
            self.window = self._autospeech_window
        else:
            raise ConfigError(f"model {spec.name}: unknown front end {kind!r}")

    def _fbank_window(self, speech: np.ndarray) -> np.ndarray:
        feats = F.kaldi_fbank(speech, self.opts)
        return self.run(feats[None])[0]

    def _partials(self, partials: np.ndarray) -> np.ndarray:
        outs = [self.run(partials[i : i + PARTIAL_BATCH]) for i in range(0, len(partials), PARTIAL_BATCH)]
        return np.concatenate(outs, axis=0)

    def _ge2e_window(self, speech: np.ndarray) -> np.ndarray:
        speech = F.normalize_volume(speech, self.opts.target_dbfs, increase_only=True)
        return self._partials(F.ge2e_partials(speech, self.opts)).mean(axis=0)

    def _autospeech_window(self, speech: np.ndarray) -> np.ndarray:
        spec = F.autospeech_spectrogram(speech, self.opts)
        parts = F.autospeech_partials(spec, self.mean, self.std, self.opts)
        return l2_normalize(self._partials(parts)).mean(axis=0)


class Embedder:
    """Speaker embeddings from a named model (see :func:`speakerid.available_models`).

    Sessions are created once; ``embed`` and ``embed_batch`` may be called from several threads.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        audio: AudioOptions = _AUDIO,
        vad: VadOptions = _VAD,
        embed: EmbedOptions = _EMBED,
        progress: store.Progress | None = None,
    ) -> None:
        self.spec, model_dir = store.resolve(model, progress=progress)
        if audio.sample_rate_hz != self.spec.sample_rate_hz:
            audio = AudioOptions(**{**audio.__dict__, "sample_rate_hz": self.spec.sample_rate_hz})
        self.audio_options, self.vad_options, self.embed_options = audio, vad, embed
        self._session = _session(model_dir / ONNX_FILE, embed.threads)
        self._check_io()
        self._frontend = _FrontEnd(self.spec, model_dir, self._run)
        self._vad: SileroVad | None = None
        if vad.enabled:
            self._vad = SileroVad(store.vad_onnx_path(progress), vad, threads=1)

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

    def _blocks(self, source: Source, sample_rate_hz: int | None) -> tuple[Iterator[np.ndarray], str]:
        if isinstance(source, np.ndarray):
            if sample_rate_hz is None:
                raise ConfigError("sample_rate_hz is required when embedding samples in memory")
            samples = audio_mod.prepare(source, sample_rate_hz, self.audio_options)
            step = int(self.audio_options.block_s * self.audio_options.sample_rate_hz)
            return (samples[i : i + step] for i in range(0, len(samples), step)), "<samples>"
        return audio_mod.iter_blocks(source, self.audio_options), str(source)

    def _speech_windows(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Consecutive windows of speech (``window_s`` long, the last one shorter)."""
        window = int(self.embed_options.window_s * self.audio_options.sample_rate_hz)
        pieces = self._vad.speech_stream(blocks) if self._vad is not None else blocks
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
        blocks, name = self._blocks(source, sample_rate_hz)
        try:
            return self._embed_blocks(blocks, name)
        except NoSpeechError as exc:  # say which clip; keep the type (TooShortError...)
            if name in str(exc):
                raise
            raise type(exc)(f"{name}: {exc}") from None

    def _embed_blocks(self, blocks: Iterator[np.ndarray], name: str) -> Embedding:
        total = 0

        def counting(it: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
            nonlocal total
            for b in it:
                total += len(b)
                yield b

        sr = self.audio_options.sample_rate_hz
        vecs: list[np.ndarray] = []
        weights: list[float] = []
        speech = 0
        for win in self._speech_windows(counting(blocks)):
            if vecs and len(win) < MIN_TAIL_S * sr:
                speech += len(win)
                continue
            vecs.append(l2_normalize(self._frontend.window(win)))
            weights.append(float(len(win)))
            speech += len(win)
        if self._vad is None:
            require_min_speech(speech, sr, self.vad_options)
        if not vecs:
            raise NoSpeechError(f"{name}: nothing to embed")
        w = np.asarray(weights, dtype=np.float64)[:, None]
        vector = l2_normalize((np.stack(vecs) * w).sum(axis=0) / w.sum())
        if not np.all(np.isfinite(vector)):
            raise SpeakeridError(f"{name}: model {self.model} produced a non-finite embedding")
        return Embedding(vector=vector, model=self.model, duration_s=total / sr, speech_s=speech / sr, source=name)

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
    ) -> list[Embedding | SpeakeridError]:
        """Embed many clips of any lengths; ``workers`` clips run at once in threads.

        With ``errors="return"`` a clip that fails yields its :class:`SpeakeridError` in place
        of an embedding instead of stopping the batch. ``on_done(i, result)`` is called as each
        clip finishes (for progress bars), in completion order.
        """
        if errors not in ("raise", "return"):
            raise ConfigError("errors must be 'raise' or 'return'")

        def one(i: int) -> Embedding | SpeakeridError:
            try:
                res: Embedding | SpeakeridError = self.embed_detailed(sources[i], sample_rate_hz)
            except SpeakeridError as exc:
                if errors == "raise":
                    raise
                res = exc
            if on_done is not None:
                on_done(i, res)
            return res

        if workers <= 1 or len(sources) <= 1:
            return [one(i) for i in range(len(sources))]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, range(len(sources))))


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
