"""VoxCeleb1 protocol files: verification trial lists and the identification split.

* Trial lists (``veri_test.txt``, ``veri_test2.txt``, ``list_test_all2.txt``,
  ``list_test_hard2.txt``): one trial per line, ``label path path`` with label 1 (same
  speaker) or 0, paths relative to the wav root (``id10270/5r0dWxy17C8/00001.wav``).
* ``iden_split.txt``: ``split path`` with split 1 (train), 2 (dev) or 3 (test); the speaker is
  the first path component.

Blank lines are skipped. Anything else that does not parse raises ConfigError naming the file
and the 1-based line number.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = ["IdenEntry", "Trial", "check_root", "parse_iden_split", "parse_trials"]

#: What the identification split numbers mean.
SPLIT_NAMES = {1: "train", 2: "dev", 3: "test"}


@dataclass(frozen=True)
class Trial:
    """One verification trial: ``label`` 1 = same speaker (target), 0 = different."""

    label: int
    a: str
    b: str
    line: int


@dataclass(frozen=True)
class IdenEntry:
    """One file of the identification split."""

    split: int
    path: str
    speaker: str
    line: int


def _lines(path: str | os.PathLike[str], what: str) -> list[tuple[int, str]]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: {what} not found")
    if not p.is_file():
        raise ConfigError(f"{p}: {what} is not a file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: {what} is not UTF-8 text ({e})") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read {what}: {e}") from None
    rows = [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1)]
    rows = [(i, s) for i, s in rows if s]
    if not rows:
        raise ConfigError(f"{p}: {what} is empty (no lines to read)")
    return rows


def _check_rel(p: Path, i: int, value: str) -> str:
    if "\0" in value:
        raise ConfigError(f"{p}:{i}: path holds a NUL byte")
    return value


def parse_trials(path: str | os.PathLike[str]) -> list[Trial]:
    """The trials of a VoxCeleb trial list, in file order."""
    p = Path(path)
    trials = []
    for i, s in _lines(p, "trial list"):
        parts = s.split()
        if len(parts) != 3:
            raise ConfigError(
                f"{p}:{i}: malformed trial line (expected 'label path path', got {len(parts)} fields): {s[:120]!r}"
            )
        label, a, b = parts
        if label not in ("0", "1"):
            raise ConfigError(f"{p}:{i}: trial label must be 0 or 1, got {label!r}")
        trials.append(Trial(int(label), _check_rel(p, i, a), _check_rel(p, i, b), i))
    return trials


def parse_iden_split(path: str | os.PathLike[str]) -> list[IdenEntry]:
    """The entries of a VoxCeleb ``iden_split.txt``, in file order."""
    p = Path(path)
    entries = []
    for i, s in _lines(p, "identification split"):
        parts = s.split()
        if len(parts) != 2:
            raise ConfigError(
                f"{p}:{i}: malformed split line (expected 'split path', got {len(parts)} fields): {s[:120]!r}"
            )
        split, rel = parts
        if split not in ("1", "2", "3"):
            raise ConfigError(f"{p}:{i}: split must be 1 (train), 2 (dev) or 3 (test), got {split!r}")
        rel = _check_rel(p, i, rel)
        speaker = rel.replace("\\", "/").split("/")[0]
        if "/" not in rel.replace("\\", "/") or not speaker:
            raise ConfigError(f"{p}:{i}: path {rel!r} does not start with a speaker directory (id10001/...)")
        entries.append(IdenEntry(int(split), rel, speaker, i))
    return entries


def check_root(root: str | os.PathLike[str]) -> Path:
    """The wav root as a Path; ConfigError if it does not exist or is not a directory."""
    r = Path(root)
    if not r.exists():
        raise ConfigError(f"{r}: the wav root does not exist")
    if not r.is_dir():
        raise ConfigError(f"{r}: the wav root is not a directory")
    return r
