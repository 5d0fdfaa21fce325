"""One enrolment request, run in the writer thread: check each clip, add the good ones, say why
each other one was left out.

Feedback codes per clip (``feedback[i].code``): AUDIO_OK (added), ALREADY_ENROLLED (the same
content is already enrolled under this name: a retried request adds nothing twice),
DUPLICATE_IN_REQUEST (the same content twice in one request: added once),
ENROLLED_AS_OTHER_SPEAKER (the content is enrolled under another name: not added), and the
error codes AUDIO_TOO_SHORT, NO_SPEECH, AUDIO_DECODE_ERROR, AUDIO_TOO_LONG. A request none of
whose clips is AUDIO_OK or ALREADY_ENROLLED fails as a whole (422, or 413 when every clip was
too long), with the code its clips share, else ENROLMENT_FAILED.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..indexer import Item
from .errors import CODES, ApiError, failure_code, failure_message
from .uploads import Upload, check_clip

if TYPE_CHECKING:
    from .service import GalleryService

__all__ = ["FEEDBACK_CODES", "run_enrolment"]

FEEDBACK_CODES = ("AUDIO_OK", "ALREADY_ENROLLED", "DUPLICATE_IN_REQUEST", "ENROLLED_AS_OTHER_SPEAKER",
                  "AUDIO_TOO_SHORT", "NO_SPEECH", "AUDIO_DECODE_ERROR", "AUDIO_TOO_LONG")
_OK = ("AUDIO_OK", "ALREADY_ENROLLED", "DUPLICATE_IN_REQUEST")


def _feedback(up: Upload, code: str, message: str, duration_s: float | None = None) -> dict[str, Any]:
    return {"clip": up.index, "filename": up.filename, "accepted": code == "AUDIO_OK", "code": code,
            "message": message, "duration_s": None if duration_s is None else round(duration_s, 3),
            "speech_s": None}


def _precheck(svc: GalleryService, name: str, ups: list[Upload]) -> tuple[list[dict], list[Item]]:
    """Feedback for the clips refused before the model runs; the items left to add."""
    owner = svc.stats().owner
    fb: list[dict] = []
    items: list[Item] = []
    first_of: dict[str, Upload] = {}
    for up in ups:
        try:
            dur = check_clip(up, min_speech_s=svc.min_speech_s, max_audio_s=svc.options.max_audio_s)
        except ApiError as exc:
            fb.append(_feedback(up, exc.code, exc.message))
            continue
        if up.sha256 in first_of:
            fb.append(_feedback(up, "DUPLICATE_IN_REQUEST", f"{up.label} has the same content as "
                                f"{first_of[up.sha256].label}; it counts once", dur))
            continue
        first_of[up.sha256] = up
        known = owner.get(up.sha256)
        if known is not None and known[0] == name:
            fb.append(_feedback(up, "ALREADY_ENROLLED", f"{up.label} is already enrolled for this speaker", dur))
        elif known is not None:
            fb.append(_feedback(up, "ENROLLED_AS_OTHER_SPEAKER",
                                f"{up.label} is already enrolled as speaker {known[0]!r}; not added", dur))
        else:
            fb.append(_feedback(up, "AUDIO_OK", "", dur))
            items.append(Item(up.path, name))
    return fb, items


def _settle(svc: GalleryService, name: str, ups: list[Upload], fb: list[dict], failures: dict[str, str]) -> None:
    """Per-clip outcome of the clips given to the indexer, from its failures and the new snapshot."""
    owner = svc.stats().owner
    for up, f in zip(ups, fb):
        if f["code"] != "AUDIO_OK":
            continue
        failure = failures.get(str(up.path))
        if failure is not None:
            f.update(accepted=False, code=failure_code(failure), message=failure_message(failure, up.scrub()))
            continue
        known = owner.get(up.sha256)
        if known is None or known[0] != name:  # another process enrolled it meanwhile
            f.update(accepted=False, code="ENROLLED_AS_OTHER_SPEAKER",
                     message=f"{up.label} is enrolled as speaker {known[0] if known else '?'!r}; not added")
            continue
        f["speech_s"] = round(known[1], 3)
    first = {}
    for up, f in zip(ups, fb):
        if f["code"] == "DUPLICATE_IN_REQUEST" and first.get(up.sha256, {}).get("code", "AUDIO_OK") not in _OK:
            f.update(code=first[up.sha256]["code"], message=f"{up.label}: {first[up.sha256]['message']}")
        first.setdefault(up.sha256, f)


def _refuse(fb: list[dict]) -> ApiError:
    codes = {f["code"] for f in fb}
    code = codes.pop() if len(codes) == 1 else "ENROLMENT_FAILED"
    if code not in CODES:  # ENROLLED_AS_OTHER_SPEAKER is feedback, not an error code
        code = "ENROLMENT_FAILED"
    lines = "; ".join(f["message"] or f["code"] for f in fb)
    return ApiError(code, f"no clip could be enrolled: {lines}")


def run_enrolment(svc: GalleryService, name: str, ups: list[Upload]) -> dict[str, Any]:
    fb, items = _precheck(svc, name, ups)
    if items:
        report = svc.add_items(items)
        _settle(svc, name, ups, fb, dict(report.failures))
    if not any(f["code"] in _OK for f in fb):
        raise _refuse(fb)
    st = svc.stats()
    snap = svc.snapshot
    accepted = [up.sha256 for up, f in zip(ups, fb) if f["code"] == "AUDIO_OK"]
    return {
        "speaker": name,
        "clips_accepted": len(accepted),
        "clips_rejected": sum(f["code"] not in _OK for f in fb),
        "speech_s": round(sum(f["speech_s"] or 0.0 for f in fb if f["code"] == "AUDIO_OK"), 3),
        "speaker_clips": st.clips.get(name, 0),
        "speaker_speech_s": round(st.speech_s.get(name, 0.0), 3),
        "index_version": snap.version if snap is not None else 0,
        "threshold": snap.threshold if snap is not None else None,
        "feedback": fb,
        "_accepted_sha256": accepted,
    }

