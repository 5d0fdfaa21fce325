"""Uploads become temporary files whose names the server chooses; no request value is ever a path.

Each upload is copied (in a worker thread, hashed on the way) to ``<spool>/<random hex>.upload``
in a private directory (mode 0700) made at start-up, decoded from there, and deleted when its
request is done. The client's file name is only ever shown back to it, as data. A spool
directory left behind by a server killed with -9 is removed by the next server that starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .. import audio
from ..config import VadOptions
from ..errors import SpeakeridError
from .errors import ApiError, api_error

__all__ = ["Spool", "Upload"]

log = logging.getLogger("speakerid.serve")

_PREFIX = "speakerid-serve-"
_PID_FILE = "pid"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Upload:
    """One uploaded clip, spooled: ``label`` is how messages name it ("clip 2 (b.wav)")."""

    index: int
    filename: str | None
    path: Path
    size_bytes: int
    sha256: str

    @property
    def label(self) -> str:
        shown = (self.filename or "")[:80]
        return f"clip {self.index + 1}" + (f" ({shown})" if shown else "")

    def scrub(self) -> dict[str, str]:
        """Replacements that hide the server's path in library messages."""
        return {str(self.path): self.label, self.path.name: self.label}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Spool:
    """The server's private directory of uploads in flight."""

    def __init__(self, parent: Path | None = None) -> None:
        root = Path(parent or tempfile.gettempdir())
        self._collect_orphans(root)
        self.dir = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=root))
        os.chmod(self.dir, 0o700)
        (self.dir / _PID_FILE).write_text(f"{os.getpid()}\n")

    @staticmethod
    def _collect_orphans(root: Path) -> None:
        """Remove the spools of dead servers of this user (kill -9 leaves them behind)."""
        for d in root.glob(f"{_PREFIX}*"):
            try:
                if d.is_symlink() or not d.is_dir() or d.stat().st_uid != os.getuid():
                    continue
                pid = int((d / _PID_FILE).read_text().strip())
            except (OSError, ValueError):
                continue
            if not _pid_alive(pid):
                shutil.rmtree(d, ignore_errors=True)
                log.info("removed the upload spool %s of a server that is gone (pid %d)", d, pid)

    def write(self, index: int, filename: str | None, source: BinaryIO) -> Upload:
        """Copy ``source`` to a new file with a random name; returns it hashed and sized."""
        path = self.dir / f"{secrets.token_hex(16)}.upload"
        h = hashlib.sha256()
        size = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                source.seek(0)
                while block := source.read(_CHUNK):
                    f.write(block)
                    h.update(block)
                    size += len(block)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return Upload(index, filename, path, size, h.hexdigest())

    @contextlib.contextmanager
    def files(self, sources: list[tuple[str | None, BinaryIO]]) -> Iterator[list[Upload]]:
        """Spool every source for the duration of the block, then delete them."""
        ups: list[Upload] = []
        try:
            for i, (name, src) in enumerate(sources):
                ups.append(self.write(i, name, src))
            yield ups
        finally:
            for u in ups:
                u.path.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def min_clip_s(vad: VadOptions) -> float:
    """The shortest upload the embedder can embed, refused before the model runs when shorter.

    With ``short_speech="error"`` that is ``min_speech_ms`` of speech (a shorter clip cannot
    hold it). With the defaults (``"whole"``, since the hard-audio VAD defaults) a clip with
    less speech is embedded whole with a ``too_short`` warning, so only audio shorter than the
    front end's minimum (embedder.MIN_EMBED_MS, 0.1 s) is refused: a 0.3 s clip is identified,
    as the library and the CLI do, not refused for having under 0.5 s."""
    from ..embedder import MIN_EMBED_MS

    floor = MIN_EMBED_MS / 1000.0
    if vad.enabled and vad.short_speech == "error":
        return max(vad.min_speech_ms / 1000.0, floor)
    return floor


def check_clip(up: Upload, *, min_speech_s: float, max_audio_s: float) -> float:
    """Refuse an upload that cannot be embedded before the model runs; returns its duration.

    Empty or undecodable: AUDIO_DECODE_ERROR; longer than ``max_audio_s``: AUDIO_TOO_LONG;
    shorter than the least speech the model needs: AUDIO_TOO_SHORT."""
    if up.size_bytes == 0:
        raise ApiError("AUDIO_DECODE_ERROR", f"{up.label}: the upload is empty (0 bytes)")
    try:
        info = audio.probe(up.path)
    except SpeakeridError as exc:
        raise api_error(exc, up.scrub()) from None
    if info.duration_s > max_audio_s:
        raise ApiError("AUDIO_TOO_LONG", f"{up.label} is {info.duration_s:.1f} s long; "
                                         f"the server accepts clips of at most {max_audio_s:g} s")
    if info.duration_s < min_speech_s:
        raise ApiError("AUDIO_TOO_SHORT", f"{up.label} is {info.duration_s:.2f} s long; "
                                          f"at least {min_speech_s:.2f} s of audio is needed")
    return info.duration_s
