"""Corpus discovery: which clips belong to which speaker.

Layouts (:func:`discover` tells them apart by itself):

* ``DIR/<speaker>/*.<audio>``: one folder per speaker;
* ``DIR/<speaker>/<video>/*.wav`` (VoxCeleb): clips at any depth under the speaker's folder;
* a ``.csv`` or ``.parquet`` manifest with ``path`` and ``speaker`` columns (other columns are
  ignored; relative paths are resolved against the manifest's folder).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CorpusError

__all__ = ["AUDIO_EXTENSIONS", "Corpus", "Item", "audio_files_under", "discover", "is_audio"]

#: File endings treated as audio when walking folders (decoding decides what really is).
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".au",
     ".webm", ".mka", ".mp4", ".wma", ".caf", ".w64", ".sph"}
)
MANIFEST_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


# --- corpus discovery -----------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One clip to index and the speaker it belongs to."""

    path: Path
    speaker: str


class Corpus(list[Item]):
    """The items :func:`discover` found (a list), with the layout and any warnings."""

    def __init__(self, items: Iterable[Item], *, layout: str, warnings: Sequence[str] = ()) -> None:
        super().__init__(items)
        self.layout = layout
        self.warnings = list(warnings)


def is_audio(p: Path) -> bool:
    return p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")


def audio_files_under(folder: Path) -> list[Path]:
    """Audio files at any depth under ``folder`` (symlinks followed, loops and dot-names skipped)."""
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / f for f in files if is_audio(Path(f)) and os.path.isfile(os.path.join(root, f)))
    return sorted(found)


def _scan_folder(root: Path) -> Corpus:
    try:
        entries = sorted(e for e in root.iterdir() if not e.name.startswith("."))
    except OSError as exc:
        raise CorpusError(f"cannot list {root}: {exc.strerror or exc}") from None
    if not entries:
        raise CorpusError(f"{root} is empty: expected one subfolder of clips per speaker (DIR/<speaker>/*.wav)")
    speaker_dirs = [e for e in entries if e.is_dir()]
    loose = [e for e in entries if e.is_file() and is_audio(e)]
    if not speaker_dirs:
        what = f"{len(loose)} audio file(s)" if loose else "no audio and"
        raise CorpusError(
            f"{root} holds {what} no speaker subfolders: put each speaker's clips in "
            f"DIR/<speaker>/ (or give a .csv/.parquet manifest with path and speaker columns)"
        )
    warnings = []
    if loose:
        warnings.append(f"{root}: {len(loose)} audio file(s) outside any speaker folder were ignored")
    items: list[Item] = []
    nested = False
    for d in speaker_dirs:
        files = audio_files_under(d)
        if not files:
            warnings.append(f"speaker folder {d.name!r} holds no audio files; skipped")
            continue
        nested = nested or any(f.parent != d for f in files)
        items.extend(Item(f, d.name) for f in files)
    if not items:
        raise CorpusError(f"none of the {len(speaker_dirs)} speaker folders of {root} holds audio files")
    return Corpus(items, layout="voxceleb" if nested else "folders", warnings=warnings)


def _manifest_rows(path: Path, kind: str) -> tuple[list[str], list[tuple[Any, Any]]]:
    """(column names, (path, speaker) values of each row); no rows if a column is missing."""
    if kind == "csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            lower = [h.lower() for h in header]
            if "path" not in lower or "speaker" not in lower:
                return header, []
            ip, isp = lower.index("path"), lower.index("speaker")
            return header, [
                (r[ip] if ip < len(r) else None, r[isp] if isp < len(r) else None)
                for r in reader
                if any(c.strip() for c in r)
            ]
    import pyarrow.parquet as pq

    header = list(pq.read_schema(path).names)
    lower = [h.lower() for h in header]
    if "path" not in lower or "speaker" not in lower:
        return header, []
    table = pq.read_table(path, columns=[header[lower.index("path")], header[lower.index("speaker")]])
    return header, list(zip(table.column(0).to_pylist(), table.column(1).to_pylist()))


def _read_manifest(path: Path, kind: str) -> Corpus:
    import pyarrow as pa

    try:
        header, rows = _manifest_rows(path, kind)
        missing = [c for c in ("path", "speaker") if c not in [h.lower() for h in header]]
        if missing:
            raise CorpusError(
                f"manifest {path} lacks the column(s) {', '.join(missing)} "
                f"(has: {', '.join(header) or 'no columns'}); it needs 'path' and 'speaker'"
            )
        base = path.parent
        items: list[Item] = []
        bad: list[int] = []
        for n, (p, s) in enumerate(rows, start=1):
            p = "" if p is None else str(p).strip()
            s = "" if s is None else str(s).strip()
            if not p or not s:
                bad.append(n)
                continue
            q = Path(p).expanduser()
            items.append(Item(q if q.is_absolute() else base / q, s))
    except (OSError, UnicodeDecodeError, csv.Error, pa.ArrowException) as exc:
        raise CorpusError(f"cannot read manifest {path}: {exc}") from None
    warnings = []
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        warnings.append(f"manifest {path.name}: {len(bad)} row(s) without a path or speaker skipped (rows {shown})")
    if not items:
        raise CorpusError(f"manifest {path} lists no clips")
    return Corpus(items, layout=f"manifest-{kind}", warnings=warnings)


def discover(source: str | os.PathLike[str]) -> Corpus:
    """The clips of a speakers folder or manifest, sorted; CorpusError if there are none.

    A speaker folder without audio is skipped with a warning (``Corpus.warnings``).
    """
    p = Path(source).expanduser()
    if not p.exists():
        raise CorpusError(f"{p}: no such folder or manifest")
    if p.is_file():
        kind = MANIFEST_SUFFIXES.get(p.suffix.lower())
        if kind is None:
            raise CorpusError(f"{p} is a file but not a .csv or .parquet manifest")
        return _read_manifest(p, kind)
    if not p.is_dir():
        raise CorpusError(f"{p} is neither a folder nor a manifest file")
    return _scan_folder(p)
