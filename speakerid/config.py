"""Options as frozen dataclasses, and yaml loading that rejects unknown keys.

Every field carries its unit in its name (``_hz``, ``_ms``, ``_s``). A yaml file in
configs/ maps section names to these dataclasses::

    audio: {sample_rate_hz: 16000}
    vad: {enabled: true, min_speech_ms: 500}
    embed: {window_s: 60}
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")
#: What VadOptions.short_speech may say.
SHORT_SPEECH = ("whole", "speech", "error")


def check_threshold(value: Any, what: str = "threshold") -> float:
    """A cosine threshold as a float: finite and within [-1, 1], else ConfigError.

    NaN would silently reject (or, compared the other way, accept) everything, and a value
    outside [-1, 1] can never be met by a cosine, so both are refused."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number in [-1, 1], got {value!r}") from None
    if not math.isfinite(t) or not -1.0 <= t <= 1.0:
        raise ConfigError(f"{what} must be a finite cosine in [-1, 1], got {value!r}")
    return t


@dataclass(frozen=True)
class AudioOptions:
    """How audio files are decoded."""

    sample_rate_hz: int = 16000
    #: Read at most this many seconds from the start of a file (None: all of it).
    max_duration_s: float | None = None
    #: Files are decoded and resampled in blocks of this length, so memory stays bounded.
    block_s: float = 60.0

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0:
            raise ConfigError(f"sample_rate_hz must be positive, got {self.sample_rate_hz}")
        if self.max_duration_s is not None and self.max_duration_s <= 0:
            raise ConfigError(f"max_duration_s must be positive, got {self.max_duration_s}")
        if self.block_s <= 0:
            raise ConfigError(f"block_s must be positive, got {self.block_s}")


@dataclass(frozen=True)
class VadOptions:
    """Silero voice activity detection, run before embedding.

    The defaults were chosen on the hard conditions of benchmarks/eval_conditions.py (CAM++ EER
    on librispeech-251 split in time; results in benchmarks/results/conditions.md): they trim
    only long non-speech, so the model sees what the bare model sees on every condition but
    long silences and music, where trimming wins. Figures below are CAM++ EER, bare -> default.
    """

    #: On: silences 0.43 -> 0.03 %, tones 0.11 -> 0.03 %, cross 1.27 -> 0.99 %, and within
    #: 0.03 points of the bare model (VAD off) on the 11 other conditions.
    enabled: bool = True
    #: Speech probability above which a 32 ms frame counts as speech. 0.35 measured the same
    #: (within 0.01 points on every condition), so Silero's own 0.5 stays.
    threshold: float = 0.5
    #: Less speech than this in a clip is handled by ``short_speech`` (NoSpeechError when there
    #: is none and the clip is silent). 1500 measured within 0.03 points of 500.
    min_speech_ms: float = 500.0
    #: Speech segments shorter than this are dropped.
    min_segment_ms: float = 250.0
    #: Silences shorter than this do not split a segment.
    min_silence_ms: float = 100.0
    #: Padding kept on each side of a speech segment: a cut pause keeps 0.2 s each side (Silero's
    #: 30 ms was the old default; other pads were not measured).
    speech_pad_ms: float = 200.0
    #: Non-speech shorter than this is kept whole, at the start and end of a clip too; only
    #: longer stretches are cut (keeping ``speech_pad_ms`` of each side). 0: every pause of
    #: ``min_silence_ms`` or more is cut, as Silero's ``get_speech_timestamps`` does (the old
    #: default: 2 s crops 2.55 -> 4.68 %, telephone 1.32 -> 2.55 %, clean 0.03 -> 0.24 %).
    #: 2000, not 1000 or 1500: those also cut reverberant pauses in which Silero misses speech
    #: (far field 0.63 -> 0.88 / 0.91 %); 3000 cuts less of the silences (0.07 %).
    keep_pauses_ms: float = 2000.0
    #: A clip with some speech but less than ``min_speech_ms``, or none in a clip that is not
    #: silent: "whole" embeds the whole clip (as with the VAD off) and "speech" the little
    #: speech found, each with a ``too_short`` warning on the Embedding; "error" raises
    #: TooShortError (NoSpeechError for none). The Embedder applies this. "whole": Silero hears
    #: no speech in some clips of real speech (a 2 s crop holding one short word, one speaker in
    #: white noise at 5 dB); "error" (the old default) refused them: with the trimming below,
    #: 2 s crops 2.98 %, white 5 dB 1.05 %, pink 5 dB 1.28 % (bare and "whole": 2.55, 0.85, 0.85 %).
    short_speech: str = "whole"
    #: The VAD hears a quieter clip amplified to this RMS level (by at most MAX_VAD_GAIN_DB,
    #: for the VAD only: the embedding takes the samples as they are); None: as it is. Silero
    #: reads quiet reverberant speech as non-speech: far field (20-30 dB down) 0.63 % bare,
    #: 5.71 % trimmed at 1000 ms without it (the old default: 36.60 %), 0.61 % with it.
    level_dbfs: float | None = -26.0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"vad threshold must be in (0, 1), got {self.threshold}")
        for name in ("min_speech_ms", "min_segment_ms", "min_silence_ms", "speech_pad_ms", "keep_pauses_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.level_dbfs is not None and not -100.0 < self.level_dbfs <= 0.0:
            raise ConfigError(f"level_dbfs must be in (-100, 0] or null, got {self.level_dbfs}")
        if self.short_speech not in SHORT_SPEECH:
            raise ConfigError(f"short_speech must be one of {', '.join(SHORT_SPEECH)}, got {self.short_speech!r}")


@dataclass(frozen=True)
class EmbedOptions:
    """How a clip becomes one embedding."""

    #: Speech up to this length is embedded whole (whole-clip statistics); longer speech is
    #: cut into windows of this length whose embeddings are averaged, weighted by length.
    window_s: float = 60.0
    #: ONNX Runtime intra-op threads (None: all cores).
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.window_s < 2.0:
            raise ConfigError(f"window_s must be >= 2 s, got {self.window_s}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")


@dataclass(frozen=True)
class Settings:
    """All options of a run, as loaded from a yaml file in configs/."""

    audio: AudioOptions = field(default_factory=AudioOptions)
    vad: VadOptions = field(default_factory=VadOptions)
    embed: EmbedOptions = field(default_factory=EmbedOptions)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against a simple annotation; build nested dataclasses."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_mapping(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        return tuple(_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_mapping(cls: type[T], data: dict[str, Any], where: str | None = None) -> T:
    """Build the frozen dataclass ``cls`` from a mapping; unknown keys are an error."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def to_mapping(obj: Any) -> dict[str, Any]:
    """The inverse of :func:`from_mapping` (plain dicts, tuples as lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return plain(obj)


def load_yaml(path: str | Path, cls: type[T] = Settings) -> T:  # type: ignore[assignment]
    """Load a yaml file into ``cls`` (default :class:`Settings`)."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid yaml: {exc}") from None
    return from_mapping(cls, data or {}, where=p.name)
