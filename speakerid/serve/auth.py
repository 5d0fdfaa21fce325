"""API keys: created by ``speakerid serve keys add``, stored as hashes, checked in constant time.

A key is ``sid_`` + 43 characters of base64url: 32 random bytes from :mod:`secrets`. The keys
file (JSON, mode 0600, written atomically) holds each key's name, scope, creation time and the
sha256 of the key, never the key itself: it is shown once, when created.

Why sha256 and not a slow KDF (bcrypt, scrypt, argon2)? A slow KDF makes guessing *weak*
secrets from a stolen hash expensive. These keys carry 256 bits of randomness: no amount of
guessing finds one from its sha256, so slowness would buy nothing, while it would cost
tens of milliseconds of CPU on every request (and make the server easy to overload with
garbage keys). The comparison itself uses :func:`hmac.compare_digest` against every stored
hash, so neither its time nor its early exit tells which key came close.

Scopes are nested: ``read`` (verify, identify, list and look up speakers, info) is part of
``enroll`` (adds enrolments), which is part of ``admin`` (deletes speakers).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from .._io import write_json
from ..errors import ConfigError

__all__ = ["SCOPES", "KeyStore", "Principal", "default_keys_file", "scope_allows"]

Scope = Literal["read", "enroll", "admin"]
SCOPES: tuple[str, ...] = ("read", "enroll", "admin")
KEY_PREFIX = "sid_"
#: Longer bearer tokens are refused without hashing them.
MAX_TOKEN_CHARS = 256
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FORMAT_VERSION = 1


def scope_allows(have: str, need: str) -> bool:
    """Whether a key of scope ``have`` may call an endpoint needing ``need``."""
    return SCOPES.index(have) >= SCOPES.index(need)


def default_keys_file() -> Path:
    """``$XDG_CONFIG_HOME/speakerid/serve-keys.json`` (``~/.config`` when unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "speakerid" / "serve-keys.json"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name and scope (``anonymous``/admin under ``--no-auth``)."""

    name: str
    scope: str


@dataclass(frozen=True)
class _Entry:
    name: str
    scope: str
    sha256: str
    created_at: str


class KeyStore:
    """The keys file. The server re-reads it when it changes, so ``keys add``/``keys remove``
    take effect without a restart."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._entries: tuple[_Entry, ...] = ()
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------

    def _load(self) -> tuple[_Entry, ...]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._entries = None, ()
            return ()
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return self._entries
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise ConfigError(f"{self.path} is readable or writable by others (mode "
                              f"{stat.S_IMODE(st.st_mode):o}); run chmod 600 on it")
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            entries = tuple(_Entry(k["name"], k["scope"], k["sha256"], k["created_at"]) for k in data["keys"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path}: not a speakerid keys file ({type(exc).__name__}: {exc})") from None
        for e in entries:
            if e.scope not in SCOPES or not re.fullmatch(r"[0-9a-f]{64}", e.sha256):
                raise ConfigError(f"{self.path}: key {e.name!r} has a bad scope or hash")
        self._stamp, self._entries = stamp, entries
        return entries

    def entries(self) -> tuple[_Entry, ...]:
        with self._lock:
            return self._load()

    def authenticate(self, token: str) -> Principal | None:
        """The key's principal, or None for an unknown key. Every stored hash is compared."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = _digest(token)
        found: _Entry | None = None
        for e in self.entries():
            if hmac.compare_digest(digest, e.sha256):
                found = e
        return None if found is None else Principal(found.name, found.scope)

    # -- writing (the CLI) -----------------------------------------------------------------

    def _save(self, entries: tuple[_Entry, ...]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_json(self.path, {"format_version": FORMAT_VERSION,
                               "keys": [e.__dict__ for e in entries]}, mode=0o600)
        os.chmod(self.path, 0o600)

    def add(self, name: str, scope: str) -> str:
        """Create a key; returns it (the only time it is ever seen in clear)."""
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(f"a key name is 1-64 letters, digits, '.', '_' or '-', got {name!r}")
        if scope not in SCOPES:
            raise ConfigError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        with self._lock:
            entries = self._load()
            if any(e.name == name for e in entries):
                raise ConfigError(f"a key named {name!r} already exists in {self.path} (remove it first)")
            token = KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self._save((*entries, _Entry(name, scope, _digest(token), now)))
            return token

    def remove(self, name: str) -> None:
        with self._lock:
            entries = self._load()
            if not any(e.name == name for e in entries):
                raise ConfigError(f"no key named {name!r} in {self.path}")
            self._save(tuple(e for e in entries if e.name != name))
