"""The routes: FastAPI over a :class:`GalleryService`. Every body is JSON; every error is
``{"error": {"code", "message"}}`` (see :mod:`speakerid.serve.errors`).

No ``from __future__ import annotations`` here: FastAPI reads the parameter annotations, and
the limits in some of them (``Name``, ``k``) are made from the options when the routes are."""

import asyncio
import contextlib
import logging
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, Request, Security, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import SpeakeridError
from . import schemas as S
from .auth import KeyStore, Principal, scope_allows
from .errors import ApiError, api_error, error_body
from .middleware import Gatekeeper
from .service import GalleryService, check_name

__all__ = ["create_app"]

log = logging.getLogger("speakerid.serve")

_HTTP_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
               405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE",
               422: "VALIDATION_ERROR", 503: "SERVER_BUSY"}
_DESCRIPTIONS = {400: "Bad request", 401: "No or invalid API key", 403: "The key's scope does not allow this",
                 404: "Unknown speaker or path", 409: "No speaker enrolled yet, or another model's index",
                 413: "Upload or audio over the limits", 415: "Not multipart/form-data",
                 422: "Unusable audio or invalid parameters", 500: "Server error (details in the server log)",
                 503: "Busy or shutting down: retry after Retry-After seconds"}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for s in (400, 401, *statuses, 500, 503):
        out[s] = {"model": S.ErrorBody, "description": _DESCRIPTIONS[s]}
        if s == 503:
            out[s]["headers"] = _RETRY_AFTER
    return out


def _json_error(err: ApiError, request: Request) -> JSONResponse:
    return JSONResponse(error_body(err.code, err.message), status_code=err.status, headers=err.headers())


def _request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ())[1:]) or "request"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_handlers(app: FastAPI) -> None:
    """Every failure, FastAPI's own included, answers with the one error body."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return _json_error(exc, request)

    @app.exception_handler(SpeakeridError)
    async def _lib(request: Request, exc: SpeakeridError) -> JSONResponse:
        err = api_error(exc, request_id=_request_id(request))
        if err.status >= 500:
            log.error("request %s: %s: %s", _request_id(request), type(exc).__name__, exc)
        return _json_error(err, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _json_error(ApiError("VALIDATION_ERROR", _validation_message(exc)), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "INTERNAL_ERROR" if exc.status_code >= 500 else "BAD_REQUEST")
        message = exc.detail if isinstance(exc.detail, str) else code.lower().replace("_", " ")
        return _json_error(ApiError(code, message), request)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("request %s failed", _request_id(request), exc_info=exc)
        return _json_error(ApiError("INTERNAL_ERROR", f"internal error (request {_request_id(request)})"), request)


def _scoped(need: str):
    bearer = HTTPBearer(auto_error=False, description="An API key: `speakerid serve keys add NAME --scope ...`")

    async def check(request: Request, _key: Any = Security(bearer)) -> Principal:  # async: no thread hop
        who: Principal = request.state.principal
        if not scope_allows(who.scope, need):
            raise ApiError("FORBIDDEN", f"this needs a key of scope {need!r}; key {who.name!r} has scope {who.scope!r}")
        return who

    return Depends(check)


_READ, _ENROLL, _ADMIN = _scoped("read"), _scoped("enroll"), _scoped("admin")
_THRESHOLD = Annotated[float | None, Form(ge=-1.0, le=1.0, description="Cosine threshold (default: calibrated).")]


def _audio_routes(app: FastAPI, service: GalleryService) -> None:
    """The hot paths return their JSON directly: the response model documents them (and the
    schemathesis tests hold them to it) without a pydantic pass over every answer."""
    o = service.options

    @app.post("/v1/verify", response_model=S.Verification, responses=_errors(403, 413, 415, 422), tags=["audio"])
    async def verify(a: UploadFile = File(...), b: UploadFile = File(...), threshold: _THRESHOLD = None,
                     who: Principal = _READ) -> JSONResponse:
        """Are the two clips the same speaker? The cosine score against the model's threshold."""
        ea, eb = await asyncio.gather(service.read(service.embed_one, (a.filename, a.file), 0),
                                      service.read(service.embed_one, (b.filename, b.file), 1))
        return JSONResponse(service.verdict(ea[0], eb[0], threshold))

    @app.post("/v1/identify", response_model=S.Identification, responses=_errors(403, 409, 413, 415, 422),
              tags=["audio"])
    async def identify(clip: UploadFile = File(...), k: int = Form(5, ge=1, le=o.max_k_n),
                       threshold: _THRESHOLD = None,
                       check_speakers: bool = Form(True, description="Flag a clip in which several people "
                                                   "talk (multi_speaker); false skips the check (faster)."),
                       score_norm: Literal["none", "asnorm"] | None = Form(
                           None, description="Score normalisation: none (cosine) or asnorm (AS-norm against the "
                           "other enrolled speakers; the threshold then applies to norm_score). Default: the "
                           "library's (speakerid.identify.DEFAULT_SCORE_NORM)."),
                       who: Principal = _READ) -> JSONResponse:
        """Who is speaking? The k best enrolled speakers, and the accepted one or unknown."""
        return JSONResponse(await service.read(service.identify_one, (clip.filename, clip.file), k, threshold,
                                               check_speakers, score_norm))

    _Count = Annotated[int | None, Form(ge=1, le=64)]

    @app.post("/v1/diarize", response_model=S.Diarization, responses=_errors(403, 409, 413, 415, 422),
              tags=["audio"])
    async def diarize(audio: UploadFile = File(...), num_speakers: _Count = None, min_speakers: _Count = None,
                      max_speakers: _Count = None,
                      name_speakers: bool = Form(True, description="Name the speakers from the service's "
                                                 "index (else speaker-N)."),
                      who: Principal = _READ) -> JSONResponse:
        """Who spoke when? Turns (overlap kept), named from the index where a voice matches an
        enrolled speaker, else unknown-N."""
        from .diarize import check_counts_form, diarize_one

        check_counts_form(num_speakers, min_speakers, max_speakers)
        return JSONResponse(await service.read(diarize_one, service, (audio.filename, audio.file), name_speakers,
                                               (num_speakers, min_speakers, max_speakers)))


def _speaker_routes(app: FastAPI, service: GalleryService) -> None:
    o = service.options
    Name = Annotated[str, PathParam(min_length=1, max_length=o.max_name_chars_n, description="Speaker name (data).")]

    @app.post("/v1/speakers/{name}/enrollments", response_model=S.Enrolment,
              responses=_errors(403, 409, 413, 415, 422), tags=["speakers"])
    async def enrol(request: Request, name: Name, clips: list[UploadFile] = File(...),
                    who: Principal = _ENROLL) -> dict:
        """Enrol clips of a speaker (created if new); feedback per clip. Saved before the answer."""
        name = check_name(name, o.max_name_chars_n)
        if len(clips) > o.max_clips_n:
            raise ApiError("VALIDATION_ERROR", f"{len(clips)} clips in one request; the limit is {o.max_clips_n}")
        sources = [(c.filename, c.file) for c in clips]
        return await service.write(service.enroll, name, sources, who, _request_id(request))

    @app.get("/v1/speakers", response_model=S.SpeakerList, responses=_errors(403), tags=["speakers"])
    async def speakers(who: Principal = _READ) -> dict:
        """Every enrolled speaker with its clip count and speech seconds."""
        items = await asyncio.to_thread(service.speakers)  # counted once per version, off the loop
        return {"count": len(items), "speakers": items}

    @app.get("/v1/speakers/{name}", response_model=S.Speaker, responses=_errors(403, 404, 422), tags=["speakers"])
    async def speaker(name: Name, who: Principal = _READ) -> dict:
        """One enrolled speaker."""
        return await asyncio.to_thread(service.speaker, check_name(name, o.max_name_chars_n))

    @app.delete("/v1/speakers/{name}", response_model=S.Deletion, responses=_errors(403, 404, 422),
                tags=["speakers"])
    async def delete(request: Request, name: Name, who: Principal = _ADMIN) -> dict:
        """Remove a speaker and every clip of it (the threshold is recalibrated once 1 % of the speakers changed)."""
        name = check_name(name, o.max_name_chars_n)
        return await service.write(service.delete, name, who, _request_id(request))


def _service_routes(app: FastAPI, service: GalleryService) -> None:
    @app.get("/v1/health", response_model=S.Health, responses={503: _errors()[503]}, tags=["service"])
    async def health() -> dict:
        """Liveness, without a key (503 SHUTTING_DOWN once shutdown has begun)."""
        if service.embed_gate.closed:
            raise ApiError("SHUTTING_DOWN", "the server is shutting down", retry_after_s=1)
        snap = service.snapshot
        return {"status": "ok", "index_version": snap.version if snap is not None else 0}

    @app.get("/v1/info", response_model=S.Info, responses=_errors(403), tags=["service"])
    async def info(who: Principal = _READ) -> dict:
        """Model, dimension, gallery sizes, threshold, limits and version."""
        return await asyncio.to_thread(service.info)


def create_app(service: GalleryService, keys: KeyStore | None) -> FastAPI:
    """The application; ``keys`` None serves without authentication (``--no-auth``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.refuse_new()
        await asyncio.get_running_loop().run_in_executor(None, service.close)  # work in flight finishes

    app = FastAPI(title="speakerid", version=__version__, lifespan=lifespan,
                  description="Speaker enrolment, verification and open-set identification over a FAISS gallery.")
    app.router.redirect_slashes = False  # "/v1/speakers/" is a 404 in the error body, not a redirect
    app.add_middleware(Gatekeeper, keys=keys, max_body_bytes=service.options.max_upload_bytes)
    install_handlers(app)
    _audio_routes(app, service)
    _speaker_routes(app, service)
    _service_routes(app, service)
    return app
