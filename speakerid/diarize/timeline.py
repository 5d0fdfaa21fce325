"""Typed results of diarization: :class:`Turn` and :class:`Timeline` (RTTM and JSON)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

__all__ = ["Timeline", "Turn", "read_rttm"]

_RTTM_TOKEN = re.compile(r"\s")


@dataclass(frozen=True, order=True)
class Turn:
    """One stretch of one speaker's speech. Turns of different speakers may overlap.

    ``speaker`` is an enrolled name when ``known``, else ``unknown-N`` (or ``speaker-N`` when no
    index was given). ``score`` is the cosine of the speaker's cluster centroid with the name it
    got (with the best enrolled speaker when unknown; None without an index). With an index, a
    named speaker's turns leave out the stretches where 1 s embeddings of the audio do not
    confirm the name (speakerid.diarize.verify): a gap there means "not sure who", not silence.
    """

    start_s: float
    end_s: float
    speaker: str
    known: bool = False
    score: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and math.isfinite(self.end_s)) or self.end_s < self.start_s:
            raise ConfigError(f"turn [{self.start_s}, {self.end_s}] is not a finite interval")
        if not isinstance(self.speaker, str) or not self.speaker.strip():
            raise ConfigError("a turn needs a speaker label")

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3), "speaker": self.speaker,
            "known": self.known, "score": None if self.score is None else round(float(self.score), 4),
        }


@dataclass(frozen=True)
class Timeline:
    """Who spoke when: turns sorted by start, plus what the run found worth saying."""

    turns: tuple[Turn, ...] = ()
    duration_s: float = 0.0
    warnings: tuple[str, ...] = ()
    #: Per speaker label: speech seconds, known flag, score (see :meth:`speakers`).
    source: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "turns", tuple(sorted(self.turns)))

    def __len__(self) -> int:
        return len(self.turns)

    def __iter__(self):
        return iter(self.turns)

    def labels(self) -> list[str]:
        """Speaker labels in order of first appearance."""
        seen: dict[str, None] = {}
        for t in self.turns:
            seen.setdefault(t.speaker, None)
        return list(seen)

    def speech_s(self, speaker: str) -> float:
        return sum(t.duration_s for t in self.turns if t.speaker == speaker)

    def solo_turns(self, speaker: str) -> list[tuple[float, float]]:
        """(start_s, end_s) pieces where ``speaker`` talks and nobody else does."""
        others = [(t.start_s, t.end_s) for t in self.turns if t.speaker != speaker]
        out: list[tuple[float, float]] = []
        for t in self.turns:
            if t.speaker != speaker:
                continue
            pieces = [(t.start_s, t.end_s)]
            for a, b in others:
                pieces = [p for s, e in pieces for p in _subtract(s, e, a, b)]
            out.extend(p for p in pieces if p[1] > p[0])
        return out

    def to_rttm(self, file_id: str) -> str:
        """RTTM text: one SPEAKER line per turn (speaker names with spaces get underscores)."""
        fid = _RTTM_TOKEN.sub("_", file_id) or "audio"
        lines = [
            f"SPEAKER {fid} 1 {t.start_s:.3f} {t.duration_s:.3f} <NA> <NA> {_RTTM_TOKEN.sub('_', t.speaker)} <NA> <NA>"
            for t in self.turns
        ]
        return "".join(line + "\n" for line in lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``turns`` holds one record per turn."""
        return {
            "source": self.source, "duration_s": round(self.duration_s, 3),
            "turns": [t.to_dict() for t in self.turns], "warnings": list(self.warnings),
            **({"extra": dict(self.extra)} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Timeline:
        """The inverse of :meth:`to_dict` (also takes a bare list of turn records)."""
        if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
            data = {"turns": list(data)}
        if not isinstance(data, Mapping) or not isinstance(data.get("turns"), Sequence):
            raise ConfigError("a timeline is a mapping with a 'turns' list")
        turns = []
        for i, r in enumerate(data["turns"]):
            try:
                turns.append(Turn(float(r["start_s"]), float(r["end_s"]), str(r["speaker"]), bool(r.get("known", False)),
                                  None if r.get("score") is None else float(r["score"])))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ConfigError(f"timeline turn {i}: {exc!r}") from None
        return cls(tuple(turns), float(data.get("duration_s", 0.0) or 0.0), tuple(data.get("warnings", ())),
                   str(data.get("source", "")), dict(data.get("extra", {}) or {}))


def _subtract(s: float, e: float, a: float, b: float) -> Iterable[tuple[float, float]]:
    if b <= s or a >= e:
        return [(s, e)]
    return [p for p in ((s, min(a, e)), (max(b, s), e)) if p[1] > p[0]]


def read_rttm(text: str, file_id: str | None = None) -> Timeline:
    """SPEAKER lines of RTTM text (of ``file_id`` only, when given) as a Timeline."""
    turns = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0] != "SPEAKER":
            continue
        if len(parts) < 8:
            raise ConfigError(f"RTTM line {n}: expected at least 8 fields")
        if file_id is not None and parts[1] != file_id:
            continue
        try:
            start, dur = float(parts[3]), float(parts[4])
        except ValueError:
            raise ConfigError(f"RTTM line {n}: bad start or duration") from None
        turns.append(Turn(start, start + dur, parts[7]))
    return Timeline(tuple(turns), max((t.end_s for t in turns), default=0.0))
