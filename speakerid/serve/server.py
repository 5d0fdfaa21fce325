"""Running the service under uvicorn: one process, ``workers_n`` embedding threads, one writer.

One process on purpose: the writer and the read snapshot live in it, so a write is visible to
every following read. Shutdown (SIGTERM, Ctrl-C) stops accepting connections, answers what is
still queued with 503 SHUTTING_DOWN, lets running work finish (an enrolment in flight is saved)
for up to ``shutdown_timeout_s``, then exits.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from pathlib import Path

from .auth import KeyStore, default_keys_file
from .options import ServeOptions

__all__ = ["READY_PREFIX", "build", "serve"]

log = logging.getLogger("speakerid.serve")
#: The line logged once the server listens: "serving on http://HOST:PORT".
READY_PREFIX = "serving on "


def _audit_file(path: Path) -> None:
    """Append the audit lines to ``path`` too (created 0600)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600))
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    audit = logging.getLogger("speakerid.audit")
    audit.addHandler(handler)
    audit.setLevel(logging.INFO)


def build(options: ServeOptions):
    """(FastAPI app, service, key store) for ``options``; raises the library's typed errors
    (model mismatch, unreadable keys file...) before anything listens."""
    from .app import create_app
    from .service import GalleryService

    keys = None
    if not options.no_auth:
        keys = KeyStore(options.keys_file or default_keys_file())
        if not keys.entries():
            log.warning("no API keys in %s: every request will be refused until one is added with "
                        "`speakerid serve keys add NAME --scope read|enroll|admin`", keys.path)
    if options.audit_log is not None:
        _audit_file(options.audit_log)
    service = GalleryService(options)
    return create_app(service, keys), service, keys


def serve(options: ServeOptions) -> None:
    """Serve until SIGTERM or Ctrl-C."""
    import uvicorn

    app, service, _ = build(options)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            for server in getattr(self, "servers", []):
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    shown = f"[{host}]" if ":" in host else host
                    scheme = "https" if options.ssl_certfile else "http"
                    log.info("%s%s://%s:%d (%d workers, auth %s)", READY_PREFIX, scheme, shown, port,
                             options.workers_n, "off" if options.no_auth else "on")

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            service.refuse_new()  # what waits is refused with 503; what runs finishes
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app, host=options.host, port=options.port, log_level="warning", access_log=False,
        timeout_graceful_shutdown=int(max(1, options.shutdown_timeout_s)), server_header=False,
        lifespan="on", ssl_certfile=options.ssl_certfile and str(options.ssl_certfile),
        ssl_keyfile=options.ssl_keyfile and str(options.ssl_keyfile),
    )
    server = Server(config)
    # uvicorn re-raises SIGTERM once its graceful shutdown is done, which would kill the process
    # with the signal: a shutdown that finished is a success (exit 0). Before uvicorn handles the
    # signal itself, it still ends the process at once (143, as the default action would).
    previous = signal.signal(signal.SIGTERM, lambda s, f: None if server.should_exit else sys.exit(143))
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits when it cannot listen (address in use...)
        if exc.code not in (0, None, 143):
            from ..errors import SpeakeridError

            raise SpeakeridError(f"could not serve on {options.host}:{options.port} (see the lines above)") from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        service.close()  # idempotent: the lifespan has normally done it already
