"""The speaker gallery: :class:`SpeakerIndex`, the one object that holds an index's clips,
speakers, threshold and failures, changes them and saves them as a new version."""

from __future__ import annotations

import os
from collections import Counter
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
    SpeakerNotFoundError,
)
from . import backend, clips
from .lock import WriterLock
from .recovery import read_live, refuse_to_collect_data
from .speakers import Roster, SpeakerMaps
from .spec import IndexSpec, check_model
from .storage import (
    FAILURES_SCHEMA,
    POINTER,
    UTTERANCES_SCHEMA,
    StoredVersion,
    bytes_on_disk,
    collect,
    make_directory,
    now,
    versions_on_disk,
    write_version,
)
from .threshold import EMPTY, threshold_record

__all__ = ["SpeakerIndex"]


class SpeakerIndex:
    """A speaker gallery on disk. Build with :meth:`create`, load with :meth:`open`.

    Changes stay in memory until :meth:`save`. An instance opened writable holds the
    directory's writer lock until :meth:`close` (or the end of a ``with`` block, which does
    not save). The index owns what scoring needs (:meth:`speaker_maps`: names, the speaker of
    each clip, centroids), rebuilt after each change.
    """

    def __init__(self, directory: Path, spec: IndexSpec, *, _private: bool = False) -> None:
        if not _private:
            raise ConfigError("use SpeakerIndex.create() or SpeakerIndex.open()")
        self._dir = directory
        self._spec = spec
        self._index = backend.build_faiss_index(spec, np.zeros((0, spec.dim), np.float32), np.zeros(0, np.int64))
        self._utt = UTTERANCES_SCHEMA.empty_table()
        self._failures = FAILURES_SCHEMA.empty_table()
        self._roster = Roster(spec.dim)
        self._sha: Counter[str] = Counter()
        self._threshold: dict[str, Any] = dict(EMPTY)
        self._next_id = 0
        self._created_at = self._updated_at = now().isoformat()
        self._version = 0
        self._dirty = True
        self._lock: WriterLock | None = None
        self._maps: SpeakerMaps | None = None

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
            else:
                refuse_to_collect_data(d)
                self = cls(d, spec, _private=True)
                collect(d, keep=())  # leftovers of a create that crashed
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
        ``wait_s`` seconds (None: forever). ``verify`` checks every file's sha256. To open an
        index together with an embedder of its model, see :func:`speakerid.index.open_with_embedder`.
        """
        d = Path(directory)
        if not d.is_dir():
            raise IndexNotFoundError(f"no speaker index at {d} (no such directory)")
        lock = WriterLock(d, wait_s=wait_s) if writable else None
        try:
            self = cls._load(d, verify=verify)
            check_model(self._spec, d, model=model, weights_sha256=weights_sha256, dim=dim)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        self._lock = lock
        return self

    @classmethod
    def _load(cls, d: Path, *, verify: bool) -> SpeakerIndex:
        return cls._from_stored(d, read_live(d, verify))

    @classmethod
    def _from_stored(cls, d: Path, v: StoredVersion) -> SpeakerIndex:
        self = cls(d, v.spec, _private=True)
        self._index, self._utt, self._failures = v.faiss_index, v.utterances, v.failures
        self._roster = Roster.from_table(v.speakers, v.spec.dim)
        self._sha = Counter(v.utterances["sha256"].to_pylist())
        self._threshold = dict(v.threshold)
        self._next_id = v.next_id
        self._created_at, self._updated_at = v.created_at, v.updated_at
        self._version, self._dirty = v.number, False
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

    def _changed(self) -> None:
        self._dirty = True
        self._maps = None

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
        self._index.add_with_ids(x, ids)
        self._utt = pa.concat_tables([self._utt, clips.clip_rows(ids, cols, self._spec.model)])
        self._roster.add(cols["speakers"], x, cols["speech_s"])
        self._sha.update(cols["sha256s"])
        self._failures = clips.without_paths(self._failures, cols["paths"])
        self._next_id += n
        self._changed()
        return ids

    def remove_speaker(self, name: str) -> int:
        """Remove every clip of ``name``; returns how many (SpeakerNotFoundError if none)."""
        self._check_writable()
        if name not in self._roster:
            raise SpeakerNotFoundError(f"speaker {name!r} is not in the index at {self._dir}")
        mask = pc.equal(self._utt["speaker"], name)
        gone = self._utt.filter(mask)
        ids = gone["id"].to_numpy()
        self._index, removed = backend.remove_ids(self._index, self._spec, ids)
        if removed != len(ids):
            raise IndexCorruptError(f"removed {removed} vectors of {name!r} from FAISS, expected {len(ids)}")
        self._utt = self._utt.filter(pc.invert(mask))
        self._sha.subtract(gone["sha256"].to_pylist())
        self._sha = +self._sha
        self._roster.remove(name)
        self._changed()
        return len(ids)

    def record_failures(self, failures: Iterable[tuple[str, str] | Mapping[str, str]]) -> None:
        """Remember files that failed to embed: (path, error) pairs or {"path", "error"} dicts.

        A path recorded again replaces its older entry.
        """
        self._check_writable()
        rows = clips.failure_rows(failures)
        if rows:
            self._failures = clips.with_failures(self._failures, rows)
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
        self._threshold = threshold_record(
            value, method, basis=basis, warnings=warnings, near_duplicates=near_duplicates
        )
        self._dirty = True

    # queries

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest clips of each query: (scores float32 (q, k'), ids int64 (q, k')).

        Scores are cosine similarities, best first; k' = min(k, clips in the gallery).
        Approximate indexes may rarely find fewer than k' for a query: those slots hold id
        -1 and score -inf. A 1-d query is taken as one row.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        q = backend.unit_rows(queries, self.dim, "queries", one_row_ok=True)
        if self._index.ntotal == 0:
            raise EmptyGalleryError(f"the index at {self._dir} holds no speakers")
        return backend.search(self._index, self._spec, q, int(k))

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored (unit) vectors of ``ids`` (ConfigError if an id is unknown)."""
        return backend.vectors_of(self._index, ids)

    def has_sha256(self, sha256: str) -> bool:
        """Whether a clip with this content hash is already in the index."""
        return sha256 in self._sha

    def known_sha256(self) -> set[str]:
        return set(self._sha)

    def speakers(self) -> list[str]:
        """Enrolled speaker names, sorted."""
        return self._roster.names()

    def speaker_maps(self) -> SpeakerMaps:
        """Names, the speaker of every clip id, clip counts and centroids of the gallery as it
        now stands (read-only arrays; made once per state of the index and kept)."""
        maps = self._maps
        if maps is None:
            names, cent = self._roster.centroids()
            maps = self._maps = SpeakerMaps.build(self._utt, names, cent)
        return maps

    def speaker_centroids(self) -> tuple[list[str], np.ndarray]:
        """(sorted names, (s, dim) float32 matrix of L2-normalised mean clip vectors)."""
        maps = self.speaker_maps()
        return list(maps.names), maps.centroids.copy()

    def utterances(self) -> pa.Table:
        """One row per clip (see UTTERANCES_SCHEMA)."""
        return self._utt

    def failures(self) -> pa.Table:
        """Files that failed to embed: path, error, at (UTC)."""
        return self._failures

    def info(self) -> dict[str, Any]:
        """Counts, model, dim, index type, bytes on disk of the live version, threshold."""
        inner = faiss.downcast_index(self._index.index)
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
            "speakers": len(self._roster),
            "failures": self._failures.num_rows,
            "threshold": self.threshold,
            "threshold_method": self.threshold_method,
            # what the threshold rests on, why it may be unreliable, names that look like one voice
            "threshold_basis": self.threshold_basis,
            "threshold_warnings": self.threshold_warnings,
            "near_duplicate_speakers": [list(x) for x in self.near_duplicate_speakers],
            "bytes_on_disk": bytes_on_disk(self._dir, self._version),
            "created_at": self._created_at,
            "updated_at": self._updated_at,
            "unsaved_changes": self._dirty,
            "writable": self.writable,
        }

    # saving

    def save(self) -> None:
        """Write the index as a new version and switch to it atomically (no-op if unchanged).

        Every version but the new one and the one before it is deleted afterwards.
        """
        self._check_writable()
        if not self._dirty:
            return
        self._index = backend.trained_for_size(self._index, self._spec)
        number = max([self._version, *versions_on_disk(self._dir)]) + 1
        updated = now().isoformat()
        write_version(self._dir, StoredVersion(
            number=number, spec=self._spec, faiss_index=self._index, utterances=self._utt,
            speakers=self._roster.table(), failures=self._failures, threshold=self._threshold,
            next_id=self._next_id, created_at=self._created_at, updated_at=updated,
        ))
        previous, self._version, self._updated_at, self._dirty = self._version, number, updated, False
        self._utt = self._utt.combine_chunks()
        collect(self._dir, keep=(number, previous))
