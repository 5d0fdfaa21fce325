"""Response bodies, as pydantic models: they make the OpenAPI document (and so the schemathesis
tests) say exactly what each endpoint answers, errors included."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, Field

from .enrol import FEEDBACK_CODES
from .errors import CODES

ErrorCode = Enum("ErrorCode", {c: c for c in CODES}, type=str)  # type: ignore[misc]
FeedbackCode = Enum("FeedbackCode", {c: c for c in FEEDBACK_CODES}, type=str)  # type: ignore[misc]


class ErrorDetail(BaseModel):
    code: ErrorCode = Field(description="Stable machine-readable code.")
    message: str = Field(description="What went wrong, for people.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class Match(BaseModel):
    speaker: str
    score: float = Field(description="Cosine similarity under the scoring rule, in [-1, 1].")
    rank: int
    norm_score: float | None = Field(None, description="The AS-normalised score (when score_norm is asnorm).")


class Identification(BaseModel):
    speaker: str | None = Field(description="The accepted identity, or null for an unknown voice.")
    verdict: str = Field(description="The accepted identity or 'unknown'.")
    accepted: bool
    score: float | None
    threshold: float
    threshold_method: str = Field(description="How the threshold was chosen (calibration, argument...).")
    scoring: str
    score_norm: str = Field("none", description="Score normalisation applied: none or asnorm (the threshold "
                            "then applies to norm_score).")
    norm_score: float | None = None
    matches: list[Match]
    model: str
    duration_s: float
    speech_s: float
    index_version: int
    multi_speaker: bool | None = Field(None, description="Whether several people talk in the clip (the verdict "
                                       "then names at most one of them); null when not checked.")
    warnings: list[str] = Field(default_factory=list)


class Verification(BaseModel):
    score: float = Field(description="Cosine similarity of the two clips, in [-1, 1].")
    threshold: float
    threshold_method: str
    match: bool
    model: str
    duration_s: list[float]
    speech_s: list[float]


class ClipFeedback(BaseModel):
    clip: int = Field(description="0-based position of the upload in the request.")
    filename: str | None
    accepted: bool = Field(description="Whether this request added the clip.")
    code: FeedbackCode
    message: str
    duration_s: float | None
    speech_s: float | None


class Enrolment(BaseModel):
    speaker: str
    clips_accepted: int
    clips_rejected: int
    speech_s: float = Field(description="Speech seconds this request enrolled.")
    speaker_clips: int = Field(description="Clips the speaker now has.")
    speaker_speech_s: float
    index_version: int
    threshold: float | None
    feedback: list[ClipFeedback]


class SpeakerSummary(BaseModel):
    name: str
    clips: int
    speech_s: float


class SpeakerList(BaseModel):
    count: int
    speakers: list[SpeakerSummary]


class Speaker(SpeakerSummary):
    first_enrolled_at: str
    last_enrolled_at: str


class Deletion(BaseModel):
    name: str
    clips_removed: int
    speakers: int
    index_version: int


class Health(BaseModel):
    status: str
    index_version: int


class Limits(BaseModel):
    max_upload_bytes: int
    max_audio_s: float
    min_speech_s: float
    max_clips_n: int
    max_k_n: int
    max_name_chars_n: int


class Load(BaseModel):
    reads_running: int = Field(description="Requests embedding now (at most the workers).")
    reads_waiting: int
    writes_running: int = Field(description="Enrolments or deletions being written (0 or 1).")
    writes_waiting: int


class Info(BaseModel):
    service: str
    version: str
    model: str
    dim: int
    weights_sha256: str
    speakers: int
    clips: int
    index_version: int
    index_type: str | None
    bytes_on_disk: int
    threshold: float | None
    threshold_method: str | None
    verification_threshold: float
    workers: int
    auth: bool
    limits: Limits
    load: Load
    uptime_s: float


class DiarizedTurn(BaseModel):
    start_s: float
    end_s: float
    speaker: str = Field(description="An enrolled name when known, else unknown-N (speaker-N when not named).")
    known: bool
    score: float | None = Field(description="Cosine of the speaker's voice with the name given (with the best "
                                "enrolled speaker when unknown); null when not named.")


class DiarizedSpeaker(BaseModel):
    speaker: str
    known: bool
    score: float | None
    speech_s: float


class Diarization(BaseModel):
    duration_s: float
    turns: list[DiarizedTurn] = Field(description="Who spoke when, by start; overlapped speech keeps both speakers.")
    speakers: list[DiarizedSpeaker] = Field(description="In order of first speech.")
    named: bool = Field(description="Whether the speakers were named from the service's index.")
    model: str = Field(description="The encoder that told the voices apart (and names them).")
    index_version: int | None
    warnings: list[str]
