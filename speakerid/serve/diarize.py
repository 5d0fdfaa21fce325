"""``POST /v1/diarize`` (who spoke when in an upload, named from the service's index) and
identify's multi-speaker flag: what the service adds for diarization.

Both run in the embedding pool behind the same gate as verify and identify, on the upload
spooled as every other one (size, duration and decoding limits included). The diarization
models (segmentation and CAM++) are loaded once per process, on the first request that needs
them, so a service that never diarizes does not pay for them.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..errors import SpeakeridError
from .errors import ApiError, api_error
from .uploads import Upload, check_clip

if TYPE_CHECKING:
    from ..diarize import Diarizer
    from ..embedder import Embedding
    from ..multispeaker import SpeakerCheck, SpeakerCount
    from .service import GalleryService, Source

__all__ = ["check_counts_form", "diarize_one", "embed_and_count", "speaker_check"]

_lock = threading.Lock()
_models: dict[str, Any] = {}


def _diarizer() -> Diarizer:
    from ..diarize import DiarizeOptions, Diarizer

    with _lock:
        if "diarizer" not in _models:
            # one embedding thread per request: the pool already runs workers_n requests at once
            _models["diarizer"] = Diarizer(DiarizeOptions(workers=1))
        return _models["diarizer"]


def speaker_check() -> SpeakerCheck:
    """The process's multi-speaker check (its models load on first use)."""
    from ..multispeaker import SpeakerCheck

    with _lock:
        if "check" not in _models:
            _models["check"] = SpeakerCheck()
        return _models["check"]


def embed_and_count(service: GalleryService, source: Source, check: bool) -> tuple[Embedding, dict[str, Any]]:
    """identify's embedding of one upload and its ``multi_speaker`` and ``warnings`` fields:
    with ``check``, whether several voices talk in it (None when not checked; a check that
    cannot run leaves the clip unflagged); the embedding's own warnings (too_short...) too."""
    voices: SpeakerCount | None = None
    with service.spool.files([source]) as ups:
        up = ups[0]
        emb = service._embed(up)
        if check:
            try:
                voices = speaker_check()(up.path)
            except SpeakeridError:
                voices = None
    warnings = [_scrubbed(w, up.scrub()) for w in emb.warnings]
    if voices is not None and voices.multi_speaker:
        warnings.append(voices.warning())
    flag = None if voices is None or voices.speakers is None else voices.multi_speaker
    return emb, {"multi_speaker": flag, "warnings": warnings}


def _gallery(service: GalleryService, name: bool, diarizer: Diarizer, warnings: list[str]):
    """The snapshot to name speakers from, or None (anonymous labels, with a warning when
    naming was asked for but nobody is enrolled)."""
    if not name:
        return None
    ix = service.snapshot
    if ix is None or len(ix) == 0:
        warnings.append("no speaker is enrolled: speakers are unknown-N")
        return None
    try:
        return diarizer.open_index(ix)
    except SpeakeridError as exc:
        raise api_error(exc, service._hide) from None


def _run(service: GalleryService, up: Upload, name: bool, counts: tuple[int | None, int | None, int | None]):
    from ..diarize.pipeline import MIN_AUDIO_S

    num, lo, hi = counts
    duration = check_clip(up, min_speech_s=MIN_AUDIO_S, max_audio_s=service.options.max_audio_s)
    d = _diarizer()
    warnings: list[str] = []
    gallery = _gallery(service, name, d, warnings)
    try:
        tl = d(up.path, index=gallery, num_speakers=num, min_speakers=lo, max_speakers=hi)
    except SpeakeridError as exc:
        raise api_error(exc, {**up.scrub(), **service._hide}) from None
    return tl, duration, warnings, gallery


def diarize_one(service: GalleryService, source: Source, name: bool,
                counts: tuple[int | None, int | None, int | None]) -> dict[str, Any]:
    """Who spoke when in one upload: the Diarization body."""
    from ..diarize.pipeline import MODEL

    check_counts_form(*counts)
    with service.spool.files([source]) as ups:
        up = ups[0]
        tl, duration, warnings, gallery = _run(service, up, name, counts)
    speakers = []
    for label in tl.labels():
        first = next(t for t in tl.turns if t.speaker == label)
        speakers.append({"speaker": label, "known": first.known, "score": first.to_dict()["score"],
                         "speech_s": round(tl.speech_s(label), 3)})
    scrub = up.scrub()
    notes = [*warnings, *(_scrubbed(w, scrub) for w in tl.warnings)]
    return {"duration_s": round(tl.duration_s or duration, 3), "turns": [t.to_dict() for t in tl.turns],
            "speakers": speakers, "named": gallery is not None, "model": MODEL,
            "index_version": gallery.version if gallery is not None else None,
            "warnings": notes}


def _scrubbed(text: str, scrub: dict[str, str]) -> str:
    for k, v in scrub.items():
        text = text.replace(k, v)
    return text


def check_counts_form(num: int | None, lo: int | None, hi: int | None) -> None:
    """Speaker counts of a request, refused (VALIDATION_ERROR) as the library would."""
    from ..diarize.options import check_speaker_counts

    try:
        check_speaker_counts(num, lo, hi)
    except SpeakeridError as exc:
        raise ApiError("VALIDATION_ERROR", str(exc)) from None
