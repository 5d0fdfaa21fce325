"""The segments' lookup files, searched: which content (sha256) and which paths a gallery's
live clips hold, O(log n) per query and segment, without reading the clip rows (the layout of
``sNNNNNN.sha.npy`` / ``sNNNNNN.path.npy`` is in :mod:`speakerid.index.segments`). A one-clip
enrolment into a 1e6-clip gallery looked its clip up in dicts of every row: ~1.9 s; now < 1 ms
(benchmarks/bench_enrol_lookup.py)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..errors import IndexCorruptError

if TYPE_CHECKING:
    from .segments import Segment

__all__ = ["PATH_KEY_DTYPE", "SHA_KEY_DTYPE", "ClipLookup", "ContentKeys", "load_keys", "path_digest"]


SHA_KEY_DTYPE = np.dtype([("sha256", "S32"), ("row", "<u4")])
PATH_KEY_DTYPE = np.dtype([("path", "S16"), ("row", "<u4"), ("sha256", "S32")])
_ROW_MAX = np.iinfo(np.uint32).max


def path_digest(path: str) -> bytes:
    """The 16-byte key of a path in the path lookup: blake2b-128 of its UTF-8 bytes. 128 bits:
    a collision among 1e9 paths has odds of ~1e-21, and the key is a third of a sha256's size."""
    return hashlib.blake2b(path.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _digests(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """(n,) S32 raw digests of a column of 64-hex-digit sha256 strings: each chunk's data buffer
    decoded by one ``bytes.fromhex`` (1e6 hashes: 0.02 s; a per-row loop took ~0.3 s and a
    numpy nibble table 0.85 s; ``combine_chunks`` alone copied for 0.19 s)."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    parts = []
    for arr in chunks:
        n = len(arr)
        if n == 0:
            continue
        if not pa.types.is_string(arr.type) or arr.null_count:
            raise IndexCorruptError("a segment's sha256 column is not a column of strings without nulls")
        offsets = np.frombuffer(arr.buffers()[1], np.int32, count=n + 1, offset=arr.offset * 4)
        if not (np.diff(offsets) == 64).all():
            raise IndexCorruptError("a segment's sha256 column holds values that are not 64 hex digits")
        text = memoryview(arr.buffers()[2])[offsets[0]: offsets[-1]]
        try:
            raw = bytes.fromhex(text.tobytes().decode("ascii"))
        except ValueError:
            raw = b""
        if len(raw) != 32 * n:  # fromhex skips spaces: a short result is a malformed value
            raise IndexCorruptError("a segment's sha256 column holds values that are not 64 hex digits")
        parts.append(np.frombuffer(raw, "S32"))
    return np.concatenate(parts) if parts else np.zeros(0, "S32")


def _query_digests(shas: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(the well-formed ones, their S32 digests): anything else is in no index."""
    good, dig = [], []
    for h in shas:
        if isinstance(h, str) and len(h) == 64:
            try:
                raw = bytes.fromhex(h)
            except ValueError:
                continue
            if raw.hex() == h:  # stored hashes are lowercase: "AB.." is another string, in no index
                good.append(h)
                dig.append(raw)
    return good, np.array(dig, "S32") if dig else np.zeros(0, "S32")


def load_keys(path: Path, dtype: np.dtype, rows: int, where: str) -> np.ndarray:
    # an empty array is read, not mapped: numpy cannot map zero bytes past the header
    a = np.load(path, mmap_mode="r" if rows else None, allow_pickle=False)
    if a.dtype != dtype or a.shape != (rows,):
        raise IndexCorruptError(f"{where}: {path.name} holds {a.shape} {a.dtype}, expected ({rows},) {dtype}")
    return a


@dataclass(frozen=True)
class ContentKeys:
    """A segment's lookup arrays: ``sha`` (SHA_KEY_DTYPE) and ``path`` (PATH_KEY_DTYPE), each
    sorted by (key, row), rows being positions in the segment. Searched whole (contiguous
    records): ~5 us a query on 1e6 mapped rows."""

    sha: np.ndarray
    path: np.ndarray

    @classmethod
    def of(cls, table: pa.Table) -> ContentKeys:
        """From a table with the ``sha256`` and ``path`` columns of UTTERANCES_SCHEMA."""
        n = table.num_rows
        if n > _ROW_MAX:
            raise IndexCorruptError(f"a segment of {n} rows: the lookup files hold 32-bit rows")
        rows = np.arange(n, dtype=np.uint32)
        dig = _digests(table["sha256"])
        sha = np.empty(n, SHA_KEY_DTYPE)
        sha["sha256"], sha["row"] = dig, rows
        pd = np.array([path_digest(p) for p in table["path"].to_pylist()], "S16") if n else np.zeros(0, "S16")
        path = np.empty(n, PATH_KEY_DTYPE)
        path["path"], path["row"], path["sha256"] = pd, rows, dig
        return cls(sha[np.argsort(dig, kind="stable")], path[np.argsort(pd, kind="stable")])

    @staticmethod
    def _ranges(keys: np.ndarray, field: str, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probe = np.zeros(len(q), keys.dtype)
        probe[field] = q
        lo = np.searchsorted(keys, probe, "left")  # row 0: the first record of that key
        probe["row"] = _ROW_MAX
        return lo, np.searchsorted(keys, probe, "right")

    def sha_ranges(self, digests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi) of each S32 digest's records in ``sha`` (empty when absent)."""
        return self._ranges(self.sha, "sha256", digests)

    def path_ranges(self, digests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._ranges(self.path, "path", digests)


def _raw(b: bytes, n: int) -> bytes:
    return bytes(b).ljust(n, b"\0")  # numpy drops an S field's trailing NULs on reading


class ClipLookup:
    """Which content (sha256) and which paths a gallery's live clips hold, O(log n) a query per
    segment: the segments' lookup files, minus the tombstoned rows, plus the unsaved clips.

    Holds the segment list, the tombstones and the unsaved clips' maps as given (the index
    passes copies for a lookup that outlives the call: :meth:`SpeakerIndex.clip_lookup`), so
    it answers for that state; the queries take a lock and may come from several threads.
    Where one content (or path) is held by several live clips, the newest clip answers (the
    answer of a dict built over the clips in id order)."""

    def __init__(self, segments: Sequence[Segment], tombs: dict[str, int],
                 pending_sha: dict[str, str], pending_path: dict[str, str]) -> None:
        self._segs = list(segments)  # oldest first (ids ascending)
        self._tombs = tombs
        self._psha, self._ppath = pending_sha, pending_path
        self._lock = threading.Lock()

    def _newest_live(self, seg: Segment, rows: np.ndarray) -> int:
        dead = seg.dead(self._tombs)
        if len(dead):
            rows = rows[~np.isin(rows, dead)]
        return int(rows.max()) if len(rows) else -1

    def _find(self, queries: Sequence[str], kind: str) -> dict[str, tuple[Segment, np.void]]:
        """query -> (segment, key record of its newest live clip), for those found in segments."""
        found: dict[str, tuple[Segment, np.void]] = {}
        if kind == "sha256":
            rest, dig = _query_digests(queries)
        else:
            rest = [p for p in queries if isinstance(p, str)]
            dig = np.array([path_digest(p) for p in rest], "S16") if rest else np.zeros(0, "S16")
        for seg in reversed(self._segs):
            if not rest:
                break
            keys = seg.keys()
            table = keys.sha if kind == "sha256" else keys.path
            lo, hi = keys.sha_ranges(dig) if kind == "sha256" else keys.path_ranges(dig)
            hit = np.zeros(len(rest), bool)
            for j in np.flatnonzero(hi > lo):
                recs = table[lo[j]: hi[j]]
                row = self._newest_live(seg, np.asarray(recs["row"], np.int64))
                if row >= 0:
                    found[rest[j]] = (seg, recs[np.flatnonzero(recs["row"] == row)[0]])
                    hit[j] = True
            if hit.any():
                rest = [q for q, h in zip(rest, hit) if not h]
                dig = dig[~hit]
        return found

    def contains_sha256(self, sha256: str) -> bool:
        """Whether a live clip holds this content."""
        with self._lock:
            return sha256 in self._psha or bool(self._find([sha256], "sha256"))

    def speakers_of(self, sha256s: Iterable[str]) -> dict[str, str]:
        """sha256 -> the speaker of the newest live clip with that content, for those held."""
        with self._lock:
            want = list(dict.fromkeys(sha256s))
            out = {h: self._psha[h] for h in want if h in self._psha}
            for h, (seg, rec) in self._find([h for h in want if h not in out], "sha256").items():
                out[h] = seg.speaker_at(int(rec["row"]))
            return out

    def sha256_of_paths(self, paths: Iterable[str]) -> dict[str, str]:
        """path -> the content hash of the newest live clip indexed from that path, for those held."""
        with self._lock:
            want = list(dict.fromkeys(paths))
            out = {p: self._ppath[p] for p in want if p in self._ppath}
            for p, (_, rec) in self._find([p for p in want if p not in out], "path").items():
                out[p] = _raw(rec["sha256"], 32).hex()
            return out
