"""Sharded search (speakerid.index.sharded): exact merge of flat shards, IVF-PQ recall with
exact re-ranking, persistence, and the argument checks.

The IVF-PQ data is a speaker-like mixture (per-speaker centroids, clips scattered around them,
as CAM++ embeddings are); benchmarks/bench_large.py measures recall on grown real embeddings.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from speakerid.errors import ConfigError, IndexNotFoundError
from speakerid.index.sharded import (
    IvfPqParams,
    Shard,
    ShardedIndex,
    bytes_per_vector,
    merge_topk,
    train_ivfpq,
)

DIM = 192


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def speakers_like(n: int, n_speakers: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(clips, their speaker): unit centroids, clips at cosine ~0.75 from theirs."""
    rng = np.random.default_rng(seed)
    centroids = unit(rng.standard_normal((n_speakers, DIM)))
    spk = rng.integers(0, n_speakers, n)
    return unit(centroids[spk] + 0.05 * rng.standard_normal((n, DIM))), spk


def exact(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    flat = faiss.IndexFlatIP(DIM)
    flat.add(x)
    d, i = flat.search(q, k)
    return d, ids[i]


def test_flat_shards_merge_to_exactly_the_flat_top_k():
    rng = np.random.default_rng(1)
    x = unit(rng.standard_normal((6000, DIM)))
    ids = rng.choice(10**9, 6000, replace=False)  # global ids in no particular order
    q = unit(x[:40] + 0.5 * rng.standard_normal((40, DIM)))
    bounds = [0, 7, 1500, 1501, 4000, 6000]  # uneven shards, two smaller than k
    shards = [Shard.flat(x[a:b], ids[a:b]) for a, b in zip(bounds, bounds[1:])]
    d_ref, i_ref = exact(x, ids, q, 25)
    for threads in (1, 3):
        d, i = ShardedIndex(shards, threads=threads).search(q, 25)
        np.testing.assert_array_equal(i, i_ref)
        np.testing.assert_allclose(d, d_ref, atol=1e-6, rtol=0)
    # fewer clips than k: padded with -1 / -inf, the real ones first
    d, i = ShardedIndex([shards[0], shards[2]]).search(q[:2], 10)
    assert (i[:, 8:] == -1).all() and np.isneginf(d[:, 8:]).all() and (i[:, :8] >= 0).all()


def test_merge_topk_breaks_ties_by_id():
    d = np.array([[0.5, 0.9]], np.float32), np.array([[0.9, 0.1]], np.float32)
    i = np.array([[7, 3]]), np.array([[2, 9]])
    scores, ids = merge_topk([(d[0], i[0]), (d[1], i[1])], 3)
    assert ids.tolist() == [[2, 3, 7]]
    np.testing.assert_allclose(scores, [[0.9, 0.9, 0.5]], rtol=1e-6)


@pytest.fixture
def one_faiss_thread():
    """FAISS's OpenMP threads spin on a shared machine: training runs 10x slower with 2."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def test_ivfpq_with_rerank_reaches_the_recall_and_exact_scores(tmp_path, one_faiss_thread):
    x, _ = speakers_like(10_000, 1000, seed=2)
    ids = np.arange(len(x), dtype=np.int64) * 2 + 1
    rng = np.random.default_rng(3)
    q = unit(x[rng.choice(len(x), 100, replace=False)] + 0.05 * rng.standard_normal((100, DIM)))
    _, i_ref = exact(x, ids, q, 10)
    # small codes (24 x 6 bits) so that the test trains in seconds; measured: recall 0.957
    # re-ranked, 0.919 on the PQ scores alone
    params = IvfPqParams(nlist=32, pq_m=24, pq_bits=6, nprobe=16, rerank=100, train_size=4000)
    trained = train_ivfpq(x, params)
    cut = [0, 4000, 10_000]
    shards = [Shard.ivfpq(trained, params, tmp_path / f"s{j}", x[a:b], ids[a:b])
              for j, (a, b) in enumerate(zip(cut, cut[1:]))]
    index = ShardedIndex(shards)
    d, i = index.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i, i_ref)])
    assert recall >= 0.95
    without = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(index.search(q, 10, rerank=10)[1], i_ref)])
    assert without < recall - 0.02  # re-ranking is what brings the recall
    # re-ranked scores are the exact inner products of the ids returned, best first
    by_id = dict(zip(ids.tolist(), range(len(ids))))
    rows = np.vectorize(by_id.get)(i)
    np.testing.assert_allclose(d, np.einsum("qkd,qd->qk", x[rows], q), atol=1e-5, rtol=0)
    assert (np.diff(d, axis=1) <= 0).all()
    # in memory: the 18-byte code and the 8-byte id of each clip, plus the quantizer and
    # codebooks (a fixed cost per shard)
    assert bytes_per_vector(params) == 26
    fixed = 32 * DIM * 4 + 24 * 64 * 8 * 4
    assert index.memory_bytes() == pytest.approx(len(index) * 26 + 2 * fixed, rel=0.01)
    # reopened (memory-mapped) from disk: same answers
    again = ShardedIndex.open([tmp_path / "s0", tmp_path / "s1"], threads=2)
    d2, i2 = again.search(q, 10)
    np.testing.assert_array_equal(i2, i)
    np.testing.assert_allclose(d2, d, atol=1e-6)


def test_bad_arguments(tmp_path):
    x, _ = speakers_like(500, 50, seed=4)
    with pytest.raises(ConfigError):
        ShardedIndex([])
    with pytest.raises(ConfigError):
        Shard.flat(x, np.arange(499))
    with pytest.raises(ConfigError):  # shards of different dimensions
        ShardedIndex([Shard.flat(x, np.arange(500)), Shard.flat(x[:, :100], np.arange(500))])
    with pytest.raises(ConfigError):
        ShardedIndex([Shard.flat(x, np.arange(500))]).search(x[:2], 0)
    with pytest.raises(ConfigError):
        ShardedIndex([Shard.flat(x, np.arange(500))]).search(np.zeros((1, DIM)), 3)
    for bad in ({"pq_m": 0}, {"nlist": -1}, {"pq_bits": 9}, {"rerank": 1.5}):
        with pytest.raises(ConfigError):
            IvfPqParams(**bad)
    with pytest.raises(ConfigError):
        train_ivfpq(x, IvfPqParams(pq_m=50))  # 50 does not divide 192
    with pytest.raises(ConfigError):
        train_ivfpq(x[:100], IvfPqParams(nlist=256))
    with pytest.raises(IndexNotFoundError):
        Shard.open(tmp_path / "missing")
