"""Recovery: which versions on disk are intact (:func:`verify_index`), and pointing the index
back at an intact one (:func:`rollback`).

Opening a damaged current version raises IndexCorruptError; when an intact earlier version
exists, its message says "roll back to version N" and its ``rollback_to`` attribute holds N
(:func:`with_rollback_hint`).
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError, IndexCorruptError, IndexNotFoundError
from .lock import WriterLock
from .storage import (
    LEFTOVER_RE,
    POINTER,
    read_pointer,
    switch_pointer,
    version_name,
    versions_on_disk,
)

T = TypeVar("T")

__all__ = ["IndexCheck", "VersionCheck", "current_version", "rollback", "verify_index"]

log = logging.getLogger("speakerid")


@dataclass(frozen=True)
class VersionCheck:
    """One version of an index on disk, fully checked (every file's sha256, counts and ids)."""

    version: int
    #: Whether ``CURRENT`` names this version.
    current: bool
    intact: bool
    #: What is wrong with it (None when intact).
    problem: str | None = None
    utterances: int | None = None
    speakers: int | None = None
    updated_at: str | None = None
    bytes_on_disk: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class IndexCheck:
    """What :func:`verify_index` found in an index directory."""

    path: str
    #: The version ``CURRENT`` names, or None when ``CURRENT`` is missing or unreadable.
    current: int | None
    #: What is wrong with ``CURRENT`` itself (None when it names a version).
    pointer_problem: str | None
    #: Every version on disk (and the one ``CURRENT`` names, even if missing), newest first.
    versions: tuple[VersionCheck, ...] = field(default_factory=tuple)
    #: Leftovers of interrupted saves (``.tmp`` siblings); the next save deletes them.
    leftovers: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """The current version exists and is intact."""
        return any(v.current and v.intact for v in self.versions)

    @property
    def rollback_to(self) -> int | None:
        """The newest intact version older than the current one (any intact version when
        ``CURRENT`` is unusable), or None: what :func:`rollback` would switch to."""
        for v in self.versions:
            if v.intact and not v.current and (self.current is None or v.version < self.current):
                return v.version
        return None

    @property
    def problems(self) -> list[str]:
        """Every problem found, one sentence each (empty when every version is intact)."""
        out = [] if self.pointer_problem is None else [self.pointer_problem]
        return out + [v.problem for v in self.versions if v.problem is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "current": self.current,
            "pointer_problem": self.pointer_problem,
            "rollback_to": self.rollback_to,
            "problems": self.problems,
            "versions": [v.to_dict() for v in self.versions],
            "leftovers": list(self.leftovers),
        }


def _check_version(d: Path, version: int, current: bool) -> VersionCheck | None:
    """Fully check one version (None if it vanished meanwhile: a writer collected it)."""
    name = version_name(version)
    vdir = d / name
    try:
        size = sum(p.stat().st_size for p in vdir.iterdir())
    except FileNotFoundError:
        if not current:
            return None
        return VersionCheck(version, True, False, f"{d}: {POINTER} names {name}, which does not exist")
    except OSError as e:
        return VersionCheck(version, current, False, f"index at {d} ({name}) is unreadable: {e}")
    from .gallery import load_version  # the gallery reads versions; it imports this module

    try:
        ix = load_version(d, name, "all")
    except IndexCorruptError as e:
        if not vdir.exists() and not current:
            return None
        return VersionCheck(version, current, False, str(e), bytes_on_disk=size)
    return VersionCheck(
        version, current, True, None, utterances=len(ix), speakers=len(ix.speakers()),
        updated_at=ix.info()["updated_at"], bytes_on_disk=max(size, ix.info()["bytes_on_disk"]),
    )


def _pointer_state(d: Path) -> tuple[int | None, str | None]:
    """(version CURRENT names or None, what is wrong with CURRENT or None)."""
    try:
        return int(read_pointer(d)[1:]), None
    except IndexNotFoundError:
        raise
    except IndexCorruptError as e:
        return None, str(e)


def _newest_intact(d: Path, below: int | None) -> int | None:
    """The newest version older than ``below`` (any, if None) whose files all check out."""
    for v in sorted(versions_on_disk(d), reverse=True):
        if below is not None and v >= below:
            continue
        check = _check_version(d, v, current=False)
        if check is not None and check.intact:
            return v
    return None


def current_version(directory: str | os.PathLike[str]) -> int | None:
    """The version ``CURRENT`` names (None when it is missing or garbled but versions exist).

    Raises IndexNotFoundError when ``directory`` holds no index at all.
    """
    d = Path(directory)
    if not d.is_dir():
        raise IndexNotFoundError(f"no speaker index at {d} (no such directory)")
    return _pointer_state(d)[0]


def refuse_to_collect_data(d: Path) -> None:
    """Before a create that finds no ``CURRENT`` deletes the versions on disk (leftovers of a
    create that crashed, empty): refuse if one of them is an intact index holding clips."""
    for v in sorted(versions_on_disk(d), reverse=True):
        check = _check_version(d, v, current=False)
        if check is not None and check.intact and check.utterances:
            err = IndexCorruptError(
                f"{d}: {POINTER} is missing, but version {v} is intact and holds {check.utterances} clips; "
                f"roll back to version {v} to use it"
            )
            err.rollback_to = v  # type: ignore[attr-defined]
            raise err


def with_rollback_hint(d: Path, error: IndexCorruptError) -> IndexCorruptError:
    """``error``, or a copy saying which intact earlier version the index can roll back to."""
    current: int | None = None
    try:
        current, _ = _pointer_state(d)
        target = _newest_intact(d, below=current)
    except (OSError, IndexNotFoundError):
        target = None
    if target is None:
        return error
    which = "an intact version" if current is None else "an intact earlier version"
    new = IndexCorruptError(f"{error}; {which} exists: roll back to version {target} to use it")
    new.rollback_to = target  # type: ignore[attr-defined]
    return new


def read_live(d: Path, load: Callable[[str], T]) -> T:
    """``load(name)`` of the version ``CURRENT`` names. Readers take no lock: when a writer
    switched versions and collected ours while we read, the new one is read instead. A damaged
    version raises IndexCorruptError saying which intact version the index can roll back to."""
    try:
        for _ in range(5):
            name = read_pointer(d)
            try:
                return load(name)
            except IndexCorruptError:
                if read_pointer(d) == name:
                    raise
        return load(read_pointer(d))
    except IndexCorruptError as e:
        raise with_rollback_hint(d, e) from e


def verify_index(directory: str | os.PathLike[str]) -> IndexCheck:
    """Check every version of the index at ``directory``: which are intact, which is current,
    what is wrong with the others.

    Each version is read in full (every file it names, its segments' included, against its
    sha256 in the manifest, FAISS and Parquet parsed, counts and ids cross-checked). Takes no lock
    (a reader); a version a writer deletes meanwhile is left out. Raises IndexNotFoundError
    when ``directory`` holds no index at all; a damaged one is reported, never raised.
    """
    d = Path(directory)
    if not d.is_dir():
        raise IndexNotFoundError(f"no speaker index at {d} (no such directory)")
    current, pointer_problem = _pointer_state(d)
    versions = set(versions_on_disk(d))
    if current is not None:
        versions.add(current)
    checks = [c for v in sorted(versions, reverse=True) if (c := _check_version(d, v, v == current)) is not None]
    leftovers = tuple(sorted(p.name for p in d.iterdir() if LEFTOVER_RE.match(p.name)))
    report = IndexCheck(str(d), current, pointer_problem, tuple(checks), leftovers)
    for problem in report.problems:
        log.debug("verify %s: %s", d, problem)
    return report


def _rollback_target(d: Path, current: int | None, to_version: int | None) -> int:
    """The version :func:`rollback` switches to, checked intact."""
    if to_version is None:
        target = _newest_intact(d, below=current)
        if target is None:
            where = "" if current is None else f" older than version {current}"
            raise IndexCorruptError(f"{d}: no intact version{where} to roll back to")
        return target
    target = int(to_version)
    if target == current:
        raise ConfigError(f"version {target} is already the current version of the index at {d}")
    on_disk = versions_on_disk(d)
    if target not in on_disk:
        raise ConfigError(
            f"the index at {d} has no version {target} (versions on disk: "
            f"{', '.join(map(str, on_disk)) or 'none'})"
        )
    check = _check_version(d, target, current=False)
    if check is None or not check.intact:
        raise IndexCorruptError(
            check.problem if check is not None and check.problem else f"{d}: version {target} vanished"
        )
    return target


def rollback(
    directory: str | os.PathLike[str], to_version: int | None = None, *, wait_s: float | None = 0.0
) -> int:
    """Point the index at an earlier intact version; returns the version now current.

    ``to_version`` None picks the newest intact version older than the current one (any
    intact version when ``CURRENT`` itself is missing or garbled); otherwise that version,
    which must be intact and not already current. The switch is one atomic replace of
    ``CURRENT``, made under the writer lock (waiting up to ``wait_s`` seconds, None: forever;
    IndexLockedError after that). Works whether the current version is damaged or intact (then
    it undoes the last save). Versions are never deleted here: the damaged one stays on disk
    until the next save collects it. Raises IndexCorruptError when no intact version is
    available, ConfigError for a ``to_version`` that is not on disk or already current.
    """
    d = Path(directory)
    if not d.is_dir():
        raise IndexNotFoundError(f"no speaker index at {d} (no such directory)")
    if to_version is not None and (
        isinstance(to_version, bool) or not isinstance(to_version, numbers.Integral) or to_version < 1
    ):
        raise ConfigError(f"to_version must be a positive integer, got {to_version!r}")
    with WriterLock(d, wait_s=wait_s):
        current, _ = _pointer_state(d)
        target = _rollback_target(d, current, to_version)
        switch_pointer(d, version_name(target))
    log.info("%s: rolled back from version %s to version %s", d, current, target)
    return target
