"""The service's options: one frozen dataclass, every limit carrying its unit in its name."""

from __future__ import annotations

import ipaddress
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = ["ServeOptions", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or the name ``localhost``.

    Other names are not resolved: a name that resolves elsewhere would expose the service."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _positive(name: str, value: object, *, integer: bool, allow_zero: bool = False) -> None:
    ok_type = isinstance(value, numbers.Integral) if integer else isinstance(value, numbers.Real)
    if isinstance(value, bool) or not ok_type or not math.isfinite(float(value)):  # type: ignore[arg-type]
        raise ConfigError(f"{name} must be a {'whole' if integer else 'finite'} number, got {value!r}")
    if float(value) < 0 or (float(value) == 0 and not allow_zero):  # type: ignore[arg-type]
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else 'positive'}, got {value!r}")


@dataclass(frozen=True)
class ServeOptions:
    """How ``speakerid serve`` runs: where, with how many threads, and its limits.

    Admission: a request that needs the model waits for one of ``workers_n`` embedding threads;
    at most ``max_queue_n`` wait, each at most ``queue_timeout_s``; beyond either, 503
    SERVER_BUSY with Retry-After. Writes (enrolment, delete) go one at a time through the
    index's writer: at most ``write_queue_n`` wait, each at most ``write_timeout_s`` (503
    INDEX_BUSY). Another process holding the index's writer lock is waited for
    ``lock_wait_s`` seconds, then 503 INDEX_BUSY too.
    """

    index_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    #: Embedding threads (each runs ONNX Runtime on one core). Default: up to 2 cores.
    workers_n: int = min(2, os.cpu_count() or 1)
    #: Model of a new index (an existing index always uses its own).
    model: str | None = None
    #: The API keys file (hashes only). None: the default under the user's config dir.
    keys_file: Path | None = None
    #: Serve without API keys: refused unless ``host`` is a loopback address.
    no_auth: bool = False
    #: Largest request body (all uploads of a request together, multipart framing included).
    max_upload_bytes: int = 25 * 1024 * 1024
    #: Longest clip accepted (longer ones: 413 AUDIO_TOO_LONG; decoding stops past it anyway).
    max_audio_s: float = 300.0
    #: Clips in one enrolment request.
    max_clips_n: int = 20
    #: Identities returned by identify at most (the ``k`` a request may ask for).
    max_k_n: int = 100
    #: Characters in a speaker name.
    max_name_chars_n: int = 128
    max_queue_n: int = 64
    queue_timeout_s: float = 10.0
    write_queue_n: int = 32
    write_timeout_s: float = 60.0
    lock_wait_s: float = 5.0
    #: In-flight requests get this long to finish at shutdown (SIGTERM, Ctrl-C).
    shutdown_timeout_s: float = 30.0
    #: JSON lines of every enrolment and deletion are also appended here (mode 0600).
    audit_log: Path | None = None
    #: TLS, handed to uvicorn (both or neither).
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.index_dir, Path):
            object.__setattr__(self, "index_dir", Path(self.index_dir))
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"host must be a non-empty string, got {self.host!r}")
        _positive("port", self.port, integer=True, allow_zero=True)
        if self.port > 65535:
            raise ConfigError(f"port must be at most 65535, got {self.port}")
        for name in ("workers_n", "max_upload_bytes", "max_clips_n", "max_k_n", "max_name_chars_n"):
            _positive(name, getattr(self, name), integer=True)
        for name in ("max_queue_n", "write_queue_n"):
            _positive(name, getattr(self, name), integer=True, allow_zero=True)
        _positive("max_audio_s", self.max_audio_s, integer=False)
        for name in ("queue_timeout_s", "write_timeout_s", "lock_wait_s", "shutdown_timeout_s"):
            _positive(name, getattr(self, name), integer=False, allow_zero=True)
        if self.no_auth and not is_loopback(self.host):
            raise ConfigError(
                f"--no-auth is only allowed on a loopback host (127.0.0.1, ::1), not {self.host!r}: "
                "create an API key with `speakerid serve keys add NAME --scope read|enroll|admin`"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError("TLS needs both a certificate file and a key file")

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)
