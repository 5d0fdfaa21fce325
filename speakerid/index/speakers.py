"""The gallery's speakers: running per-speaker statistics and the stored centroid index
(:class:`Roster`), and the arrays that scoring works on (:class:`SpeakerMaps`), both owned by
:class:`speakerid.index.SpeakerIndex`.

The roster is a *snapshot* written by the last compaction (sorted names, counts, unit
centroids and a FAISS index over them, all memory-mapped) plus an *overlay*: the running sums
of the speakers changed since (clips added, removed, new). Adding a clip updates one sum
(O(clips added)); searching the centroids searches the snapshot's FAISS index with the changed
speakers' stale rows masked out, and the overlay exactly, and merges the two.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .segments import SNAPSHOT_SCHEMA, search_inner
from .spec import IndexSpec
from .storage import SPEAKERS_SCHEMA

__all__ = ["Roster", "SpeakerMaps", "build_centroid_index"]


def build_centroid_index(spec: IndexSpec, centroids: np.ndarray) -> faiss.Index:
    """The FAISS index of a snapshot's centroids (ids = rows): exact below
    ``spec.centroid_ann_min_n`` speakers, IVF (~2*sqrt(n) lists) above."""
    d, n = spec.dim, len(centroids)
    x = np.ascontiguousarray(centroids, dtype=np.float32)
    if n >= spec.centroid_ann_min_n:
        nlist = max(1, min(int(round(2 * np.sqrt(n))), n // 39))
        quantizer = faiss.IndexFlatIP(d)
        index: faiss.Index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()
        index.cp.max_points_per_centroid = 64  # bounds the k-means cost (~10 s at 1e5)
        index.train(x)
        index.nprobe = min(spec.centroid_nprobe_n, nlist)
    else:
        index = faiss.IndexFlatIP(d)
    if n:
        index.add(x)
    return index


def _unit(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=-1, keepdims=True)
    return (m / np.maximum(norms, 1e-12)).astype(np.float32)


class Roster:
    """Clip count, speech seconds and the sum of the unit clip vectors of every speaker.

    The sum's direction is the speaker's centroid; its length over the count (``mean_norm``)
    is stored in the snapshot, so that a centroid read back from disk gives the same sum.
    """

    def __init__(self, dim: int, spec: IndexSpec | None = None) -> None:
        self.dim = dim
        self.spec = spec
        self._snap_names: list[str] = []
        self._snap_n = np.zeros(0, np.int64)
        self._snap_speech = np.zeros(0, np.float64)
        self._snap_norm = np.zeros(0, np.float64)
        self._snap_cent = np.zeros((0, dim), np.float32)
        self._snap_index: faiss.Index | None = None
        #: name -> [sum (dim,) float64, n_clips, speech_s] of the speakers changed since the snapshot.
        self._over: dict[str, list[Any]] = {}
        #: Snapshot names whose snapshot row is out of date (removed, or changed: then in _over).
        self._stale: set[str] = set()
        self._names: list[str] = []
        self._cache: dict[str, Any] = {}

    # snapshot

    def set_snapshot(self, table: pa.Table, centroids: np.ndarray, index: faiss.Index | None) -> None:
        """Make (table, centroids, index) the snapshot, with an empty overlay."""
        self._snap_names = table["speaker"].to_pylist()
        self._snap_n = table["n_clips"].to_numpy().astype(np.int64)
        self._snap_speech = table["speech_s"].to_numpy().astype(np.float64)
        self._snap_norm = table["mean_norm"].to_numpy().astype(np.float64)
        self._snap_cent = centroids
        self._snap_index = index
        self._over, self._stale = {}, set()
        self._names = list(self._snap_names)
        self._cache = {}

    def snapshot_arrays(self) -> tuple[pa.Table, np.ndarray]:
        """(SNAPSHOT_SCHEMA table, unit centroids) of the roster as it now stands (compaction)."""
        names = self.names()
        n = np.array([self.n_clips(s) for s in names], np.int64)
        sums = self.sums(names)
        norms = np.linalg.norm(sums, axis=1) if len(names) else np.zeros(0)
        table = pa.table(
            {"speaker": names, "n_clips": n, "speech_s": [self.speech(s) for s in names],
             "mean_norm": norms / np.maximum(n, 1)},
            schema=SNAPSHOT_SCHEMA,
        )
        return table, _unit(sums) if len(names) else np.zeros((0, self.dim), np.float32)

    def _snap_row(self, name: str) -> int:
        i = bisect.bisect_left(self._snap_names, name)
        return i if i < len(self._snap_names) and self._snap_names[i] == name else -1

    @property
    def overlay_size(self) -> int:
        """Speakers changed since the snapshot (searched exactly; compaction folds them in)."""
        return len(self._over) + len(self._stale - self._over.keys())

    # queries

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name in self._over:
            return True
        return name not in self._stale and self._snap_row(name) >= 0

    def names(self) -> list[str]:
        return list(self._names)

    def sorted_names(self) -> list[str]:
        """The roster's own sorted list of names (do not modify)."""
        return self._names

    def n_clips(self, name: str) -> int:
        if name in self._over:
            return int(self._over[name][1])
        return int(self._snap_n[self._snap_row(name)])

    def speech(self, name: str) -> float:
        if name in self._over:
            return float(self._over[name][2])
        return float(self._snap_speech[self._snap_row(name)])

    def _snap_sum(self, row: int) -> np.ndarray:
        return self._snap_cent[row].astype(np.float64) * self._snap_norm[row] * self._snap_n[row]

    def sums(self, names: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(names), self.dim), np.float64)
        rows, where = [], []
        for i, s in enumerate(names):
            if s in self._over:
                out[i] = self._over[s][0]
            else:
                rows.append(self._snap_row(s))
                where.append(i)
        if rows:
            r = np.asarray(rows)
            out[where] = self._snap_cent[r].astype(np.float64) * (self._snap_norm[r] * self._snap_n[r])[:, None]
        return out

    # changes

    def _touch(self, name: str) -> list[Any]:
        entry = self._over.get(name)
        if entry is None:
            row = self._snap_row(name)
            if row >= 0 and name not in self._stale:
                entry = [self._snap_sum(row), int(self._snap_n[row]), float(self._snap_speech[row])]
            else:
                entry = [np.zeros(self.dim), 0, 0.0]
                bisect.insort(self._names, name)
            if row >= 0:
                self._stale.add(name)
            self._over[name] = entry
        return entry

    def add(self, speakers: Sequence[str], vectors: np.ndarray, speech_s: np.ndarray) -> None:
        """Count clips ``vectors`` (unit rows) of ``speakers``."""
        for i, s in enumerate(speakers):
            e = self._touch(s)
            e[0] = e[0] + vectors[i]
            e[1] += 1
            e[2] += float(speech_s[i])
        self._cache = {}

    def add_sums(self, delta: pa.Table, skip: Callable[[str], bool]) -> None:
        """Count a segment's per-speaker sums (its speakers.parquet), but not those ``skip`` says."""
        if not delta.num_rows:
            return
        sums = delta["sum"].combine_chunks().flatten().to_numpy().reshape(-1, self.dim)
        for i, (s, n, sp) in enumerate(zip(delta["speaker"].to_pylist(), delta["n_clips"].to_pylist(),
                                           delta["speech_s"].to_pylist(), strict=True)):
            if skip(s):
                continue
            e = self._touch(s)
            e[0] = e[0] + sums[i]
            e[1] += int(n)
            e[2] += float(sp)
        self._cache = {}

    def remove(self, name: str) -> None:
        self._over.pop(name, None)
        if self._snap_row(name) >= 0:
            self._stale.add(name)
        i = bisect.bisect_left(self._names, name)
        if i < len(self._names) and self._names[i] == name:
            del self._names[i]
        self._cache = {}

    def forget(self, name: str) -> None:
        """Mark a snapshot speaker as removed when opening (a tombstone covers the snapshot)."""
        if self._snap_row(name) >= 0 and name not in self._over:
            self.remove(name)

    # centroids

    def centroids(self) -> tuple[list[str], np.ndarray]:
        """(sorted names, (s, dim) float32 matrix of L2-normalised mean clip vectors)."""
        names = self.names()
        if not names:
            return names, np.zeros((0, self.dim), np.float32)
        rows = [self._snap_row(s) if s not in self._over else -1 for s in names]
        r = np.asarray(rows)
        out = np.empty((len(names), self.dim), np.float32)
        snap = r >= 0
        if snap.any():
            out[snap] = self._snap_cent[r[snap]]
        if (~snap).any():
            out[~snap] = _unit(np.stack([self._over[names[i]][0] for i in np.flatnonzero(~snap)]))
        return names, out

    def _overlay(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(overlay names, their unit centroids, stale snapshot rows), cached per state."""
        c = self._cache.get("overlay")
        if c is None:
            names = sorted(self._over)
            cent = _unit(np.stack([self._over[s][0] for s in names])) if names else np.zeros((0, self.dim), np.float32)
            stale = np.array(sorted(self._snap_row(s) for s in self._stale), np.int64)
            c = self._cache["overlay"] = (names, cent, stale)
        return c

    def search(self, q: np.ndarray, k: int, exclude: list[set[str]] | None = None) -> list[list[tuple[float, str]]]:
        """The k best (score, name) of each unit query by centroid cosine, best first; ties go
        to the first name. ``exclude`` (one set per query) leaves names out."""
        over_names, over_cent, stale = self._overlay()
        nq = len(q)
        cand: list[list[tuple[float, str]]] = [[] for _ in range(nq)]
        if len(over_names):
            sims = q @ over_cent.T
            take = min(len(over_names), k + (max(map(len, exclude)) if exclude else 0))
            part = np.argsort(-sims, axis=1, kind="stable")[:, :take] if take < len(over_names) else np.argsort(
                -sims, axis=1, kind="stable")
            for i in range(nq):
                cand[i].extend((float(sims[i, j]), over_names[j]) for j in part[i])
        n_snap = len(self._snap_names) - len(stale)
        if self._snap_index is not None and n_snap > 0:
            spec = self.spec
            nprobe = None if spec is None else spec.centroid_nprobe_n
            kk = min(n_snap, k + (max(map(len, exclude)) if exclude else 0))
            rows = np.arange(nq)
            while len(rows):
                scores, pos = search_inner(self._snap_index, spec, q[rows], kk, stale, nprobe_n=nprobe)  # type: ignore[arg-type]
                again = []
                for r, i in enumerate(rows):
                    got = [(float(s), self._snap_names[p]) for s, p in zip(scores[r], pos[r]) if p >= 0]
                    usable = [c for c in got if exclude is None or c[1] not in exclude[i]]
                    if len(usable) < k and len(got) == kk and kk < n_snap:
                        again.append(i)
                    else:
                        cand[i].extend(got)
                rows = np.asarray(again, np.int64)
                kk = min(n_snap, kk * 4)
        out = []
        for i in range(nq):
            c = cand[i] if exclude is None else [x for x in cand[i] if x[1] not in exclude[i]]
            c.sort(key=lambda x: (-x[0], x[1]))
            out.append(c[:k])
        return out

    def table(self) -> pa.Table:
        """The speakers.parquet table of this roster (format 1)."""
        names, cent = self.centroids()
        n = [self.n_clips(s) for s in names]
        sums = self.sums(names)
        mean_norm = [float(np.linalg.norm(sums[i]) / n[i]) for i in range(len(names))]
        centroid = pa.ListArray.from_arrays(
            np.arange(len(names) + 1, dtype=np.int32) * self.dim, pa.array(cent.reshape(-1), pa.float32())
        )
        return pa.table(
            {"speaker": names, "n_clips": n, "speech_s": [self.speech(s) for s in names],
             "centroid": centroid, "mean_norm": mean_norm},
            schema=SPEAKERS_SCHEMA,
        )

    @classmethod
    def from_table(cls, table: pa.Table, dim: int, spec: IndexSpec | None = None) -> Roster:
        """The roster a format-1 speakers.parquet table holds (checked by the storage beforehand)."""
        self = cls(dim, spec)
        cent = table["centroid"].combine_chunks().flatten().to_numpy().astype(np.float32).reshape(-1, dim)
        snap = pa.table({"speaker": table["speaker"], "n_clips": table["n_clips"], "speech_s": table["speech_s"],
                         "mean_norm": table["mean_norm"]}, schema=SNAPSHOT_SCHEMA)
        order = pc.sort_indices(snap, sort_keys=[("speaker", "ascending")])
        snap, cent = snap.take(order), cent[order.to_numpy()]
        self.set_snapshot(snap, cent, build_centroid_index(spec, cent) if spec is not None else None)
        return self


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class SpeakerMaps:
    """One state of the gallery as arrays: speaker ordinals (positions in the sorted names) of
    the stored clip ids, clip counts and centroids. Read-only; the index makes a new one after
    every change (:meth:`speakerid.index.SpeakerIndex.speaker_maps`). Only ``names`` is made at
    once; the rest is computed on first use (the clip arrays read every live clip's speaker)."""

    def __init__(self, names: tuple[str, ...], n_clips: Callable[[], np.ndarray],
                 centroids: Callable[[], np.ndarray], clips: Callable[[], tuple[np.ndarray, pa.ChunkedArray]]) -> None:
        #: Enrolled names, sorted: a speaker's ordinal is its position here.
        self.names = names
        self._n_clips, self._centroids, self._clips = n_clips, centroids, clips

    @classmethod
    def build(cls, utterances: pa.Table, names: list[str], centroids: np.ndarray) -> SpeakerMaps:
        ids = utterances["id"].to_numpy().astype(np.int64)
        spk = utterances["speaker"]
        counts = pc.value_counts(spk) if len(spk) else None
        n_of = {} if counts is None else dict(zip(counts.field(0).to_pylist(), counts.field(1).to_pylist(), strict=True))
        return cls(tuple(names), lambda: np.array([n_of.get(s, 0) for s in names], np.int64),
                   lambda: centroids, lambda: (ids, spk))

    def ordinal_of(self, name: str) -> int:
        """The ordinal of ``name`` (-1 if it is not enrolled), by bisection."""
        i = bisect.bisect_left(self.names, name)
        return i if i < len(self.names) and self.names[i] == name else -1

    @cached_property
    def ordinal(self) -> dict[str, int]:
        """Ordinal of each name."""
        return {s: i for i, s in enumerate(self.names)}

    @cached_property
    def n_clips(self) -> np.ndarray:
        """Clips per speaker, by ordinal."""
        return _frozen(np.asarray(self._n_clips(), np.int64))

    @cached_property
    def centroids(self) -> np.ndarray:
        """(speakers, dim) float32 L2-normalised mean clip vectors, by ordinal."""
        return _frozen(np.ascontiguousarray(self._centroids(), dtype=np.float32))

    @cached_property
    def _clip_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        ids, speakers = self._clips()
        ids = np.asarray(ids, dtype=np.int64)
        ordinal = pc.index_in(speakers, value_set=pa.array(self.names, pa.string()))
        spk = ordinal.to_numpy(zero_copy_only=False).astype(np.int64)
        order = np.argsort(ids, kind="stable")
        return _frozen(ids[order]), _frozen(spk[order])

    @property
    def ids(self) -> np.ndarray:
        """Clip ids, ascending."""
        return self._clip_arrays[0]

    @property
    def owners(self) -> np.ndarray:
        """The ordinal of each clip's speaker (aligned with ``ids``)."""
        return self._clip_arrays[1]

    def speaker_of(self, ids: np.ndarray) -> np.ndarray:
        """Speaker ordinal of each clip id (-1 for unknown ids, e.g. the -1 padding of
        approximate search)."""
        if len(self.ids) == 0:
            return np.full(np.shape(ids), -1, np.int64)
        pos = np.searchsorted(self.ids, ids)
        pos = np.minimum(pos, len(self.ids) - 1)
        return np.where((ids >= 0) & (self.ids[pos] == ids), self.owners[pos], -1)
