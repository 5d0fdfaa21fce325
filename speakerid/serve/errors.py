"""One error body for every failure, ``{"error": {"code": ..., "message": ...}}``, with stable codes.

:func:`api_error` maps the library's typed errors (:mod:`speakerid.errors`) to a code and an
HTTP status; anything unexpected becomes 500 INTERNAL_ERROR with a message that names a
request id and nothing else (the traceback goes to the server's log, never to the client).
"""

from __future__ import annotations

from collections.abc import Mapping

from .. import errors as lib

__all__ = ["CODES", "ApiError", "api_error", "error_body", "failure_code"]

#: Every code the service answers with, and its HTTP status.
CODES: Mapping[str, int] = {
    "AUDIO_TOO_SHORT": 422,
    "NO_SPEECH": 422,
    "AUDIO_DECODE_ERROR": 422,
    "AUDIO_TOO_LONG": 413,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "VALIDATION_ERROR": 422,
    "BAD_REQUEST": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "UNKNOWN_SPEAKER": 404,
    "METHOD_NOT_ALLOWED": 405,
    "EMPTY_GALLERY": 409,
    "MODEL_MISMATCH": 409,
    "ENROLMENT_FAILED": 422,
    "INDEX_BUSY": 503,
    "SERVER_BUSY": 503,
    "SHUTTING_DOWN": 503,
    "INDEX_CORRUPT": 500,
    "MODEL_ERROR": 500,
    "INTERNAL_ERROR": 500,
}

#: Library error -> code, most specific first (TooShortError is a NoSpeechError).
_LIBRARY: tuple[tuple[type[BaseException], str], ...] = (
    (lib.TooShortError, "AUDIO_TOO_SHORT"),
    (lib.NoSpeechError, "NO_SPEECH"),
    (lib.AudioError, "AUDIO_DECODE_ERROR"),  # decode, empty, invalid samples, not found
    (lib.SpeakerNotFoundError, "UNKNOWN_SPEAKER"),
    (lib.EmptyGalleryError, "EMPTY_GALLERY"),
    (lib.IndexLockedError, "INDEX_BUSY"),
    (lib.IndexNotFoundError, "EMPTY_GALLERY"),
    (lib.IndexCorruptError, "INDEX_CORRUPT"),
    (lib.ModelMismatchError, "MODEL_MISMATCH"),
    (lib.ModelError, "MODEL_ERROR"),
    (lib.ConfigError, "VALIDATION_ERROR"),
)
#: Codes whose library message is safe and useful to pass on (the others may name server paths).
_PASS_MESSAGE = {"AUDIO_TOO_SHORT", "NO_SPEECH", "AUDIO_DECODE_ERROR", "UNKNOWN_SPEAKER", "EMPTY_GALLERY",
                 "INDEX_BUSY", "VALIDATION_ERROR", "MODEL_MISMATCH"}


class ApiError(lib.SpeakeridError):
    """A failure the service reports with ``code`` (a key of :data:`CODES`) and its status.

    ``retry_after_s`` becomes a Retry-After header (503s)."""

    def __init__(self, code: str, message: str, *, retry_after_s: int | None = None) -> None:
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code, self.message, self.retry_after_s = code, message, retry_after_s

    @property
    def status(self) -> int:
        return CODES[self.code]

    def headers(self) -> dict[str, str]:
        out = {}
        if self.retry_after_s is not None:
            out["Retry-After"] = str(max(1, int(self.retry_after_s)))
        if self.code == "UNAUTHORIZED":
            out["WWW-Authenticate"] = 'Bearer realm="speakerid"'
        return out


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def _scrub(message: str, replacements: Mapping[str, str]) -> str:
    for secret, shown in replacements.items():
        message = message.replace(secret, shown)
    return " ".join(message.split())


def api_error(exc: BaseException, replacements: Mapping[str, str] | None = None,
              request_id: str = "") -> ApiError:
    """The ApiError for ``exc``; ``replacements`` maps server-side paths (temporary files) in
    library messages to what the client knows them as ("clip 1 (a.wav)")."""
    if isinstance(exc, ApiError):
        return exc
    for cls, code in _LIBRARY:
        if isinstance(exc, cls):
            if code in _PASS_MESSAGE:
                message = _scrub(str(exc), replacements or {})
            else:
                message = f"{code.lower().replace('_', ' ')} (see the server log, request {request_id})"
            retry = 1 if code == "INDEX_BUSY" else None
            return ApiError(code, message or code, retry_after_s=retry)
    return ApiError("INTERNAL_ERROR", f"internal error (see the server log, request {request_id})")


def failure_code(failure: str) -> str:
    """The code of an indexer failure string ``"ErrorType: message"`` (BuildReport.failures)."""
    name = failure.split(":", 1)[0].strip()
    cls = getattr(lib, name, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        for klass, code in _LIBRARY:
            if issubclass(cls, klass):
                return code
    return "AUDIO_DECODE_ERROR" if name.startswith("Audio") else "INTERNAL_ERROR"


def failure_message(failure: str, replacements: Mapping[str, str]) -> str:
    """The message of an indexer failure string, its type prefix dropped and paths scrubbed."""
    _, _, rest = failure.partition(":")
    return _scrub(rest.strip() or failure, replacements)
