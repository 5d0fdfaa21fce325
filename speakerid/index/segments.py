"""Format 2 of the index: immutable segments named by small per-version manifests.

Layout (dirs 0o700, files 0o600)::

    <dir>/CURRENT                          "v000042": the live version, replaced atomically
    <dir>/v000042/manifest.json            format_version 2: spec, threshold, next_id, counts, the
                                           live segments, the tombstones, the centroid snapshot,
                                           size + sha256 of every file it names
                 failures.parquet          path, error, at
    <dir>/segments/s000007.faiss           the segment's clips: a bare FlatIP / HNSWFlat / IVFFlat
                                           (no IDMap: the k-th vector is the k-th id below)
                   s000007.ids.npy         its clip ids, ascending (int64)
                   s000007.clips.parquet   its utterance rows (UTTERANCES_SCHEMA), in id order
                   s000007.speakers.parquet  per speaker of the segment: clips, speech, sum of vectors
                   s000007.sha.npy         content-hash lookup (optional, see below): one record
                                           (sha256 S32 raw digest, row <u4 position) per clip, sorted
                   s000007.path.npy        path lookup (optional): one record (path S16 =
                                           blake2b-128 of the UTF-8 path, row <u4, sha256 S32) per clip, sorted
                   c000009.parquet         centroid snapshot: speaker (sorted), n_clips, speech_s, mean_norm
                   c000009.npy             its (speakers, dim) float32 unit centroids
                   c000009.faiss           FAISS over them (flat, or IVF for big galleries)

A save appends: the clips added since the last save become one new segment (its six files
written and fsynced), then a new version directory holding only the manifest and the failures
is built atomically, then ``CURRENT`` is switched. Its cost does not depend on the gallery size.
Removing a speaker adds a *tombstone* ``speaker -> seq`` to the manifest: that speaker's clips
in segments numbered ``<= seq`` are dead (clips added again later live in newer segments).
Compaction (:mod:`speakerid.index.gallery`) writes merged segments and a new centroid snapshot
and drops the dead rows. Files are never rewritten in place, so a reader that opened an older
version keeps reading it (FAISS files are memory-mapped, Parquet files mapped when opened: both
survive the unlink of a later collection). A crash leaves at most unreferenced segment files
and ``.tmp`` siblings, which the next writer deletes.

The two lookup files (:class:`ContentKeys`) let a writer ask "is this content / this path
already indexed?" in O(log n) per query without reading the segment's clip rows (issue 11:
resuming or enrolling one clip read every row of a 1e6-clip gallery, ~1 s). Both are plain
``.npy`` files of a structured dtype, sorted by (key, row), memory-mapped and binary-searched
(``np.searchsorted`` on the whole record: contiguous, no copy). 36 + 52 bytes a clip (88 MB at
1e6 clips, against 768 MB of FAISS). They are recorded in the segment's ``files`` like the
others (size + sha256, checked by verify), so a reader of this code base from before them
ignores them and keeps them (it names every file of the record). A segment without them
(written before them, or by such a reader turned writer) is looked up by scanning its sha256 /
path columns once (correct, O(segment): 1.7 s at 1e6 clips against the 1.9 s of the old
dicts); a writer then keeps what the scan made: its next save writes the two files for that
segment and names them in the new manifest (:func:`write_keys`), so this is paid once. The
format version is unchanged.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._io import PRIVATE_DIR, atomic_dir, fsync_dir, mkdir_private, sha256_file
from ..errors import IndexCorruptError
from .lookup import PATH_KEY_DTYPE, SHA_KEY_DTYPE, ClipLookup, ContentKeys, load_keys, path_digest
from .spec import IndexSpec
from .storage import (
    _READ_ERRORS,
    _write_new,
    FAILURES_FILE,
    FORMAT_VERSION,
    MANIFEST_FILE,
    SEGMENTS_DIR,
    UTTERANCES_SCHEMA,
    switch_pointer,
    version_name,
)

__all__ = [
    "DELTA_SCHEMA", "PATH_KEY_DTYPE", "SHA_KEY_DTYPE", "SNAPSHOT_SCHEMA", "VERIFY_MAX_BYTES", "ClipLookup",
    "ContentKeys", "Manifest", "Segment", "delta_table", "key_files", "path_digest", "write_keys",
    "open_faiss", "read_parquet", "search_inner", "segment_files", "write_manifest", "write_segment", "write_snapshot",
]

log = logging.getLogger("speakerid")

#: Opening hashes (sha256) the files up to this size; bigger ones only have their size checked
#: there, and are hashed by verify_index. A 1e6-clip flat segment is 0.77 GB: hashing it took
#: ~1.5 s, which would make opening cost O(gallery) again.
VERIFY_MAX_BYTES = 8 << 20

SEG_RE = re.compile(r"^[sc](\d{6,})\.")
DELTA_SCHEMA = pa.schema(
    [("speaker", pa.string()), ("n_clips", pa.int64()), ("speech_s", pa.float64()), ("sum", pa.list_(pa.float64()))]
)
SNAPSHOT_SCHEMA = pa.schema(
    [("speaker", pa.string()), ("n_clips", pa.int64()), ("speech_s", pa.float64()), ("mean_norm", pa.float64())]
)


def seg_name(seq: int) -> str:
    return f"s{seq:06d}"


def snap_name(seq: int) -> str:
    return f"c{seq:06d}"


def segment_files(seq: int) -> tuple[str, str, str, str]:
    n = seg_name(seq)
    return f"{n}.faiss", f"{n}.ids.npy", f"{n}.clips.parquet", f"{n}.speakers.parquet"


def key_files(seq: int) -> tuple[str, str]:
    """The segment's optional lookup files (content hash, path)."""
    n = seg_name(seq)
    return f"{n}.sha.npy", f"{n}.path.npy"


def snapshot_files(seq: int) -> tuple[str, str, str]:
    n = snap_name(seq)
    return f"{n}.faiss", f"{n}.npy", f"{n}.parquet"


# writing ---------------------------------------------------------------------------------------


def _put(path: Path, fill: Callable[[Callable[[bytes], int]], None]) -> dict[str, Any]:
    """Write ``path`` (0o600) by streaming ``fill(put)`` into it, fsync it; its size and sha256.

    A file of that name can only be the leftover of a crashed save (segment numbers are never
    reused by a version), so it is replaced."""
    path.unlink(missing_ok=True)
    return _write_new(path, fill, fsync=True)


def _parquet(table: pa.Table) -> Callable[[Callable[[bytes], int]], None]:
    def fill(put: Callable[[bytes], int]) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        put(sink.getvalue().to_pybytes())

    return fill


def _npy(a: np.ndarray) -> Callable[[Callable[[bytes], int]], None]:
    def fill(put: Callable[[bytes], int]) -> None:
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        put(buf.getbuffer().tobytes())

    return fill


def _faiss(index: faiss.Index) -> Callable[[Callable[[bytes], int]], None]:
    return lambda put: faiss.write_index(index, faiss.PyCallbackIOWriter(put))


def write_segment(
    directory: Path, seq: int, index: faiss.Index, ids: np.ndarray, clips: pa.Table, delta: pa.Table,
    keys: ContentKeys,
) -> dict[str, Any]:
    """Write segment ``seq`` (its six files, fsynced; ``keys``: the :class:`ContentKeys` of
    ``clips``); its manifest record."""
    sdir = mkdir_private(directory / SEGMENTS_DIR)
    f_faiss, f_ids, f_clips, f_spk = segment_files(seq)
    f_sha, f_path = key_files(seq)
    files = {
        f_faiss: _put(sdir / f_faiss, _faiss(index)),
        f_ids: _put(sdir / f_ids, _npy(np.ascontiguousarray(ids, dtype=np.int64))),
        f_clips: _put(sdir / f_clips, _parquet(clips)),
        f_spk: _put(sdir / f_spk, _parquet(delta)),
        f_sha: _put(sdir / f_sha, _npy(keys.sha)),
        f_path: _put(sdir / f_path, _npy(keys.path)),
    }
    fsync_dir(sdir)
    return {"seq": seq, "rows": int(len(ids)), "files": files}


def write_keys(directory: Path, rec: dict[str, Any], keys: ContentKeys) -> dict[str, Any]:
    """Write the lookup files of a segment saved without them (``rec`` names none: written
    before them); its record with them added. The next manifest names them; until then (a crash)
    they are unreferenced leftovers that the next writer's collection deletes."""
    sdir = directory / SEGMENTS_DIR
    f_sha, f_path = key_files(int(rec["seq"]))
    files = {**rec["files"], f_sha: _put(sdir / f_sha, _npy(keys.sha)), f_path: _put(sdir / f_path, _npy(keys.path))}
    fsync_dir(sdir)
    return {**rec, "files": files}


def write_snapshot(
    directory: Path, seq: int, covers: int, table: pa.Table, centroids: np.ndarray, index: faiss.Index
) -> dict[str, Any]:
    """Write centroid snapshot ``seq`` (covering segments ``<= covers``); its manifest record."""
    sdir = mkdir_private(directory / SEGMENTS_DIR)
    f_faiss, f_npy, f_pq = snapshot_files(seq)
    files = {
        f_faiss: _put(sdir / f_faiss, _faiss(index)),
        f_npy: _put(sdir / f_npy, _npy(np.ascontiguousarray(centroids, dtype=np.float32))),
        f_pq: _put(sdir / f_pq, _parquet(table)),
    }
    fsync_dir(sdir)
    return {"seq": seq, "covers": covers, "rows": table.num_rows, "files": files}


@dataclass(frozen=True)
class Manifest:
    """What a format-2 version names (its manifest.json, minus the file checks)."""

    number: int
    spec: IndexSpec
    threshold: dict[str, Any]
    next_id: int
    next_seq: int
    #: Live clips (dead rows of tombstoned speakers not counted), speakers, failures.
    utterances: int
    speakers: int
    failures: int
    #: Clip rows in the segments that tombstones kill (what compaction would drop).
    dead_rows: int
    segments: tuple[dict[str, Any], ...]
    snapshot: dict[str, Any] | None
    tombstones: dict[str, int]
    created_at: str
    updated_at: str
    failures_file: dict[str, Any] | None = None


def write_manifest(directory: Path, m: Manifest, failures: pa.Table) -> None:
    """Write version ``m.number`` (manifest + failures, atomically) and make it the live one."""
    name = version_name(m.number)
    main = ("model", "weights_sha256", "dim", "index_type")
    with atomic_dir(directory / name, PRIVATE_DIR) as tmp:
        fail = _put(tmp / FAILURES_FILE, _parquet(failures))
        doc = {
            "format_version": FORMAT_VERSION,
            **{k: getattr(m.spec, k) for k in main},
            "metric": "ip",
            "index_params": {k: v for k, v in asdict(m.spec).items() if k not in main},
            "threshold": m.threshold,
            "next_id": m.next_id,
            "next_seq": m.next_seq,
            "counts": {"utterances": m.utterances, "speakers": m.speakers, "failures": failures.num_rows,
                       "dead_rows": m.dead_rows},
            "created_at": m.created_at,
            "updated_at": m.updated_at,
            "segments": list(m.segments),
            "snapshot": m.snapshot,
            "tombstones": m.tombstones,
            "files": {FAILURES_FILE: fail},
        }
        text = json.dumps(doc, indent=1).encode()
        _put(tmp / MANIFEST_FILE, lambda put: put(text))
    switch_pointer(directory, name)


def read_manifest(directory: Path, name: str, doc: dict[str, Any]) -> Manifest:
    from .storage import spec_of

    where = f"index at {directory} ({name})"
    try:
        c = doc["counts"]
        return Manifest(
            number=int(name[1:]), spec=spec_of(doc, where), threshold=dict(doc["threshold"]),
            next_id=int(doc["next_id"]), next_seq=int(doc["next_seq"]), utterances=int(c["utterances"]),
            speakers=int(c["speakers"]), failures=int(c["failures"]), dead_rows=int(c["dead_rows"]),
            segments=tuple(doc["segments"]), snapshot=doc["snapshot"],
            tombstones={str(k): int(v) for k, v in doc["tombstones"].items()},
            created_at=doc["created_at"], updated_at=doc["updated_at"],
            failures_file=doc["files"][FAILURES_FILE],
        )
    except (KeyError, TypeError, ValueError) as e:
        raise IndexCorruptError(f"{where}: malformed {MANIFEST_FILE}: {type(e).__name__}: {e}") from e


def referenced_files(m: Manifest) -> set[str]:
    out: set[str] = set()
    for rec in m.segments:
        out.update(rec["files"])
    if m.snapshot is not None:
        out.update(m.snapshot["files"])
    return out


def collect_segments(directory: Path, keep: Iterable[str]) -> None:
    """Delete the segment files no kept version names (writer only)."""
    sdir = directory / SEGMENTS_DIR
    if not sdir.is_dir():
        return
    keep = set(keep)
    for p in sdir.iterdir():
        if p.name not in keep:
            p.unlink(missing_ok=True)


# reading ---------------------------------------------------------------------------------------


def check_file(path: Path, rec: dict[str, Any], verify: bool, where: str) -> None:
    """Size (always) and sha256 (``verify``, for files up to VERIFY_MAX_BYTES unless verify == "all")."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise IndexCorruptError(f"{where}: {path.name} is missing") from None
    if size != rec["bytes"]:
        raise IndexCorruptError(f"{where}: {path.name} has {size} bytes, manifest says {rec['bytes']}")
    if verify and (verify == "all" or size <= VERIFY_MAX_BYTES) and sha256_file(path) != rec["sha256"]:
        raise IndexCorruptError(f"{where}: {path.name} does not match its sha256 in the manifest")


def read_parquet(source: Any, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file (path or mapped buffer) as a table. ``pq.ParquetFile`` rather than
    ``pq.read_table``: the latter imports pandas on first use (1-2 s of a reader's first open)."""
    if isinstance(source, Path):
        source = str(source)
    return pq.ParquetFile(source).read(columns=columns)


def open_faiss(path: Path) -> faiss.Index:
    """A FAISS file, memory-mapped where FAISS can (IO_FLAG_MMAP_IFC: flat and HNSW storage in
    faiss 1.15; opening a 1e5 x 192 flat index took 2.4 ms mapped, 100 ms read)."""
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    except RuntimeError:
        return faiss.read_index(str(path))


class Segment:
    """One segment: FAISS (mapped), ids (mapped), the clip rows (mapped, parsed on first use)
    and the per-speaker sums. The segment being filled in memory (unsaved clips) is one too,
    with ``seq`` None."""

    def __init__(self, seq: int | None, index: faiss.Index, ids: np.ndarray, clips: pa.Table | None,
                 source: Any = None, delta: pa.Table | None = None, record: dict[str, Any] | None = None,
                 keys: ContentKeys | None = None) -> None:
        self.seq, self.index, self.ids = seq, index, ids
        self._clips, self._source, self.delta, self.record = clips, source, delta, record
        self._dead: tuple[Any, np.ndarray] | None = None
        #: The lookup files (mapped) or, for a segment without them, made from its columns on first use.
        self._keys = keys
        self._stored_keys = keys is not None and seq is not None and clips is None
        self._speaker_col: pa.ChunkedArray | None = None

    @property
    def rows(self) -> int:
        return len(self.ids)

    @classmethod
    def open(cls, directory: Path, rec: dict[str, Any], verify: bool | str, where: str, *,
             with_delta: bool) -> Segment:
        sdir = directory / SEGMENTS_DIR
        seq = int(rec["seq"])
        f_faiss, f_ids, f_clips, f_spk = segment_files(seq)
        try:
            for f in (f_faiss, f_ids, f_clips, f_spk):
                check_file(sdir / f, rec["files"][f], verify, where)
            index = open_faiss(sdir / f_faiss)
            ids = np.load(sdir / f_ids, mmap_mode="r", allow_pickle=False)
            source = pa.memory_map(str(sdir / f_clips))  # mapped now: survives a later collection
            delta = read_parquet(sdir / f_spk) if with_delta else None
            keys = None
            f_sha, f_path = key_files(seq)
            if f_sha in rec["files"] or f_path in rec["files"]:  # mapped now too; absent before them
                for f in (f_sha, f_path):
                    check_file(sdir / f, rec["files"][f], verify, where)
                keys = ContentKeys(load_keys(sdir / f_sha, SHA_KEY_DTYPE, int(rec["rows"]), where),
                                   load_keys(sdir / f_path, PATH_KEY_DTYPE, int(rec["rows"]), where))
        except IndexCorruptError:
            raise
        except _READ_ERRORS as e:
            raise IndexCorruptError(f"{where}: segment {seg_name(seq)} is unreadable: {type(e).__name__}: {e}") from e
        if ids.dtype != np.int64 or ids.ndim != 1 or len(ids) != rec["rows"] or index.ntotal != len(ids):
            raise IndexCorruptError(
                f"{where}: segment {seg_name(seq)} holds {index.ntotal} vectors and {len(ids)} ids, "
                f"manifest says {rec['rows']}"
            )
        return cls(seq, index, ids, None, source, delta, rec, keys)

    def clips(self) -> pa.Table:
        if self._clips is None:
            try:
                t = read_parquet(self._source)
                self._clips = t.select(UTTERANCES_SCHEMA.names).cast(UTTERANCES_SCHEMA).combine_chunks()
            except _READ_ERRORS as e:
                raise IndexCorruptError(f"segment {self.seq} clips are unreadable: {e}") from e
            if self._clips.num_rows != self.rows:
                raise IndexCorruptError(f"segment {self.seq}: {self._clips.num_rows} clip rows for {self.rows} ids")
        return self._clips

    def column(self, name: str) -> pa.ChunkedArray:
        """One column of the clip rows (read alone when the rows were not parsed yet)."""
        if self._clips is not None:
            return self._clips[name]
        return read_parquet(self._source, columns=[name])[name]

    def keys(self) -> ContentKeys:
        """The segment's :class:`ContentKeys`: its lookup files, or (a segment written without
        them, the unsaved one) made from its sha256 and path columns, once."""
        if self._keys is None:
            if self._clips is None:
                log.debug("segment %s has no lookup files: scanning its sha256 and path columns", self.seq)
                try:
                    t = read_parquet(self._source, columns=["sha256", "path"])
                except _READ_ERRORS as e:
                    raise IndexCorruptError(f"segment {self.seq} clips are unreadable: {e}") from e
            else:
                t = self._clips
            self._keys = ContentKeys.of(t)
        return self._keys

    def keys_to_store(self) -> ContentKeys | None:
        """The keys a lookup made from the columns of a saved segment without lookup files (the
        next save writes them: :func:`write_keys`), else None."""
        if self._keys is None or self.record is None or self.seq is None:
            return None
        return None if key_files(self.seq)[0] in self.record["files"] else self._keys

    def speaker_at(self, row: int) -> str:
        """The speaker of row ``row`` (the column is read once, on the first call)."""
        if self._speaker_col is None:
            self._speaker_col = self.column("speaker")
        return str(self._speaker_col[int(row)].as_py())

    def check_keys(self) -> None:
        """Whether the stored lookup files say what the clip rows say (verify_index)."""
        if not self._stored_keys or self._keys is None:
            return
        want = ContentKeys.of(self.clips())
        if not (np.array_equal(self._keys.sha, want.sha) and np.array_equal(self._keys.path, want.path)):
            raise IndexCorruptError(f"segment {self.seq}: its lookup files disagree with its clip rows")

    def dead(self, tombs: dict[str, int]) -> np.ndarray:
        """Positions of the rows ``tombs`` kill (sorted int64), cached per tombstone state."""
        if self.seq is None or not tombs:
            return np.zeros(0, np.int64)
        killing = sorted(s for s, bound in tombs.items() if bound >= self.seq)
        key = tuple(killing)
        if self._dead is not None and self._dead[0] == key:
            return self._dead[1]
        if not killing:
            out = np.zeros(0, np.int64)
        else:
            mask = pc.is_in(self.column("speaker"), value_set=pa.array(killing, pa.string()))
            out = np.flatnonzero(mask.to_numpy(zero_copy_only=False)).astype(np.int64)
        self._dead = (key, out)
        return out

    def live_mask(self, tombs: dict[str, int]) -> np.ndarray:
        keep = np.ones(self.rows, bool)
        keep[self.dead(tombs)] = False
        return keep


def delta_table(sums: dict[str, list[Any]]) -> pa.Table:
    """The speakers.parquet of a segment from name -> [sum (dim,) float64, n_clips, speech_s]."""
    names = sorted(sums)
    dim = len(next(iter(sums.values()))[0]) if sums else 0
    flat = np.concatenate([sums[s][0] for s in names]) if names else np.zeros(0)
    return pa.table(
        {
            "speaker": names,
            "n_clips": [int(sums[s][1]) for s in names],
            "speech_s": [float(sums[s][2]) for s in names],
            "sum": pa.ListArray.from_arrays(np.arange(len(names) + 1, dtype=np.int32) * dim, pa.array(flat, pa.float64())),
        },
        schema=DELTA_SCHEMA,
    )


def search_inner(index: faiss.Index, spec: IndexSpec, q: np.ndarray, k: int,
                 dead: np.ndarray | None = None, *, nprobe_n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest positions of each query in one bare FAISS index, skipping ``dead``
    positions; (scores, positions) with -1 / -inf where fewer were found."""
    inner = faiss.downcast_index(index)
    k = min(int(k), int(inner.ntotal))
    if k <= 0:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    params: Any = None
    if isinstance(inner, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(spec.hnsw_ef_search_n, k)
    elif isinstance(inner, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = min(spec.ivf_nprobe_n if nprobe_n is None else nprobe_n, inner.nlist)
    keep_alive = []
    if dead is not None and len(dead):
        batch = faiss.IDSelectorBatch(np.ascontiguousarray(dead, dtype=np.int64))
        sel = faiss.IDSelectorNot(batch)
        keep_alive += [batch, sel]
        if params is None:
            params = faiss.SearchParameters()
        params.sel = sel
    scores, pos = inner.search(q, k, params=params) if params is not None else inner.search(q, k)
    del keep_alive
    scores = scores.astype(np.float32, copy=False)
    scores[pos < 0] = -np.inf
    return scores, pos.astype(np.int64, copy=False)
