"""The speaker gallery: :class:`SpeakerIndex`, the one object that holds an index's clips,
speakers, threshold and failures, changes them and commits them as a new version.

Storage is format 2 (:mod:`speakerid.index.segments`): a save appends one segment and a small
manifest; removing a speaker is a tombstone; :meth:`SpeakerIndex.compact` (and the automatic
compaction of :meth:`SpeakerIndex.save`) merges segments. Format-1 indexes open (read in full)
and are converted by :meth:`SpeakerIndex.upgrade` or by the first writable open.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import (
    ConfigError,
    EmptyGalleryError,
    IndexCorruptError,
    IndexExistsError,
    IndexNotFoundError,
    SpeakeridError,
    SpeakerNotFoundError,
)
from . import backend, clips
from .lock import WriterLock
from .recovery import read_live, refuse_to_collect_data
from .segments import (
    ClipLookup,
    ContentKeys,
    Manifest,
    Segment,
    check_file,
    collect_segments,
    delta_table,
    open_faiss,
    read_manifest,
    read_parquet,
    referenced_files,
    snapshot_files,
    write_keys,
    write_manifest,
    write_segment,
    write_snapshot,
)
from .speakers import (
    CALIBRATION_QUERIES_N,
    Roster,
    SpeakerMaps,
    build_centroid_index,
    centroid_nlist,
    centroid_nprobe,
    describe_centroid_index,
    prefault,
)
from .spec import IndexSpec, check_model
from .storage import (
    _READ_ERRORS,
    FAILURES_FILE,
    FAILURES_SCHEMA,
    POINTER,
    SEGMENTS_DIR,
    UTTERANCES_SCHEMA,
    V1_FORMAT,
    StoredVersion,
    collect,
    format_of,
    make_directory,
    now,
    read_version,
    version_name,
    versions_on_disk,
)
from .threshold import EMPTY, threshold_record

__all__ = ["SpeakerIndex", "load_version"]

log = logging.getLogger("speakerid")

#: Automatic compaction (on save). The newest MERGE_FANOUT segments of one size level (level =
#: floor(log4(rows))) are merged into one, so a clip is rewritten O(log n) times and a gallery
#: has O(log n) segments; a full compaction (one base segment, a new centroid snapshot, dead rows
#: dropped) runs when the segments after the base hold more than FULL_TAIL_FRACTION of its rows,
#: dead rows exceed FULL_DEAD_FRACTION of the live ones, or more speakers than FULL_OVERLAY_MIN
#: (or FULL_OVERLAY_FRACTION of the snapshot) changed since the snapshot (they are searched
#: exactly). Each needs FULL_MIN_ROWS rows at least, so small galleries are not rewritten at
#: every save.
MERGE_FANOUT = 4
MAX_SEGMENTS = 32
FULL_TAIL_FRACTION = 0.25
FULL_DEAD_FRACTION = 0.25
FULL_OVERLAY_MIN = 2048
FULL_OVERLAY_FRACTION = 0.125
FULL_MIN_ROWS = 1000


def _empty(schema: pa.Schema) -> pa.Table:
    """An empty table of ``schema``. Not ``schema.empty_table()``: building arrays from Python
    values makes pyarrow import pandas, 1-2 s of a reader's first open on this machine."""
    return pa.Table.from_arrays([pa.nulls(0, f.type) for f in schema], schema=schema)


def _level(rows: int) -> int:
    return int(np.log(max(rows, 1)) / np.log(4))


class _Pending:
    """The clips added since the last save: an in-memory flat segment."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.index = faiss.IndexFlatIP(dim)
        self.ids: list[np.ndarray] = []
        self.tables: list[pa.Table] = []
        self.sums: dict[str, list[Any]] = {}
        #: sha256 -> speaker and path -> sha256 of these clips (the newest wins), for ClipLookup.
        self.by_sha: dict[str, str] = {}
        self.by_path: dict[str, str] = {}
        self._seg: Segment | None = None

    @property
    def n(self) -> int:
        return int(self.index.ntotal)

    def add(self, x: np.ndarray, ids: np.ndarray, rows: pa.Table, speakers: Sequence[str], speech: np.ndarray) -> None:
        self.index.add(x)
        self.ids.append(ids)
        self.tables.append(rows)
        for i, s in enumerate(speakers):
            e = self.sums.setdefault(s, [np.zeros(self.dim), 0, 0.0])
            e[0] = e[0] + x[i]
            e[1] += 1
            e[2] += float(speech[i])
        self._note(rows)
        self._seg = None

    def _note(self, rows: pa.Table) -> None:
        for sha, path, spk in zip(rows["sha256"].to_pylist(), rows["path"].to_pylist(), rows["speaker"].to_pylist()):
            self.by_sha[sha] = spk
            self.by_path[path] = sha

    def segment(self) -> Segment:
        if self._seg is None:
            ids = np.concatenate(self.ids) if self.ids else np.zeros(0, np.int64)
            table = pa.concat_tables(self.tables).combine_chunks() if self.tables else UTTERANCES_SCHEMA.empty_table()
            self._seg = Segment(None, self.index, ids, table, delta=delta_table(self.sums))
        return self._seg

    def drop_speaker(self, name: str) -> int:
        """Forget the pending clips of ``name``; how many there were."""
        if name not in self.sums:
            return 0
        seg = self.segment()
        keep = pc.invert(pc.equal(seg.clips()["speaker"], name)).to_numpy(zero_copy_only=False)
        vecs = backend.inner_vectors(self.index)
        del self.sums[name]
        self.index = faiss.IndexFlatIP(self.dim)
        if keep.any():
            self.index.add(np.ascontiguousarray(vecs[keep]))
        self.ids = [seg.ids[keep]]
        self.tables = [seg.clips().filter(pa.array(keep))]
        self.by_sha, self.by_path = {}, {}
        self._note(self.tables[0])
        self._seg = None
        return int((~keep).sum())


class SpeakerIndex:
    """A speaker gallery on disk. Build with :meth:`create`, load with :meth:`open`.

    Changes stay in memory until :meth:`save`, which commits them durably as one appended
    segment. An instance opened writable holds the directory's writer lock until :meth:`close`
    (or the end of a ``with`` block, which does not save). Readers take no lock and keep
    answering from the version they opened while a writer commits. The index owns what scoring
    needs (:meth:`speaker_maps`, :meth:`rank_centroids`), kept up to date after each change.
    """

    def __init__(self, directory: Path, spec: IndexSpec, *, _private: bool = False) -> None:
        if not _private:
            raise ConfigError("use SpeakerIndex.create() or SpeakerIndex.open()")
        self._dir = directory
        self._spec = spec
        self._segments: list[Segment] = []
        self._pending = _Pending(spec.dim)
        self._tombs: dict[str, int] = {}
        self._failures = _empty(FAILURES_SCHEMA)
        self._failures_changed = True
        self._roster = Roster(spec.dim, spec)
        self._snapshot: dict[str, Any] | None = None
        self._threshold: dict[str, Any] = dict(EMPTY)
        self._next_id = 0
        self._next_seq = 1
        self._n_committed = 0
        self._dead_rows = 0
        self._format = 2
        self._created_at = self._updated_at = now().isoformat()
        self._version = 0
        self._dirty = True
        self._lock: WriterLock | None = None
        self._maps: SpeakerMaps | None = None
        self._utt: pa.Table | None = None
        self._bytes = 0

    # opening

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
        make_directory(d)
        lock = WriterLock(d, wait_s=wait_s)
        try:
            if (d / POINTER).exists():
                if not exist_ok:
                    raise IndexExistsError(f"a speaker index already exists at {d}")
                self = cls._load(d, verify=True)
                check_model(self._spec, d, model=spec.model, weights_sha256=spec.weights_sha256, dim=spec.dim)
                if self._spec.index_type != spec.index_type:
                    raise ConfigError(f"index at {d} is of type {self._spec.index_type!r}, not {spec.index_type!r}")
                self._lock = lock
                self._upgrade_if_v1()
            else:
                refuse_to_collect_data(d)
                self = cls(d, spec, _private=True)
                collect(d, keep=())  # leftovers of a create that crashed
                collect_segments(d, keep=())
                self._lock = lock
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
        ``wait_s`` seconds (None: forever); a format-1 index is then converted to format 2 at
        once. ``verify`` checks the size of every file and the sha256 of every file up to
        :data:`~speakerid.index.segments.VERIFY_MAX_BYTES` (:func:`verify_index` hashes all).
        FAISS data is memory-mapped, clip rows are read on first use. To open an index together
        with an embedder of its model, see :func:`speakerid.index.open_with_embedder`.
        """
        d = Path(directory)
        if not d.is_dir():
            raise IndexNotFoundError(f"no speaker index at {d} (no such directory)")
        lock = WriterLock(d, wait_s=wait_s) if writable else None
        try:
            self = cls._load(d, verify=verify)
            check_model(self._spec, d, model=model, weights_sha256=weights_sha256, dim=dim)
            self._lock = lock
            if lock is not None:
                self._upgrade_if_v1()
            self._warm()
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return self

    def _warm(self) -> None:
        """One identification of an enrolled centroid, through the public path, at the end of
        opening. Opening reads files and parses Parquet, which evicts the identification's
        code and data from the CPU caches; without this the first identification after an open
        cost 3.2x the next ones (0.18 against 0.057 ms at 1e4 clips: bench_scale), every part of
        it cold (normalising the query alone 50 us against 10). A failure here is the caller's to
        meet on its own identification, so it is logged, not raised."""
        q = self._roster.warm()
        if q is None:
            return
        from ..identify import identify  # imported here: identify imports this package

        # without a threshold of its own the default one is the model's, whose lookup hashes the
        # model file (~20 ms): the warm-up then gives one, identification's cost is the same
        thr = None if self.threshold is not None else 1.0
        try:
            identify(self, q, k=min(10, len(self._roster)), threshold=thr)
        except SpeakeridError as e:
            log.debug("warm-up identification of %s failed: %s", self._dir, e)

    @classmethod
    def upgrade(cls, directory: str | os.PathLike[str], *, wait_s: float | None = 0.0) -> int:
        """Convert a format-1 index to format 2 (a new version; the format-1 one stays as the
        previous version until the next save). Returns the format the index had (1 or 2)."""
        d = Path(directory)
        with WriterLock(d, wait_s=wait_s) as lock:
            self = cls._load(d, verify=True)
            was = self._format
            self._lock = lock
            self._upgrade_if_v1()
            self._lock = None
        return was

    def _upgrade_if_v1(self) -> None:
        if self._format == V1_FORMAT:
            log.info("%s: converting a format-1 index to format 2 (segments)", self._dir)
            self._dirty = True
            self.save(compact=True)

    @classmethod
    def _load(cls, d: Path, *, verify: bool | str) -> SpeakerIndex:
        return read_live(d, lambda name: load_version(d, name, verify))

    @classmethod
    def _from_v1(cls, d: Path, v: StoredVersion) -> SpeakerIndex:
        self = cls(d, v.spec, _private=True)
        vecs, ids = backend.all_vectors(v.faiss_index)
        order = np.argsort(ids, kind="stable")
        utt = v.utterances.take(pc.sort_indices(v.utterances, sort_keys=[("id", "ascending")])).combine_chunks()
        index = faiss.IndexFlatIP(v.spec.dim)
        index.add(np.ascontiguousarray(vecs[order]))
        seg = Segment(0, index, ids[order], utt, delta=None)
        self._segments = [seg]
        self._n_committed = utt.num_rows
        self._failures, self._failures_changed = v.failures, True
        self._roster = Roster.from_table(v.speakers, v.spec.dim, v.spec)
        self._snapshot = None
        self._threshold = dict(v.threshold)
        self._next_id, self._next_seq = v.next_id, 1
        self._created_at, self._updated_at = v.created_at, v.updated_at
        self._version, self._dirty, self._format = v.number, False, V1_FORMAT
        return self

    @classmethod
    def _from_manifest(cls, d: Path, m: Manifest, verify: bool | str) -> SpeakerIndex:
        where = f"index at {d} ({version_name(m.number)})"
        self = cls(d, m.spec, _private=True)
        vdir = d / version_name(m.number)
        try:
            check_file(vdir / FAILURES_FILE, m.failures_file or {}, verify, where)
            self._failures = read_parquet(vdir / FAILURES_FILE).select(FAILURES_SCHEMA.names).cast(FAILURES_SCHEMA)
        except IndexCorruptError:
            raise
        except _READ_ERRORS as e:
            raise IndexCorruptError(f"{where}: {FAILURES_FILE} is unreadable: {type(e).__name__}: {e}") from e
        covers = -1
        if m.snapshot is not None:
            covers = int(m.snapshot["covers"])
            self._roster.set_snapshot(*_open_snapshot(d, m.snapshot, verify, where))
        self._segments = [
            Segment.open(d, rec, verify, where, with_delta=int(rec["seq"]) > covers) for rec in m.segments
        ]
        tombs = self._tombs = dict(m.tombstones)
        for name, bound in tombs.items():
            if bound >= covers:
                self._roster.forget(name)
        for seg in self._segments:
            if seg.seq is not None and seg.seq > covers and seg.delta is not None:
                self._roster.add_sums(seg.delta, lambda s, q=seg.seq: tombs.get(s, -1) >= q)
        rows = sum(s.rows for s in self._segments)
        if rows - m.dead_rows != m.utterances or len(self._roster) != m.speakers or self._failures.num_rows != m.failures:
            raise IndexCorruptError(
                f"{where}: the segments hold {rows - m.dead_rows} live clips of {len(self._roster)} speakers and "
                f"{self._failures.num_rows} failures, the manifest says {m.utterances}, {m.speakers} and {m.failures}"
            )
        self._snapshot = m.snapshot
        self._n_committed, self._dead_rows = m.utterances, m.dead_rows
        self._threshold = dict(m.threshold)
        self._next_id, self._next_seq = m.next_id, m.next_seq
        self._created_at, self._updated_at = m.created_at, m.updated_at
        self._version, self._dirty, self._failures_changed = m.number, False, False
        self._bytes = _bytes_of(vdir, m)
        self._maps = self._new_maps()  # now, so that the first identification costs what the next do
        return self

    # properties

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

    @property
    def threshold_method(self) -> str | None:
        """How the threshold was chosen (None if it was never set)."""
        return self._threshold["method"]

    @property
    def threshold_basis(self) -> str | None:
        """What the threshold rests on ("calibrated", "tail-fit", ...; None if not recorded)."""
        return self._threshold.get("basis")

    @property
    def threshold_warnings(self) -> list[str]:
        """Why the threshold may be unreliable, one sentence each."""
        return list(self._threshold.get("warnings", []))

    @property
    def near_duplicate_speakers(self) -> list[tuple[str, str, float]]:
        """(speaker, speaker, centroid cosine) of names the calibration took for one voice."""
        return [(a, b, float(c)) for a, b, c in self._threshold.get("near_duplicates", [])]

    @property
    def threshold_changed_speakers(self) -> int:
        """Speakers added, given clips or removed since the threshold was set, as counted by
        :meth:`count_threshold_changes` (0 right after a calibration)."""
        return int(self._threshold.get("changed_speakers", 0))

    def count_threshold_changes(self, n: int) -> None:
        """Count ``n`` more changed speakers against the threshold, kept in its record and saved
        with it (:func:`speakerid.calibration.refresh_open_set` recalibrates when they reach a
        share of the gallery). Setting a threshold resets the count."""
        self._check_writable()
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"the count of changed speakers must be a non-negative integer, got {n!r}")
        if n:
            self._threshold = {**self._threshold, "changed_speakers": self.threshold_changed_speakers + n}
            self._dirty = True

    def __len__(self) -> int:
        return self._n_committed + self._pending.n

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

    def _changed(self) -> None:
        self._dirty = True
        self._maps = None
        self._utt = None

    def _all_segments(self) -> list[Segment]:
        return [*self._segments, self._pending.segment()] if self._pending.n else list(self._segments)

    # changes

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
        x = backend.unit_rows(vectors, self.dim, "vectors")
        n = len(x)
        cols = clips.checked_columns(n, speakers, paths, sha256s, durations_s, speech_s)
        if n == 0:
            return np.zeros(0, np.int64)
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._pending.add(x, ids, clips.clip_rows(ids, cols, self._spec.model), cols["speakers"], cols["speech_s"])
        self._roster.add(cols["speakers"], x, cols["speech_s"])
        if self._failures.num_rows:
            before = self._failures.num_rows
            self._failures = clips.without_paths(self._failures, cols["paths"])
            self._failures_changed |= self._failures.num_rows != before
        self._next_id += n
        self._changed()
        return ids

    def remove_speaker(self, name: str) -> int:
        """Remove every clip of ``name``; returns how many (SpeakerNotFoundError if none).

        Saved clips are not rewritten: the next save records a tombstone (compaction drops them)."""
        self._check_writable()
        if name not in self._roster:
            raise SpeakerNotFoundError(f"speaker {name!r} is not in the index at {self._dir}")
        total = self._roster.n_clips(name)
        committed = total - self._pending.drop_speaker(name)
        if committed:
            self._tombs[name] = max(s.seq for s in self._segments if s.seq is not None)
            self._n_committed -= committed
            self._dead_rows += committed
        self._roster.remove(name)
        self._changed()
        return total

    def record_failures(self, failures: Iterable[tuple[str, str] | Mapping[str, str]]) -> None:
        """Remember files that failed to embed: (path, error) pairs or {"path", "error"} dicts.

        A path recorded again replaces its older entry.
        """
        self._check_writable()
        rows = clips.failure_rows(failures)
        if rows:
            self._failures = clips.with_failures(self._failures, rows)
            self._failures_changed = self._dirty = True

    def set_threshold(
        self,
        value: float | None,
        method: str,
        *,
        basis: str | None = None,
        warnings: Sequence[str] = (),
        near_duplicates: Sequence[tuple[str, str, float]] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Set the default cosine threshold and say how it was chosen (e.g. "eer:dev-set").

        ``basis`` (a short word: what the value rests on, e.g. "calibrated", "tail-fit",
        "verification-threshold"), ``warnings`` (sentences on why it may be unreliable) and
        ``near_duplicates`` ((speaker, speaker, centroid cosine) of names that look like one
        voice) are stored with it and shown by :meth:`info`; setting a threshold again
        replaces them all. ``extra`` (JSON-serialisable, keyed by str; e.g. the calibration's
        score models) is stored with the record too and read back by :attr:`threshold_extra`.
        """
        self._check_writable()
        record = threshold_record(
            value, method, basis=basis, warnings=warnings, near_duplicates=near_duplicates
        )
        if extra:
            try:
                extra_copy = json.loads(json.dumps(dict(extra)))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"threshold extra must be JSON-serialisable: {exc}") from None
            if not all(isinstance(k, str) for k in extra) or "extra" in record:
                raise ConfigError("threshold extra must be a mapping keyed by str")
            record["extra"] = extra_copy
        self._threshold = record
        self._dirty = True

    @property
    def threshold_extra(self) -> dict[str, Any]:
        """What :meth:`set_threshold` stored as ``extra`` (a copy; {} if nothing)."""
        extra = self._threshold.get("extra")
        return json.loads(json.dumps(extra)) if isinstance(extra, dict) else {}

    # queries

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest clips of each query: (scores float32 (q, k'), ids int64 (q, k')).

        Scores are cosine similarities, best first; k' = min(k, clips in the gallery). Every
        segment is searched (removed speakers' clips skipped) and the results merged.
        Approximate indexes may rarely find fewer than k' for a query: those slots hold id
        -1 and score -inf. A 1-d query is taken as one row.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        q = backend.unit_rows(queries, self.dim, "queries", one_row_ok=True)
        if len(self) == 0:
            raise EmptyGalleryError(f"the index at {self._dir} holds no speakers")
        k_eff = min(int(k), len(self))
        parts_s, parts_i = [], []
        for seg in self._all_segments():
            s, pos = backend.search_positions(seg.index, self._spec, q, k_eff, seg.dead(self._tombs))
            parts_s.append(s)
            parts_i.append(np.where(pos >= 0, np.asarray(seg.ids)[np.maximum(pos, 0)], -1))
        scores, ids = np.concatenate(parts_s, axis=1), np.concatenate(parts_i, axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k_eff]
        scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        found = (ids != -1).any(axis=0)
        width = int(found.nonzero()[0].max()) + 1 if found.any() else 0
        return scores[:, :width].astype(np.float32), ids[:, :width].astype(np.int64)

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored (unit) vectors of ``ids`` (ConfigError if an id is unknown)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.zeros((len(ids), self.dim), np.float32)
        done = np.zeros(len(ids), bool)
        for seg in self._all_segments():
            sids = np.asarray(seg.ids)
            if not len(sids):
                continue
            pos = np.minimum(np.searchsorted(sids, ids), len(sids) - 1)
            hit = (sids[pos] == ids) & ~done
            dead = seg.dead(self._tombs)
            if len(dead):
                hit &= ~np.isin(pos, dead)
            for i in np.flatnonzero(hit):
                out[i] = seg.index.reconstruct(int(pos[i]))
            done |= hit
        if not done.all():
            raise ConfigError(f"unknown vector ids among {ids[~done].tolist()[:5]}")
        return out

    def has_sha256(self, sha256: str) -> bool:
        """Whether a live clip with this content hash is in the index (unsaved ones included);
        O(log n) per segment (:meth:`lookup_sha256`)."""
        return self._lookup().contains_sha256(sha256)

    def known_sha256(self) -> set[str]:
        """Every live content hash: reads every segment's sha256 column (O(gallery); the Ray
        engine ships it to its workers). To ask about some clips, see :meth:`lookup_sha256`."""
        out: set[str] = set()
        for seg in self._all_segments():
            col = seg.column("sha256")
            if len(seg.dead(self._tombs)):
                col = col.filter(pa.array(seg.live_mask(self._tombs)))
            out.update(col.to_pylist())
        return out

    def lookup_sha256(self, sha256s: Iterable[str]) -> dict[str, str]:
        """sha256 -> speaker, for the given content hashes that a live clip holds (the newest
        such clip's speaker; unsaved clips included, removed speakers' clips not). O(log n) per
        query and segment: the segments' lookup files, not their clip rows."""
        return self._lookup().speakers_of(sha256s)

    def lookup_paths(self, paths: Iterable[str]) -> dict[str, str]:
        """path -> sha256 of the newest live clip indexed from that path (as stored: absolute
        paths), for the given paths that have one. O(log n) like :meth:`lookup_sha256`."""
        return self._lookup().sha256_of_paths(paths)

    def clip_lookup(self) -> ClipLookup:
        """A :class:`~speakerid.index.segments.ClipLookup` of the index as it is now: later
        changes (adds, removals, saves) do not change its answers, and it may be queried from
        several threads while the index changes (the indexer's workers do)."""
        p = self._pending
        return ClipLookup(self._segments, dict(self._tombs), dict(p.by_sha), dict(p.by_path))

    def _lookup(self) -> ClipLookup:
        # the live maps, not copies: a loop of add() + has_sha256() stays O(1) per clip
        return ClipLookup(self._segments, self._tombs, self._pending.by_sha, self._pending.by_path)

    def speakers(self) -> list[str]:
        """Enrolled speaker names, sorted."""
        return self._roster.names()

    def _live_clip_columns(self) -> tuple[np.ndarray, pa.ChunkedArray]:
        ids, spk = [], []
        for seg in self._all_segments():
            keep = seg.live_mask(self._tombs)
            ids.append(np.asarray(seg.ids)[keep])
            col = seg.column("speaker")
            spk.extend((col.filter(pa.array(keep)) if not keep.all() else col).chunks)
        return (np.concatenate(ids) if ids else np.zeros(0, np.int64)), pa.chunked_array(spk, pa.string())

    def _new_maps(self) -> SpeakerMaps:
        r = self._roster
        names = tuple(r.sorted_names())
        return SpeakerMaps(
            names,
            lambda: np.array([r.n_clips(s) for s in names], np.int64),
            lambda: r.centroids()[1],
            self._live_clip_columns,
        )

    def speaker_maps(self) -> SpeakerMaps:
        """Names, the speaker of every clip id, clip counts and centroids of the gallery as it
        now stands (read-only arrays, computed on first use; made once per state of the index)."""
        maps = self._maps
        if maps is None:
            maps = self._maps = self._new_maps()
        return maps

    def speaker_centroids(self) -> tuple[list[str], np.ndarray]:
        """(sorted names, (s, dim) float32 matrix of L2-normalised mean clip vectors)."""
        maps = self.speaker_maps()
        return list(maps.names), maps.centroids.copy()

    def rank_centroids(
        self, q: np.ndarray, k: int, exclude: list[np.ndarray] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """For unit queries ``q``: the k best speakers by centroid cosine, as (ordinals in
        :meth:`speaker_maps` names, float64 scores), best first, ties to the first name.
        ``exclude`` holds one array of ordinals per query to leave out. Served by the stored
        centroid index (flat or IVF, see :func:`speakerid.index.speakers.build_centroid_index`)
        and the exact overlay of the speakers changed since the last compaction."""
        g = self.speaker_maps()
        ex = None if exclude is None else [{g.names[int(o)] for o in e} for e in exclude]
        return self._roster.search_ordinals(q, k, ex)  # the roster's sorted names are g.names

    def search_speakers(self, queries: Any, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """The k best speakers of each query by centroid cosine: (scores float32 (q, k'),
        names), best first; k' = min(k, speakers)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        q = backend.unit_rows(queries, self.dim, "queries", one_row_ok=True)
        if not len(self._roster):
            raise EmptyGalleryError(f"the index at {self._dir} holds no speakers")
        rows = self._roster.search(q, min(int(k), len(self._roster)))
        width = max((len(r) for r in rows), default=0)
        scores = np.full((len(q), width), -np.inf, np.float32)
        for i, r in enumerate(rows):
            scores[i, : len(r)] = [s for s, _ in r]
        return scores, [[n for _, n in r] for r in rows]

    def speaker_search_recall(self, n_queries: int = 200, k: int = 10, seed: int = 0,
                              noise: float = 0.05) -> float:
        """Recall@k of :meth:`search_speakers` against an exact search of every centroid, on
        queries made from random enrolled speakers' centroids plus Gaussian noise (per-dim
        standard deviation ``noise``). 1.0 for the flat centroid index."""
        names, cent = self._roster.centroids()
        if not names:
            raise EmptyGalleryError(f"the index at {self._dir} holds no speakers")
        rng = np.random.default_rng(seed)
        q = cent[rng.integers(0, len(names), n_queries)] + rng.normal(0, noise, (n_queries, self.dim))
        q = backend.unit_rows(q.astype(np.float32), self.dim, "queries")
        k = min(k, len(names))
        exact = np.argsort(-(q @ cent.T), axis=1)[:, :k]
        got = self._roster.search(q, k)
        hits = sum(len({names[j] for j in exact[i]} & {n for _, n in got[i]}) for i in range(n_queries))
        return hits / (n_queries * k)

    def utterances(self) -> pa.Table:
        """One row per clip (see UTTERANCES_SCHEMA), in id order (reads every segment's rows)."""
        if self._utt is None:
            parts = []
            for seg in self._all_segments():
                t = seg.clips()
                if len(seg.dead(self._tombs)):
                    t = t.filter(pa.array(seg.live_mask(self._tombs)))
                parts.append(t)
            self._utt = pa.concat_tables(parts).combine_chunks() if parts else UTTERANCES_SCHEMA.empty_table()
        return self._utt

    def failures(self) -> pa.Table:
        """Files that failed to embed: path, error, at (UTC)."""
        return self._failures

    def info(self) -> dict[str, Any]:
        """Counts, model, dim, index type, segments, bytes on disk of the live version, threshold."""
        base = self._segments[0] if self._segments else None
        inner = faiss.downcast_index(base.index) if base is not None else faiss.IndexFlatIP(self.dim)
        cidx = self._roster._snap_index
        return {
            "path": str(self._dir),
            "version": self._version,
            "format_version": self._format,
            "model": self._spec.model,
            "weights_sha256": self._spec.weights_sha256,
            "dim": self.dim,
            "metric": "ip",
            "index_type": self._spec.index_type,
            "faiss_index": describe_centroid_index(inner),  # "IndexIVFPQ+IndexRefineFlat" for ivfpq
            "ivf_nlist": centroid_nlist(inner),
            "centroid_index": describe_centroid_index(cidx) if cidx is not None else None,
            "centroid_nprobe": centroid_nprobe(cidx) if cidx is not None else None,
            "segments": len(self._segments),
            "dead_rows": self._dead_rows,
            "utterances": len(self),
            "speakers": len(self._roster),
            "failures": self._failures.num_rows,
            "threshold": self.threshold,
            "threshold_method": self.threshold_method,
            # what the threshold rests on, why it may be unreliable, names that look like one voice
            "threshold_basis": self.threshold_basis,
            "threshold_warnings": self.threshold_warnings,
            "near_duplicate_speakers": [list(x) for x in self.near_duplicate_speakers],
            "threshold_changed_speakers": self.threshold_changed_speakers,  # since it was set
            "bytes_on_disk": self._bytes,
            "created_at": self._created_at,
            "updated_at": self._updated_at,
            "unsaved_changes": self._dirty,
            "writable": self.writable,
        }

    # saving

    def compact(self) -> dict[str, Any]:
        """Merge every segment into one, drop the removed speakers' rows and rebuild the stored
        centroid index, as a new version (with the unsaved changes). Returns what it did."""
        self._check_writable()
        before = (len(self._segments) + (1 if self._pending.n else 0), self._dead_rows)
        self._dirty = True
        self.save(compact=True)
        return {"segments_before": before[0], "segments_after": len(self._segments),
                "dead_rows_dropped": before[1], "version": self._version}

    def save(self, *, compact: bool | None = None) -> None:
        """Commit the changes durably as a new version and switch to it atomically (no-op if
        unchanged): the unsaved clips are appended as one segment, removals become tombstones.

        ``compact`` True forces a full compaction, False forbids any, None (default) runs the
        automatic policy (see MERGE_FANOUT / FULL_TAIL_FRACTION). Every version but the new one
        and the one before it is deleted afterwards, with the segment files neither names.
        """
        self._check_writable()
        if not self._dirty:
            return
        number = max([self._version, *versions_on_disk(self._dir)]) + 1
        full = bool(compact) or self._format == V1_FORMAT or (compact is None and self._wants_full(self._pending.n))
        if self._pending.n:
            p = self._pending.segment()
            # merged into the new base at once when compacting: not written twice
            self._segments.append(Segment(self._next_seq, p.index, p.ids, p.clips(), delta=p.delta) if full
                                  else self._write_segment(self._next_seq, p.index, p.ids, p.clips(), p.delta))
            self._n_committed += self._pending.n
            self._next_seq += 1
            self._pending = _Pending(self.dim)
        if full:
            self._compact_full()
        elif compact is None:
            self._merge_tail()
        for seg in self._segments:  # segments saved before lookup files: the keys a lookup made, kept
            keys = seg.keys_to_store()
            if keys is not None:
                seg.record = write_keys(self._dir, seg.record, keys)
        updated = now().isoformat()
        m = Manifest(
            number=number, spec=self._spec, threshold=self._threshold, next_id=self._next_id,
            next_seq=self._next_seq, utterances=self._n_committed, speakers=len(self._roster),
            failures=self._failures.num_rows, dead_rows=self._dead_rows,
            segments=tuple(s.record for s in self._segments if s.record is not None),
            snapshot=self._snapshot, tombstones=dict(self._tombs), created_at=self._created_at, updated_at=updated,
        )
        write_manifest(self._dir, m, self._failures)
        previous, self._version, self._updated_at, self._dirty = self._version, number, updated, False
        self._format, self._failures_changed = 2, False
        self._bytes = _bytes_of(self._dir / version_name(number), m)
        self._collect(keep=(number, previous))

    def _collect(self, keep: tuple[int, ...]) -> None:
        collect(self._dir, keep=keep)
        names: set[str] = set()
        for v in keep:
            try:
                fmt, doc = format_of(self._dir, version_name(v))
            except (IndexCorruptError, OSError):
                continue
            if fmt != V1_FORMAT:
                names |= referenced_files(read_manifest(self._dir, version_name(v), doc))
        collect_segments(self._dir, keep=names)

    def _base_rows(self) -> int:
        covers = -1 if self._snapshot is None else int(self._snapshot["covers"])
        return sum(s.rows for s in self._segments if s.seq is not None and s.seq <= covers)

    def _wants_full(self, pending: int = 0) -> bool:
        base = self._base_rows()
        tail = sum(s.rows for s in self._segments) - base + pending
        live = self._n_committed
        overlay = self._roster.overlay_size
        snap = 0 if self._snapshot is None else int(self._snapshot["rows"])
        return (
            (tail > FULL_MIN_ROWS and tail > FULL_TAIL_FRACTION * base)
            or (self._dead_rows > FULL_MIN_ROWS and self._dead_rows > FULL_DEAD_FRACTION * live)
            or (overlay > FULL_OVERLAY_MIN and overlay > FULL_OVERLAY_FRACTION * snap)
        )

    def _live_rows(self, segs: list[Segment]) -> tuple[np.ndarray, np.ndarray, pa.Table, int]:
        """(vectors, ids, clip rows, dead rows dropped) of the live rows of ``segs``."""
        vecs, ids, tables, dropped = [], [], [], 0
        for seg in segs:
            keep = seg.live_mask(self._tombs)
            vecs.append(backend.inner_vectors(seg.index)[keep])
            ids.append(np.asarray(seg.ids)[keep])
            tables.append(seg.clips().filter(pa.array(keep)))
            dropped += int((~keep).sum())
        return (np.concatenate(vecs) if vecs else np.zeros((0, self.dim), np.float32),
                np.concatenate(ids) if ids else np.zeros(0, np.int64),
                pa.concat_tables(tables).combine_chunks() if tables else UTTERANCES_SCHEMA.empty_table(), dropped)

    def _sums_of(self, x: np.ndarray, table: pa.Table) -> dict[str, list[Any]]:
        """name -> [sum of its vectors, clips, speech] of rows ``x`` / ``table`` (one pass, sorted)."""
        sums: dict[str, list[Any]] = {}
        if not len(x):
            return sums
        enc = table["speaker"].combine_chunks().dictionary_encode()
        inv = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        names = enc.dictionary.to_pylist()
        order = np.argsort(inv, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
        acc = np.add.reduceat(x[order].astype(np.float64), starts, axis=0)
        who = inv[order][starts]
        n = np.diff(np.r_[starts, len(order)])
        sp = np.add.reduceat(table["speech_s"].to_numpy()[order], starts)
        for i, w in enumerate(who):
            sums[names[w]] = [acc[i], int(n[i]), float(sp[i])]
        return sums

    def _write_segment(self, seq: int, index: faiss.Index, ids: np.ndarray, table: pa.Table,
                       delta: pa.Table) -> Segment:
        """Write segment ``seq`` (with its lookup files); the Segment, its record and keys set."""
        keys = ContentKeys.of(table)
        rec = write_segment(self._dir, seq, index, ids, table, delta, keys)
        return Segment(seq, index, ids, table, delta=delta, record=rec, keys=keys)

    def _merge_tail(self) -> None:
        covers = -1 if self._snapshot is None else int(self._snapshot["covers"])
        while True:
            tail = [s for s in self._segments if s.seq is not None and s.seq > covers]
            run: list[Segment] = []
            if len(self._segments) > MAX_SEGMENTS:
                run = tail
            elif len(tail) >= MERGE_FANOUT and len({_level(s.rows) for s in tail[-MERGE_FANOUT:]}) == 1:
                run = tail[-MERGE_FANOUT:]
                while len(run) < len(tail) and _level(tail[-len(run) - 1].rows) == _level(run[0].rows):
                    run = tail[-len(run) - 1:]
            if len(run) < 2:
                return
            x, ids, table, dropped = self._live_rows(run)
            index = faiss.IndexFlatIP(self.dim)
            if len(x):
                index.add(x)
            delta = delta_table(self._sums_of(x, table))
            seq = self._next_seq
            merged = self._write_segment(seq, index, ids, table, delta)
            self._next_seq += 1
            self._segments = [s for s in self._segments if s not in run] + [merged]
            self._dead_rows -= dropped
            log.debug("%s: merged %d segments into %s (%d rows)", self._dir, len(run), seq, len(ids))

    def _compact_full(self) -> None:
        x, ids, table, _ = self._live_rows(self._segments)
        seq = self._next_seq
        index = backend.build_inner(self._spec, x)
        delta = delta_table(self._sums_of(x, table))
        base = self._write_segment(seq, index, ids, table, delta)
        snap_table, cent = self._roster.snapshot_arrays()
        probes = x[np.random.default_rng(len(x)).choice(len(x), min(len(x), CALIBRATION_QUERIES_N), replace=False)]
        cindex = build_centroid_index(self._spec, cent, probes)  # the gallery's clips calibrate nprobe
        snap = write_snapshot(self._dir, seq + 1, seq, snap_table, cent, cindex)
        self._next_seq += 2
        self._segments = [base]
        self._roster.set_snapshot(snap_table, cent, cindex)
        self._snapshot, self._tombs, self._dead_rows = snap, {}, 0
        self._maps = None
        log.debug("%s: compacted into one segment of %d rows, %d speakers", self._dir, len(ids), len(cent))


def _open_snapshot(d: Path, rec: dict[str, Any], verify: bool | str, where: str) -> tuple[pa.Table, np.ndarray, faiss.Index]:
    sdir = d / SEGMENTS_DIR
    f_faiss, f_npy, f_pq = snapshot_files(int(rec["seq"]))
    try:
        for f in (f_faiss, f_npy, f_pq):
            check_file(sdir / f, rec["files"][f], verify, where)
        table = read_parquet(sdir / f_pq)
        cent = np.load(sdir / f_npy, mmap_mode="r", allow_pickle=False)
        index = _read_centroid_index(sdir / f_faiss)
    except IndexCorruptError:
        raise
    except _READ_ERRORS as e:
        raise IndexCorruptError(f"{where}: the centroid snapshot is unreadable: {type(e).__name__}: {e}") from e
    if cent.shape != (table.num_rows, index.d) or index.ntotal != table.num_rows:
        raise IndexCorruptError(f"{where}: the centroid snapshot's files disagree ({cent.shape}, {index.ntotal} vectors)")
    return table, cent, index


def _read_centroid_index(path: Path) -> faiss.Index:
    """The snapshot's centroid index. SQ8 lists re-scored exactly (IndexRefineFlat, fourcc
    IxRF) are memory-mapped and their pages touched (:func:`speakers.prefault`): at 1e5
    speakers the 97 MB file is ready in 12-19 ms instead of 105-140 ms read whole, with the
    same query times. Older snapshots (float IVF lists) are read whole, as before."""
    with open(path, "rb") as f:
        mapped = f.read(4) == b"IxRF"
    if not mapped:
        return faiss.read_index(str(path))
    index = open_faiss(path)
    prefault(index)
    return index


def _bytes_of(vdir: Path, m: Manifest) -> int:
    try:
        own = sum(p.stat().st_size for p in vdir.iterdir())
    except OSError:
        own = 0
    recs = [*m.segments, *([m.snapshot] if m.snapshot else [])]
    return own + sum(f["bytes"] for r in recs for f in r["files"].values())


def load_version(d: Path, name: str, verify: bool | str) -> SpeakerIndex:
    """Open version ``name`` of the index at ``d`` (either format); IndexCorruptError if damaged.

    ``verify`` "all" hashes every file and cross-checks every segment's rows (verify_index)."""
    fmt, doc = format_of(d, name)
    if fmt == V1_FORMAT:
        return SpeakerIndex._from_v1(d, read_version(d, name, bool(verify)))
    m = read_manifest(d, name, doc)
    ix = SpeakerIndex._from_manifest(d, m, verify)
    if verify == "all":
        where = f"index at {d} ({name})"
        for seg in ix._segments:
            try:
                got = seg.clips()["id"].to_numpy()
                bad = not np.array_equal(got, np.asarray(seg.ids)) or (len(got) > 1 and (np.diff(got) <= 0).any())
            except IndexCorruptError as e:
                raise IndexCorruptError(f"{where}: {e}") from e
            if bad:
                raise IndexCorruptError(f"{where}: segment {seg.seq}: its clip rows and its ids differ")
            try:
                seg.check_keys()
            except IndexCorruptError as e:
                raise IndexCorruptError(f"{where}: {e}") from e
        if sum(ix._roster.n_clips(s) for s in ix._roster.sorted_names()) != len(ix):
            raise IndexCorruptError(f"{where}: the speakers' clip counts disagree with the segments")
    return ix
