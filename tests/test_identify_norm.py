"""AS-norm in identification (speakerid.scorenorm) against a direct numpy computation of the
formula, its cache across gallery changes, and the duration-aware (QMF-like) open-set threshold
of speakerid.calibration.duration."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from speakerid import scorenorm
from speakerid.calibration import CalibrationCrops, DurationModel, calibrate_open_set
from speakerid.calibration.duration import fit_duration_model, score_models
from speakerid.errors import ConfigError
from speakerid.identify import identify
from speakerid.index import IndexSpec, SpeakerIndex

DIM = 16


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_index(path: Path, vecs: np.ndarray, names: list[str], speech_s: list[float] | None = None) -> SpeakerIndex:
    ix = SpeakerIndex.create(path, IndexSpec("campplus", "ab" * 32, vecs.shape[1]), save=False)
    add(ix, vecs, names, speech_s)
    return ix


def add(ix: SpeakerIndex, vecs: np.ndarray, names: list[str], speech_s: list[float] | None = None) -> None:
    keys = [f"{n}-{len(ix) + i}" for i, n in enumerate(names)]
    sp = speech_s if speech_s is not None else [5.0] * len(names)
    ix.add(vecs, names, [f"/a/{k}.wav" for k in keys], [hashlib.sha256(k.encode()).hexdigest() for k in keys],
           sp, sp)


def synthetic(rng: np.random.Generator, speakers: int, clips: int, noise: float = 0.6):
    base = rng.standard_normal((speakers, DIM))
    vecs = np.concatenate([base + noise * rng.standard_normal((speakers, DIM)) for _ in range(clips)])
    names = [f"s{i:02d}" for i in range(speakers)] * clips
    return base, _unit(vecs).astype(np.float32), names


def direct_asnorm(vecs: np.ndarray, names: list[str], q: np.ndarray, top_n: int) -> dict[str, float]:
    """The formula, computed the plain way: speaker -> normalised score of query ``q``."""
    spk = sorted(set(names))
    cent = np.stack([_unit(np.sum([v for v, n in zip(vecs, names) if n == s], axis=0)) for s in spk])
    q = _unit(q)
    out = {}
    for e, s in enumerate(spk):
        raw = float(q @ cent[e])
        others = [j for j in range(len(spk)) if j != e]  # its own clips (its centroid) excluded
        ce = np.sort(cent[e] @ cent[others].T)[::-1][:top_n]
        cq = np.sort(q @ cent[others].T)[::-1][:top_n]
        out[s] = 0.5 * ((raw - ce.mean()) / ce.std() + (raw - cq.mean()) / cq.std())
    return out


def check_against_direct(ix: SpeakerIndex, vecs: np.ndarray, names: list[str], q: np.ndarray, top_n: int) -> None:
    res = identify(ix, q, k=100, threshold=0.0, score_norm="asnorm", cohort_top_n=top_n)
    for r, qq in zip(res, q):
        want = direct_asnorm(vecs, names, qq, top_n)
        assert r.score_norm == "asnorm" and len(r.matches) == len(want)
        got = {m.speaker: m.norm_score for m in r.matches}
        assert got == pytest.approx(want, rel=1e-5, abs=1e-5)  # float32 centroids
        raws = {m.speaker: m.score for m in r.matches}
        cent_names, cent = ix.speaker_centroids()
        assert raws == pytest.approx({s: float(_unit(qq) @ c) for s, c in zip(cent_names, cent)}, abs=1e-6)
        order = [m.norm_score for m in r.matches]
        assert order == sorted(order, reverse=True) and [m.rank for m in r.matches] == list(range(1, len(want) + 1))
        assert r.accepted == (r.best.norm_score >= 0.0)


def test_asnorm_matches_the_formula(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base, vecs, names = synthetic(rng, 9, 2)
    q = base[:4] + 0.5 * rng.standard_normal((4, DIM))
    with make_index(tmp_path / "ix", vecs, names) as ix:
        for top_n in (3, 5):
            check_against_direct(ix, vecs, names, q, top_n)
        # top_n beyond the cohort (8 other speakers): the whole cohort
        check_against_direct(ix, vecs, names, q, 50)
        res = identify(ix, q, k=2, threshold=0.0, score_norm="asnorm")
        assert all(len(r.matches) == 2 for r in res)
        # raw identification is untouched: no norm_score, the cosine decides
        plain = identify(ix, q, k=3, threshold=0.5)
        assert all(m.norm_score is None for r in plain for m in r.matches) and plain[0].score_norm == "none"


def test_own_clips_are_not_in_a_speakers_cohort(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    _, vecs, names = synthetic(rng, 6, 3)
    with make_index(tmp_path / "ix", vecs, names) as ix:
        st = scorenorm.speaker_stats(ix, 3)
        spk, cent = ix.speaker_centroids()
        for e in range(len(spk)):
            others = np.sort(np.delete(cent @ cent[e], e))[::-1][:3]
            assert st.mean[e] == pytest.approx(others.mean()) and st.std[e] == pytest.approx(others.std())
            assert e not in st.top_ordinals[e]


@pytest.mark.parametrize("speakers", [1, 2, 3])
def test_a_gallery_without_a_cohort_is_scored_raw(tmp_path: Path, speakers: int) -> None:
    """Fewer than MIN_SPEAKERS (4): no cohort of 2 on each side. AS-norm is not applied, the scores
    and threshold are the raw ones and the result says so."""
    rng = np.random.default_rng(2)
    base, vecs, names = synthetic(rng, speakers, 2)
    q = base[:1] + 0.3 * rng.standard_normal((1, DIM))
    with make_index(tmp_path / "ix", vecs, names) as ix:
        calibrate_open_set(ix, asnorm=True)
        (r,) = identify(ix, q, k=5, score_norm="asnorm")
        (raw,) = identify(ix, q, k=5)
        assert r.score_norm == "none" and all(m.norm_score is None for m in r.matches)
        assert [(m.speaker, m.score) for m in r.matches] == [(m.speaker, m.score) for m in raw.matches]
        assert r.threshold == raw.threshold and r.accepted == raw.accepted
        assert "AS-norm not applied" in r.threshold_method
        assert scorenorm.asnorm_rank(ix, q.astype(np.float32), 1, "centroid", 3, 50) is None
        assert "asnorm" not in score_models(ix)


def test_cache_follows_additions_and_removals(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base, vecs, names = synthetic(rng, 8, 2)
    q = base[:3] + 0.5 * rng.standard_normal((3, DIM))
    scorenorm.clear_cache()
    with make_index(tmp_path / "ix", vecs, names) as ix:
        check_against_direct(ix, vecs, names, q, 4)
        key0 = scorenorm.gallery_key(ix)
        assert scorenorm.speaker_stats(ix, 4) is scorenorm.speaker_stats(ix, 4)  # cached
        # a new speaker (not saved: same version, new state)
        extra = _unit(rng.standard_normal((2, DIM))).astype(np.float32)
        add(ix, extra, ["zz", "zz"])
        assert scorenorm.gallery_key(ix) != key0 and ix.version == key0[1]
        vecs2, names2 = np.concatenate([vecs, extra]), [*names, "zz", "zz"]
        check_against_direct(ix, vecs2, names2, q, 4)
        # more clips of an existing speaker move its centroid
        more = _unit(rng.standard_normal((1, DIM))).astype(np.float32)
        add(ix, more, ["s01"])
        vecs3, names3 = np.concatenate([vecs2, more]), [*names2, "s01"]
        check_against_direct(ix, vecs3, names3, q, 4)
        ix.remove_speaker("s00")
        keep = [i for i, n in enumerate(names3) if n != "s00"]
        check_against_direct(ix, vecs3[keep], [names3[i] for i in keep], q, 4)
        ix.save()  # a new version of the same gallery: recomputed, same figures
        check_against_direct(ix, vecs3[keep], [names3[i] for i in keep], q, 4)


def test_asnorm_threshold_and_duration_models_are_stored(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    base, vecs, names = synthetic(rng, 40, 2)
    speech = list(rng.uniform(2.0, 10.0, len(names)))
    crop_v = _unit(base[:, None, :] + 1.0 * rng.standard_normal((40, 2, DIM))).reshape(-1, DIM).astype(np.float32)
    crops = CalibrationCrops(crop_v, tuple(f"s{i:02d}" for i in range(40) for _ in range(2)), np.full(80, 1.5))
    q = base[:5] + 0.6 * rng.standard_normal((5, DIM))
    with make_index(tmp_path / "ix", vecs, names, speech) as ix:
        cal = calibrate_open_set(ix, crops=crops, asnorm=True)
        models = cal.score_models
        assert set(models) == {"far", "none", "asnorm"} and models["asnorm"]["cohort_top_n"] == scorenorm.DEFAULT_COHORT_TOP_N
        dm = DurationModel.from_record(models["none"]["duration"])
        assert dm is not None and dm.min_s == pytest.approx(1.5) and dm.n_trials == 80 + 80
        ix.save()
        lazy = identify(ix, q, 1, score_norm="asnorm", cohort_top_n=10)  # not calibrated for 10
        assert "computed in this process" in lazy[0].threshold_method
    with SpeakerIndex.open(tmp_path / "ix") as ix:
        assert score_models(ix) == models  # persisted with the threshold record
        fixed = identify(ix, q, 1, score_norm="asnorm")
        assert fixed[0].threshold == pytest.approx(models["asnorm"]["threshold"])
        short, long_ = (identify(ix, q, 1, query_speech_s=d) for d in (1.5, 10.0))
        for a, b in zip(short, long_):
            assert a.query_speech_s == 1.5 and "duration-aware at 1.50 s" in a.threshold_method
            assert a.threshold == pytest.approx(dm.threshold_at(1.5)) and b.threshold == pytest.approx(dm.threshold_at(10))
        per_query = identify(ix, q[:2], 1, query_speech_s=[None, 1.5])
        assert per_query[0].threshold == pytest.approx(ix.threshold) and per_query[1].threshold == short[1].threshold
        with pytest.raises(ConfigError):
            identify(ix, q[:2], 1, query_speech_s=[1.0])
        with pytest.raises(ConfigError):
            identify(ix, q[:1], 1, query_speech_s=-1.0)
        with pytest.raises(ConfigError):
            identify(ix, q[:1], 1, score_norm="znorm")


def test_duration_model_follows_a_duration_dependent_spread() -> None:
    """Impostor scores whose mean and spread shrink with duration: the threshold at each
    duration lands on that duration's own 1 % quantile."""
    rng = np.random.default_rng(5)
    d = np.repeat([1.5, 3.0, 6.0, 12.0], 20000)
    x = np.log(d)
    s = 0.45 - 0.03 * x + (0.08 - 0.015 * x) * rng.standard_normal(len(d))
    dm = fit_duration_model(s, d, 0.01, voices=1000, need=100)
    assert dm is not None and dm.basis == "calibrated"
    for dd in (1.5, 3.0, 6.0, 12.0):
        fa = float(np.mean(s[d == dd] >= dm.threshold_at(dd)))
        assert abs(fa - 0.01) < 0.002, (dd, fa)
    assert dm.threshold_at(0.5) == dm.threshold_at(1.5) and dm.threshold_at(60) == dm.threshold_at(12.0)
    assert fit_duration_model(s[:5], d[:5], 0.01, 1000, 100) is None


# --- real speech -------------------------------------------------------------------------------------

POOL = 120  # librispeech-251 speakers (utterances of 4 s or more), seeded
GALLERY = 40  # enrolled per draw; the other POOL - GALLERY are strangers
DRAWS = 30
#: Strangers accepted at the duration-aware threshold, both lengths pooled (see the test).
MEASURED_QMF_FA = 0.0099
CROP_S = (2.0,)  # calibration crops of each enrolled half (the short stranger queries are 2 s too)


@pytest.fixture(scope="module")
def real(librispeech: Path, librispeech_rows: list[dict]) -> dict:
    """Enrolment halves, their crops, query halves and 2 s query crops of POOL speakers."""
    import soundfile as sf

    from speakerid.config import EmbedOptions
    from speakerid.embedder import Embedder

    rows = sorted((r for r in librispeech_rows if float(r["duration_s"]) >= 4.0), key=lambda r: r["file"])
    rows = [rows[i] for i in np.random.default_rng(7).permutation(len(rows))[:POOL]]
    rng = np.random.default_rng(8)
    clips, kinds = [], []
    for r in rows:
        x, sr = sf.read(librispeech / r["file"], dtype="float32")
        enrol, query = x[: len(x) // 2], x[len(x) // 2 :]
        parts = {"enrol": enrol, "query": query}
        for d in CROP_S:
            n = int(d * sr)
            a = int(rng.integers(0, max(1, len(enrol) - n)))
            parts[f"enrol@{d:g}"] = enrol[a : a + n]
        a = int(rng.integers(0, max(1, len(query) - 2 * sr)))
        parts["query@2"] = query[a : a + 2 * sr]
        for k, v in parts.items():
            clips.append(v)
            kinds.append(k)
    embs = Embedder("campplus", embed=EmbedOptions(threads=1)).embed_batch(
        clips, sample_rate_hz=16000, workers=2, errors="return")
    per = len(kinds) // len(rows)
    # a speaker one of whose crops holds no speech (a pause) is left out
    keep = [i for i in range(len(rows)) if all(hasattr(e, "vector") for e in embs[i * per : (i + 1) * per])]
    assert len(keep) >= POOL - 10
    out: dict = {"speakers": [rows[i]["speaker"] for i in keep]}
    for j, k in enumerate(kinds[:per]):
        sel = [embs[i * per + j] for i in keep]
        out[k] = (np.stack([e.vector for e in sel]), np.array([e.speech_s for e in sel]))
    return out


@pytest.mark.slow
def test_duration_aware_threshold_lands_on_target_with_mixed_query_lengths(real: dict, tmp_path: Path) -> None:
    """Galleries of 40 enrolment halves (~6 s); strangers query with their other half or a 2 s
    crop of it; the threshold is calibrated with 2 s crops of the enrolled clips and set at each
    query's speech seconds.

    Goal (issue 12): 1 % of strangers accepted +/- 0.5 points. Measured (2026-12-02, the tail fit
    over the 20 highest standardised scores): 0.99 % over both lengths (0.84 % long, 1.14 % short);
    the fixed threshold 0.49 % (0.68 / 0.30 %: short queries score lower against strangers). With
    the former tail fit over the upper half it was 0.44 % (0.51 / 0.38 %). This asserts the goal
    for the duration-aware threshold, per length, and the measured figure (+/- 0.3 points)."""
    names = np.array(real["speakers"])
    ev, es = real["enrol"]
    pool = len(names)
    rng = np.random.default_rng(9)
    fa: dict[str, list[bool]] = {"qmf-long": [], "qmf-short": [], "fixed-long": [], "fixed-short": []}
    for t in range(DRAWS):
        perm = rng.permutation(pool)
        enrolled, strangers = perm[:GALLERY], perm[GALLERY:]
        cv = np.concatenate([real[f"enrol@{d:g}"][0][enrolled] for d in CROP_S])
        cs = np.concatenate([real[f"enrol@{d:g}"][1][enrolled] for d in CROP_S])
        crops = CalibrationCrops(cv, tuple(names[enrolled]) * len(CROP_S), cs)
        with make_index(tmp_path / f"g{t}", ev[enrolled], list(names[enrolled]), list(es[enrolled])) as ix:
            calibrate_open_set(ix, crops=crops)
            for kind, key in (("long", "query"), ("short", "query@2")):
                qv, qs = real[key]
                qmf = identify(ix, qv[strangers], 1, query_speech_s=qs[strangers])
                fixed = identify(ix, qv[strangers], 1)
                fa[f"qmf-{kind}"] += [r.accepted for r in qmf]
                fa[f"fixed-{kind}"] += [r.accepted for r in fixed]
    rates = {k: float(np.mean(v)) for k, v in fa.items()}
    print("strangers accepted:", {k: round(100 * v, 2) for k, v in rates.items()})
    both = (rates["qmf-long"] + rates["qmf-short"]) / 2
    assert abs(both - MEASURED_QMF_FA) <= 0.003
    assert abs(rates["qmf-long"] - 0.01) <= 0.005 and abs(rates["qmf-short"] - 0.01) <= 0.005
