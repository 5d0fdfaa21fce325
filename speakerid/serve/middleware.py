"""The gatekeeper: a plain ASGI middleware that decides before any body is read.

For every request it sets a request id (``X-Request-ID``). For ``/v1/*`` (but health) it
authenticates the bearer key and refuses (401) a request without a valid one, unless the server
runs with ``--no-auth``; the principal goes to ``request.state.principal`` for the routes' scope
checks. Upload endpoints must be ``multipart/form-data`` (else 415). A declared Content-Length
over the limit is refused at once (413) without reading a byte of it, and a body sent without
one (chunked) is counted as it arrives and cut off at the limit with the same 413.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..errors import SpeakeridError
from .auth import KeyStore, Principal
from .errors import ApiError, error_body

__all__ = ["Gatekeeper", "UPLOAD_PATHS"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("speakerid.serve")
audit = logging.getLogger("speakerid.audit")

#: POST endpoints that take uploads.
UPLOAD_PATHS = re.compile(r"^/v1/(verify|identify|speakers/[^/]+/enrollments)$")
_OPEN = ("/v1/health",)
ANONYMOUS = Principal("anonymous", "admin")


class _TooLarge(Exception):
    pass


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


async def send_error(send: Send, err: ApiError, request_id: str) -> None:
    body = json.dumps(error_body(err.code, err.message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"x-request-id", request_id.encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers().items()]
    if err.code == "PAYLOAD_TOO_LARGE":
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Gatekeeper:
    def __init__(self, app: Callable, *, keys: KeyStore | None, max_body_bytes: int) -> None:
        self.app, self.keys, self.max_body_bytes = app, keys, max_body_bytes

    def _authenticate(self, scope: Scope) -> Principal:
        if self.keys is None:
            return ANONYMOUS
        value = _header(scope, b"authorization")
        if value is None:
            raise ApiError("UNAUTHORIZED", "an API key is required: send 'Authorization: Bearer <key>'")
        kind, _, token = value.partition(" ")
        who = self.keys.authenticate(token.strip()) if kind.lower() == "bearer" else None
        if who is None:
            client = scope.get("client") or ("?", 0)
            audit.warning(json.dumps({"event": "auth_failed", "path": scope.get("path", ""),
                                      "client": f"{client[0]}:{client[1]}"}))
            raise ApiError("UNAUTHORIZED", "the API key is not valid")
        return who

    def _check(self, scope: Scope) -> None:
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if path.startswith("/v1/") and path not in _OPEN:
            scope.setdefault("state", {})["principal"] = self._authenticate(scope)
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise ApiError("BAD_REQUEST", "Content-Length is not a number")
            if int(declared) > self.max_body_bytes:
                raise ApiError("PAYLOAD_TOO_LARGE", f"the request body ({int(declared)} bytes) is over the "
                                                    f"limit of {self.max_body_bytes} bytes")
        if method == "POST" and UPLOAD_PATHS.match(path):
            ctype = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
            if ctype != "multipart/form-data":
                raise ApiError("UNSUPPORTED_MEDIA_TYPE", f"send the audio as multipart/form-data, not "
                                                         f"{ctype or 'a body without a content type'}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        try:
            self._check(scope)
        except ApiError as err:
            await send_error(send, err, request_id)
            return
        except SpeakeridError:  # the keys file became unreadable: fail closed
            log.exception("cannot check the API key")
            await send_error(send, ApiError("INTERNAL_ERROR", f"internal error (request {request_id})"), request_id)
            return
        await self._forward(scope, receive, send, request_id)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        seen = 0
        state = {"too_large": False, "started": False}

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    state["too_large"] = True
                    raise _TooLarge()
            return message

        async def tagged(message: Message) -> None:
            if state["too_large"] and not state["started"]:  # whatever the app made of the cut body
                state["started"] = True
                await send_error(send, ApiError("PAYLOAD_TOO_LARGE", f"the request body is over the limit "
                                                f"of {self.max_body_bytes} bytes"), request_id)
                return
            if state["too_large"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, counted, tagged)
        except _TooLarge:
            if not state["started"]:
                await tagged({"type": "http.response.start"})
        except Exception:
            if state["too_large"]:
                if not state["started"]:
                    await tagged({"type": "http.response.start"})
                return
            raise
