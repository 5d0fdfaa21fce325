"""Large galleries: IVF-PQ with exact re-ranking, and search over several shards.

A gallery of 1e7 clips does not fit one flat FAISS index in memory (192-d float32: 768 bytes a
clip, 7.7 GB). Here each clip costs, in memory, its PQ code (``pq_m`` bytes) plus its int64 id
in the inverted lists (8 bytes): 72 bytes with the default ``pq_m=64``. The full float32
vectors stay on disk, memory-mapped (``vectors.npy``, read through the page cache), and only
the ``rerank`` best PQ candidates of a query are read and scored exactly, so the scores
returned are exact inner products (cosines of unit vectors) and the order among the
candidates is exact; what PQ can lose is a true neighbour that did not make the candidates
(recall, measured by benchmarks/bench_large.py).

Sharding. A :class:`ShardedIndex` is a list of :class:`Shard` (each a flat or IVF-PQ FAISS
index over some of the clips, with global int64 ids) searched one after the other or in
threads (FAISS releases the GIL), the per-shard top-k merged by :func:`merge_topk`
(score descending, then id ascending, so the merge is deterministic). With flat shards the
merged top-k is exactly a single flat index's. IVF-PQ shards share one trained quantizer
and codebook (:func:`train_ivfpq`, trained once on a sample), so a clip's code does not
depend on its shard. :class:`RayShardedIndex` puts each saved shard in a Ray actor (where
the shard's files are) and merges the same way, for galleries larger than one machine.

On disk a shard is a directory: ``shard.json`` (kind, count, parameters), ``index.faiss``
(the FAISS index; its lists are memory-mapped when opened with ``mmap=True``), ``ids.npy``
and, for IVF-PQ, ``vectors.npy`` (row i = the float32 vector of the i-th clip added, for
re-ranking; the FAISS lists hold row numbers, ``ids.npy`` maps them to global ids).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from ..errors import ConfigError, IndexCorruptError, IndexNotFoundError

log = logging.getLogger("speakerid")

__all__ = ["IvfPqParams", "RayShardedIndex", "Shard", "ShardedIndex", "bytes_per_vector", "ivfpq_memory_bytes",
           "merge_topk", "train_ivfpq"]

ShardKind = Literal["flat", "ivfpq"]
SHARD_FILE = "shard.json"


@dataclass(frozen=True)
class IvfPqParams:
    """IVF-PQ with exact re-ranking. Defaults measured on grown CAM++ embeddings
    (benchmarks/results/large.md): ``pq_m=64`` (64-byte codes, 72 bytes a clip with its id)
    with ``nprobe=32`` and 100 re-ranked candidates gives recall@10 >= 0.95 at 1e6-3e6 clips,
    where ``pq_m=32`` did not; ``nlist`` of about 4 sqrt(n) keeps the lists near 250 clips."""

    nlist: int = 4096
    #: Sub-quantizers (bytes per code at 8 bits); must divide the dimension.
    pq_m: int = 64
    pq_bits: int = 8
    nprobe: int = 32
    #: PQ candidates per query re-scored exactly from the vectors on disk (at least k).
    rerank: int = 100
    #: Clips sampled to train the coarse quantizer and the codebooks (FAISS wants >= 39 per list).
    train_size: int = 200_000

    def __post_init__(self) -> None:
        for name in ("nlist", "pq_m", "nprobe", "rerank", "train_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.pq_bits not in (4, 5, 6, 7, 8):
            raise ConfigError(f"pq_bits must be 4 to 8, got {self.pq_bits!r}")


def bytes_per_vector(params: IvfPqParams) -> float:
    """Memory per clip of an IVF-PQ shard: the code plus its int64 id."""
    return params.pq_m * params.pq_bits / 8 + 8


def train_ivfpq(sample: Any, params: IvfPqParams, *, seed: int = 0) -> faiss.IndexIVFPQ:
    """An empty IVF-PQ index trained on ``sample`` (unit rows); clone it for each shard."""
    x = unit_rows(sample, np.asarray(sample).shape[-1], "training vectors")
    dim = x.shape[1]
    if dim % params.pq_m:
        raise ConfigError(f"pq_m={params.pq_m} does not divide the dimension {dim}")
    if len(x) < params.nlist:
        raise ConfigError(f"{len(x)} training vectors for nlist={params.nlist}: need at least as many")
    if len(x) > params.train_size:
        x = x[np.random.default_rng(seed).choice(len(x), params.train_size, replace=False)]
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, params.nlist, params.pq_m, params.pq_bits, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.pq.cp.seed = seed
    # precomputed tables would cost nlist * pq_m * 256 * 4 bytes per shard (1 GB at nlist 16384)
    index.use_precomputed_table = -1
    index.train(x)
    index.own_fields = True
    quantizer.this.disown()
    return index


def ivfpq_memory_bytes(index: faiss.IndexIVFPQ) -> int:
    """The codes and ids of an IVF-PQ index's lists, its coarse quantizer and codebooks."""
    ivf = faiss.extract_index_ivf(index)
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    sizes = np.array([lists.list_size(i) for i in range(ivf.nlist)], np.int64)
    pq = index.pq
    return int(sizes.sum() * (lists.code_size + 8) + ivf.nlist * ivf.d * 4 + pq.M * pq.ksub * pq.dsub * 4)


def merge_topk(results: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard (scores, ids) of shape (q, k_i) into the global top-k: score
    descending, then id ascending; missing entries (id -1) come last. Returns (q, k)."""
    if not results:
        raise ConfigError("nothing to merge")
    d = np.concatenate([r[0] for r in results], axis=1).astype(np.float32)
    i = np.concatenate([r[1] for r in results], axis=1).astype(np.int64)
    d = np.where(i < 0, -np.inf, d)
    order = np.lexsort((i, -d), axis=1)[:, :k]
    d, i = np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)
    if d.shape[1] < k:
        pad = k - d.shape[1]
        d = np.pad(d, ((0, 0), (0, pad)), constant_values=-np.inf)
        i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
    return d, i


def unit_rows(x: Any, dim: int, what: str, *, one_row_ok: bool = False) -> np.ndarray:
    """``x`` as contiguous float32 (n, dim) unit rows; ConfigError on a wrong shape or a zero
    or non-finite row (kept here, not shared with backend, so that shards need no index)."""
    a = np.asarray(x, dtype=np.float32)
    if one_row_ok and a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != dim:
        raise ConfigError(f"{what} must have shape (n, {dim}), got {a.shape}")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if not (np.isfinite(norms).all() and (norms > 1e-6).all()):
        raise ConfigError(f"{what}: zero or non-finite rows")
    return np.ascontiguousarray(a / norms)


class Shard:
    """Some of the gallery's clips: a flat or IVF-PQ FAISS index with global int64 ids."""

    def __init__(self, kind: ShardKind, index: faiss.Index, ids: np.ndarray, *,
                 params: IvfPqParams | None = None, vectors: np.ndarray | None = None,
                 path: Path | None = None) -> None:
        self.kind, self.index, self.params, self.path = kind, index, params, path
        self.ids = ids
        #: float32 vectors, row i = the i-th clip added (IVF-PQ: memory-mapped, for re-ranking).
        self.vectors = vectors

    # building

    @classmethod
    def flat(cls, vectors: Any, ids: Any) -> Shard:
        x = unit_rows(vectors, np.asarray(vectors).shape[-1], "vectors")
        ids = _check_ids(ids, len(x))
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        return cls("flat", index, ids)

    @classmethod
    def ivfpq(cls, trained: faiss.IndexIVFPQ, params: IvfPqParams, directory: str | os.PathLike[str],
              vectors: Any, ids: Any, *, chunk: int = 200_000) -> Shard:
        """An IVF-PQ shard written to ``directory`` (a clone of ``trained`` filled with the
        clips; their float32 vectors go to ``vectors.npy`` for re-ranking). ``vectors`` may be
        a memory map: it is read ``chunk`` rows at a time."""
        n = len(vectors)
        ids = _check_ids(ids, n)
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        index = faiss.clone_index(trained)
        dim = index.d
        store = np.lib.format.open_memmap(d / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, dim))
        for a in range(0, n, chunk):
            x = unit_rows(np.asarray(vectors[a:a + chunk]), dim, "vectors")
            store[a:a + len(x)] = x
            # FAISS ids are row numbers; the global ids are looked up in ids.npy
            index.add_with_ids(x, np.arange(a, a + len(x), dtype=np.int64))
        store.flush()
        del store
        shard = cls("ivfpq", index, ids, params=params, path=d)
        shard.save(d)
        return cls.open(d)

    # persistence

    def save(self, directory: str | os.PathLike[str]) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(d / "index.faiss"))
        np.save(d / "ids.npy", self.ids)
        meta = {"kind": self.kind, "count": int(len(self.ids)), "dim": int(self.index.d),
                "params": asdict(self.params) if self.params else None}
        (d / SHARD_FILE).write_text(json.dumps(meta) + "\n")

    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, mmap: bool = True) -> Shard:
        """Open a saved shard; ``mmap`` maps the FAISS lists and the vectors instead of reading them."""
        d = Path(directory)
        if not (d / SHARD_FILE).is_file():
            raise IndexNotFoundError(f"no shard at {d} ({SHARD_FILE} missing)")
        meta = json.loads((d / SHARD_FILE).read_text())
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        index = faiss.read_index(str(d / "index.faiss"), flags)
        ids = np.load(d / "ids.npy", mmap_mode="r" if mmap else None)
        if len(ids) != meta["count"] or index.ntotal != meta["count"]:
            raise IndexCorruptError(f"shard {d}: {meta['count']} clips in {SHARD_FILE}, "
                                    f"{index.ntotal} in FAISS, {len(ids)} ids")
        params = IvfPqParams(**meta["params"]) if meta["params"] else None
        vectors = None
        if meta["kind"] == "ivfpq":
            vectors = np.load(d / "vectors.npy", mmap_mode="r")
            faiss.extract_index_ivf(index).nprobe = params.nprobe  # type: ignore[union-attr]
        return cls(meta["kind"], index, ids, params=params, vectors=vectors, path=d)

    # search

    def __len__(self) -> int:
        return len(self.ids)

    def memory_bytes(self) -> int:
        """What the shard keeps in memory when searched: codes + ids of the lists (IVF-PQ),
        the vectors (flat), plus the quantizer and codebooks; the re-ranking vectors on disk
        are not counted (they are read through the page cache, ``rerank`` rows a query)."""
        if self.kind == "flat":
            return int(self.index.ntotal * self.index.d * 4 + self.ids.nbytes)
        return ivfpq_memory_bytes(self.index)

    def search(self, queries: np.ndarray, k: int, *, rerank: int | None = None,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, global ids) of unit ``queries`` (q, dim); IVF-PQ re-ranks the best
        ``rerank`` (default: the shard's) PQ candidates exactly."""
        if self.kind == "flat":
            d, rows = self.index.search(queries, min(k, max(1, self.index.ntotal)))
            return d, np.where(rows >= 0, np.asarray(self.ids)[np.maximum(rows, 0)], -1)
        assert self.params is not None and self.vectors is not None
        n_cand = max(k, rerank or self.params.rerank)
        ivf = faiss.extract_index_ivf(self.index)
        ivf.nprobe = nprobe or self.params.nprobe
        _, rows = self.index.search(queries, n_cand)
        scores = np.full(rows.shape, -np.inf, np.float32)
        for qi in range(len(queries)):  # exact re-ranking from the vectors on disk
            ok = rows[qi] >= 0
            r = rows[qi][ok]
            order = np.argsort(r)  # sorted rows read the memory map sequentially
            scores[qi, np.flatnonzero(ok)[order]] = self.vectors[r[order]] @ queries[qi]
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        d = np.take_along_axis(scores, top, 1)
        rows = np.take_along_axis(rows, top, 1)
        return d, np.where(rows >= 0, np.asarray(self.ids)[np.maximum(rows, 0)], -1)


def _check_ids(ids: Any, n: int) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer) or (n and ids.min() < 0):
        raise ConfigError(f"ids must be {n} non-negative integers")
    return ids.astype(np.int64)


class ShardedIndex:
    """Search several shards and merge their top-k (see the module notes)."""

    def __init__(self, shards: Sequence[Shard], *, threads: int = 1) -> None:
        if not shards:
            raise ConfigError("a sharded index needs at least one shard")
        dims = {s.index.d for s in shards}
        if len(dims) != 1:
            raise ConfigError(f"shards of different dimensions: {sorted(dims)}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {threads!r}")
        self.shards = list(shards)
        self.dim = dims.pop()
        self.threads = threads

    @classmethod
    def open(cls, directories: Sequence[str | os.PathLike[str]], *, mmap: bool = True, threads: int = 1) -> ShardedIndex:
        return cls([Shard.open(d, mmap=mmap) for d in directories], threads=threads)

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    def memory_bytes(self) -> int:
        return sum(s.memory_bytes() for s in self.shards)

    def search(self, queries: Any, k: int, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Merged top-k (scores (q, k), global ids (q, k), -1 where fewer than k clips)."""
        q = unit_rows(queries, self.dim, "queries", one_row_ok=True)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        if self.threads == 1 or len(self.shards) == 1:
            parts = [s.search(q, k, **kwargs) for s in self.shards]
        else:
            with ThreadPoolExecutor(self.threads) as pool:
                parts = list(pool.map(lambda s: s.search(q, k, **kwargs), self.shards))
        return merge_topk(parts, k)


class _ShardActor:
    """A saved shard opened inside a Ray actor."""

    def __init__(self, directory: str) -> None:
        faiss.omp_set_num_threads(1)
        self.shard = Shard.open(directory)

    def search(self, queries: np.ndarray, k: int, kwargs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        return self.shard.search(queries, k, **kwargs)

    def size(self) -> int:
        return len(self.shard)


class RayShardedIndex:
    """The shards of saved directories, each in a Ray actor; searches fan out and merge like
    :class:`ShardedIndex`. Ray must be initialised; the directories must be readable where
    the actors run. ``num_cpus`` is what each actor reserves: 0 by default, so that a
    cluster schedules any number of shards (a search holds a CPU for milliseconds; with one
    CPU each, shards beyond the cluster's CPUs would never start)."""

    def __init__(self, directories: Sequence[str | os.PathLike[str]], *, num_cpus: float = 0) -> None:
        import ray

        if not directories:
            raise ConfigError("a sharded index needs at least one shard")
        actor = ray.remote(num_cpus=num_cpus)(_ShardActor)
        self._ray = ray
        self.actors = [actor.remote(str(Path(d).resolve())) for d in directories]
        self._sizes = ray.get([a.size.remote() for a in self.actors])

    def __len__(self) -> int:
        return int(sum(self._sizes))

    def search(self, queries: Any, k: int, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(np.atleast_2d(np.asarray(queries, np.float32)))
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
        ref = self._ray.put(q)
        return merge_topk(self._ray.get([a.search.remote(ref, k, kwargs) for a in self.actors]), k)

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []
