"""Open-set threshold calibration on real CAM++ embeddings of librispeech-251: near-duplicate
identities (one voice enrolled under two names) and galleries too small to calibrate."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speakerid.config import EmbedOptions
from speakerid.embedder import Embedder
from speakerid.identify import (
    NEAR_DUPLICATE_COSINE,
    OpenSetCalibration,
    calibrate_open_set,
    calibrate_open_set_threshold,
    gallery_impostor_scores,
    identify,
    min_calibration_speakers,
    model_verification_threshold,
    near_duplicate_speakers,
)
from speakerid.index import IndexSpec, SpeakerIndex
from speakerid.indexer import Item, add_files, build_index
from speakerid.metrics import threshold_for_far

POOL = 80  # speakers: enrolled from the first half of their utterance, queried with the second
SMALL = 20  # gallery size of the small-gallery case
GALLERIES = 100  # random 20-speaker galleries drawn from the pool (60 strangers each)
#: Mean share of unenrolled speakers accepted by a 20-speaker gallery's threshold, measured
#: with this test's pool and seeds (0.0140 with the VAD defaults of issue 12, enrolled speakers
#: correct: 0.990; the old rule accepted 0.0327. Before them: 0.0125, 0.976 and 0.0275). The old
#: rule is the gallery's highest impostor score, floored at 0.588; 400 galleries drawn from all
#: 235 librispeech-251 speakers gave 0.0144 against 0.0386 (with the VAD defaults before).
SMALL_GALLERY_FALSE_ACCEPT = 0.0140


@pytest.fixture(scope="module")
def campplus() -> Embedder:
    return Embedder("campplus", embed=EmbedOptions(threads=1))


@pytest.fixture(scope="module")
def pool(librispeech: Path, librispeech_rows: list[dict], campplus: Embedder) -> dict:
    """POOL seeded speakers of librispeech-251 (utterances of 4 s or more) cut in time."""
    rows = sorted((r for r in librispeech_rows if float(r["duration_s"]) >= 4.0), key=lambda r: r["file"])
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))[:POOL]]
    halves = []
    for r in rows:
        x, sr = sf.read(librispeech / r["file"], dtype="float32")
        assert sr == 16000
        halves += [x[: len(x) // 2], x[len(x) // 2 :]]
    embs = campplus.embed_batch(halves, sample_rate_hz=16000, workers=2)
    vecs = np.stack([e.vector for e in embs])
    return {"speakers": [r["speaker"] for r in rows], "enrol": vecs[0::2], "query": vecs[1::2], "rows": rows}


def gallery(path: Path, vecs: np.ndarray, names: list[str], tag: str = "") -> SpeakerIndex:
    """An unsaved writable index of these (vector, name) clips, one clip each."""
    ix = SpeakerIndex.create(path, IndexSpec("campplus", "ab" * 32, vecs.shape[1]), save=False)
    n = len(names)
    keys = [f"{tag}{name}-{i}" for i, name in enumerate(names)]
    ix.add(vecs, names, [f"/audio/{k}.wav" for k in keys], [hashlib.sha256(k.encode()).hexdigest() for k in keys],
           [5.0] * n, [5.0] * n)
    return ix


@pytest.mark.slow
def test_distinct_speakers_are_far_below_the_duplicate_bound(pool: dict, tmp_path: Path) -> None:
    with gallery(tmp_path / "ix", pool["enrol"], pool["speakers"]) as ix:
        assert near_duplicate_speakers(ix) == []
        assert near_duplicate_speakers(ix, 0.80) == []
        _, cent = ix.speaker_centroids()
        sims = cent @ cent.T
        np.fill_diagonal(sims, -1)
        assert sims.max() < NEAR_DUPLICATE_COSINE - 0.15  # 0.69 in this pool
        same = np.sum(pool["enrol"] * pool["query"], axis=1)  # two halves of one utterance
        assert np.median(same) > sims.max()


def test_same_clips_under_two_names_keep_a_sane_threshold(pool: dict, tmp_path: Path) -> None:
    names = pool["speakers"]
    doubled = 40
    with gallery(tmp_path / "base", pool["enrol"], names) as base:
        plain = calibrate_open_set(base)
    aliases = [f"alias-{s}" for s in names[:doubled]]
    vecs = np.concatenate([pool["enrol"], pool["enrol"][:doubled]])
    with gallery(tmp_path / "dup", vecs, names + aliases) as ix:
        naive = calibrate_open_set_threshold(ix, near_duplicate_cosine=None)
        assert naive is not None and naive > 0.99  # the issue: every enrolled query becomes unknown
        cal = calibrate_open_set(ix)
        assert isinstance(cal, OpenSetCalibration)
        # the duplicates are found, and no one else
        want = sorted((min(a, s), max(a, s)) for a, s in zip(aliases, names))
        assert sorted((a, b) for a, b, _ in cal.near_duplicates) == want
        assert all(c > 0.999 for _, _, c in cal.near_duplicates)
        # each voice counted once: the same impostor scores, so the same threshold
        assert (cal.speakers, cal.voices, cal.n_scores) == (POOL + doubled, POOL, POOL)
        assert cal.threshold == pytest.approx(plain.threshold, abs=1e-6)
        assert 0.6 < cal.threshold < 0.8 and cal.basis == plain.basis
        info = ix.info()
        assert info["threshold"] == cal.threshold and len(info["near_duplicate_speakers"]) == doubled
        dup_warnings = [w for w in info["threshold_warnings"] if "look like one voice" in w]
        assert len(dup_warnings) == 11 and dup_warnings[-1].startswith("... and 30 more")
        assert "40 near-duplicate speaker pairs counted as one voice (80 voices)" in info["threshold_method"]
        # queries of enrolled speakers are still accepted (as themselves or their alias)
        res = identify(ix, pool["query"], k=2)
        ok = [r.accepted and r.speaker.removeprefix("alias-") == s for r, s in zip(res, names)]
        assert np.mean(ok) >= 0.95
        assert np.mean([r.accepted for r in identify(ix, pool["query"], k=1, threshold=naive)]) < 0.05


def test_small_gallery_is_flagged_and_rejects_strangers(pool: dict, tmp_path: Path) -> None:
    floor = model_verification_threshold("campplus")
    assert floor == pytest.approx(0.588, abs=1e-3)
    assert min_calibration_speakers(0.01) == 100 and min_calibration_speakers(0.05) == 20
    rng = np.random.default_rng(1)
    names = np.array(pool["speakers"])
    accepted, accepted_old, correct, thresholds = [], [], [], []
    for t in range(GALLERIES):
        perm = rng.permutation(POOL)
        enrolled, strangers = perm[:SMALL], perm[SMALL:]
        with gallery(tmp_path / f"g{t}", pool["enrol"][enrolled], list(names[enrolled])) as ix:
            cal = calibrate_open_set(ix)
            if t == 0:
                assert cal.basis == "tail-fit" and cal.voices == SMALL and cal.min_speakers == 100
                info = ix.info()
                assert info["threshold_basis"] == "tail-fit"
                (w,) = info["threshold_warnings"]
                assert "too small to calibrate" in w and "20 distinct speakers, at least 100 needed" in w
                assert "exponential tail" in w and f"{cal.threshold:.3f}" in w
                assert "too few speakers to calibrate (20 distinct, 100 needed for far=0.01): tail-fit" in (
                    info["threshold_method"]
                )
            assert cal.threshold is not None and cal.threshold >= floor and cal.warnings
            thresholds.append(cal.threshold)
            res = identify(ix, pool["query"][strangers], k=1)
            accepted.append(np.mean([r.accepted for r in res]))
            old = max(floor, threshold_for_far(gallery_impostor_scores(ix), 0.01))  # the previous rule
            accepted_old.append(np.mean([r.matches[0].score >= old for r in res]))
            mine = identify(ix, pool["query"][enrolled], k=1)
            correct.append(np.mean([r.speaker == s for r, s in zip(mine, names[enrolled])]))
    rate = float(np.mean(accepted))
    print(f"20-speaker galleries: strangers accepted {rate:.4f} (previous rule {np.mean(accepted_old):.4f}), "
          f"enrolled correct {np.mean(correct):.3f}, threshold mean {np.mean(thresholds):.3f}")
    assert rate <= SMALL_GALLERY_FALSE_ACCEPT + 1e-3
    assert np.mean(accepted_old) > 1.8 * rate  # what the issue saw: 0.588 lets strangers in
    assert np.mean(correct) >= 0.96


def test_tiny_gallery_rests_on_the_highest_score_or_the_floor(pool: dict, tmp_path: Path) -> None:
    with gallery(tmp_path / "ix", pool["enrol"][:5], pool["speakers"][:5]) as ix:
        cal = calibrate_open_set(ix)
        assert cal.basis == "verification-threshold" and cal.floored and cal.gallery_value < cal.threshold
        assert cal.threshold == model_verification_threshold("campplus")
        (w,) = cal.warnings
        assert "5 distinct speakers, at least 100 needed" in w and "verification threshold" in w
        assert "highest of the 5 impostor scores" in w
        unfloored = calibrate_open_set(ix, floor=None)
        assert unfloored.basis == "gallery-max"
        assert unfloored.threshold == pytest.approx(float(gallery_impostor_scores(ix).max()), abs=1e-6)
        assert ix.info()["threshold_basis"] == "gallery-max"


def test_build_and_enrol_reports_carry_the_calibration_warnings(
    tmp_path: Path, librispeech: Path, pool: dict, campplus: Embedder
) -> None:
    """Through the indexer: real files, the same audio re-encoded (WAV) and enrolled under
    another name is reported in the enrol report and the index info."""
    rows = pool["rows"][:6]
    corpus = tmp_path / "c"
    for r in rows:
        (corpus / r["speaker"]).mkdir(parents=True)
        x, _ = sf.read(librispeech / r["file"], dtype="float32")
        sf.write(corpus / r["speaker"] / "a.wav", x[: 16000 * 4], 16000)
    rep = build_index(corpus, tmp_path / "ix", embedder=campplus)
    assert rep.files_embedded == 6
    assert any("too small to calibrate" in w and "6 distinct speakers" in w for w in rep.warnings)
    copy = tmp_path / "copy.flac"  # other bytes (FLAC, not WAV), the same samples
    x, _ = sf.read(corpus / rows[0]["speaker"] / "a.wav", dtype="float32")
    sf.write(copy, x, 16000)
    rep = add_files(tmp_path / "ix", [Item(copy, "someone-else")], embedder=campplus)
    assert rep.files_embedded == 1
    dup = [w for w in rep.warnings if "look like one voice" in w]
    assert len(dup) == 1 and "'someone-else'" in dup[0] and f"'{rows[0]['speaker']}'" in dup[0]
    info = SpeakerIndex.open(tmp_path / "ix").info()
    ((a, b, c),) = info["near_duplicate_speakers"]
    assert {a, b} == {"someone-else", rows[0]["speaker"]} and c > 0.999
    assert "6 distinct speakers" in " ".join(info["threshold_warnings"])  # 7 names, 6 voices



@pytest.mark.parametrize("scoring", ["best", "topn"])
def test_duplicates_under_the_search_rules(pool: dict, tmp_path: Path, scoring: str) -> None:
    """best / topn rank through FAISS: a duplicate group is left out there too."""
    names = pool["speakers"][:30]
    two = np.concatenate([pool["enrol"][:30], pool["query"][:30]])  # two clips per speaker
    with gallery(tmp_path / "base", two, names + names) as base:
        plain = calibrate_open_set(base, scoring=scoring, top_n=2)
    with gallery(tmp_path / "dup", np.concatenate([two, two[:10], two[30:40]]),
                 names + names + [f"x-{s}" for s in names[:10]] * 2) as ix:
        cal = calibrate_open_set(ix, scoring=scoring, top_n=2)
        assert len(cal.near_duplicates) == 10 and cal.voices == 30 and cal.n_scores == 60
        assert cal.threshold == pytest.approx(plain.threshold, abs=1e-6)
        assert calibrate_open_set_threshold(ix, scoring=scoring, top_n=2, near_duplicate_cosine=None) > 0.99


def test_rank_speakers_excludes_names_per_query(pool: dict, tmp_path: Path) -> None:
    from speakerid.identify import rank_speakers

    names = pool["speakers"][:6]
    with gallery(tmp_path / "ix", pool["enrol"][:6], names) as ix:
        q = pool["query"][:3]
        for scoring in ("centroid", "best"):
            full = rank_speakers(ix, q, 6, scoring)
            got = rank_speakers(ix, q, 6, scoring, exclude=[None, names[1], names[:5]])
            assert got[0] == full[0]  # None: nothing left out (the last speaker included)
            assert [m.speaker for m in got[1]] == [m.speaker for m in full[1] if m.speaker != names[1]]
            assert [m.speaker for m in got[2]] == [names[5]]
            assert rank_speakers(ix, q[:1], 1, scoring, exclude=[names]) == [[]]  # everyone left out
