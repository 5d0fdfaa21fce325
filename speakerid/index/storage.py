"""Versioned directories on disk: one complete version per save, a pointer to the live one.

Layout of an index directory (dirs 0o700, files 0o600: voice prints are biometric data)::

    <dir>/CURRENT              one line "v000042": the live version, replaced atomically
    <dir>/.lock                flock()ed by the one writer (holds its pid)
    <dir>/v000042/index.faiss         IndexIDMap2 over FlatIP / HNSWFlat(IP) / IVFFlat(IP)
                 utterances.parquet   id, speaker, path, sha256, duration_s, speech_s, model, added_at
                 speakers.parquet     speaker, n_clips, speech_s, centroid, mean_norm
                 failures.parquet     path, error, at
                 manifest.json        model, weights, dim, index params, threshold, counts, file sizes/hashes

:func:`write_version` builds a version in a temporary sibling with :func:`speakerid._io.atomic_dir`
(every file fsynced, the directory renamed to ``vNNNNNN``) and only then replaces ``CURRENT``
atomically (:func:`speakerid._io.write_bytes`). A crash at any moment therefore leaves either the
previous version or the new one live, never a mix; leftovers of an interrupted save are
``.vNNNNNN.*.tmp`` / ``.CURRENT.*.tmp`` siblings, which :func:`collect` deletes. Readers take no
lock: they read ``CURRENT`` once (and retry if a writer switched and collected the version
under them). :func:`read_version` checks a version whole: every file's size (and sha256) against
the manifest, FAISS and Parquet parsed, counts and ids cross-checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._io import PRIVATE_DIR, PRIVATE_FILE, atomic_dir, mkdir_private, sha256_file, write_bytes
from ..errors import ConfigError, IndexCorruptError, IndexNotFoundError
from .backend import set_search_params
from .lock import LOCK_FILE
from .spec import IndexSpec

#: Format of the versions this code writes: 2 (segments); format 1 (one whole copy per version) is
#: still read, and converted by :meth:`speakerid.index.SpeakerIndex.upgrade` (or the first writable open).
FORMAT_VERSION = 2
V1_FORMAT = 1
POINTER = "CURRENT"
SEGMENTS_DIR = "segments"
INDEX_FILE = "index.faiss"
UTTERANCES_FILE = "utterances.parquet"
SPEAKERS_FILE = "speakers.parquet"
FAILURES_FILE = "failures.parquet"
MANIFEST_FILE = "manifest.json"
DATA_FILES = (INDEX_FILE, UTTERANCES_FILE, SPEAKERS_FILE, FAILURES_FILE)

VERSION_RE = re.compile(r"^v(\d{6,})$")
#: Leftovers of interrupted saves: _io's temporary siblings, and the names older releases used.
LEFTOVER_RE = re.compile(r"^(\.(v\d{6,}|CURRENT)\..+\.(tmp|old)|\.tmp-.*|CURRENT\.tmp-.*)$")
TS = pa.timestamp("us", tz="UTC")
UTTERANCES_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("speaker", pa.string()),
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("duration_s", pa.float64()),
        ("speech_s", pa.float64()),
        ("model", pa.string()),
        ("added_at", TS),
    ]
)
SPEAKERS_SCHEMA = pa.schema(
    [
        ("speaker", pa.string()),
        ("n_clips", pa.int64()),
        ("speech_s", pa.float64()),
        ("centroid", pa.list_(pa.float32())),
        ("mean_norm", pa.float64()),
    ]
)
FAILURES_SCHEMA = pa.schema([("path", pa.string()), ("error", pa.string()), ("at", TS)])

#: What reading a damaged file can raise (made an IndexCorruptError naming the version).
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, pa.ArrowException)


def now() -> datetime:
    return datetime.now(timezone.utc)


def version_name(number: int) -> str:
    return f"v{number:06d}"


def is_ours(name: str) -> bool:
    """Whether an entry of a directory is one an index puts there."""
    return bool(VERSION_RE.match(name) or LEFTOVER_RE.match(name)) or name in (POINTER, LOCK_FILE, SEGMENTS_DIR)


def make_directory(directory: Path) -> None:
    """Make ``directory`` (owner-only) for an index, refusing one that holds anything else."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} exists and is not a directory")
    strays = [p.name for p in directory.iterdir() if not is_ours(p.name)] if directory.is_dir() else []
    if strays:  # checked before touching anything: never chmod or litter a foreign dir
        raise ConfigError(f"{directory} is not empty and not a speaker index (holds {strays[0]!r})")
    mkdir_private(directory)


def read_pointer(directory: Path) -> str:
    """The version name ``CURRENT`` holds (IndexNotFoundError: no index; IndexCorruptError: garbled)."""
    try:
        name = (directory / POINTER).read_text().strip()
    except FileNotFoundError:
        if any(VERSION_RE.match(p.name) for p in directory.iterdir()):
            raise IndexCorruptError(
                f"{directory}: {POINTER} is missing (index creation did not finish?)"
            ) from None
        raise IndexNotFoundError(f"no speaker index at {directory} (no {POINTER} file)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise IndexCorruptError(f"{directory}: unreadable {POINTER}: {e}") from e
    if not VERSION_RE.match(name):
        raise IndexCorruptError(f"{directory}: {POINTER} holds {name[:40]!r}, not a version name")
    return name


def versions_on_disk(directory: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := VERSION_RE.match(p.name)))


def switch_pointer(directory: Path, name: str) -> None:
    """Make ``CURRENT`` name version ``name``, atomically (temporary file, fsync, os.replace)."""
    write_bytes(directory / POINTER, f"{name}\n".encode(), PRIVATE_FILE)


def collect(directory: Path, keep: Iterable[int]) -> None:
    """Delete versions not in ``keep`` and leftovers of interrupted saves (writer only)."""
    keep_names = {version_name(v) for v in keep}
    for p in directory.iterdir():
        stale_version = VERSION_RE.match(p.name) and p.name not in keep_names
        if stale_version or LEFTOVER_RE.match(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def bytes_on_disk(directory: Path, number: int) -> int:
    """Size of the files of version ``number`` (0 if it is not on disk)."""
    vdir = directory / version_name(number)
    return sum(p.stat().st_size for p in vdir.iterdir()) if number and vdir.is_dir() else 0


@dataclass(frozen=True)
class StoredVersion:
    """Everything one version holds, as written by :func:`write_version` and read back."""

    number: int
    spec: IndexSpec
    faiss_index: faiss.IndexIDMap2
    utterances: pa.Table
    speakers: pa.Table
    failures: pa.Table
    #: The manifest's threshold record ({"value", "method", "set_at", ...}).
    threshold: dict[str, Any]
    next_id: int
    created_at: str
    updated_at: str


# writing -------------------------------------------------------------------------------------


def _write_new(path: Path, fill: Callable[[Callable[[bytes], int]], None], *, fsync: bool = False) -> dict[str, Any]:
    """Create ``path`` (0o600, must not exist) and let ``fill(put)`` stream its content into it.

    Returns its size and sha256 for the manifest. Not fsynced unless asked: :func:`write_version`
    writes into an :func:`speakerid._io.atomic_dir`, which fsyncs every file before the rename.
    """
    digest = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, PRIVATE_FILE)

        def put(data: bytes) -> int:
            nonlocal size
            f.write(data)
            digest.update(data)
            size += len(data)
            return len(data)

        fill(put)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    return {"bytes": size, "sha256": digest.hexdigest()}


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _manifest(v: StoredVersion, files: dict[str, Any]) -> dict[str, Any]:
    main = ("model", "weights_sha256", "dim", "index_type")
    return {
        "format_version": V1_FORMAT,
        **{k: getattr(v.spec, k) for k in main},
        "metric": "ip",
        "index_params": {k: val for k, val in asdict(v.spec).items() if k not in main},
        "threshold": v.threshold,
        "next_id": v.next_id,
        "counts": {
            "utterances": v.utterances.num_rows,
            "speakers": v.speakers.num_rows,
            "failures": v.failures.num_rows,
            "vectors": int(v.faiss_index.ntotal),
        },
        "created_at": v.created_at,
        "updated_at": v.updated_at,
        "files": files,
    }


def write_version(directory: Path, v: StoredVersion) -> None:
    """Write version ``v.number`` whole in format 1 (manifest last) and make it the live one.

    Format 1 is no longer written by :class:`~speakerid.index.SpeakerIndex`; this is kept for
    the tests that build a format-1 index to upgrade."""
    name = version_name(v.number)
    with atomic_dir(directory / name, PRIVATE_DIR) as tmp:
        files = {
            INDEX_FILE: _write_new(
                tmp / INDEX_FILE, lambda put: faiss.write_index(v.faiss_index, faiss.PyCallbackIOWriter(put))
            ),
            UTTERANCES_FILE: _write_new(tmp / UTTERANCES_FILE, lambda put: put(_parquet_bytes(v.utterances))),
            SPEAKERS_FILE: _write_new(tmp / SPEAKERS_FILE, lambda put: put(_parquet_bytes(v.speakers))),
            FAILURES_FILE: _write_new(tmp / FAILURES_FILE, lambda put: put(_parquet_bytes(v.failures))),
        }
        text = json.dumps(_manifest(v, files), indent=2).encode()
        _write_new(tmp / MANIFEST_FILE, lambda put: put(text))
    switch_pointer(directory, name)  # the switch: CURRENT names the new, complete version


# reading -------------------------------------------------------------------------------------


def read_version(directory: Path, name: str, verify: bool) -> StoredVersion:
    """Read version ``name`` and check it whole; IndexCorruptError says what is wrong.

    ``verify`` also checks every file's sha256 against the manifest (sizes always are).
    """
    where = f"index at {directory} ({name})"
    try:
        v, counts = _read_files(directory / name, int(name[1:]), verify, where)
        _check_agreement(v, counts, where)
        return v
    except IndexCorruptError:
        raise
    except _READ_ERRORS as e:
        raise IndexCorruptError(f"{where} is unreadable: {type(e).__name__}: {e}") from e


def _read_files(vdir: Path, number: int, verify: bool, where: str) -> tuple[StoredVersion, dict[str, int]]:
    manifest = json.loads((vdir / MANIFEST_FILE).read_text())
    if manifest.get("format_version") != V1_FORMAT:
        raise IndexCorruptError(f"{where}: unsupported format_version {manifest.get('format_version')!r}")
    spec = spec_of(manifest, where)
    files = manifest["files"]
    for fname in DATA_FILES:
        st = (vdir / fname).stat()
        if st.st_size != files[fname]["bytes"]:
            raise IndexCorruptError(
                f"{where}: {fname} has {st.st_size} bytes, manifest says {files[fname]['bytes']}"
            )
        if verify and sha256_file(vdir / fname) != files[fname]["sha256"]:
            raise IndexCorruptError(f"{where}: {fname} does not match its sha256 in the manifest")
    index = faiss.read_index(str(vdir / INDEX_FILE))
    v = StoredVersion(
        number=number,
        spec=spec,
        faiss_index=index,
        utterances=pq.read_table(vdir / UTTERANCES_FILE).select(UTTERANCES_SCHEMA.names).cast(UTTERANCES_SCHEMA),
        speakers=pq.read_table(vdir / SPEAKERS_FILE).select(SPEAKERS_SCHEMA.names).cast(SPEAKERS_SCHEMA),
        failures=pq.read_table(vdir / FAILURES_FILE).select(FAILURES_SCHEMA.names).cast(FAILURES_SCHEMA),
        threshold=dict(manifest["threshold"]),
        next_id=int(manifest["next_id"]),
        created_at=manifest["created_at"],
        updated_at=manifest["updated_at"],
    )
    if isinstance(index, faiss.IndexIDMap2):
        set_search_params(index, spec)
    return v, manifest["counts"]


def spec_of(manifest: dict[str, Any], where: str) -> IndexSpec:
    """The IndexSpec a manifest (either format) records."""
    if manifest["metric"] != "ip":
        raise IndexCorruptError(f"{where}: metric {manifest['metric']!r} is not 'ip'")
    return IndexSpec(
        model=manifest["model"],
        weights_sha256=manifest["weights_sha256"],
        dim=manifest["dim"],
        index_type=manifest["index_type"],
        **manifest["index_params"],
    )


def format_of(directory: Path, name: str) -> tuple[int, dict[str, Any]]:
    """(format_version, manifest) of version ``name`` (IndexCorruptError if unreadable)."""
    where = f"index at {directory} ({name})"
    try:
        manifest = json.loads((directory / name / MANIFEST_FILE).read_text())
        fmt = manifest["format_version"]
    except _READ_ERRORS as e:
        raise IndexCorruptError(f"{where}: unreadable {MANIFEST_FILE}: {type(e).__name__}: {e}") from e
    if fmt not in (V1_FORMAT, FORMAT_VERSION):
        raise IndexCorruptError(f"{where}: unsupported format_version {fmt!r}")
    return int(fmt), manifest


def _check_agreement(v: StoredVersion, counts: dict[str, int], where: str) -> None:
    """FAISS, the three tables and the manifest's counts must describe the same gallery."""
    index, utt, spk, dim = v.faiss_index, v.utterances, v.speakers, v.spec.dim
    if not isinstance(index, faiss.IndexIDMap2) or index.d != dim or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise IndexCorruptError(f"{where}: {INDEX_FILE} is not a dim-{dim} inner-product IndexIDMap2")
    ids = np.sort(faiss.vector_to_array(index.id_map))
    if not (index.ntotal == utt.num_rows == counts["utterances"]) or not np.array_equal(ids, np.sort(utt["id"].to_numpy())):
        raise IndexCorruptError(
            f"{where}: FAISS holds {index.ntotal} vectors but {UTTERANCES_FILE} "
            f"{utt.num_rows} rows (manifest: {counts['utterances']}), or their ids differ"
        )
    names = spk["speaker"].to_pylist()
    if (
        len(set(names)) != len(names)
        or spk.num_rows != counts["speakers"]
        or dict(zip(names, spk["n_clips"].to_pylist(), strict=True)) != dict(Counter(utt["speaker"].to_pylist()))
    ):
        raise IndexCorruptError(f"{where}: {SPEAKERS_FILE} disagrees with {UTTERANCES_FILE}")
    if v.failures.num_rows != counts["failures"]:
        raise IndexCorruptError(
            f"{where}: {FAILURES_FILE} has {v.failures.num_rows} rows, manifest says {counts['failures']}"
        )
    cent = spk["centroid"].combine_chunks()
    if len(cent.flatten()) != dim * spk.num_rows or pc.any(pc.not_equal(pc.list_value_length(cent), dim)).as_py():
        raise IndexCorruptError(f"{where}: {SPEAKERS_FILE} centroids are not dim {dim}")
