"""Issue 11 at scale, in miniature: the calibrated centroid IVF (nprobe chosen for a recall,
exact scores from the re-scoring), the warm-up at opening, and the "ivfpq" clip index
(PQ codes in memory, exact re-ranking from the memory-mapped float vectors) against flat."""

from __future__ import annotations

import hashlib
from pathlib import Path

import faiss
import numpy as np
import pytest

from speakerid.errors import ConfigError
from speakerid.identify import identify, rank_speakers
from speakerid.index import IndexSpec, SpeakerIndex, backend, verify_index
from speakerid.index.speakers import CALIBRATION_QUERIES_N, build_centroid_index, calibrate_nprobe


def spec(dim: int, index_type: str = "flat", **kw) -> IndexSpec:
    return IndexSpec(model="toy-model", weights_sha256="ab" * 32, dim=dim, index_type=index_type, **kw)


def grouped(rng: np.random.Generator, n_speakers: int, per: int, dim: int) -> tuple[np.ndarray, list[str]]:
    """Speakers around 40 group directions (neighbourhoods, as real voices have), ``per``
    clips each at cosine ~0.75 from their speaker."""
    groups = rng.standard_normal((40, dim))
    groups /= np.linalg.norm(groups, axis=1, keepdims=True)
    cent = groups[rng.integers(0, 40, n_speakers)] + 0.8 / np.sqrt(dim) * rng.standard_normal((n_speakers, dim))
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    x = np.repeat(cent, per, axis=0) + 0.88 / np.sqrt(dim) * rng.standard_normal((n_speakers * per, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), [
        f"s{i:05d}" for i in range(n_speakers) for _ in range(per)]


def add(ix: SpeakerIndex, x: np.ndarray, names: list[str], start: int = 0) -> np.ndarray:
    n = len(x)
    return ix.add(x, names, [f"/a/{start + i}.wav" for i in range(n)],
                  [hashlib.sha256(b"%d" % (start + i)).hexdigest() for i in range(n)], [2.0] * n, [1.5] * n)


def recall(got: list[list], truth: list[list]) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, truth, strict=True)]))


# --- the centroid index ----------------------------------------------------------------------


def test_calibrated_centroid_ivf_reaches_its_recall_with_exact_scores(tmp_path: Path) -> None:
    dim = 32
    rng = np.random.default_rng(3)
    x, names = grouped(rng, 3000, 4, dim)
    d = tmp_path / "ix"
    with SpeakerIndex.create(d, spec(dim, centroid_ann_min_n=1000)) as ix:
        add(ix, x, names)
        ix.set_threshold(0.5, "test")
        ix.save(compact=True)
    ix = SpeakerIndex.open(d)
    info = ix.info()
    assert info["centroid_index"] == "IndexIVFScalarQuantizer+IndexRefineFlat"
    nprobe = info["centroid_nprobe"]
    assert isinstance(nprobe, int) and 1 <= nprobe < 110  # 2*sqrt(3000) lists: not all probed
    # new clips of enrolled speakers, against an exact search of every centroid
    cnames, cent = ix.speaker_centroids()
    spk = rng.integers(0, 3000, 300)
    q = cent[spk] + 0.88 / np.sqrt(dim) * rng.standard_normal((300, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    sims = q @ cent.T
    truth = [[cnames[j] for j in np.argsort(-s, kind="stable")[:10]] for s in sims]
    scores, got = ix.search_speakers(q, 10)
    assert recall(got, truth) >= 0.99
    # scores are exact cosines (the SQ8 codes only choose the candidates), best first
    pos = {n: i for i, n in enumerate(cnames)}
    exact = np.array([[sims[i, pos[n]] for n in row] for i, row in enumerate(got)])
    np.testing.assert_allclose(scores, exact, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-7).all()
    r = identify(ix, q[:5], k=3)
    assert [m.matches[0].speaker for m in r] == [g[0] for g in got[:5]]


def test_calibration_picks_the_smallest_nprobe_for_the_target() -> None:
    dim = 32
    rng = np.random.default_rng(4)
    x, _ = grouped(rng, 4000, 1, dim)
    probes = x[:CALIBRATION_QUERIES_N] + 0.1 * rng.standard_normal((CALIBRATION_QUERIES_N, dim)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    loose = build_centroid_index(spec(dim, centroid_ann_min_n=100, centroid_recall_target=0.6), x, probes)
    tight = build_centroid_index(spec(dim, centroid_ann_min_n=100, centroid_recall_target=0.999), x, probes)
    fixed = build_centroid_index(spec(dim, centroid_ann_min_n=100, centroid_nprobe_n=3), x, probes)
    n_loose, n_tight = (faiss.extract_index_ivf(i).nprobe for i in (loose, tight))
    assert n_loose < n_tight and faiss.extract_index_ivf(fixed).nprobe == 3
    got, rec = calibrate_nprobe(tight, x, probes, 0.999)
    assert got == n_tight and rec >= 0.999
    # an unreachable target probes every list (then exact: recall 1)
    got, rec = calibrate_nprobe(tight, x, probes, 1.01)
    assert got == faiss.extract_index_ivf(tight).nlist and rec == 1.0


def test_opening_warms_the_centroid_search(tmp_path: Path) -> None:
    """Opening searches once (so that the first query does not pay FAISS' first search); it
    leaves the search parameters made, and changes nothing the queries see."""
    dim = 32
    rng = np.random.default_rng(5)
    x, names = grouped(rng, 1500, 2, dim)
    d = tmp_path / "ix"
    with SpeakerIndex.create(d, spec(dim, centroid_ann_min_n=500)) as ix:
        add(ix, x, names)
        ix.save(compact=True)
        add(ix, x[:2], ["zz-new"] * 2, 10_000)  # an overlay speaker, a tombstoned one
        ix.remove_speaker("s00007")
        ix.save()
    ix = SpeakerIndex.open(d)
    assert "params" in ix._roster._cache and "overlay" in ix._roster._cache
    ranked = rank_speakers(ix, x[:20], 5)
    names_all = {m.speaker for r in ranked for m in r}
    assert "s00007" not in names_all and ranked[0][0].speaker in ("s00000", "zz-new")


def test_opening_runs_one_identification_and_survives_its_failure(tmp_path: Path, monkeypatch, caplog) -> None:
    """The warm-up at opening goes through the public identify (so the query's code is in the
    CPU caches for the first real one); if that identification fails, opening still succeeds,
    the failure logged, and the caller meets it on its own identify."""
    import logging

    import speakerid.identify as ident
    from speakerid.errors import SpeakeridError

    dim = 16
    x, names = grouped(np.random.default_rng(2), 30, 2, dim)
    d = tmp_path / "ix"
    with SpeakerIndex.create(d, spec(dim)) as ix:
        add(ix, x, names)
        ix.set_threshold(0.5, "test")
        ix.save()
    calls: list[int] = []
    real = ident.identify

    def counting(index, q, k=5, **kw):
        calls.append(k)
        return real(index, q, k, **kw)

    monkeypatch.setattr(ident, "identify", counting)
    SpeakerIndex.open(d)
    assert calls == [10]

    def failing(*a, **kw):
        raise SpeakeridError("no threshold for you")

    monkeypatch.setattr(ident, "identify", failing)
    with caplog.at_level(logging.DEBUG, logger="speakerid"):
        ix = SpeakerIndex.open(d)
    assert "warm-up identification" in caplog.text and "no threshold for you" in caplog.text
    assert real(ix, x[0], k=3)[0].speaker == "s00000"
    with SpeakerIndex.create(tmp_path / "empty", spec(dim)) as e:  # no speaker: nothing to warm
        e.save()
    calls.clear()
    monkeypatch.setattr(ident, "identify", counting)
    SpeakerIndex.open(tmp_path / "empty")
    assert calls == []


# --- the ivfpq clip index ----------------------------------------------------------------------


def test_ivfpq_spec_validation() -> None:
    with pytest.raises(ConfigError, match="divide"):
        spec(30, "ivfpq", ivfpq_m=8)
    with pytest.raises(ConfigError, match="ivfpq_rerank_n"):
        spec(32, "ivfpq", ivfpq_rerank_n=0)
    assert spec(32, "ivfpq", ivfpq_m=8).index_type == "ivfpq"
    with pytest.raises(ConfigError, match="centroid_recall_target"):
        spec(32, centroid_recall_target=1.5)


@pytest.fixture(scope="module")
def pq_data() -> tuple[np.ndarray, list[str], np.ndarray]:
    rng = np.random.default_rng(11)
    x, names = grouped(rng, 1100, 10, 64)  # 11000 clips: enough to train 8-bit PQ codebooks
    q = x[rng.integers(0, len(x), 200)] + 0.05 * rng.standard_normal((200, 64)).astype(np.float32)
    return x, names, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.slow  # trains PQ codebooks on 11000 clips: ~25 s on 2 busy cores
def test_ivfpq_against_flat_through_save_and_open(tmp_path: Path, pq_data) -> None:
    x, names, q = pq_data
    s = spec(64, "ivfpq", ivf_min_train_n=1000, ivf_nlist=32, ivf_nprobe_n=8, ivfpq_m=16, ivfpq_rerank_n=100)
    d, f = tmp_path / "pq", tmp_path / "flat"
    for where, sp in ((d, s), (f, spec(64))):
        with SpeakerIndex.create(where, sp) as ix:
            add(ix, x, names)
            ix.save(compact=True)
    flat, pq = SpeakerIndex.open(f), SpeakerIndex.open(d)
    info = pq.info()
    assert info["faiss_index"] == "IndexIVFPQ+IndexRefineFlat" and info["ivf_nlist"] == 32
    fs, fi = flat.search(q, 10)
    ps, pi = pq.search(q, 10)
    assert recall(pi.tolist(), fi.tolist()) >= 0.95
    # exact re-ranking: the scores are the true cosines of the ids returned, best first
    np.testing.assert_allclose(ps, np.einsum("qd,qkd->qk", q, x[pi]), atol=1e-5)
    assert (np.diff(ps, axis=1) <= 1e-6).all()
    # memory: 16-byte codes + 8-byte ids (+ quantizer and codebooks), the floats are mapped
    seg = pq._segments[0]
    assert backend.memory_bytes(seg.index) / len(x) <= 100
    assert backend.memory_bytes(seg.index) < len(x) * 64 * 4 / 8
    # the stored vectors stay exact (compaction and vectors() read the float copy)
    np.testing.assert_allclose(pq.vectors([0, 5, 10_999]), x[[0, 5, 10_999]], atol=1e-6)
    assert verify_index(d).ok


@pytest.mark.slow  # trains PQ codebooks on 11000 clips: ~25 s on 2 busy cores
def test_ivfpq_tombstones_and_recompaction(tmp_path: Path, pq_data) -> None:
    x, names, q = pq_data
    s = spec(64, "ivfpq", ivf_min_train_n=1000, ivf_nlist=32, ivf_nprobe_n=8, ivfpq_m=16)
    d = tmp_path / "pq"
    with SpeakerIndex.create(d, s) as ix:
        add(ix, x, names)
        ix.save(compact=True)
        ix.remove_speaker("s00000")  # a tombstone over the PQ segment
        ix.save()
    ix = SpeakerIndex.open(d, writable=True)
    _, ids = ix.search(x[:10], 10)
    assert not np.isin(ids, np.arange(10)).any()  # s00000's clips (ids 0-9) are masked
    ix.compact()  # rebuilt from the exact vectors of the PQ segment
    assert ix.info()["faiss_index"] == "IndexIVFPQ+IndexRefineFlat" and len(ix) == len(x) - 10
    np.testing.assert_allclose(ix.vectors([10, 500]), x[[10, 500]], atol=1e-6)
    _, cent = ix.speaker_centroids()
    want = x[10:20].sum(0)
    np.testing.assert_allclose(cent[0], want / np.linalg.norm(want), atol=1e-5)
    ix.close()
    assert len(SpeakerIndex.open(d)) == len(x) - 10


def test_ivfpq_stays_flat_until_it_can_train(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x, names = grouped(rng, 300, 10, 64)  # 3000 clips: fewer than 8-bit PQ training needs
    with SpeakerIndex.create(tmp_path / "ix", spec(64, "ivfpq", ivf_min_train_n=1000, ivf_nlist=16, ivfpq_m=16)) as ix:
        add(ix, x, names)
        ix.save(compact=True)
        assert ix.info()["faiss_index"] == "IndexFlatIP"
        _, ids = ix.search(x[:5], 1)
        assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]
