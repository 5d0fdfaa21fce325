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
import logging
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .segments import SNAPSHOT_SCHEMA
from .spec import IndexSpec
from .storage import SPEAKERS_SCHEMA

__all__ = ["Roster", "SpeakerMaps", "build_centroid_index", "calibrate_nprobe", "centroid_nlist", "centroid_nprobe", "centroid_params",
           "describe_centroid_index", "prefault"]

log = logging.getLogger("speakerid")


def build_centroid_index(spec: IndexSpec, centroids: np.ndarray, probes: np.ndarray | None = None) -> faiss.Index:
    """The FAISS index of a snapshot's centroids (ids = rows): exact below
    ``spec.centroid_ann_min_n`` speakers; above, IVF (~2*sqrt(n) lists) over 8-bit scalar
    quantized centroids whose ``CENTROID_K_FACTOR`` x k best are re-scored exactly
    (IndexRefineFlat: the scores returned are exact cosines). Its nprobe is
    ``spec.centroid_nprobe_n`` or, when that is None, calibrated on ``probes`` (unit clip
    vectors of the gallery: :func:`calibrate_nprobe`; without probes, 64)."""
    d, n = spec.dim, len(centroids)
    x = np.ascontiguousarray(centroids, dtype=np.float32)
    if n < spec.centroid_ann_min_n:
        flat = faiss.IndexFlatIP(d)
        if n:
            flat.add(x)
        return flat
    # 2*sqrt(n): at 1e5 speakers of grown real embeddings, 384 to 768 lists all reach
    # recall@10 0.995 for ~0.06 ms a query (float lists) at their calibrated nprobe (3 of 512,
    # 4 of 640, 5 of 768); fewer lists cost more per probe, more cost more in the quantizer
    nlist = max(1, min(int(round(2 * np.sqrt(n))), n // 39))
    quantizer = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                        faiss.METRIC_INNER_PRODUCT)
    ivf.own_fields = True
    quantizer.this.disown()
    ivf.cp.max_points_per_centroid = 64  # bounds the k-means cost (~10 s at 1e5)
    ivf.train(x)
    index = faiss.IndexRefineFlat(ivf)
    index.own_fields = True
    ivf.this.disown()
    index.k_factor = CENTROID_K_FACTOR
    index.add(x)
    if spec.centroid_nprobe_n is not None:
        ivf.nprobe = min(spec.centroid_nprobe_n, nlist)
    elif probes is not None and len(probes):
        ivf.nprobe, recall = calibrate_nprobe(index, x, probes, spec.centroid_recall_target)
        log.debug("centroid index: %d speakers, %d lists, nprobe %d (recall@10 %.4f on %d clips)",
                  n, nlist, ivf.nprobe, recall, len(probes))
    else:
        ivf.nprobe = min(64, nlist)
    return index


#: Candidates per neighbour the SQ8 lists pass to the exact re-scoring. At 1e5 speakers (grown
#: real embeddings, 632 lists, nprobe 4) 2 keeps the float lists' recall@10 (0.9974) at
#: 0.047 ms a query against 0.079 ms for float lists: a quarter of the bytes to scan.
CENTROID_K_FACTOR = 2.0

#: Clips the nprobe calibration searches (the recall estimate's standard error is ~0.002 at
#: 0.99 with 10 neighbours each); the exact search they need costs ~0.5 s at 1e5 speakers.
CALIBRATION_QUERIES_N = 400


def centroid_params(index: faiss.Index, sel: Any = None, nprobe: int | None = None) -> tuple[Any, list[Any]]:
    """(search parameters of a centroid index: its own nprobe unless given, ``sel`` (an id
    selector) applied, or None when nothing is to be set; the objects they reference)."""
    inner = faiss.downcast_index(index)
    keep: list[Any] = [sel]
    base = inner
    if isinstance(inner, faiss.IndexRefine):
        base = faiss.downcast_index(inner.base_index)
    params: Any = None
    if isinstance(base, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = base.nprobe if nprobe is None else nprobe
    if sel is not None:
        params = params if params is not None else faiss.SearchParameters()
        params.sel = sel
    if isinstance(inner, faiss.IndexRefine):
        outer = faiss.IndexRefineSearchParameters()
        outer.k_factor = inner.k_factor
        if params is not None:
            outer.base_index_params = params
            keep.append(params)
        params = outer
    return params, keep


def prefault(index: faiss.Index) -> None:
    """Touch one byte of every page of a memory-mapped IndexRefine-over-IVF centroid index (the
    exact vectors, the list codes and ids), so that queries do not fault them in one by one.
    At 1e5 speakers: 11-18 ms, against 105-140 ms to read the 97 MB file whole; mapped but not
    touched, the first 30 queries took 0.11 ms (median) instead of 0.05 ms."""
    inner = faiss.downcast_index(index)
    if not isinstance(inner, faiss.IndexRefine):
        return
    flat = faiss.downcast_index(inner.refine_index)
    if flat.ntotal:
        int(faiss.rev_swig_ptr(flat.codes.data(), flat.ntotal * flat.code_size)[::4096].sum())
    ivf = faiss.extract_index_ivf(inner.base_index)
    lists = ivf.invlists
    for i in range(ivf.nlist):
        m = lists.list_size(i)
        if m:
            int(faiss.rev_swig_ptr(lists.get_codes(i), m * lists.code_size)[::4096].sum())
            int(faiss.rev_swig_ptr(lists.get_ids(i), m)[::512].sum())


def describe_centroid_index(index: faiss.Index) -> str:
    """The FAISS type of a centroid index: "IndexFlatIP", "IndexIVFFlat" (snapshots written
    before the re-ranked SQ8 lists) or "IndexIVFScalarQuantizer+IndexRefineFlat"."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexRefine):
        return f"{type(faiss.downcast_index(inner.base_index)).__name__}+{type(inner).__name__}"
    return type(inner).__name__


def centroid_nlist(index: faiss.Index) -> int | None:
    """The IVF lists of an index (None if it has none)."""
    try:
        return int(faiss.extract_index_ivf(index).nlist)
    except RuntimeError:
        return None


def centroid_nprobe(index: faiss.Index) -> int | None:
    """The lists a centroid query probes (None for the exact flat index)."""
    try:
        return int(faiss.extract_index_ivf(index).nprobe)
    except RuntimeError:
        return None


def calibrate_nprobe(index: faiss.Index, centroids: np.ndarray, probes: np.ndarray, target: float,
                     k: int = 10) -> tuple[int, float]:
    """(the smallest nprobe of the ladder 1, 2, 3, ... 8, 10, 12, 15, ... (steps of ~1/4)
    whose recall@k of ``probes`` against an exact search of ``centroids`` reaches ``target``,
    or nlist; that recall). One list more or less is ~15 % of the query time at the small
    nprobe real embeddings need (0.994 / 0.9994 at nprobe 3 / 4 of 512 lists)."""
    ivf = faiss.extract_index_ivf(index)
    q = np.ascontiguousarray(probes[:CALIBRATION_QUERIES_N], dtype=np.float32)
    k = min(k, len(centroids))
    sims = q @ centroids.T
    truth = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    nprobe, recall = 1, 0.0
    while True:
        nprobe = min(nprobe, ivf.nlist)
        params, _keep = centroid_params(index, nprobe=nprobe)
        _, got = index.search(q, k, params=params)
        recall = float(np.mean([len(set(a.tolist()) & set(b.tolist())) for a, b in zip(got, truth)]) / k)
        if recall >= target or nprobe >= ivf.nlist:
            return nprobe, recall
        nprobe += max(1, nprobe // 4)


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

    def _snap_params(self, stale: np.ndarray) -> Any:
        """The snapshot index's search parameters (its own nprobe, the stale rows masked),
        made once per state: building the id selector per query cost O(stale rows)."""
        c = self._cache.get("params")
        if c is None:
            sel = None
            keep: list[Any] = []
            if len(stale):
                batch = faiss.IDSelectorBatch(np.ascontiguousarray(stale, dtype=np.int64))
                sel = faiss.IDSelectorNot(batch)
                keep.append(batch)
            params, more = centroid_params(self._snap_index, sel)
            c = self._cache["params"] = (params, keep + more)
        return c[0]

    def warm(self) -> np.ndarray | None:
        """Search one centroid now (opening), so that the first query of the index does not pay
        FAISS' first IVF search in the process (OpenMP's set-up: ~4 ms at 1e5 speakers against
        ~1 ms for the next) nor make the search parameters, and finds the code and the coarse
        quantizer in the CPU caches. Returns that centroid (1, dim), None with no speaker."""
        if len(self._snap_names):
            q = np.array(self._snap_cent[:1], np.float32)
        elif self._over:
            q = self._overlay()[1][:1]
        else:
            return None
        self.search_ordinals(q, min(10, len(self._names)))
        return q

    def search(self, q: np.ndarray, k: int, exclude: list[set[str]] | None = None) -> list[list[tuple[float, str]]]:
        """The k best (score, name) of each unit query by centroid cosine, best first; ties go
        to the first name. ``exclude`` (one set per query) leaves names out."""
        return [[(sc, name) for sc, name, _ in row] for row in self._search(q, k, exclude)]

    def search_ordinals(self, q: np.ndarray, k: int,
                        exclude: list[set[str]] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`search` as (ordinals: positions in :meth:`sorted_names`, float64 scores).
        With no change since the snapshot a snapshot row is the ordinal; else the name is
        looked up (a bisection of 1e5 names misses the CPU caches: ~3 us a name)."""
        direct = not self._over and not self._stale
        out = []
        for row in self._search(q, k, exclude):
            if direct:
                ords = [r for _, _, r in row]
            else:
                ords = [bisect.bisect_left(self._names, name) for _, name, _ in row]
            out.append((np.array(ords, np.int64), np.array([sc for sc, _, _ in row], np.float64)))
        return out

    def _search(self, q: np.ndarray, k: int, exclude: list[set[str]] | None) -> list[list[tuple[float, str, int]]]:
        """(score, name, snapshot row or -1 for the overlay) of :meth:`search`."""
        over_names, over_cent, stale = self._overlay()
        nq = len(q)
        cand: list[list[tuple[float, str, int]]] = [[] for _ in range(nq)]
        if len(over_names):
            sims = q @ over_cent.T
            take = min(len(over_names), k + (max(map(len, exclude)) if exclude else 0))
            part = np.argsort(-sims, axis=1, kind="stable")[:, :take] if take < len(over_names) else np.argsort(
                -sims, axis=1, kind="stable")
            for i in range(nq):
                cand[i].extend((float(sims[i, j]), over_names[j], -1) for j in part[i])
        n_snap = len(self._snap_names) - len(stale)
        if self._snap_index is not None and n_snap > 0:
            params = self._snap_params(stale)
            kk = min(n_snap, k + (max(map(len, exclude)) if exclude else 0))
            rows = np.arange(nq)
            names = self._snap_names
            while len(rows):
                scores, pos = self._snap_index.search(q[rows], kk, params=params)
                again = []
                for r, i in enumerate(rows):
                    got = [(float(s), names[p], int(p)) for s, p in zip(scores[r].tolist(), pos[r].tolist()) if p >= 0]
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
