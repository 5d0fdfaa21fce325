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
        inner = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = spec.hnsw_ef_construction_n
        inner.hnsw.efSearch = spec.hnsw_ef_search_n
    elif spec.index_type == "ivf" and trained is not None:
        inner = faiss.clone_index(trained)
        inner.reset()
    elif spec.index_type == "ivf" and (nlist := ivf_train_size(spec, len(vectors))) is not None:
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
    set_search_params(index, spec)
    return index


def build_inner(spec: IndexSpec, vectors: np.ndarray) -> faiss.Index:
    """A bare FAISS index (no id map: the k-th vector is position k) of ``spec``'s type holding
    ``vectors``: what a compacted segment stores. "ivf" stays flat until it has enough vectors."""
    d = spec.dim
    inner: faiss.Index
    if spec.index_type == "hnsw":
        inner = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = spec.hnsw_ef_construction_n
        inner.hnsw.efSearch = spec.hnsw_ef_search_n
    elif spec.index_type == "ivf" and (nlist := ivf_train_size(spec, len(vectors))) is not None:
        quantizer = faiss.IndexFlatIP(d)
        inner = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        inner.own_fields = True
        quantizer.this.disown()
        inner.cp.max_points_per_centroid = spec.ivf_train_points_per_list_n
        inner.train(vectors)
        inner.make_direct_map(True)  # so reconstruct(position) works
        inner.nprobe = min(spec.ivf_nprobe_n, inner.nlist)
    else:
        inner = faiss.IndexFlatIP(d)
    if len(vectors):
        inner.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return inner


def inner_vectors(index: faiss.Index) -> np.ndarray:
    """Every vector of a bare index, in position order (n, dim) float32."""
    inner = faiss.downcast_index(index)
    if inner.ntotal == 0:
        return np.zeros((0, inner.d), np.float32)
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
