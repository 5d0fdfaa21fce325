"""Open-set identification: scoring rules, calibration, the identify/demo commands, real speech."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from speakerid import cli
from speakerid.calibration import impostors
from speakerid.errors import ConfigError, EmptyGalleryError, ModelMismatchError
from speakerid.identify import (
    Identification,
    Match,
    calibrate_open_set_threshold,
    gallery_impostor_scores,
    identify,
    model_verification_threshold,
    rank_speakers,
)
from speakerid.index import IndexSpec, SpeakerIndex

DIM = 16


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_index(path: Path, model: str = "toy", dim: int = DIM, index_type: str = "flat") -> SpeakerIndex:
    spec = IndexSpec(model=model, weights_sha256="ab" * 32, dim=dim, index_type=index_type)
    return SpeakerIndex.create(path, spec)


def add(ix: SpeakerIndex, x: np.ndarray, speakers: list[str], tag: str = "") -> None:
    n = len(x)
    keys = [f"{tag}{len(ix) + i}" for i in range(n)]
    ix.add(x, speakers, [f"/a/{k}.wav" for k in keys], [hashlib.sha256(k.encode()).hexdigest() for k in keys],
           [3.0] * n, [3.0] * n)


def gallery(rng: np.random.Generator, n_speakers: int, clips=(1, 12), noise: float = 0.35):
    """Speakers around random centroids with a varying number of clips each."""
    cent = unit(rng.standard_normal((n_speakers, DIM)))
    counts = rng.integers(clips[0], clips[1] + 1, n_speakers)
    owner = np.repeat(np.arange(n_speakers), counts)
    x = unit(cent[owner] + noise * rng.standard_normal((len(owner), DIM)))
    return cent, x, [f"s{o:03d}" for o in owner]


def brute_force(q: np.ndarray, x: np.ndarray, names: list[str], scoring: str, top_n: int = 3) -> list[tuple[str, float]]:
    out = []
    for s in sorted(set(names)):
        clips = x[[n == s for n in names]].astype(np.float64)
        sims = np.sort(clips @ q.astype(np.float64))[::-1]
        if scoring == "best":
            v = sims[0]
        elif scoring == "topn":
            v = sims[:top_n].mean()
        else:
            c = clips.sum(axis=0)
            v = float(q @ (c / np.linalg.norm(c)))
        out.append((s, float(v)))
    return sorted(out, key=lambda t: (-t[1], t[0]))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


# --- scoring rules (synthetic vectors) -----------------------------------------------------


@pytest.mark.parametrize("scoring", ["centroid", "best", "topn"])
def test_scoring_rules_match_brute_force(tmp_path: Path, rng: np.random.Generator, scoring: str) -> None:
    cent, x, names = gallery(rng, 30)
    with make_index(tmp_path / "ix") as ix:
        add(ix, x, names)
        q = unit(cent[rng.integers(0, 30, 40)] + 0.4 * rng.standard_normal((40, DIM)))
        ranked = rank_speakers(ix, q, 6, scoring, top_n=3)
        for i, matches in enumerate(ranked):
            want = brute_force(q[i], x, names, scoring)[:6]
            assert [m.speaker for m in matches] == [s for s, _ in want]
            assert [m.rank for m in matches] == list(range(1, 7))
            np.testing.assert_allclose([m.score for m in matches], [v for _, v in want], atol=1e-5)


def test_rules_differ_as_documented(tmp_path: Path) -> None:
    q = unit(np.eye(DIM)[0])
    near, mid = (unit(np.eye(DIM)[0] * c + np.eye(DIM)[1] * np.sqrt(1 - c * c)) for c in (0.95, 0.8))
    with make_index(tmp_path / "ix") as ix:
        # "lucky" has one very close clip and two unrelated ones; "steady" three fairly close ones
        add(ix, np.stack([near, np.eye(DIM)[2], np.eye(DIM)[3]]), ["lucky"] * 3)
        add(ix, np.stack([mid, mid, mid]), ["steady"] * 3)
        assert rank_speakers(ix, q, 1, "best")[0][0].speaker == "lucky"
        assert rank_speakers(ix, q, 1, "centroid")[0][0].speaker == "steady"
        assert rank_speakers(ix, q, 1, "topn", top_n=2)[0][0].speaker == "steady"
        assert rank_speakers(ix, q, 2, "best")[0][0].score == pytest.approx(0.95, abs=1e-5)


def test_hnsw_gallery_agrees_on_the_best_speaker(tmp_path: Path, rng: np.random.Generator) -> None:
    cent, x, names = gallery(rng, 20, noise=0.2)
    with make_index(tmp_path / "ix", index_type="hnsw") as ix:
        add(ix, x, names)
        q = unit(cent + 0.2 * rng.standard_normal(cent.shape))
        for scoring in ("best", "topn"):
            got = [r[0].speaker for r in rank_speakers(ix, q, 3, scoring)]
            assert got == [brute_force(qi, x, names, scoring)[0][0] for qi in q]


def test_k_larger_than_gallery_gives_every_speaker(tmp_path: Path, rng: np.random.Generator) -> None:
    _, x, names = gallery(rng, 4)
    with make_index(tmp_path / "ix") as ix:
        add(ix, x, names)
        for scoring in ("centroid", "best", "topn"):
            (res,) = identify(ix, x[0], k=50, threshold=0.0, scoring=scoring)
            assert sorted(m.speaker for m in res.matches) == sorted(set(names))
            assert [m.rank for m in res.matches] == [1, 2, 3, 4]
            scores = [m.score for m in res.matches]
            assert scores == sorted(scores, reverse=True)


def test_empty_gallery(tmp_path: Path) -> None:
    with make_index(tmp_path / "ix") as ix:
        for scoring in ("centroid", "best", "topn"):
            with pytest.raises(EmptyGalleryError):
                identify(ix, np.ones(DIM), threshold=0.5, scoring=scoring)
        assert calibrate_open_set_threshold(ix) is None
        assert ix.threshold is None and "empty" in ix.info()["threshold_method"]


def test_verdict_and_threshold(tmp_path: Path, rng: np.random.Generator) -> None:
    cent, x, names = gallery(rng, 5, noise=0.1)
    with make_index(tmp_path / "ix") as ix:
        add(ix, x, names)
        q = unit(cent[2] + 0.05 * rng.standard_normal(DIM))
        (hit,) = identify(ix, q, k=2, threshold=0.5)
        assert isinstance(hit, Identification) and isinstance(hit.matches[0], Match)
        assert hit.accepted and hit.speaker == "s002" and hit.threshold == 0.5
        assert hit.threshold_method == "argument" and hit.best is hit.matches[0]
        (miss,) = identify(ix, q, k=2, threshold=0.9999)
        assert not miss.accepted and miss.speaker is None
        assert miss.matches[0].speaker == "s002"  # candidates are still listed, raw cosine kept
        assert miss.to_dict()["speaker"] is None and miss.to_dict()["matches"][0]["rank"] == 1
        # no threshold stored and an unknown model: refuse rather than guess
        with pytest.raises(ConfigError, match="no threshold"):
            identify(ix, q)
        ix.set_threshold(0.3, "test", basis="manual", warnings=["w"])
        assert (ix.threshold_method, ix.threshold_basis, ix.threshold_warnings) == ("test", "manual", ["w"])
        (r,) = identify(ix, q)
        assert r.threshold == pytest.approx(0.3) and r.threshold_method == "test"


def test_bad_input(tmp_path: Path, rng: np.random.Generator) -> None:
    _, x, names = gallery(rng, 3)
    with make_index(tmp_path / "ix") as ix:
        add(ix, x, names)
        with pytest.raises(ModelMismatchError):
            identify(ix, np.ones(DIM + 1), threshold=0.5)
        for kw in ({"k": 0}, {"k": True}, {"scoring": "mean"}, {"threshold": float("nan")}, {"top_n": 0}):
            with pytest.raises(ConfigError):
                identify(ix, np.ones(DIM), **{"threshold": 0.5, **kw})
        with pytest.raises(ConfigError):
            identify(ix, np.zeros(DIM), threshold=0.5)
        with pytest.raises(ConfigError):
            calibrate_open_set_threshold(ix, far=1.5)


def test_snapshot_follows_changes(tmp_path: Path, rng: np.random.Generator) -> None:
    cent, x, names = gallery(rng, 3, noise=0.1)
    with make_index(tmp_path / "ix") as ix:
        add(ix, x, names)
        newcomer = unit(rng.standard_normal(DIM))
        assert identify(ix, newcomer, 1, threshold=0.99)[0].matches[0].speaker != "new"
        maps = ix.speaker_maps()
        assert ix.speaker_maps() is maps  # the gallery makes its maps once per state
        with pytest.raises(ValueError):
            maps.centroids[0, 0] = 0.0  # and hands them out read-only
        add(ix, newcomer[None], ["new"], tag="n")
        assert ix.speaker_maps() is not maps and "new" in ix.speaker_maps().names
        assert identify(ix, newcomer, 1, threshold=0.99)[0].speaker == "new"
        ix.remove_speaker("new")
        assert "new" not in ix.speaker_maps().names and len(ix.speaker_maps().ids) == len(x)
        assert "new" not in [m.speaker for m in identify(ix, newcomer, 10, threshold=0.99)[0].matches]
        ix.save()  # saving changes nothing scoring sees
        assert ix.speaker_maps().names == tuple(sorted(set(names)))


# --- calibration ---------------------------------------------------------------------------


@pytest.mark.parametrize("scoring", ["centroid", "best", "topn"])
def test_impostor_scores_leave_one_speaker_out(tmp_path: Path, rng: np.random.Generator, scoring: str) -> None:
    _, x, names = gallery(rng, 8, clips=(1, 4))
    with make_index(tmp_path / "ix") as ix:
        add(ix, x, names)
        got = gallery_impostor_scores(ix, scoring, top_n=2)
        want = []
        for i in range(len(x)):
            others = [j for j in range(len(x)) if names[j] != names[i]]
            want.append(brute_force(x[i], x[others], [names[j] for j in others], scoring, top_n=2)[0][1])
        np.testing.assert_allclose(np.sort(got), np.sort(want), atol=1e-5)


def test_calibration_targets_far_and_is_stored(tmp_path: Path, rng: np.random.Generator) -> None:
    _, x, names = gallery(rng, 60)
    with make_index(tmp_path / "ix") as ix:
        add(ix, x, names)
        thr = calibrate_open_set_threshold(ix, far=0.05)
        imp = gallery_impostor_scores(ix)
        assert thr is not None and np.mean(imp >= thr) <= 0.05 < np.mean(imp >= thr - 0.02)
        info = ix.info()
        assert info["threshold"] == thr
        assert info["threshold_method"].startswith(f"gallery-impostor far=0.05 n={len(x)} speakers=60")
        ix.save()
    manifest = json.loads(next((tmp_path / "ix").glob("v*/manifest.json")).read_text())
    assert manifest["threshold"]["value"] == pytest.approx(thr)
    assert "gallery-impostor" in manifest["threshold"]["method"]


def test_threshold_grows_with_the_gallery(tmp_path: Path) -> None:
    thr = []
    for n in (10, 300):
        rng = np.random.default_rng(3)
        _, x, names = gallery(rng, n, clips=(2, 2))
        with make_index(tmp_path / f"ix{n}") as ix:
            add(ix, x, names)
            thr.append(calibrate_open_set_threshold(ix, far=0.1))
    assert thr[1] > thr[0] + 0.05


def test_one_speaker_gallery_falls_back_to_the_model(tmp_path: Path, rng: np.random.Generator) -> None:
    _, x, _ = gallery(rng, 1, clips=(5, 5))
    with make_index(tmp_path / "ix", model="campplus") as ix:
        add(ix, x, ["solo"] * 5)
        thr = calibrate_open_set_threshold(ix)
        assert thr == model_verification_threshold("campplus") is not None
        assert "1 speaker" in ix.info()["threshold_method"] and "verification" in ix.info()["threshold_method"]
    with make_index(tmp_path / "toy") as ix:  # no model threshold known: none is invented
        add(ix, x, ["solo"] * 5)
        assert calibrate_open_set_threshold(ix) is None and ix.threshold is None


def test_small_gallery_is_floored_at_the_verification_threshold(tmp_path: Path, rng: np.random.Generator) -> None:
    cent = unit(rng.standard_normal((3, DIM)))
    with make_index(tmp_path / "ix", model="campplus") as ix:
        add(ix, np.concatenate([cent, -cent]), ["a", "b", "c", "a", "b", "c"])
        thr = calibrate_open_set_threshold(ix)
        assert thr == model_verification_threshold("campplus")
        assert "floored" in ix.info()["threshold_method"]
        assert calibrate_open_set_threshold(ix, floor=None) < thr


def test_threshold_recalculated_after_remove(tmp_path: Path, rng: np.random.Generator) -> None:
    _, x, names = gallery(rng, 80, clips=(2, 4))
    with make_index(tmp_path / "ix") as ix:
        add(ix, x, names)
        before = calibrate_open_set_threshold(ix)
        gone = sorted(set(names))[::2]
        for s in gone:
            ix.remove_speaker(s)
        after = calibrate_open_set_threshold(ix)
        assert f"speakers={80 - len(gone)}" in ix.info()["threshold_method"]
        assert after != before
        ix.save()
    keep = [i for i, s in enumerate(names) if s not in gone]
    with make_index(tmp_path / "fresh") as fresh:  # the same gallery built from scratch
        add(fresh, x[keep], [names[i] for i in keep])
        assert calibrate_open_set_threshold(fresh) == after
    assert SpeakerIndex.open(tmp_path / "ix").threshold == pytest.approx(after)


def test_indexer_remove_recalibrates(tmp_path: Path, rng: np.random.Generator) -> None:
    from speakerid.indexer import remove_speaker

    _, x, names = gallery(rng, 30, clips=(2, 3))
    with make_index(tmp_path / "ix") as ix:
        add(ix, x, names)
        calibrate_open_set_threshold(ix, far=0.2)  # a different setting, to be replaced
        ix.save()
    remove_speaker(tmp_path / "ix", "s000")
    after = SpeakerIndex.open(tmp_path / "ix")
    assert "far=0.01" in after.info()["threshold_method"] and "speakers=29" in after.info()["threshold_method"]
    keep = [i for i, s in enumerate(names) if s != "s000"]
    with make_index(tmp_path / "fresh") as fresh:
        add(fresh, x[keep], [names[i] for i in keep])
        assert after.threshold == pytest.approx(calibrate_open_set_threshold(fresh))


def test_calibration_cost_is_bounded_and_seeded(tmp_path: Path, rng: np.random.Generator) -> None:
    _, x, names = gallery(rng, 50, clips=(10, 10))
    with make_index(tmp_path / "ix") as ix:
        add(ix, x, names)
        a = gallery_impostor_scores(ix, max_clips=50, seed=1)
        assert len(a) == 50
        np.testing.assert_array_equal(a, gallery_impostor_scores(ix, max_clips=50, seed=1))
        g = ix.speaker_maps()
        rows = impostors.sample_clips(g, 50, 1)
        assert len(set(g.owners[rows].tolist())) == 50  # one clip of every speaker
        assert "n=50 " in (calibrate_open_set_threshold(ix, max_clips=50) and ix.info()["threshold_method"])


# --- real speech ---------------------------------------------------------------------------

N_ENROLLED, N_UNENROLLED = 40, 20


@pytest.fixture(scope="session")
def speech(librispeech: Path, librispeech_rows: list[dict], tmp_path_factory) -> dict:
    """First/second halves of 60 librispeech-251 speakers, as WAV files and campplus embeddings."""
    from speakerid import Embedder
    from speakerid.audio import load
    from speakerid.bench.protocols import split_in_time

    rows = [r for r in librispeech_rows if float(r["duration_s"]) >= 6.0]
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))[: N_ENROLLED + N_UNENROLLED]]
    d = tmp_path_factory.mktemp("halves")
    enrol, query = {}, {}
    for r in rows:
        halves = split_in_time(load(librispeech / r["file"]), 16000)
        assert halves is not None
        for part, store in zip(halves, (enrol, query)):
            p = d / f"{r['speaker']}-{'enrol' if store is enrol else 'query'}.wav"
            sf.write(p, part, 16000)
            store[r["speaker"]] = p
    emb = Embedder("campplus")
    paths = list(enrol.values()) + list(query.values())
    vecs = [e.vector for e in emb.embed_batch(paths, workers=2)]
    n = len(enrol)
    spk = list(enrol)
    return {
        "dir": d, "embedder": emb, "speakers": spk, "enrolled": spk[:N_ENROLLED], "unenrolled": spk[N_ENROLLED:],
        "enrol_paths": enrol, "query_paths": query,
        "enrol_vecs": dict(zip(spk, vecs[:n])), "query_vecs": dict(zip(spk, vecs[n:])),
    }


def real_index(speech: dict, path: Path) -> SpeakerIndex:
    emb = speech["embedder"]
    ix = SpeakerIndex.create(path, IndexSpec(model=emb.model, weights_sha256=emb.weights_sha256, dim=emb.dim))
    spk = speech["enrolled"]
    ix.add(np.stack([speech["enrol_vecs"][s] for s in spk]), spk, [str(speech["enrol_paths"][s]) for s in spk],
           [hashlib.sha256(s.encode()).hexdigest() for s in spk], [5.0] * len(spk), [5.0] * len(spk))
    calibrate_open_set_threshold(ix)
    ix.save()
    return ix


@pytest.mark.slow
def test_real_speech_open_set(speech: dict, tmp_path: Path) -> None:
    with real_index(speech, tmp_path / "ix") as ix:
        thr = ix.threshold
        assert thr is not None and thr >= model_verification_threshold("campplus")
        enrolled = identify(ix, np.stack([speech["query_vecs"][s] for s in speech["enrolled"]]), k=5)
        top1 = np.mean([r.matches[0].speaker == s for r, s in zip(enrolled, speech["enrolled"])])
        correct = np.mean([r.speaker == s for r, s in zip(enrolled, speech["enrolled"])])
        strangers = identify(ix, np.stack([speech["query_vecs"][s] for s in speech["unenrolled"]]), k=5)
        rejected = np.mean([not r.accepted for r in strangers])
    assert top1 >= 0.95  # closed set, 40 identities
    assert correct >= 0.85  # right speaker AND above the calibrated threshold
    assert rejected >= 0.8  # 20 speakers never enrolled
    assert all(r.threshold == thr for r in strangers)


# --- CLI -----------------------------------------------------------------------------------


def run_cli(args: list, monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["speakerid", *map(str, args)])
    for console in (cli.err, cli.out):
        monkeypatch.setattr(console, "width", 10_000)
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_identify(speech: dict, tmp_path: Path, monkeypatch, capsys) -> None:
    real_index(speech, tmp_path / "ix").close()
    known = [speech["query_paths"][s] for s in speech["enrolled"][:3]]
    stranger = speech["query_paths"][speech["unenrolled"][0]]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really")
    clips = [*known, stranger, broken]
    code, out, err = run_cli(["identify", *clips, "--index", tmp_path / "ix", "-k", 3, "--json",
                              "--out", tmp_path / "r.parquet"], monkeypatch, capsys)
    assert code == 1, err  # one clip failed: listed, exit 1
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["clip"] for r in rows] == [str(c) for c in clips]  # input order
    assert [r["verdict"] for r in rows[:3]] == speech["enrolled"][:3]
    assert all(len(r["matches"]) == 3 and r["accepted"] for r in rows[:3])
    assert rows[3]["verdict"] == "unknown" and rows[3]["speaker"] is None
    assert rows[4]["verdict"] == "error" and "AudioDecodeError" in rows[4]["error"]
    assert "1 of 5 clips failed" in err
    table = pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert [t["verdict"] for t in table] == [r["verdict"] for r in rows]
    assert table[0]["matches"][0]["rank"] == 1

    code, out, _ = run_cli(["identify", known[0], stranger, "--index", tmp_path / "ix", "--out", tmp_path / "r.csv"],
                           monkeypatch, capsys)
    assert code == 0
    assert speech["enrolled"][0] in out and "unknown" in out and "threshold" in out
    with open(tmp_path / "r.csv", newline="") as f:
        assert [r["verdict"] for r in csv.DictReader(f)] == [speech["enrolled"][0], "unknown"]

    # --threshold overrides the index's: -1 accepts the stranger too
    code, out, _ = run_cli(["identify", stranger, "--index", tmp_path / "ix", "--json", "--threshold", -1],
                           monkeypatch, capsys)
    assert json.loads(out)["accepted"] is True and json.loads(out)["threshold"] == -1.0

    code, out, err = run_cli(["identify", broken, tmp_path / "missing.wav", "--index", tmp_path / "ix"],
                             monkeypatch, capsys)
    assert code == 1 and "2 of 2 clips failed" in err  # every clip failed: listed, exit 1


def test_cli_identify_errors(speech: dict, tmp_path: Path, monkeypatch, capsys) -> None:
    real_index(speech, tmp_path / "ix").close()
    clip = speech["query_paths"][speech["enrolled"][0]]
    emb = speech["embedder"]
    SpeakerIndex.create(tmp_path / "empty", IndexSpec(model=emb.model, weights_sha256=emb.weights_sha256, dim=emb.dim)).close()
    cases = [
        (["--index", tmp_path / "nowhere"], "no speaker index"),
        (["--index", tmp_path / "ix", "--model", "ge2e"], "ge2e"),
        (["--index", tmp_path / "ix", "-k", 0], "-k must be at least 1"),
        (["--index", tmp_path / "ix", "--out", tmp_path / "r.txt"], ".jsonl, .csv or .parquet"),
        (["--index", tmp_path / "empty"], "holds no speakers"),
    ]
    for extra, message in cases:
        code, out, err = run_cli(["identify", clip, *extra], monkeypatch, capsys)
        assert code == 2, (extra, err)
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
        assert out == ""


def test_cli_identify_refuses_other_weights(speech: dict, tmp_path: Path, monkeypatch, capsys) -> None:
    emb = speech["embedder"]
    with SpeakerIndex.create(tmp_path / "ix", IndexSpec(model="campplus", weights_sha256="cd" * 32, dim=emb.dim)) as ix:
        s = speech["enrolled"][0]
        ix.add(speech["enrol_vecs"][s][None], [s], ["x"], ["ef" * 32], [1.0], [1.0])
        ix.save()
    code, _, err = run_cli(["identify", speech["query_paths"][s], "--index", tmp_path / "ix"], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: index at ")
    assert "built with model 'campplus' (weights_sha256 cdcdcdcdcdcd…" in err and "not weights_sha256" in err


@pytest.mark.slow
def test_cli_demo(tmp_path: Path, monkeypatch, capsys) -> None:
    # .ci/run installs the voices; a machine without them fails here rather than skipping
    missing = [t for t in ("flite", "text2wave") if shutil.which(t) is None]
    assert not missing, "the demo needs flite and festival: apt-get install flite festival festvox-kdlpc16k"
    code, out, err = run_cli(["demo", "--workdir", tmp_path], monkeypatch, capsys)
    assert code == 0, err
    assert "synthetic" in out
    assert (tmp_path / "demo-corpus" / "speakers").is_dir() and (tmp_path / "demo" / "CURRENT").is_file()
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[1:-1]]
            for line in out.splitlines() if line.startswith("│") and ".wav" in line}
    assert len(rows) == 10
    for clip, cells in rows.items():
        truth, verdict = cells[1], cells[2]
        if clip.startswith("ked"):
            assert "not enrolled" in truth and verdict == "unknown", cells  # the voice never enrolled
        else:
            assert verdict == truth, cells
    assert "10 of 10 correct" in out
    # a second run reuses the corpus and the index; --json gives the verdicts as one object
    code, out, _ = run_cli(["demo", "--workdir", tmp_path, "--json"], monkeypatch, capsys)
    result = json.loads(out)
    assert code == 0 and result["correct"] == 10 and len(result["queries"]) == 10
    assert {q["truth"] for q in result["queries"] if q["clip"].startswith("ked")} == {None}
    assert all(q["verdict"] == q["truth"] for q in result["queries"])
