"""The FAISS side of the gallery: which index type is built, its search parameters, IVF
training, removal, search and the validation of the vectors that go in or are searched.

Every index is an ``IndexIDMap2`` over FlatIP, HNSWFlat (inner product) or IVFFlat (inner
product), holding L2-normalised float32 vectors, so scores are cosine similarities.

* ``flat`` is exact.
* ``hnsw`` cannot delete in FAISS: removing ids rebuilds the graph from the remaining vectors
  (reconstructed from storage; it costs as much as building it).
* ``ivf`` stays exact (flat storage) until it holds ``ivf_min_train_n`` vectors; it is then
  trained (nlist ~ 4*sqrt(n), retrained when that doubles, see :func:`trained_for_size`).
  FAISS' IVF remove does not compose with IndexIDMap2, so removal re-adds the remaining
  vectors to the trained lists (no retraining).

Every type can reconstruct its vectors (:func:`all_vectors`). benchmarks/bench_index.py
builds and tunes indexes with these same functions.
"""

from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np

from ..errors import ConfigError, ModelMismatchError
from .spec import IndexSpec

__all__ = [
    "all_vectors", "auto_nlist", "build_faiss_index", "ivf_train_size", "remove_ids", "search",
    "set_search_params", "trained_for_size", "unit_rows", "vectors_of",
]


def auto_nlist(n: int) -> int:
    """IVF list count for n vectors: ~4*sqrt(n), but at least 39 training points per list."""
    return max(1, min(int(round(4 * math.sqrt(n))), n // 39))


def ivf_train_size(spec: IndexSpec, n: int) -> int | None:
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
        inner = _hnsw(spec)
    elif spec.index_type == "ivf" and trained is not None:
        inner = faiss.clone_index(trained)
        inner.reset()
    elif spec.index_type == "ivf" and (nlist := ivf_train_size(spec, len(vectors))) is not None:
        inner = _trained_ivf(spec, vectors, nlist)
    else:
        inner = faiss.IndexFlatIP(d)
    index = faiss.IndexIDMap2(inner)
    if len(vectors):
        index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64)
        )
    set_search_params(index, spec)
    return index


def _hnsw(spec: IndexSpec) -> faiss.Index:
    inner = faiss.IndexHNSWFlat(spec.dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efConstruction = spec.hnsw_ef_construction_n
    inner.hnsw.efSearch = spec.hnsw_ef_search_n
    return inner


def _trained_ivf(spec: IndexSpec, vectors: np.ndarray, nlist: int) -> faiss.Index:
    """IVF-Flat (inner product) with ``nlist`` lists trained on ``vectors``, with a direct map
    (so that reconstruct works, by position or through an IDMap2)."""
    quantizer = faiss.IndexFlatIP(spec.dim)
    inner = faiss.IndexIVFFlat(quantizer, spec.dim, nlist, faiss.METRIC_INNER_PRODUCT)
    inner.own_fields = True
    quantizer.this.disown()
    inner.cp.max_points_per_centroid = spec.ivf_train_points_per_list_n
    inner.train(vectors)
    inner.make_direct_map(True)
    return inner


def build_inner(spec: IndexSpec, vectors: np.ndarray) -> faiss.Index:
    """A bare FAISS index (no id map: the k-th vector is position k) of ``spec``'s type holding
    ``vectors``: what a compacted segment stores. "ivf" stays flat until it has enough vectors."""
    d = spec.dim
    inner: faiss.Index
    if spec.index_type == "hnsw":
        inner = _hnsw(spec)
    elif spec.index_type == "ivf" and (nlist := ivf_train_size(spec, len(vectors))) is not None:
        inner = _trained_ivf(spec, vectors, nlist)
        inner.nprobe = min(spec.ivf_nprobe_n, inner.nlist)
    elif spec.index_type == "ivfpq" and (nlist := ivfpq_train_size(spec, len(vectors))) is not None:
        inner = _ivfpq(spec, vectors, nlist)
    else:
        inner = faiss.IndexFlatIP(d)
    if len(vectors):
        inner.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return inner


#: PQ trains 256 centroids per sub-quantizer (8-bit codes): FAISS wants 39 points each.
IVFPQ_MIN_TRAIN_N = 256 * 39


def ivfpq_train_size(spec: IndexSpec, n: int) -> int | None:
    """The nlist to train an "ivfpq" segment of n vectors with, or None to stay flat."""
    nlist = ivf_train_size(spec, n)
    return None if nlist is None or n < IVFPQ_MIN_TRAIN_N else nlist


def _ivfpq(spec: IndexSpec, vectors: np.ndarray, nlist: int) -> faiss.Index:
    """An "ivfpq" segment index: sharded.py's IVF-PQ (trained on a sample) inside an
    IndexRefineFlat that keeps the float vectors for the exact re-scoring (and reconstruct)."""
    from .sharded import IvfPqParams, train_ivfpq

    params = IvfPqParams(nlist=nlist, pq_m=spec.ivfpq_m, nprobe=min(spec.ivf_nprobe_n, nlist),
                         rerank=spec.ivfpq_rerank_n,
                         train_size=max(IVFPQ_MIN_TRAIN_N, nlist * spec.ivf_train_points_per_list_n))
    pq = train_ivfpq(vectors, params)
    pq.nprobe = params.nprobe
    inner = faiss.IndexRefineFlat(pq)
    inner.own_fields = True
    pq.this.disown()
    inner.k_factor = float(max(1, spec.ivfpq_rerank_n // 10))  # for k=10; search sets it per k
    return inner


def search_params(index: faiss.Index, spec: IndexSpec, k: int, sel: Any = None) -> tuple[Any, list[Any]]:
    """Search parameters of an "ivfpq" segment index (IndexRefine: ``ivfpq_rerank_n``
    candidates, at least k, re-scored exactly; nprobe; ``sel``) and the objects they
    reference; None for other index types (segments.search_inner makes theirs)."""
    inner = faiss.downcast_index(index)
    if not isinstance(inner, faiss.IndexRefine):
        return None, []
    base = faiss.SearchParametersIVF()
    base.nprobe = min(spec.ivf_nprobe_n, faiss.extract_index_ivf(inner.base_index).nlist)
    if sel is not None:
        base.sel = sel
    params = faiss.IndexRefineSearchParameters()
    params.k_factor = max(1.0, spec.ivfpq_rerank_n / max(1, k))
    params.base_index_params = base
    return params, [base, sel]


def search_positions(index: faiss.Index, spec: IndexSpec, q: np.ndarray, k: int,
                     dead: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """segments.search_inner, which also knows "ivfpq" segments (IndexRefine)."""
    from .segments import search_inner

    inner = faiss.downcast_index(index)
    if not isinstance(inner, faiss.IndexRefine):
        return search_inner(index, spec, q, k, dead)
    k = min(int(k), int(inner.ntotal))
    if k <= 0:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    keep: list[Any] = []
    sel = None
    if dead is not None and len(dead):
        batch = faiss.IDSelectorBatch(np.ascontiguousarray(dead, dtype=np.int64))
        sel = faiss.IDSelectorNot(batch)
        keep.append(batch)
    params, more = search_params(inner, spec, k, sel)
    scores, pos = inner.search(np.ascontiguousarray(q, dtype=np.float32), k, params=params)
    del keep, more
    scores = scores.astype(np.float32, copy=False)
    scores[pos < 0] = -np.inf
    return scores, pos.astype(np.int64, copy=False)


def memory_bytes(index: faiss.Index) -> int:
    """What searching a segment index keeps in memory: for "ivfpq" the codes and ids of its
    lists, the coarse quantizer and the codebooks (sharded.py's count), not the float vectors
    of the re-scoring, which opening memory-maps; for the other types their vectors and graph."""
    from .sharded import ivfpq_memory_bytes

    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexRefine):
        return ivfpq_memory_bytes(faiss.downcast_index(inner.base_index))
    return int(inner.ntotal) * int(inner.d) * 4


def inner_vectors(index: faiss.Index) -> np.ndarray:
    """Every vector of a bare index, in position order (n, dim) float32."""
    inner = faiss.downcast_index(index)
    if inner.ntotal == 0:
        return np.zeros((0, inner.d), np.float32)
    if isinstance(inner, faiss.IndexRefine):  # the exact vectors, not the PQ codes
        inner = faiss.downcast_index(inner.refine_index)
    if isinstance(inner, faiss.IndexFlat):
        return faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * inner.d).reshape(inner.ntotal, inner.d).copy()
    return inner.reconstruct_n(0, inner.ntotal)


def set_search_params(index: faiss.IndexIDMap2, spec: IndexSpec, k: int = 1) -> None:
    """HNSW efSearch (at least k) and IVF nprobe from ``spec``; nothing to set for flat."""
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


def trained_for_size(index: faiss.IndexIDMap2, spec: IndexSpec) -> faiss.IndexIDMap2:
    """``index``, or an "ivf" one (re)trained for its size: trained once it holds enough vectors,
    retrained when the automatic list count has doubled (never with a fixed ``ivf_nlist``)."""
    if spec.index_type != "ivf":
        return index
    inner = faiss.downcast_index(index.index)
    want = ivf_train_size(spec, index.ntotal)
    if want is None:
        return index
    if isinstance(inner, faiss.IndexIVF) and (spec.ivf_nlist is not None or want < 2 * inner.nlist):
        return index
    vecs, ids = all_vectors(index)
    return build_faiss_index(spec, vecs, ids)


def remove_ids(index: faiss.IndexIDMap2, spec: IndexSpec, ids: np.ndarray) -> tuple[faiss.IndexIDMap2, int]:
    """``index`` without ``ids`` (the same object for flat, a rebuilt one otherwise) and how
    many vectors went."""
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexFlat):
        return index, int(index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))
    # HNSW cannot delete; IVF deletion breaks IDMap2's id table: re-add the rest
    vecs, all_ids = all_vectors(index)
    keep = ~np.isin(all_ids, ids)
    rebuilt = build_faiss_index(
        spec, vecs[keep], all_ids[keep], trained=inner if isinstance(inner, faiss.IndexIVF) else None
    )
    return rebuilt, int((~keep).sum())


def search(index: faiss.IndexIDMap2, spec: IndexSpec, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest of each (unit) query: (scores float32, ids int64), best first.

    Columns no query filled (approximate indexes may find fewer than k) are dropped; other
    unfilled slots hold id -1 and score -inf.
    """
    k_eff = min(int(k), index.ntotal)
    set_search_params(index, spec, k_eff)
    scores, ids = index.search(queries, k_eff)
    found = (ids != -1).any(axis=0)
    width = int(found.nonzero()[0].max()) + 1 if found.any() else 0
    scores, ids = scores[:, :width], ids[:, :width]
    scores[ids == -1] = -np.inf
    return scores.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)


def vectors_of(index: faiss.IndexIDMap2, ids: Any) -> np.ndarray:
    """The stored (unit) vectors of ``ids`` (ConfigError if an id is unknown)."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    vecs, all_ids = all_vectors(index)
    order = np.argsort(all_ids)
    pos = np.searchsorted(all_ids, ids, sorter=order)
    pos = np.minimum(pos, max(len(all_ids) - 1, 0))
    if len(ids) and (len(all_ids) == 0 or (all_ids[order[pos]] != ids).any()):
        raise ConfigError(f"unknown vector ids among {ids.tolist()[:5]}")
    return vecs[order[pos]] if len(ids) else np.zeros((0, index.d), np.float32)


def unit_rows(x: Any, dim: int, what: str, *, one_row_ok: bool = False) -> np.ndarray:
    """Validate (n, dim) finite non-zero vectors; return them L2-normalised, float32, C order.

    ``one_row_ok`` takes a 1-d vector as one row (queries). A wrong dim is a
    ModelMismatchError (the vectors come from another model), anything else a ConfigError.
    """
    try:
        a = np.asarray(x)
    except ValueError as e:  # ragged nested lists
        raise ConfigError(f"{what} must be a 2-d array (n, {dim}): {e}") from e
    if a.dtype.kind not in "fiu":
        raise ConfigError(f"{what} must be numeric, got dtype {a.dtype}")
    if a.ndim == 1 and one_row_ok:
        a = a[None, :]
    if a.ndim != 2:
        raise ConfigError(f"{what} must be a 2-d array (n, {dim}), got shape {a.shape}")
    if a.shape[1] != dim:
        raise ModelMismatchError(
            f"{what} have dim {a.shape[1]} but the index holds dim {dim} embeddings (embed with the index's model)"
        )
    a = np.array(a, dtype=np.float32, order="C")
    if not np.isfinite(a).all():
        raise ConfigError(f"{what} contain NaN or infinite values")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if a.shape[0] and (norms < 1e-6).any():
        raise ConfigError(f"{what} contain an all-zero vector")
    a /= norms
    return a
