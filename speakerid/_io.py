"""File plumbing shared by the model store, the index, the embedding cache, exports and reports:
content hashing, fsync, atomic writes of files and of whole directories, owner-only modes.

Every write here is *atomic*: the content goes to a temporary sibling, is fsynced, then renamed
over the target with ``os.replace``, and the directory is fsynced so the rename survives a power
cut. A reader therefore sees the old content or the new, never a mix; a crash leaves at most a
``.tmp`` sibling, which the next write of the same target ignores.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "PRIVATE_DIR", "PRIVATE_FILE", "SHARED_DIR", "SHARED_FILE", "atomic_dir", "atomic_file", "fsync_dir",
    "mkdir_private", "sha256_bytes", "sha256_file", "write_bytes", "write_json",
]

#: Modes: biometric data (indexes, results, embeddings) is owner-only; the model cache is shared.
PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700
SHARED_FILE, SHARED_DIR = 0o644, 0o755

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str], chunk: int = _CHUNK) -> str:
    """Hex sha256 of a file's content, read in 1 MiB blocks (bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make renames and creations inside ``path`` durable (a no-op where directories can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def mkdir_private(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) and make it owner-only."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    os.chmod(p, PRIVATE_DIR)
    return p


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: int = PRIVATE_FILE, *, text: bool = False,
                encoding: str = "utf-8", newline: str | None = None) -> Iterator[IO[Any]]:
    """Write ``path`` atomically: yields an open temporary file; on success it is fsynced and
    renamed over ``path`` with ``mode``. On an exception the target is left as it was."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with (os.fdopen(fd, "w", encoding=encoding, newline=newline) if text else os.fdopen(fd, "wb")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


def write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = PRIVATE_FILE) -> None:
    with atomic_file(path, mode) as f:
        f.write(data)


def write_json(path: str | os.PathLike[str], obj: Any, mode: int = PRIVATE_FILE) -> None:
    """Strict JSON (no NaN), indented, written atomically."""
    import json

    with atomic_file(path, mode, text=True) as f:
        json.dump(obj, f, indent=2, sort_keys=True, allow_nan=False, default=str)
        f.write("\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], mode: int = PRIVATE_DIR) -> Iterator[Path]:
    """Build a directory atomically: yields an empty temporary sibling to fill; on success it
    replaces ``path`` (an existing one is moved aside first, then removed). Readers see the old
    directory or the new one; a crash leaves a ``.tmp``/``.old`` sibling, never a half directory
    at ``path``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, mode)
        yield tmp
        for p in tmp.rglob("*"):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        fsync_dir(tmp)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.{os.getpid()}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
