"""speakerid bench: VoxCeleb protocol files, AS-norm, the embedding cache, reports, the CLI.

End-to-end runs use a VoxCeleb-layout fixture cut from librispeech-251 real speech: 12
speakers as id10001..id10012/<video>/0000N.wav, each utterance cut into 4 segments (>= 3.5 s),
two per "video"; a trial list and an iden_split.txt written here.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speakerid import cli
from speakerid.bench import (
    asnorm,
    cohort_stats,
    parse_iden_split,
    parse_trials,
    stats_from_scores,
)
from speakerid.bench.embcache import CacheEntry, EmbeddingCache
from speakerid.bench.embedding import embed_files
from speakerid.bench.report import staged_output
from speakerid.errors import ConfigError
from speakerid.metrics import eer

N_SPEAKERS = 12
N_COHORT = 16
SR = 16000


# --- fixture -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vox(librispeech: Path, tmp_path_factory) -> dict[str, Path]:
    from speakerid.audio import load

    with open(librispeech / "speakers.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["file"])
    long = [r for r in rows if float(r["duration_s"]) >= 14.5]
    chosen, others = long[:N_SPEAKERS], [r for r in rows if r not in long[:N_SPEAKERS]]
    base = tmp_path_factory.mktemp("vox")
    root = base / "wav"
    files: dict[str, list[str]] = {}
    for i, r in enumerate(chosen):
        spk = f"id{10001 + i}"
        x = load(librispeech / r["file"])
        seg = len(x) // 4
        files[spk] = []
        for j in range(4):
            rel = f"{spk}/{'vidA' if j < 2 else 'vidB'}/{j % 2 + 1:05d}.wav"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / rel, x[j * seg : (j + 1) * seg], SR, subtype="PCM_16")
            files[spk].append(rel)
    cohort = base / "cohort"
    cohort.mkdir()
    for r in [r for r in others if float(r["duration_s"]) >= 6][:N_COHORT]:
        (cohort / r["file"]).symlink_to(librispeech / r["file"])
    # trials: every cross-video pair of a speaker (target), vidA of one against vidB of another
    lines = []
    spks = sorted(files)
    for a in spks:
        for b in spks:
            for fa in files[a][:2]:
                for fb in files[b][2:]:
                    lines.append(f"{int(a == b)} {fa} {fb}")
    lines.insert(5, f"1 {files[spks[0]][0]} id10001/vidZ/00009.wav")  # names a missing file
    trials = base / "veri_test.txt"
    trials.write_text("\n".join(lines) + "\n")
    split = base / "iden_split.txt"
    split.write_text("".join(f"{1 if '/vidA/' in p else 3} {p}\n" for s in spks for p in files[s]))
    return {"base": base, "root": root, "trials": trials, "split": split, "cohort": cohort}


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["speakerid", *map(str, args)])
    for console in (cli.err, cli.out):  # no wrapping of long paths in messages
        monkeypatch.setattr(console, "width", 10_000)
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def leftovers(parent: Path) -> list[str]:
    """Temporary or moved-aside siblings an atomic directory write may leave after a crash."""
    return [p.name for p in parent.iterdir() if p.name.startswith(".") and p.name.endswith((".tmp", ".old"))]


# --- protocol files ------------------------------------------------------------------------


def test_parse_trials(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_text("1 id1/a/1.wav id1/b/2.wav\n\n0 id1/a/1.wav   id2/c/3.wav\r\n")
    t = parse_trials(p)
    assert [(x.label, x.a, x.b, x.line) for x in t] == [
        (1, "id1/a/1.wav", "id1/b/2.wav", 1),
        (0, "id1/a/1.wav", "id2/c/3.wav", 3),
    ]
    p.write_text("1 a b\n0 a b\n1 a\n")
    with pytest.raises(ConfigError, match=r"t\.txt:3: malformed trial line"):
        parse_trials(p)
    p.write_text("1 a b\n2 a b\n")
    with pytest.raises(ConfigError, match=r":2: trial label must be 0 or 1"):
        parse_trials(p)
    p.write_text("\n  \n")
    with pytest.raises(ConfigError, match="empty"):
        parse_trials(p)
    with pytest.raises(ConfigError, match="not found"):
        parse_trials(tmp_path / "nope.txt")


def test_parse_iden_split(tmp_path: Path) -> None:
    p = tmp_path / "iden_split.txt"
    p.write_text("1 id10001/v/00001.wav\n3 id10001/w/00001.wav\n2 id10002/v/00001.wav\n")
    e = parse_iden_split(p)
    assert [(x.split, x.speaker, x.line) for x in e] == [(1, "id10001", 1), (3, "id10001", 2), (2, "id10002", 3)]
    p.write_text("1 id10001/v/00001.wav\n4 id10001/w/00001.wav\n")
    with pytest.raises(ConfigError, match=r":2: split must be 1"):
        parse_iden_split(p)
    p.write_text("1 00001.wav\n")
    with pytest.raises(ConfigError, match=r":1: path .* speaker directory"):
        parse_iden_split(p)


# --- AS-norm --------------------------------------------------------------------------------


def test_asnorm_matches_its_definition_on_synthetic_scores() -> None:
    rng = np.random.default_rng(0)
    n, c = 50, 200
    raw = rng.normal(0, 0.3, n)
    cohort_a = rng.normal(0, 0.1, (n, c)) + rng.normal(0, 0.2, (n, 1))
    cohort_b = rng.normal(0, 0.1, (n, c)) * rng.uniform(0.5, 2.0, (n, 1))
    ma, sa = stats_from_scores(cohort_a, top_n=50)
    mb, sb = stats_from_scores(cohort_b, top_n=50)
    got = asnorm(raw, ma, sa, mb, sb)
    for i in (0, 7, 49):
        top_a, top_b = np.sort(cohort_a[i])[-50:], np.sort(cohort_b[i])[-50:]
        want = 0.5 * ((raw[i] - top_a.mean()) / top_a.std() + (raw[i] - top_b.mean()) / top_b.std())
        assert got[i] == pytest.approx(want, rel=1e-12)
    # top_n above the cohort size uses the whole cohort
    m_all, _ = stats_from_scores(cohort_a[:, :10], top_n=300)
    np.testing.assert_allclose(m_all, cohort_a[:, :10].mean(axis=1))
    with pytest.raises(ConfigError):
        stats_from_scores(cohort_a, top_n=1)
    with pytest.raises(ConfigError):
        asnorm(raw, ma, sa, mb[:3], sb[:3])


def test_asnorm_removes_hubness_from_cosine_scores() -> None:
    """Embeddings pulled towards a shared direction by a per-clip amount (hubness): some clips
    score high against everyone. AS-norm against a disjoint cohort of the same kind undoes it."""
    rng = np.random.default_rng(0)
    d = 32
    hub = np.ones(d) / np.sqrt(d)

    def clips(n_speakers: int, per_speaker: int) -> tuple[np.ndarray, np.ndarray]:
        centres = rng.normal(size=(n_speakers, d))
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        spk = np.repeat(np.arange(n_speakers), per_speaker)
        x = centres[spk] + 0.15 * rng.normal(size=(len(spk), d)) + rng.uniform(0, 2, (len(spk), 1)) * hub
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), spk

    x, spk = clips(60, 2)
    cohort, _ = clips(100, 1)
    ia, ib = (g.ravel() for g in np.meshgrid(np.arange(0, 120, 2), np.arange(1, 120, 2), indexing="ij"))
    labels = (spk[ia] == spk[ib]).astype(int)
    raw = np.einsum("ij,ij->i", x[ia], x[ib])
    mu, sd = cohort_stats(x, cohort, top_n=20)
    normed = asnorm(raw, mu[ia], sd[ia], mu[ib], sd[ib])
    assert eer(normed, labels).eer < 0.6 * eer(raw, labels).eer


def test_cohort_stats_batches_like_one_product() -> None:
    rng = np.random.default_rng(1)
    v = rng.normal(size=(37, 8)).astype(np.float32)
    c = rng.normal(size=(20, 8)).astype(np.float32)
    m1, s1 = cohort_stats(v, c, 5, batch=4)
    m2, s2 = stats_from_scores(v @ c.T, 5)
    np.testing.assert_allclose(m1, m2, rtol=1e-6)
    np.testing.assert_allclose(s1, s2, rtol=1e-5)


# --- embedding cache ---------------------------------------------------------------------------


def test_embedding_cache_reuse_counts_calls(vox, tmp_path: Path, monkeypatch) -> None:
    from speakerid import Embedder

    emb = Embedder("campplus")
    calls: list[str] = []

    def counting(real):  # embed_batch runs a clip either whole (embed_detailed) or as prepare + encode
        def wrapper(self, source, sample_rate_hz=None):
            calls.append(str(source))
            return real(self, source, sample_rate_hz)

        return wrapper

    monkeypatch.setattr(Embedder, "embed_detailed", counting(Embedder.embed_detailed))
    monkeypatch.setattr(Embedder, "prepare", counting(Embedder.prepare))
    files = sorted(vox["root"].rglob("*.wav"))[:6]
    dup = tmp_path / "copy.wav"
    dup.write_bytes(files[0].read_bytes())  # same content, another path
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(3 * SR, np.float32), SR)
    paths = [*files, dup, silent, tmp_path / "missing.wav"]

    first = embed_files(paths, emb, EmbeddingCache.for_embedder(emb, tmp_path / "cache"))
    assert len(calls) == 7  # 6 files + silence; the copy shares the first file's content
    assert first.embedded_n == 7 and first.cached_n == 0
    assert first.missing == [str(tmp_path / "missing.wav")]
    assert "NoSpeechError" in first.errors[str(silent)] or "TooShortError" in first.errors[str(silent)]
    np.testing.assert_array_equal(first.vectors[str(dup)], first.vectors[str(files[0])])

    calls.clear()
    cache = EmbeddingCache.for_embedder(emb, tmp_path / "cache")  # a new process, as it were
    second = embed_files(paths, emb, cache)
    assert calls == [] and second.embedded_n == 0 and second.cached_n == 7
    for k, v in first.vectors.items():
        np.testing.assert_array_equal(second.vectors[k], v)
    assert second.errors == first.errors
    assert not list(cache.directory.glob(".*.tmp"))

    # other options (no VAD) or weights make another cache: nothing is shared
    from speakerid.config import VadOptions

    other = EmbeddingCache.for_embedder(Embedder("campplus", vad=VadOptions(enabled=False)), tmp_path / "cache")
    assert len(other) == 0 and other.directory != cache.directory

    # so does the same model built otherwise (another converter version, another ONNX file: an
    # INT8 graph made for another CPU kind), whose embeddings differ
    import dataclasses
    import types

    from speakerid.bench.embcache import options_key

    def like(spec) -> types.SimpleNamespace:
        return types.SimpleNamespace(spec=spec, audio_options=emb.audio_options, vad_options=emb.vad_options,
                                     embed_options=emb.embed_options)

    key = options_key(emb)
    assert options_key(like(emb.spec)) == key
    assert options_key(like(dataclasses.replace(emb.spec, converter_version="0"))) != key
    onnx_sums = {"model.onnx": {"sha256": "0" * 64, "size": 1}}
    assert options_key(like(dataclasses.replace(emb.spec, checksums=onnx_sums))) != key


def test_embedding_cache_shards_merge_and_foreign_shards_are_ignored(tmp_path: Path) -> None:
    c = EmbeddingCache("m", "ab" * 32, "opt", tmp_path, flush_every=1)
    for i in range(40):
        c.put(f"{i:064x}", CacheEntry(np.full(4, i, np.float32), 1.0, 0.5))
    assert len(list(c.directory.glob("shard-*.parquet"))) == 40
    again = EmbeddingCache("m", "ab" * 32, "opt", tmp_path)
    assert len(again) == 40 and len(list(c.directory.glob("shard-*.parquet"))) == 1
    np.testing.assert_array_equal(again.get(f"{39:064x}").vector, np.full(4, 39, np.float32))
    # a shard copied in from another model's cache is ignored, not trusted
    other = EmbeddingCache("m2", "cd" * 32, "opt", tmp_path, flush_every=1)
    other.put("f" * 64, CacheEntry(np.zeros(4, np.float32), 1.0, 1.0))
    shard = next(other.directory.glob("shard-*.parquet"))
    shard.rename(c.directory / shard.name)
    third = EmbeddingCache("m", "ab" * 32, "opt", tmp_path)
    assert len(third) == 40 and third.warnings


def test_staged_output_leaves_nothing_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_output(out) as tmp:
            (tmp / "results.json").write_text("{}")
            raise RuntimeError("boom")
    assert not out.exists() and leftovers(tmp_path) == []
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        with staged_output(foreign):
            pass
    assert (foreign / "notes.txt").read_text() == "keep me"


# --- end to end -----------------------------------------------------------------------------


def _png_ok(p: Path) -> bool:
    return p.is_file() and p.stat().st_size > 1000 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_bench_verify_and_identify_end_to_end(vox, monkeypatch, capsys) -> None:
    cache = vox["base"] / "embcache"
    out = vox["base"] / "out-verify"
    code, stdout, stderr = run_cli(
        ["bench", "verify", "--root", vox["root"], "--trials", vox["trials"], "--out", out,
         "--cache-dir", cache, "--asnorm-cohort", vox["cohort"], "--asnorm-top-n", "10"],
        monkeypatch, capsys,
    )
    assert code == 0, stderr
    r = json.loads((out / "results.json").read_text())
    for k in ("kind", "model", "weights_sha256", "trials", "files", "systems", "asnorm", "seed_reference", "timing"):
        assert k in r
    assert r["trials"]["listed"] == 577 and r["trials"]["scored"] == 576
    assert r["trials"]["target"] == 48 and r["trials"]["skipped_missing_file"] == 1
    assert r["files"]["missing"] == 1 and r["files"]["missing_list"] == ["id10001/vidZ/00009.wav"]
    for name in ("cosine", "asnorm"):
        m = r["systems"][name]
        assert m["eer"] < 0.1, (name, m)
        assert 0 <= m["min_dcf_0.01"] <= 1 and 0 <= m["min_dcf_0.05"] <= 1
        assert m["eer_threshold"] is not None
    assert r["asnorm"]["top_n"] == 10 and r["asnorm"]["files_also_in_trials"] == 0
    assert r["seed_reference"]["verification"]["eer"] == pytest.approx(0.0895)
    md = (out / "report.md").read_text()
    assert "EER" in md and "8.95 %" in md and "missing" in md.lower()
    assert _png_ok(out / "det.png") and _png_ok(out / "scores.png")
    assert "8.95 %" in stdout and "EER" in stdout
    assert leftovers(out.parent) == []

    out_id = vox["base"] / "out-identify"
    code, stdout, stderr = run_cli(
        ["bench", "identify", "--root", vox["root"], "--split", vox["split"], "--out", out_id, "--cache-dir", cache],
        monkeypatch, capsys,
    )
    assert code == 0, stderr
    r = json.loads((out_id / "results.json").read_text())
    assert r["files"]["embedding"]["distinct_embedded"] == 0  # every file came from the cache
    assert r["closed_set"]["top1"] >= 0.9 and r["closed_set"]["top5"] >= r["closed_set"]["top1"]
    assert r["closed_set"]["speakers"] == N_SPEAKERS and r["queries"]["scored"] == 2 * N_SPEAKERS
    o = r["open_set"]
    assert 0 <= o["fnir_at_fpir"] <= 1 and o["fpir_achieved"] <= 0.01
    assert 0 <= o["index_default"]["false_accept_rate"] <= 1
    assert "87.66 %" in (out_id / "report.md").read_text() and "87.66 %" in stdout
    assert _png_ok(out_id / "det.png") and _png_ok(out_id / "scores.png")

    # a rerun replaces a previous report in place
    code, _, stderr = run_cli(
        ["bench", "identify", "--root", vox["root"], "--split", vox["split"], "--out", out_id, "--cache-dir", cache],
        monkeypatch, capsys,
    )
    assert code == 0, stderr
    assert leftovers(out_id.parent) == []


def test_identify_speaker_without_train_files_is_reported_and_skipped(vox, monkeypatch, capsys) -> None:
    split = vox["base"] / "split_notrain.txt"
    lines = vox["split"].read_text().splitlines()
    # id10012 keeps only its test lines
    split.write_text("\n".join(x for x in lines if not (x.startswith("1 id10012/"))) + "\n")
    out = vox["base"] / "out-notrain"
    code, stdout, stderr = run_cli(
        ["bench", "identify", "--root", vox["root"], "--split", split, "--out", out,
         "--cache-dir", vox["base"] / "embcache"],
        monkeypatch, capsys,
    )
    assert code == 0, stderr
    r = json.loads((out / "results.json").read_text())
    assert r["speakers"]["skipped_count"] == 1 and r["speakers"]["skipped"][0]["speaker"] == "id10012"
    assert r["queries"]["skipped_speaker_not_enrolled"] == 2 and r["closed_set"]["speakers"] == N_SPEAKERS - 1
    assert "id10012" in stdout and "id10012" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "case",
    ["malformed", "empty", "no_root", "no_train_at_all", "bad_cohort"],
)
def test_bad_input_exits_2_and_writes_nothing(case, vox, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    trials = tmp_path / "trials.txt"
    root = vox["root"]
    extra: list[object] = []
    cmd = "verify"
    if case == "malformed":
        trials.write_text("1 id10001/vidA/00001.wav id10001/vidB/00001.wav\n0 a b\n1 only-two-fields\n")
        want = "trials.txt:3: malformed trial line"
    elif case == "empty":
        trials.write_text("\n")
        want = "empty"
    elif case == "no_root":
        trials.write_text("1 a b\n")
        root = tmp_path / "nowhere"
        want = "does not exist"
    elif case == "bad_cohort":
        trials = vox["trials"]
        extra = ["--asnorm-cohort", tmp_path / "no-cohort"]
        want = "cohort is not a directory"
    else:
        cmd = "identify"
        trials.write_text("2 id10001/vidA/00001.wav\n3 id10001/vidB/00001.wav\n")
        want = "no train (split 1) lines"
    flag = "--trials" if cmd == "verify" else "--split"
    code, _, stderr = run_cli(
        ["bench", cmd, "--root", root, flag, trials, "--out", out, "--cache-dir", tmp_path / "c", *extra],
        monkeypatch, capsys,
    )
    assert code == 2
    assert stderr.startswith("error: ") and want in stderr
    assert not out.exists() and leftovers(tmp_path) == []


def test_probit_axis_is_the_normal_quantile() -> None:
    from statistics import NormalDist

    from speakerid.bench.plots import probit

    p = np.array([1e-6, 0.001, 0.01, 0.02425, 0.3, 0.5, 0.9, 0.975, 0.999999])
    want = [NormalDist().inv_cdf(x) for x in p]
    np.testing.assert_allclose(probit(p), want, atol=1e-8)


def test_probit_keeps_the_shape_of_its_input() -> None:
    from speakerid.bench.plots import probit

    assert probit(0.5).shape == () and probit(0.5)[()] == 0.0
    grid = np.array([[0.1, 0.5], [0.1, 0.9]])
    np.testing.assert_allclose(probit(grid), [[probit(0.1)[()], 0.0], [probit(0.1)[()], -probit(0.1)[()]]])


# --- identification searches ------------------------------------------------------------------


@pytest.mark.parametrize("scoring", ["centroid", "best", "topn"])
def test_mated_scores_come_from_the_gallery_ranking(tmp_path: Path, scoring: str) -> None:
    """Own-speaker scores (ranked first, in the top 5, or below it) equal each scoring rule's
    definition, brute-forced over the clips; non-mated scores are the best other speaker's."""
    import hashlib

    from speakerid.bench.identification import search_queries
    from speakerid.index import IndexSpec, SpeakerIndex

    rng = np.random.default_rng(3)
    dim, n_spk = 8, 15
    centres = rng.standard_normal((n_spk, dim))
    owner = np.repeat(np.arange(n_spk), rng.integers(1, 5, n_spk))
    x = centres[owner] + 0.8 * rng.standard_normal((len(owner), dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    names = [f"s{o:02d}" for o in owner]
    q = rng.standard_normal((40, dim)).astype(np.float32)  # mostly far from their "own" speaker
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q_spk = [f"s{i % n_spk:02d}" for i in range(len(q))]

    def rule(qv: np.ndarray, s: str) -> float:
        clips = x[[n == s for n in names]].astype(np.float64)
        sims = np.sort(clips @ qv.astype(np.float64))[::-1]
        if scoring == "centroid":
            c = clips.sum(axis=0)
            return float(qv @ (c / np.linalg.norm(c)))
        return float(sims[:1].mean() if scoring == "best" else sims[:3].mean())

    ix = SpeakerIndex.create(tmp_path / "ix", IndexSpec(model="toy", weights_sha256="ab" * 32, dim=dim))
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(len(x))]
    ix.add(x, names, [f"/a/{i}.wav" for i in range(len(x))], keys, [3.0] * len(x), [3.0] * len(x))
    found = search_queries(ix, q, q_spk, scoring, 3, None)
    ix.close()

    want = np.array([rule(qv, s) for qv, s in zip(q, q_spk)])
    np.testing.assert_allclose(found.mated_true, want, atol=1e-5)
    assert (~found.top5).sum() >= 5, "the fixture should rank some own speakers below the top 5"
    others = np.array([max(rule(qv, s) for s in set(names) if s != own) for qv, own in zip(q, q_spk)])
    np.testing.assert_allclose(found.nonmated_top, others, atol=1e-5)
    best = [max(sorted(set(names)), key=lambda s, qv=qv: rule(qv, s)) for qv in q]
    assert found.top_speakers == best
    np.testing.assert_array_equal(found.top1, np.array(best) == np.array(q_spk))


# --- typed results, --json, no matplotlib ---------------------------------------------------------


def test_results_are_frozen_and_serialise_as_results_json(vox, monkeypatch, capsys) -> None:
    """Without matplotlib the bench still writes everything but the PNGs and says how to get
    them (report.md, and the library's one log line, which the CLI shows on stderr); --json
    prints exactly the results.json object."""
    import dataclasses

    from speakerid import Embedder
    from speakerid.bench import run_verify

    run = run_verify(vox["root"], vox["trials"], Embedder("campplus"),
                     cache=EmbeddingCache.for_embedder(Embedder("campplus"), vox["base"] / "embcache"))
    assert run.results.trials.scored == 576 and run.results.systems["cosine"].eer < 0.1
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.results.model = "other"  # type: ignore[misc]
    d = run.results.to_dict()
    assert d["systems"]["cosine"]["min_dcf_0.01"] == run.results.systems["cosine"].min_dcf_001
    assert json.loads(json.dumps(d, allow_nan=False)) == d

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as after a plain `pip install .`
    for cmd, flag, listing, data in (("verify", "--trials", vox["trials"], "scores.parquet"),
                                     ("identify", "--split", vox["split"], "queries.parquet")):
        out = vox["base"] / f"out-noplots-{cmd}"
        code, stdout, stderr = run_cli(
            ["bench", cmd, "--root", vox["root"], flag, listing, "--out", out,
             "--cache-dir", vox["base"] / "embcache", "--json"],
            monkeypatch, capsys,
        )
        assert code == 0, stderr
        assert json.loads(stdout) == json.loads((out / "results.json").read_text())
        assert not (out / "det.png").exists() and not (out / "scores.png").exists()
        assert (out / data).is_file()
        md = (out / "report.md").read_text()
        assert "pip install 'speakerid[bench]'" in md and data in md
        hints = [line for line in stderr.splitlines() if "speakerid[bench]" in line]
        assert len(hints) == 1 and hints[0].startswith("warning: ") and "plots not drawn" in hints[0], stderr
