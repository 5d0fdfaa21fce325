"""A small typed client of ``speakerid serve`` (httpx, from the ``serve`` extra).

    >>> from speakerid.client import Client
    >>> with Client("http://127.0.0.1:8000", api_key="sid_...") as c:
    ...     c.enroll("alice", ["alice1.wav", "alice2.wav"]).clips_accepted
    ...     c.identify("who.wav").speaker

Every failure raises :class:`RemoteError` with the server's stable ``code`` (AUDIO_TOO_SHORT,
UNKNOWN_SPEAKER, UNAUTHORIZED, SERVER_BUSY...), its HTTP ``status`` and, for 503s,
``retry_after_s``; a server that cannot be reached gives code CONNECTION_FAILED.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any

from .errors import ConfigError, SpeakeridError

__all__ = ["Client", "ClipFeedback", "DiarizeResult", "DiarizedSpeaker", "EnrollResult", "IdentifyResult", "Match",
           "RemoteError", "Speaker", "VerifyResult"]

Clip = str | os.PathLike | bytes | IO[bytes]


class RemoteError(SpeakeridError):
    """The server refused or failed a request; ``code`` is its stable error code."""

    def __init__(self, code: str, message: str, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(f"{message} [{code}]")
        self.code, self.message, self.status, self.retry_after_s = code, message, status, retry_after_s


def _build(cls, data: dict[str, Any]):
    return cls(**{f.name: data.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Match:
    speaker: str
    score: float
    rank: int
    #: The AS-norm score when the server normalised (the raw cosine stays in ``score``).
    norm_score: float | None = None


@dataclass(frozen=True)
class VerifyResult:
    score: float
    threshold: float
    match: bool
    threshold_method: str
    model: str
    speech_s: list[float]
    duration_s: list[float]


@dataclass(frozen=True)
class IdentifyResult:
    #: The accepted identity, or None for an unknown voice.
    speaker: str | None
    verdict: str
    accepted: bool
    score: float | None
    threshold: float
    threshold_method: str
    scoring: str
    matches: tuple[Match, ...]
    model: str
    duration_s: float
    speech_s: float
    index_version: int
    #: Whether several people talk in the clip (None: not checked); its warning is in ``warnings``.
    multi_speaker: bool | None = None
    warnings: tuple[str, ...] = ()
    #: "none" or "asnorm"; with "asnorm" the threshold applies to ``norm_score``.
    score_norm: str = "none"
    norm_score: float | None = None


@dataclass(frozen=True)
class DiarizedSpeaker:
    speaker: str
    known: bool
    score: float | None
    speech_s: float


@dataclass(frozen=True)
class DiarizeResult:
    """``POST /v1/diarize``: the :class:`speakerid.diarize.Timeline` (turns with names or
    ``unknown-N``) and, per speaker, its speech and score."""

    timeline: Any
    speakers: tuple[DiarizedSpeaker, ...]
    named: bool
    model: str
    index_version: int | None
    warnings: tuple[str, ...]
    duration_s: float


@dataclass(frozen=True)
class ClipFeedback:
    clip: int
    filename: str | None
    accepted: bool
    code: str
    message: str
    duration_s: float | None
    speech_s: float | None


@dataclass(frozen=True)
class EnrollResult:
    speaker: str
    clips_accepted: int
    clips_rejected: int
    speech_s: float
    speaker_clips: int
    speaker_speech_s: float
    index_version: int
    threshold: float | None
    feedback: tuple[ClipFeedback, ...]


@dataclass(frozen=True)
class Speaker:
    name: str
    clips: int
    speech_s: float
    first_enrolled_at: str | None = None
    last_enrolled_at: str | None = None


def speaker_segment(name: str) -> str:
    """``name`` as one percent-encoded URL path segment (names a URL cannot carry are refused)."""
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ConfigError(f"speaker name {name!r} cannot be sent in a URL path ('/', '.', '..' or empty)")
    return urllib.parse.quote(name, safe="")


class Client:
    """``base_url`` of a ``speakerid serve``; ``api_key`` a key from ``speakerid serve keys add``."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, *,
                 timeout_s: float = 120.0) -> None:
        try:
            import httpx
        except ImportError:
            raise SpeakeridError("speakerid.client needs httpx: pip install 'speakerid[serve]'") from None
        self._httpx = httpx
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self._http.request(method, path, **kw)
        except self._httpx.TransportError as exc:
            raise RemoteError("CONNECTION_FAILED", f"cannot reach {self.base_url}: {exc}") from None
        if r.status_code < 400:
            return r.json()
        try:
            err = r.json()["error"]
            code, message = str(err["code"]), str(err["message"])
        except (ValueError, KeyError, TypeError):
            code, message = f"HTTP_{r.status_code}", r.text[:200] or r.reason_phrase
        retry = r.headers.get("Retry-After")
        raise RemoteError(code, message, r.status_code, float(retry) if retry and retry.isdigit() else None)

    @staticmethod
    @contextlib.contextmanager
    def _files(field: str, clips: Sequence[Clip]) -> Iterator[list[tuple[str, tuple[str, Any]]]]:
        with contextlib.ExitStack() as stack:
            out = []
            for i, clip in enumerate(clips):
                if isinstance(clip, (str, os.PathLike)):
                    p = Path(clip)
                    out.append((field, (p.name, stack.enter_context(open(p, "rb")))))
                elif isinstance(clip, (bytes, bytearray)):
                    out.append((field, (f"clip{i + 1}", bytes(clip))))
                else:
                    out.append((field, (getattr(clip, "name", None) or f"clip{i + 1}", clip)))
            yield out

    # -- the API -----------------------------------------------------------------------------

    def verify(self, a: Clip, b: Clip, threshold: float | None = None) -> VerifyResult:
        data = {} if threshold is None else {"threshold": str(threshold)}
        with self._files("a", [a]) as fa, self._files("b", [b]) as fb:
            return _build(VerifyResult, self._request("POST", "/v1/verify", files=fa + fb, data=data))

    def identify(self, clip: Clip, k: int = 5, threshold: float | None = None,
                 score_norm: str | None = None) -> IdentifyResult:
        """Top-``k`` enrolled speakers for ``clip``; ``score_norm`` ("none" or "asnorm"; None: the
        server's default) as :func:`speakerid.identify`'s."""
        data = {"k": str(k), **({} if threshold is None else {"threshold": str(threshold)}),
                **({} if score_norm is None else {"score_norm": score_norm})}
        with self._files("clip", [clip]) as files:
            d = self._request("POST", "/v1/identify", files=files, data=data)
        d["matches"] = tuple(_build(Match, m) for m in d.get("matches", []))
        d["warnings"] = tuple(d.get("warnings") or ())
        return _build(IdentifyResult, d)

    def diarize(self, audio: Clip, *, num_speakers: int | None = None, min_speakers: int | None = None,
                max_speakers: int | None = None, name_speakers: bool = True) -> DiarizeResult:
        """Who spoke when in ``audio``, named from the server's index (``name_speakers``)."""
        from .diarize.timeline import Timeline

        counts = {"num_speakers": num_speakers, "min_speakers": min_speakers, "max_speakers": max_speakers}
        data = {k: str(v) for k, v in counts.items() if v is not None}
        data["name_speakers"] = "true" if name_speakers else "false"
        with self._files("audio", [audio]) as files:
            d = self._request("POST", "/v1/diarize", files=files, data=data)
        warnings = tuple(d.get("warnings") or ())
        timeline = Timeline.from_dict({"turns": d.get("turns", []), "duration_s": d.get("duration_s", 0.0),
                                       "warnings": warnings, "source": getattr(audio, "name", None) or
                                       (str(audio) if isinstance(audio, (str, os.PathLike)) else "")})
        return DiarizeResult(timeline, tuple(_build(DiarizedSpeaker, s) for s in d.get("speakers", [])),
                             bool(d.get("named")), str(d.get("model", "")), d.get("index_version"), warnings,
                             float(d.get("duration_s", 0.0)))

    def enroll(self, speaker: str, clips: Sequence[Clip]) -> EnrollResult:
        if isinstance(clips, (str, bytes, os.PathLike)):
            clips = [clips]
        with self._files("clips", clips) as files:
            d = self._request("POST", f"/v1/speakers/{speaker_segment(speaker)}/enrollments", files=files)
        d["feedback"] = tuple(_build(ClipFeedback, f) for f in d.get("feedback", []))
        return _build(EnrollResult, d)

    def speakers(self) -> list[Speaker]:
        return [_build(Speaker, s) for s in self._request("GET", "/v1/speakers")["speakers"]]

    def speaker(self, name: str) -> Speaker:
        return _build(Speaker, self._request("GET", f"/v1/speakers/{speaker_segment(name)}"))

    def delete(self, name: str) -> int:
        """Remove a speaker (admin key); returns how many clips it had."""
        return int(self._request("DELETE", f"/v1/speakers/{speaker_segment(name)}")["clips_removed"])

    def info(self) -> dict[str, Any]:
        return self._request("GET", "/v1/info")

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/v1/health")
