"""On-disk speaker gallery: L2-normalised embeddings in FAISS plus parquet metadata.

Only persistence and search live here; audio is embedded elsewhere and passed in as
vectors. Scores are inner products of unit vectors, i.e. raw cosine similarities.

Layout of an index directory (dirs 0o700, files 0o600: voice prints are biometric data)::

    <dir>/CURRENT              one line "v000042": the live version, replaced atomically
    <dir>/.lock                flock()ed by the one writer (holds its pid)
    <dir>/v000042/index.faiss         IndexIDMap2 over FlatIP / HNSWFlat(IP) / IVFFlat(IP)
                 utterances.parquet   id, speaker, path, sha256, duration_s, speech_s, model, added_at
                 speakers.parquet     speaker, n_clips, speech_s, centroid, mean_norm
                 failures.parquet     path, error, at
                 manifest.json        model, weights, dim, index params, threshold, counts, file sizes/hashes

``save()`` writes a complete new version into a ``.tmp-*`` sibling, fsyncs every file and
the directory, renames it to ``vNNNNNN`` and only then replaces ``CURRENT`` with
``os.replace``. A crash at any moment therefore leaves either the previous version or the
new one live, never a mix. Afterwards every version but the live one and the one before it
is deleted. Readers take no lock: they read ``CURRENT`` once (and retry if a writer
switched and garbage-collected the version under them).

Recovery. :func:`verify_index` checks every version on disk (hashes, Parquet, FAISS, counts)
and reports which are intact and which is current; :func:`rollback` points ``CURRENT`` at
the newest intact earlier version (or a chosen one), atomically and under the writer lock.
Opening a damaged current version raises IndexCorruptError; when an intact earlier version
exists, its message says "roll back to version N" and its ``rollback_to`` attribute holds N.

Index types: ``flat`` is exact. ``hnsw`` cannot delete in FAISS, so removing a speaker
rebuilds the graph from the remaining vectors (reconstructed from storage; it costs as
much as building it). ``ivf`` stays exact (flat storage) until it holds ``ivf_min_train_n``
vectors; ``save()`` then trains it (nlist ~ 4*sqrt(n), retrained when that doubles).
FAISS' IVF remove does not compose with IndexIDMap2, so removal re-adds the remaining
vectors to the trained lists (no retraining). Every type can reconstruct its vectors.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import numbers
import os
import re
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import (
    ConfigError,
    EmptyGalleryError,
    IndexCorruptError,
    IndexExistsError,
    IndexLockedError,
    IndexNotFoundError,
    ModelMismatchError,
    SpeakerNotFoundError,
)

FORMAT_VERSION = 1
POINTER = "CURRENT"
LOCK_FILE = ".lock"
INDEX_FILE = "index.faiss"
UTTERANCES_FILE = "utterances.parquet"
SPEAKERS_FILE = "speakers.parquet"
FAILURES_FILE = "failures.parquet"
MANIFEST_FILE = "manifest.json"
DATA_FILES = (INDEX_FILE, UTTERANCES_FILE, SPEAKERS_FILE, FAILURES_FILE)

_VERSION_RE = re.compile(r"^v(\d{6,})$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_TS = pa.timestamp("us", tz="UTC")
UTTERANCES_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("speaker", pa.string()),
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("duration_s", pa.float64()),
        ("speech_s", pa.float64()),
        ("model", pa.string()),
        ("added_at", _TS),
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
FAILURES_SCHEMA = pa.schema([("path", pa.string()), ("error", pa.string()), ("at", _TS)])

IndexType = Literal["flat", "hnsw", "ivf"]

log = logging.getLogger("speakerid")


@dataclass(frozen=True)
class IndexSpec:
    """What an index holds (model, weights, dim) and how it searches.

    Defaults were tuned with benchmarks/bench_index.py (clustered 192-d data, one query at a
    time on 1 thread): at 1e6 vectors hnsw answers in ~0.27 ms at recall@10 0.997 (build
    ~3 min on 2 cores), ivf in ~0.33 ms at recall@10 1.0 (build ~1 min), flat in ~25 ms.
    Below ~1e5 vectors flat is exact and fast enough (<= 2.6 ms).
    """

    model: str
    weights_sha256: str
    dim: int
    index_type: IndexType = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction_n: int = 64
    hnsw_ef_search_n: int = 128
    #: Number of IVF lists; None: ~4*sqrt(n), at most n/39, re-chosen as the gallery grows.
    ivf_nlist: int | None = None
    ivf_nprobe_n: int = 32
    #: An "ivf" index stays exact (flat) until it holds this many vectors (flat is fast enough below).
    ivf_min_train_n: int = 100_000
    #: k-means trains on at most this many points per list (bounds training time).
    ivf_train_points_per_list_n: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"model must be a non-empty string, got {self.model!r}")
        if not isinstance(self.weights_sha256, str) or not self.weights_sha256:
            raise ConfigError(f"weights_sha256 must be a non-empty string, got {self.weights_sha256!r}")
        if self.index_type not in ("flat", "hnsw", "ivf"):
            raise ConfigError(f"index_type must be flat, hnsw or ivf, got {self.index_type!r}")
        for name, low in (
            ("dim", 1),
            ("hnsw_m", 2),
            ("hnsw_ef_construction_n", 1),
            ("hnsw_ef_search_n", 1),
            ("ivf_nprobe_n", 1),
            ("ivf_min_train_n", 1),
            ("ivf_train_points_per_list_n", 39),
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
        if self.ivf_nlist is not None and (
            not isinstance(self.ivf_nlist, int) or isinstance(self.ivf_nlist, bool) or self.ivf_nlist < 1
        ):
            raise ConfigError(f"ivf_nlist must be None or an integer >= 1, got {self.ivf_nlist!r}")


# --- FAISS helpers (also used by benchmarks/bench_index.py) -------------------------------


def auto_nlist(n: int) -> int:
    """IVF list count for n vectors: ~4*sqrt(n), but at least 39 training points per list."""
    return max(1, min(int(round(4 * math.sqrt(n))), n // 39))


def _ivf_train_size(spec: IndexSpec, n: int) -> int | None:
    """The nlist to train an "ivf" index on n vectors with, or None to stay flat."""
    nlist = spec.ivf_nlist if spec.ivf_nlist is not None else auto_nlist(n)
    if n < max(spec.ivf_min_train_n, 39 * nlist):
        return None
    return nlist


def build_faiss_index(
    spec: IndexSpec, vectors: np.ndarray, ids: np.ndarray, *, trained: faiss.IndexIVFFlat | None = None
) -> faiss.IndexIDMap2:
    """A new IDMap2 index of ``spec``'s type holding ``vectors`` (unit float32) under ``ids``.

    For "ivf", ``trained`` reuses already trained lists; otherwise the lists are trained on
    ``vectors`` when there are enough of them, else the index stays flat (exact) for now.
    """
    d = spec.dim
    inner: faiss.Index
    if spec.index_type == "hnsw":
        inner = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = spec.hnsw_ef_construction_n
        inner.hnsw.efSearch = spec.hnsw_ef_search_n
    elif spec.index_type == "ivf" and trained is not None:
        inner = faiss.clone_index(trained)
        inner.reset()
    elif spec.index_type == "ivf" and (nlist := _ivf_train_size(spec, len(vectors))) is not None:
        quantizer = faiss.IndexFlatIP(d)
        inner = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        inner.own_fields = True
        quantizer.this.disown()
        inner.cp.max_points_per_centroid = spec.ivf_train_points_per_list_n
        inner.train(vectors)
        inner.make_direct_map(True)  # so IDMap2.reconstruct works
    else:
        inner = faiss.IndexFlatIP(d)
    index = faiss.IndexIDMap2(inner)
    if len(vectors):
        index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64)
        )
    _set_search_params(index, spec)
    return index


def _set_search_params(index: faiss.IndexIDMap2, spec: IndexSpec, k: int = 1) -> None:
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = max(spec.hnsw_ef_search_n, k)
    elif isinstance(inner, faiss.IndexIVF):
        inner.nprobe = min(spec.ivf_nprobe_n, inner.nlist)


def all_vectors(index: faiss.IndexIDMap2) -> tuple[np.ndarray, np.ndarray]:
    """Every stored vector (n, dim) and its id, in storage order."""
    ids = faiss.vector_to_array(index.id_map).astype(np.int64, copy=True)
    if index.ntotal == 0:
        return np.zeros((0, index.d), np.float32), ids
    inner = faiss.downcast_index(index.index)
    return inner.reconstruct_n(0, inner.ntotal), ids


# --- small file-system helpers ------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _mkdir_private(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, fill: Callable[[Callable[[bytes], int]], None]) -> dict[str, Any]:
    """Create ``path`` (0o600, must not exist), let ``fill(put)`` write it, fsync it.

    Returns its size and sha256 for the manifest.
    """
    digest = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, 0o600)

        def put(data: bytes) -> int:
            nonlocal size
            f.write(data)
            digest.update(data)
            size += len(data)
            return len(data)

        fill(put)
        f.flush()
        os.fsync(f.fileno())
    return {"bytes": size, "sha256": digest.hexdigest()}


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_pointer(directory: Path) -> str:
    try:
        name = (directory / POINTER).read_text().strip()
    except FileNotFoundError:
        if any(_VERSION_RE.match(p.name) for p in directory.iterdir()):
            raise IndexCorruptError(
                f"{directory}: {POINTER} is missing (index creation did not finish?)"
            ) from None
        raise IndexNotFoundError(f"no speaker index at {directory} (no {POINTER} file)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise IndexCorruptError(f"{directory}: unreadable {POINTER}: {e}") from e
    if not _VERSION_RE.match(name):
        raise IndexCorruptError(f"{directory}: {POINTER} holds {name[:40]!r}, not a version name")
    return name


def _versions_on_disk(directory: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _VERSION_RE.match(p.name)))


def _switch_pointer(directory: Path, name: str) -> None:
    """Make ``CURRENT`` name version ``name``, atomically (temporary file, fsync, os.replace)."""
    pointer_tmp = directory / f"{POINTER}.tmp-{secrets.token_hex(4)}"
    try:
        _write_file(pointer_tmp, lambda put: put(f"{name}\n".encode()))
        os.replace(pointer_tmp, directory / POINTER)
    except BaseException:
        pointer_tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)


def _vectors(x: Any, dim: int, what: str) -> np.ndarray:
    """Validate (n, dim) finite non-zero vectors; return them L2-normalised, float32, C order."""
    try:
        a = np.asarray(x)
    except ValueError as e:  # ragged nested lists
        raise ConfigError(f"{what} must be a 2-d array (n, {dim}): {e}") from e
    if a.ndim == 1 and what == "queries":
        a = a[None, :]
    if a.ndim != 2:
        raise ConfigError(f"{what} must be a 2-d array (n, {dim}), got shape {a.shape}")
    if a.shape[1] != dim:
        raise ModelMismatchError(f"{what} have dim {a.shape[1]} but the index holds dim {dim} embeddings")
    if a.dtype.kind not in "fiu":
        raise ConfigError(f"{what} must be numeric, got dtype {a.dtype}")
    a = np.array(a, dtype=np.float32, order="C")
    if not np.isfinite(a).all():
        raise ConfigError(f"{what} contain NaN or infinite values")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if a.shape[0] and (norms < 1e-6).any():
        raise ConfigError(f"{what} contain an all-zero vector")
    a /= norms
    return a


class WriterLock:
    """Exclusive writer lock on an index directory (fcntl.flock on ``<dir>/.lock``).

    Waits up to ``wait_s`` seconds (None: forever) and then raises IndexLockedError. The
    kernel releases the lock when the holding process dies, so a crash never leaves it stale.
    """

    def __init__(self, directory: str | os.PathLike[str], *, wait_s: float | None = 0.0) -> None:
        self.path = Path(directory) / LOCK_FILE
        if not self.path.parent.is_dir():
            raise IndexNotFoundError(f"no speaker index at {self.path.parent}")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        deadline = None if wait_s is None else time.monotonic() + max(0.0, wait_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise IndexLockedError(
                        f"{self.path.parent} is locked by another writer (pid {holder}); "
                        f"gave up after {wait_s:g} s"
                    ) from None
                time.sleep(0.05 if left is None else min(0.05, left))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# --- the index ----------------------------------------------------------------------------


class SpeakerIndex:
    """A speaker gallery on disk. Build with :meth:`create`, load with :meth:`open`.

    Changes stay in memory until :meth:`save`. An instance opened writable holds the
    directory's writer lock until :meth:`close` (or the end of a ``with`` block, which does
    not save).
    """

    def __init__(self, directory: Path, spec: IndexSpec, *, _private: bool = False) -> None:
        if not _private:
            raise ConfigError("use SpeakerIndex.create() or SpeakerIndex.open()")
        self._dir = directory
        self._spec = spec
        self._index = build_faiss_index(spec, np.zeros((0, spec.dim), np.float32), np.zeros(0, np.int64))
        self._utt = UTTERANCES_SCHEMA.empty_table()
        self._failures = FAILURES_SCHEMA.empty_table()
        self._sums: dict[str, np.ndarray] = {}
        self._n_clips: dict[str, int] = {}
        self._speech: dict[str, float] = {}
        self._sha: Counter[str] = Counter()
        self._threshold: dict[str, Any] = {"value": None, "method": None, "set_at": None}
        self._next_id = 0
        self._created_at = self._updated_at = _now().isoformat()
        self._version = 0
        self._dirty = True
        self._lock: WriterLock | None = None

    # -- opening ---------------------------------------------------------------------------

    @staticmethod
    def lock(directory: str | os.PathLike[str], *, wait_s: float | None = 0.0) -> WriterLock:
        """Take the writer lock of ``directory`` (see :class:`WriterLock`)."""
        return WriterLock(directory, wait_s=wait_s)

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        spec: IndexSpec,
        *,
        exist_ok: bool = False,
        wait_s: float | None = 0.0,
        save: bool = True,
    ) -> SpeakerIndex:
        """Create an empty index (saved at once) and return it open for writing.

        With ``exist_ok`` an existing index is opened instead, provided it was made with the
        same model, weights, dim and index type. ``save=False`` writes no version until the
        first :meth:`save` (only the directory and its lock file are made), so a caller that
        ends up adding nothing leaves no index behind.
        """
        if not isinstance(spec, IndexSpec):
            raise ConfigError(f"spec must be an IndexSpec, got {type(spec).__name__}")
        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise ConfigError(f"{d} exists and is not a directory")
        ours = re.compile(r"^(v\d{6,}|\.tmp-.*|CURRENT(\.tmp-.*)?|\.lock)$")
        strays = [p.name for p in d.iterdir() if not ours.match(p.name)] if d.is_dir() else []
        if strays:  # checked before touching anything: never chmod or litter a foreign dir
            raise ConfigError(f"{d} is not empty and not a speaker index (holds {strays[0]!r})")
        _mkdir_private(d)
        lock = WriterLock(d, wait_s=wait_s)
        try:
            if (d / POINTER).exists():
                if not exist_ok:
                    raise IndexExistsError(f"a speaker index already exists at {d}")
                self = cls._load(d, verify=True)
                self._check_expected(spec.model, spec.weights_sha256, spec.dim)
                if self._spec.index_type != spec.index_type:
                    raise ConfigError(
                        f"index at {d} is of type {self._spec.index_type!r}, not {spec.index_type!r}"
                    )
            else:
                _refuse_to_collect_data(d)
                self = cls(d, spec, _private=True)
                self._lock = lock
                self._gc(keep=())  # leftovers of a create that crashed
                if save:
                    self.save()
            self._lock = lock
            return self
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        model: str | None = None,
        weights_sha256: str | None = None,
        dim: int | None = None,
        writable: bool = False,
        wait_s: float | None = 0.0,
        verify: bool = True,
    ) -> SpeakerIndex:
        """Load the live version of the index at ``directory``.

        ``model``/``weights_sha256``/``dim``, when given, must match what the index was built
        with (else ModelMismatchError). ``writable`` takes the writer lock, waiting up to
        ``wait_s`` seconds (None: forever). ``verify`` checks every file's sha256.
        """
        d = Path(directory)
        if not d.is_dir():
            raise IndexNotFoundError(f"no speaker index at {d} (no such directory)")
        lock = WriterLock(d, wait_s=wait_s) if writable else None
        try:
            self = cls._load(d, verify=verify)
            self._check_expected(model, weights_sha256, dim)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        self._lock = lock
        return self

    @classmethod
    def _load(cls, d: Path, *, verify: bool) -> SpeakerIndex:
        try:
            for _ in range(3):
                name = _read_pointer(d)
                try:
                    return cls._load_version(d, name, verify)
                except IndexCorruptError:
                    if _read_pointer(d) == name:
                        raise
                    # a writer switched versions and removed ours while we read: read the new one
            return cls._load_version(d, _read_pointer(d), verify)
        except IndexCorruptError as e:
            raise _with_rollback_hint(d, e) from e

    @classmethod
    def _load_version(cls, d: Path, name: str, verify: bool) -> SpeakerIndex:
        where = f"index at {d} ({name})"
        try:
            return cls._parse_version(d, name, verify, where)
        except IndexCorruptError:
            raise
        except (
            OSError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            RuntimeError,
            pa.ArrowException,
        ) as e:
            raise IndexCorruptError(f"{where} is unreadable: {type(e).__name__}: {e}") from e

    @classmethod
    def _parse_version(cls, d: Path, name: str, verify: bool, where: str) -> SpeakerIndex:
        vdir = d / name
        manifest = json.loads((vdir / MANIFEST_FILE).read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexCorruptError(f"{where}: unsupported format_version {manifest.get('format_version')!r}")
        spec = IndexSpec(
            model=manifest["model"],
            weights_sha256=manifest["weights_sha256"],
            dim=manifest["dim"],
            index_type=manifest["index_type"],
            **manifest["index_params"],
        )
        if manifest["metric"] != "ip":
            raise IndexCorruptError(f"{where}: metric {manifest['metric']!r} is not 'ip'")
        files, counts = manifest["files"], manifest["counts"]
        for fname in DATA_FILES:
            st = (vdir / fname).stat()
            if st.st_size != files[fname]["bytes"]:
                raise IndexCorruptError(
                    f"{where}: {fname} has {st.st_size} bytes, manifest says {files[fname]['bytes']}"
                )
            if verify and _file_sha256(vdir / fname) != files[fname]["sha256"]:
                raise IndexCorruptError(f"{where}: {fname} does not match its sha256 in the manifest")
        index = faiss.read_index(str(vdir / INDEX_FILE))
        utt = pq.read_table(vdir / UTTERANCES_FILE).select(UTTERANCES_SCHEMA.names).cast(UTTERANCES_SCHEMA)
        spk = pq.read_table(vdir / SPEAKERS_FILE).select(SPEAKERS_SCHEMA.names).cast(SPEAKERS_SCHEMA)
        fails = pq.read_table(vdir / FAILURES_FILE).select(FAILURES_SCHEMA.names).cast(FAILURES_SCHEMA)

        if (
            not isinstance(index, faiss.IndexIDMap2)
            or index.d != spec.dim
            or index.metric_type != faiss.METRIC_INNER_PRODUCT
        ):
            raise IndexCorruptError(
                f"{where}: {INDEX_FILE} is not a dim-{spec.dim} inner-product IndexIDMap2"
            )
        ids = np.sort(faiss.vector_to_array(index.id_map))
        utt_ids = np.sort(utt["id"].to_numpy())
        if not (index.ntotal == utt.num_rows == counts["utterances"]) or not np.array_equal(ids, utt_ids):
            raise IndexCorruptError(
                f"{where}: FAISS holds {index.ntotal} vectors but {UTTERANCES_FILE} "
                f"{utt.num_rows} rows (manifest: {counts['utterances']}), or their ids differ"
            )
        n_clips = Counter(utt["speaker"].to_pylist())
        names = spk["speaker"].to_pylist()
        if (
            len(set(names)) != len(names)
            or spk.num_rows != counts["speakers"]
            or dict(zip(names, spk["n_clips"].to_pylist(), strict=True)) != dict(n_clips)
        ):
            raise IndexCorruptError(f"{where}: {SPEAKERS_FILE} disagrees with {UTTERANCES_FILE}")
        if fails.num_rows != counts["failures"]:
            raise IndexCorruptError(
                f"{where}: {FAILURES_FILE} has {fails.num_rows} rows, manifest says {counts['failures']}"
            )
        cent = spk["centroid"].combine_chunks()
        if (
            len(cent.flatten()) != spec.dim * spk.num_rows
            or pc.any(pc.not_equal(pc.list_value_length(cent), spec.dim)).as_py()
        ):
            raise IndexCorruptError(f"{where}: {SPEAKERS_FILE} centroids are not dim {spec.dim}")

        self = cls(d, spec, _private=True)
        self._index, self._utt, self._failures = index, utt, fails
        _set_search_params(index, spec)
        c = cent.flatten().to_numpy().astype(np.float64).reshape(-1, spec.dim)
        for i, (s, n, sp, mn) in enumerate(
            zip(
                names,
                spk["n_clips"].to_pylist(),
                spk["speech_s"].to_pylist(),
                spk["mean_norm"].to_pylist(),
                strict=True,
            )
        ):
            self._sums[s], self._n_clips[s], self._speech[s] = c[i] * mn * n, n, sp
        self._sha = Counter(utt["sha256"].to_pylist())
        self._threshold = dict(manifest["threshold"])
        self._next_id = int(manifest["next_id"])
        self._created_at, self._updated_at = manifest["created_at"], manifest["updated_at"]
        self._version, self._dirty = int(name[1:]), False
        return self

    def _check_expected(self, model: str | None, weights_sha256: str | None, dim: int | None) -> None:
        s = self._spec
        wrong = [
            (k, want, have)
            for k, want, have in (
                ("model", model, s.model),
                ("weights_sha256", weights_sha256, s.weights_sha256),
                ("dim", dim, s.dim),
            )
            if want is not None and want != have
        ]
        if wrong:
            have = ", ".join(f"{k}={h!r}" for k, _, h in wrong)
            want = ", ".join(f"{k}={w!r}" for k, w, _ in wrong)
            raise ModelMismatchError(
                f"index at {self._dir} was built with {have} but {want} was requested; "
                f"embed with the index's model or rebuild the index with the new one"
            )

    # -- properties ------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._dir

    @property
    def spec(self) -> IndexSpec:
        return self._spec

    @property
    def dim(self) -> int:
        return self._spec.dim

    @property
    def version(self) -> int:
        """Number of the version loaded or last saved (0 before the first save)."""
        return self._version

    @property
    def writable(self) -> bool:
        return self._lock is not None and self._lock.held

    @property
    def threshold(self) -> float | None:
        """Default decision threshold on cosine score, or None if never set."""
        return self._threshold["value"]

    def __len__(self) -> int:
        return self._utt.num_rows

    def close(self) -> None:
        """Release the writer lock, if held. Unsaved changes are dropped."""
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> SpeakerIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_writable(self) -> None:
        if not self.writable:
            raise ConfigError(f"index at {self._dir} is open read-only; open it with writable=True")

    # -- changes ---------------------------------------------------------------------------

    def add(
        self,
        vectors: Any,
        speakers: Sequence[str],
        paths: Sequence[str],
        sha256s: Sequence[str],
        durations_s: Sequence[float],
        speech_s: Sequence[float],
    ) -> np.ndarray:
        """Add n clips (one embedding each); returns their new int64 ids.

        Vectors are L2-normalised here; NaN/inf/zero vectors raise ConfigError and a wrong
        dim raises ModelMismatchError. A successful add drops those paths from failures().
        """
        self._check_writable()
        x = _vectors(vectors, self.dim, "vectors")
        n = len(x)
        cols = {
            "speakers": list(speakers),
            "paths": list(paths),
            "sha256s": list(sha256s),
            "durations_s": list(durations_s),
            "speech_s": list(speech_s),
        }
        for k, v in cols.items():
            if len(v) != n:
                raise ConfigError(f"{k} has {len(v)} items for {n} vectors")
        for s in cols["speakers"]:
            if not isinstance(s, str) or not s.strip():
                raise ConfigError(f"speaker names must be non-empty strings, got {s!r}")
        for p in cols["paths"]:
            if not isinstance(p, str):
                raise ConfigError(f"paths must be strings, got {p!r}")
        for h in cols["sha256s"]:
            if not isinstance(h, str) or not _SHA_RE.match(h):
                raise ConfigError(f"sha256s must be 64 lowercase hex digits, got {h!r}")
        dur = np.asarray(cols["durations_s"], dtype=np.float64)
        sp = np.asarray(cols["speech_s"], dtype=np.float64)
        if not (np.isfinite(dur).all() and np.isfinite(sp).all() and (dur >= 0).all() and (sp >= 0).all()):
            raise ConfigError("durations_s and speech_s must be finite and >= 0")
        if n == 0:
            return np.zeros(0, np.int64)

        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._index.add_with_ids(x, ids)
        now = _now()
        new = pa.table(
            {
                "id": ids,
                "speaker": cols["speakers"],
                "path": cols["paths"],
                "sha256": cols["sha256s"],
                "duration_s": dur,
                "speech_s": sp,
                "model": [self._spec.model] * n,
                "added_at": pa.array([now] * n, _TS),
            },
            schema=UTTERANCES_SCHEMA,
        )
        self._utt = pa.concat_tables([self._utt, new])
        for i, s in enumerate(cols["speakers"]):
            if s not in self._sums:
                self._sums[s], self._n_clips[s], self._speech[s] = np.zeros(self.dim), 0, 0.0
            self._sums[s] += x[i]
            self._n_clips[s] += 1
            self._speech[s] += float(sp[i])
        self._sha.update(cols["sha256s"])
        if self._failures.num_rows:
            self._failures = self._failures.filter(
                pc.invert(pc.is_in(self._failures["path"], pa.array(cols["paths"], pa.string())))
            )
        self._next_id += n
        self._dirty = True
        return ids

    def remove_speaker(self, name: str) -> int:
        """Remove every clip of ``name``; returns how many (SpeakerNotFoundError if none)."""
        self._check_writable()
        if name not in self._n_clips:
            raise SpeakerNotFoundError(f"speaker {name!r} is not in the index at {self._dir}")
        mask = pc.equal(self._utt["speaker"], name)
        gone = self._utt.filter(mask)
        ids = gone["id"].to_numpy()
        inner = faiss.downcast_index(self._index.index)
        if isinstance(inner, faiss.IndexFlat):
            removed = self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
        else:  # HNSW cannot delete; IVF deletion breaks IDMap2's id table: re-add the rest
            vecs, all_ids = all_vectors(self._index)
            keep = ~np.isin(all_ids, ids)
            self._index = build_faiss_index(
                self._spec,
                vecs[keep],
                all_ids[keep],
                trained=inner if isinstance(inner, faiss.IndexIVF) else None,
            )
            removed = int((~keep).sum())
        if removed != len(ids):
            raise IndexCorruptError(f"removed {removed} vectors of {name!r} from FAISS, expected {len(ids)}")
        self._utt = self._utt.filter(pc.invert(mask))
        self._sha.subtract(gone["sha256"].to_pylist())
        self._sha = +self._sha
        del self._sums[name], self._n_clips[name], self._speech[name]
        self._dirty = True
        return len(ids)

    def record_failures(self, failures: Iterable[tuple[str, str] | Mapping[str, str]]) -> None:
        """Remember files that failed to embed: (path, error) pairs or {"path", "error"} dicts.

        A path recorded again replaces its older entry.
        """
        self._check_writable()
        rows: dict[str, str] = {}
        for f in failures:
            try:
                path, error = (f["path"], f["error"]) if isinstance(f, Mapping) else f
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"a failure is (path, error) or {{'path', 'error'}}, got {f!r}") from None
            if not isinstance(path, str) or not isinstance(error, str):
                raise ConfigError(f"a failure is (path: str, error: str), got {f!r}")
            rows[path] = error
        if not rows:
            return
        old = self._failures.filter(
            pc.invert(pc.is_in(self._failures["path"], pa.array(list(rows), pa.string())))
        )
        new = pa.table(
            {"path": list(rows), "error": list(rows.values()), "at": pa.array([_now()] * len(rows), _TS)},
            schema=FAILURES_SCHEMA,
        )
        self._failures = pa.concat_tables([old, new])
        self._dirty = True

    def set_threshold(
        self,
        value: float | None,
        method: str,
        *,
        basis: str | None = None,
        warnings: Sequence[str] = (),
        near_duplicates: Sequence[tuple[str, str, float]] = (),
    ) -> None:
        """Set the default cosine threshold and say how it was chosen (e.g. "eer:dev-set").

        ``basis`` (a short word: what the value rests on, e.g. "calibrated", "tail-fit",
        "verification-threshold"), ``warnings`` (sentences on why it may be unreliable) and
        ``near_duplicates`` ((speaker, speaker, centroid cosine) of names that look like one
        voice) are stored with it and shown by :meth:`info`; setting a threshold again
        replaces them all.
        """
        self._check_writable()
        if basis is not None and (not isinstance(basis, str) or not basis.strip()):
            raise ConfigError(f"basis must be None or a non-empty string, got {basis!r}")
        if isinstance(warnings, str) or not all(isinstance(w, str) for w in warnings):
            raise ConfigError("warnings must be a sequence of strings")
        dups = []
        for item in near_duplicates:
            try:
                a, b, c = item
            except (TypeError, ValueError):
                raise ConfigError(f"a near duplicate is (speaker, speaker, cosine), got {item!r}") from None
            if not isinstance(a, str) or not isinstance(b, str) or not isinstance(c, numbers.Real):
                raise ConfigError(f"a near duplicate is (speaker: str, speaker: str, cosine), got {item!r}")
            dups.append([a, b, float(c)])
        if value is not None:
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not -1.0 <= float(value) <= 1.0
            ):
                raise ConfigError(f"threshold must be a cosine in [-1, 1] or None, got {value!r}")
            value = float(value)
        if not isinstance(method, str) or not method.strip():
            raise ConfigError("method must say how the threshold was set (a non-empty string)")
        self._threshold = {"value": value, "method": method, "set_at": _now().isoformat()}
        if basis is not None:
            self._threshold["basis"] = basis
        if warnings:
            self._threshold["warnings"] = list(warnings)
        if dups:
            self._threshold["near_duplicates"] = dups
        self._dirty = True

    # -- queries ---------------------------------------------------------------------------

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest clips of each query: (scores float32 (q, k'), ids int64 (q, k')).

        Scores are cosine similarities, best first; k' = min(k, clips in the gallery).
        Approximate indexes may rarely find fewer than k' for a query: those slots hold id
        -1 and score -inf. A 1-d query is taken as one row.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        q = _vectors(queries, self.dim, "queries")
        if self._index.ntotal == 0:
            raise EmptyGalleryError(f"the index at {self._dir} holds no speakers")
        k_eff = min(int(k), self._index.ntotal)
        _set_search_params(self._index, self._spec, k_eff)
        scores, ids = self._index.search(q, k_eff)
        found = (ids != -1).any(axis=0)
        width = int(found.nonzero()[0].max()) + 1 if found.any() else 0
        scores, ids = scores[:, :width], ids[:, :width]
        scores[ids == -1] = -np.inf
        return scores.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored (unit) vectors of ``ids`` (ConfigError if an id is unknown)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vecs, all_ids = all_vectors(self._index)
        order = np.argsort(all_ids)
        pos = np.searchsorted(all_ids, ids, sorter=order)
        pos = np.minimum(pos, max(len(all_ids) - 1, 0))
        if len(ids) and (len(all_ids) == 0 or (all_ids[order[pos]] != ids).any()):
            raise ConfigError(f"unknown vector ids among {ids.tolist()[:5]}")
        return vecs[order[pos]] if len(ids) else np.zeros((0, self.dim), np.float32)

    def has_sha256(self, sha256: str) -> bool:
        """Whether a clip with this content hash is already in the index."""
        return sha256 in self._sha

    def known_sha256(self) -> set[str]:
        return set(self._sha)

    def speakers(self) -> list[str]:
        """Enrolled speaker names, sorted."""
        return sorted(self._n_clips)

    def speaker_centroids(self) -> tuple[list[str], np.ndarray]:
        """(sorted names, (s, dim) float32 matrix of L2-normalised mean clip vectors)."""
        names = self.speakers()
        if not names:
            return names, np.zeros((0, self.dim), np.float32)
        m = np.stack([self._sums[s] for s in names])
        norms = np.linalg.norm(m, axis=1, keepdims=True)
        return names, (m / np.maximum(norms, 1e-12)).astype(np.float32)

    def utterances(self) -> pa.Table:
        """One row per clip (see UTTERANCES_SCHEMA)."""
        return self._utt

    def failures(self) -> pa.Table:
        """Files that failed to embed: path, error, at (UTC)."""
        return self._failures

    def info(self) -> dict[str, Any]:
        """Counts, model, dim, index type, bytes on disk of the live version, threshold."""
        inner = faiss.downcast_index(self._index.index)
        vdir = self._dir / f"v{self._version:06d}"
        size = sum(p.stat().st_size for p in vdir.iterdir()) if self._version and vdir.is_dir() else 0
        return {
            "path": str(self._dir),
            "version": self._version,
            "model": self._spec.model,
            "weights_sha256": self._spec.weights_sha256,
            "dim": self.dim,
            "metric": "ip",
            "index_type": self._spec.index_type,
            "faiss_index": type(inner).__name__,
            "ivf_nlist": inner.nlist if isinstance(inner, faiss.IndexIVF) else None,
            "utterances": self._utt.num_rows,
            "speakers": len(self._n_clips),
            "failures": self._failures.num_rows,
            "threshold": self._threshold["value"],
            "threshold_method": self._threshold["method"],
            # what the threshold rests on, why it may be unreliable, names that look like one voice
            "threshold_basis": self._threshold.get("basis"),
            "threshold_warnings": list(self._threshold.get("warnings", [])),
            "near_duplicate_speakers": [list(x) for x in self._threshold.get("near_duplicates", [])],
            "bytes_on_disk": size,
            "created_at": self._created_at,
            "updated_at": self._updated_at,
            "unsaved_changes": self._dirty,
            "writable": self.writable,
        }

    # -- saving ----------------------------------------------------------------------------

    def _speakers_table(self) -> pa.Table:
        names, cent = self.speaker_centroids()
        mean_norm = [float(np.linalg.norm(self._sums[s]) / self._n_clips[s]) for s in names]
        centroid = pa.ListArray.from_arrays(
            np.arange(len(names) + 1, dtype=np.int32) * self.dim, pa.array(cent.reshape(-1), pa.float32())
        )
        return pa.table(
            {
                "speaker": names,
                "n_clips": [self._n_clips[s] for s in names],
                "speech_s": [self._speech[s] for s in names],
                "centroid": centroid,
                "mean_norm": mean_norm,
            },
            schema=SPEAKERS_SCHEMA,
        )

    def _maybe_train_ivf(self) -> None:
        if self._spec.index_type != "ivf":
            return
        inner = faiss.downcast_index(self._index.index)
        n = self._index.ntotal
        want = _ivf_train_size(self._spec, n)
        if want is None:
            return
        if isinstance(inner, faiss.IndexIVF) and (self._spec.ivf_nlist is not None or want < 2 * inner.nlist):
            return
        vecs, ids = all_vectors(self._index)
        self._index = build_faiss_index(self._spec, vecs, ids)

    def _write_version(self, vdir: Path, updated: str) -> None:
        """Write every file of a version into the (new, empty) directory ``vdir``; manifest last."""
        files = {
            INDEX_FILE: _write_file(
                vdir / INDEX_FILE, lambda put: faiss.write_index(self._index, faiss.PyCallbackIOWriter(put))
            ),
            UTTERANCES_FILE: _write_file(vdir / UTTERANCES_FILE, lambda put: put(_parquet_bytes(self._utt))),
            SPEAKERS_FILE: _write_file(
                vdir / SPEAKERS_FILE, lambda put: put(_parquet_bytes(self._speakers_table()))
            ),
            FAILURES_FILE: _write_file(vdir / FAILURES_FILE, lambda put: put(_parquet_bytes(self._failures))),
        }
        main = ("model", "weights_sha256", "dim", "index_type")
        manifest = {
            "format_version": FORMAT_VERSION,
            **{k: getattr(self._spec, k) for k in main},
            "metric": "ip",
            "index_params": {k: v for k, v in asdict(self._spec).items() if k not in main},
            "threshold": self._threshold,
            "next_id": self._next_id,
            "counts": {
                "utterances": self._utt.num_rows,
                "speakers": len(self._n_clips),
                "failures": self._failures.num_rows,
                "vectors": int(self._index.ntotal),
            },
            "created_at": self._created_at,
            "updated_at": updated,
            "files": files,
        }
        text = json.dumps(manifest, indent=2).encode()
        _write_file(vdir / MANIFEST_FILE, lambda put: put(text))
        _fsync_dir(vdir)

    def save(self) -> None:
        """Write the index as a new version and switch to it atomically (no-op if unchanged)."""
        self._check_writable()
        if not self._dirty:
            return
        self._maybe_train_ivf()
        d = self._dir
        version = max([self._version, *_versions_on_disk(d)]) + 1
        name = f"v{version:06d}"
        tmp = d / f".tmp-{name}-{secrets.token_hex(4)}"
        os.mkdir(tmp, 0o700)
        os.chmod(tmp, 0o700)
        updated = _now().isoformat()
        try:
            self._write_version(tmp, updated)
            os.rename(tmp, d / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # the live version is untouched
            raise
        _fsync_dir(d)
        _switch_pointer(d, name)  # the switch: CURRENT names the new, complete version
        previous, self._version, self._updated_at, self._dirty = self._version, version, updated, False
        self._utt = self._utt.combine_chunks()
        self._gc(keep=(version, previous))

    def _gc(self, keep: Iterable[int]) -> None:
        """Delete versions not in ``keep`` and leftovers of interrupted saves (writer only)."""
        keep_names = {f"v{v:06d}" for v in keep}
        for p in self._dir.iterdir():
            stale_version = _VERSION_RE.match(p.name) and p.name not in keep_names
            if stale_version or p.name.startswith(".tmp-") or p.name.startswith(f"{POINTER}.tmp"):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)


# --- verification and rollback ------------------------------------------------------------


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
    #: Leftovers of interrupted saves (``.tmp-*``); the next save deletes them.
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
            "versions": [v.to_dict() for v in self.versions],
            "leftovers": list(self.leftovers),
        }


def _check_version(d: Path, version: int, current: bool) -> VersionCheck | None:
    """Fully check one version (None if it vanished meanwhile: a writer collected it)."""
    name = f"v{version:06d}"
    vdir = d / name
    try:
        size = sum(p.stat().st_size for p in vdir.iterdir())
    except FileNotFoundError:
        if not current:
            return None
        return VersionCheck(version, True, False, f"{d}: {POINTER} names {name}, which does not exist")
    except OSError as e:
        return VersionCheck(version, current, False, f"index at {d} ({name}) is unreadable: {e}")
    try:
        ix = SpeakerIndex._load_version(d, name, verify=True)
    except IndexCorruptError as e:
        if not vdir.exists() and not current:
            return None
        return VersionCheck(version, current, False, str(e), bytes_on_disk=size)
    return VersionCheck(
        version, current, True, None, utterances=len(ix), speakers=len(ix.speakers()),
        updated_at=ix._updated_at, bytes_on_disk=size,
    )


def _pointer_state(d: Path) -> tuple[int | None, str | None]:
    """(version CURRENT names or None, what is wrong with CURRENT or None)."""
    try:
        return int(_read_pointer(d)[1:]), None
    except IndexNotFoundError:
        raise
    except IndexCorruptError as e:
        return None, str(e)


def _newest_intact(d: Path, below: int | None) -> int | None:
    """The newest version older than ``below`` (any, if None) whose files all check out."""
    for v in sorted(_versions_on_disk(d), reverse=True):
        if below is not None and v >= below:
            continue
        check = _check_version(d, v, current=False)
        if check is not None and check.intact:
            return v
    return None


def _refuse_to_collect_data(d: Path) -> None:
    """Before a create that finds no ``CURRENT`` deletes the versions on disk (leftovers of a
    create that crashed, empty): refuse if one of them is an intact index holding clips."""
    for v in sorted(_versions_on_disk(d), reverse=True):
        check = _check_version(d, v, current=False)
        if check is not None and check.intact and check.utterances:
            err = IndexCorruptError(
                f"{d}: {POINTER} is missing, but version {v} is intact and holds {check.utterances} clips; "
                f"roll back to version {v} to use it"
            )
            err.rollback_to = v  # type: ignore[attr-defined]
            raise err


def _with_rollback_hint(d: Path, error: IndexCorruptError) -> IndexCorruptError:
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


def verify_index(directory: str | os.PathLike[str]) -> IndexCheck:
    """Check every version of the index at ``directory``: which are intact, which is current,
    what is wrong with the others.

    Each version is read in full (every file against its sha256 in the manifest, FAISS and
    Parquet parsed, counts and ids cross-checked), exactly as opening it would. Takes no lock
    (a reader); a version a writer deletes meanwhile is left out. Raises IndexNotFoundError
    when ``directory`` holds no index at all; a damaged one is reported, never raised.
    """
    d = Path(directory)
    if not d.is_dir():
        raise IndexNotFoundError(f"no speaker index at {d} (no such directory)")
    current, pointer_problem = _pointer_state(d)
    versions = set(_versions_on_disk(d))
    if current is not None:
        versions.add(current)
    checks = [c for v in sorted(versions, reverse=True) if (c := _check_version(d, v, v == current)) is not None]
    leftovers = tuple(sorted(p.name for p in d.iterdir() if ".tmp-" in p.name))
    report = IndexCheck(str(d), current, pointer_problem, tuple(checks), leftovers)
    for problem in report.problems:
        log.debug("verify %s: %s", d, problem)
    return report


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
        if to_version is None:
            target = _newest_intact(d, below=current)
            if target is None:
                where = "" if current is None else f" older than version {current}"
                raise IndexCorruptError(f"{d}: no intact version{where} to roll back to")
        else:
            target = int(to_version)
            if target == current:
                raise ConfigError(f"version {target} is already the current version of the index at {d}")
            on_disk = _versions_on_disk(d)
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
        _switch_pointer(d, f"v{target:06d}")
    log.info("%s: rolled back from version %s to version %s", d, current, target)
    return target
