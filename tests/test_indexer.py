"""Corpus indexer: discovery, incremental builds, bad input, locking, kill -9 / Ctrl-C, CLI.

Real speech: short clips of librispeech-251 linked into DIR/<speaker>/ layouts; model campplus.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from speakerid.config import EmbedOptions
from speakerid.embedder import Embedder
from speakerid.errors import (
    ConfigError,
    CorpusError,
    IndexLockedError,
    IndexNotFoundError,
    ModelMismatchError,
    SpeakerNotFoundError,
)
from speakerid.index import SpeakerIndex
from speakerid.indexer import (
    Item,
    add_files,
    build_index,
    discover,
    remove_speaker,
)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clips(librispeech: Path, librispeech_rows: list[dict]) -> list[tuple[Path, str]]:
    """20 short (3-6 s) clips of distinct speakers, as (absolute path, speaker)."""
    rows = sorted((r for r in librispeech_rows if 3.0 <= float(r["duration_s"]) <= 6.0), key=lambda r: r["file"])
    assert len(rows) >= 18
    return [((librispeech / r["file"]).resolve(), r["speaker"]) for r in rows]


@pytest.fixture(scope="module")
def campplus() -> Embedder:
    return Embedder("campplus", embed=EmbedOptions(threads=1))


def folders(root: Path, clips: list[tuple[Path, str]], *, nested: bool = False) -> Path:
    """DIR/<speaker>/<file> (or DIR/<speaker>/<video>/<file>) made of symlinks."""
    for i, (src, spk) in enumerate(clips):
        d = root / spk / f"vid{i % 2}" if nested else root / spk
        d.mkdir(parents=True, exist_ok=True)
        (d / src.name).symlink_to(src)
    return root


def contents(index_dir: Path) -> dict[str, tuple[str, np.ndarray]]:
    """sha256 -> (speaker, vector) of a saved index (no duplicate sha256 allowed)."""
    ix = SpeakerIndex.open(index_dir, verify=True)
    utt = ix.utterances()
    shas = utt["sha256"].to_pylist()
    assert len(shas) == len(set(shas)), "duplicate clips in the index"
    vecs = ix.vectors(utt["id"].to_numpy())
    return {h: (s, v) for h, s, v in zip(shas, utt["speaker"].to_pylist(), vecs)}


def assert_same_index(a: Path, b: Path) -> None:
    ca, cb = contents(a), contents(b)
    assert {(h, s) for h, (s, _) in ca.items()} == {(h, s) for h, (s, _) in cb.items()}
    for h, (_, v) in ca.items():
        np.testing.assert_allclose(v, cb[h][1], atol=1e-6, rtol=0)


# --- embedder two-stage API -----------------------------------------------------------------


@pytest.mark.parametrize("model", ["campplus", "ge2e"])
def test_prepare_encode_is_bit_identical_to_embed_detailed(clips, model):
    # window_s=4 cuts the 12 s clip into several windows, so the multi-window path is covered
    emb = Embedder(model, embed=EmbedOptions(threads=1, window_s=4.0))
    paths = [p for p, _ in clips[:3]]
    long = np.concatenate([sf.read(p, dtype="float32")[0] for p in paths])
    sources = [*paths, long]
    ref = [emb.embed_detailed(s, 16000 if isinstance(s, np.ndarray) else None) for s in sources]
    prepared = [emb.prepare(s, 16000 if isinstance(s, np.ndarray) else None) for s in sources]
    assert len(prepared[-1].features) >= 3
    one_by_one = [emb.encode([p])[0] for p in prepared]
    together = emb.encode(prepared)  # GE2E: partials of all clips batched together
    for r, a, b in zip(ref, one_by_one, together):
        assert np.array_equal(r.vector, a.vector)
        np.testing.assert_allclose(r.vector, b.vector, atol=1e-6, rtol=0)
        assert (r.duration_s, r.speech_s, r.source) == (a.duration_s, a.speech_s, a.source)


def test_prepare_raises_like_embed(tmp_path, campplus):
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(48000, np.float32), 16000)
    from speakerid.errors import NoSpeechError

    with pytest.raises(NoSpeechError, match="silence.wav"):
        campplus.prepare(silent)


# --- discovery ------------------------------------------------------------------------------


def test_layouts_are_detected_and_agree(tmp_path, clips):
    sample = clips[:6] + [(clips[6][0], clips[0][1])]  # speaker 0 has two clips
    want = {(p.name, s) for p, s in sample}
    flat = discover(folders(tmp_path / "flat", sample))
    vox = discover(folders(tmp_path / "vox", sample, nested=True))
    assert (flat.layout, vox.layout) == ("folders", "voxceleb")
    # manifests: relative paths resolve against the manifest's folder
    mdir = tmp_path / "m"
    (mdir / "audio").mkdir(parents=True)
    for p, _ in sample:
        (mdir / "audio" / p.name).symlink_to(p)
    with open(mdir / "list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "speaker", "gender"])
        w.writerows([f"audio/{p.name}", s, "x"] for p, s in sample)
    pq.write_table(
        pa.table({"speaker": [int(s) for _, s in sample], "path": [str(mdir / "audio" / p.name) for p, _ in sample]}),
        mdir / "list.parquet",
    )
    man_csv, man_pq = discover(mdir / "list.csv"), discover(mdir / "list.parquet")
    assert (man_csv.layout, man_pq.layout) == ("manifest-csv", "manifest-parquet")
    for corpus in (flat, vox, man_csv, man_pq):
        assert {(it.path.name, it.speaker) for it in corpus} == want
        assert all(it.path.is_file() for it in corpus)
        assert corpus.warnings == []


def test_discovery_errors(tmp_path, clips):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="empty"):
        discover(tmp_path / "empty")
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "a.flac").symlink_to(clips[0][0])
    with pytest.raises(CorpusError, match="no speaker subfolders"):
        discover(loose)
    with pytest.raises(CorpusError, match="no such"):
        discover(tmp_path / "missing")
    (tmp_path / "spk_only" / "alice").mkdir(parents=True)
    (tmp_path / "spk_only" / "alice" / "notes.txt").write_text("hi")
    with pytest.raises(CorpusError, match="holds audio"):
        discover(tmp_path / "spk_only")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\na.wav,x\n")
    with pytest.raises(CorpusError, match=r"lacks the column\(s\) path, speaker"):
        discover(bad)
    pq.write_table(pa.table({"path": ["a.wav"]}), tmp_path / "bad.parquet")
    with pytest.raises(CorpusError, match="speaker"):
        discover(tmp_path / "bad.parquet")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(CorpusError, match="manifest"):
        discover(tmp_path / "x.txt")
    assert issubclass(CorpusError, ConfigError)


def test_speaker_folder_without_audio_is_reported_not_fatal(tmp_path, clips, campplus):
    corpus = folders(tmp_path / "c", clips[:3])
    (corpus / "mute").mkdir()
    (corpus / "mute" / "readme.txt").write_text("no audio here")
    rep = build_index(corpus, tmp_path / "ix", embedder=campplus)
    assert rep.files_embedded == 3 and rep.speakers == 3
    assert any("'mute'" in w and "no audio" in w for w in rep.warnings)


# --- building -------------------------------------------------------------------------------


def test_bad_files_are_recorded_and_the_build_succeeds(tmp_path, clips, campplus):
    corpus = folders(tmp_path / "c", clips[:4])
    spk = clips[0][1]
    (corpus / spk / "random.wav").write_bytes(os.urandom(5000))
    (corpus / spk / "empty.flac").write_bytes(b"")
    (corpus / spk / "text.mp3").write_text("not audio at all\n" * 50)
    sf.write(corpus / spk / "silence.wav", np.zeros(3 * 16000, np.float32), 16000)
    calls: list[tuple] = []
    rep = build_index(corpus, tmp_path / "ix", embedder=campplus,
                      progress=lambda stage, done, total, **extra: calls.append((stage, done, total, extra)))
    assert (rep.files_total, rep.files_embedded, rep.files_failed) == (8, 4, 4)
    errors = dict(rep.failures)
    assert set(Path(p).name for p in errors) == {"random.wav", "empty.flac", "text.mp3", "silence.wav"}
    by_name = {Path(p).name: e for p, e in errors.items()}
    assert by_name["silence.wav"].startswith("NoSpeechError")
    assert by_name["random.wav"].startswith("AudioDecodeError")
    ix = SpeakerIndex.open(tmp_path / "ix")
    assert len(ix) == 4 and ix.failures().num_rows == 4
    assert ix.threshold is not None
    indexing = [c for c in calls if c[0] == "indexing"]
    assert indexing[0][1:3] == (0, 8) and indexing[-1][1:3] == (8, 8)  # one protocol: (stage, done, total)
    assert indexing[-1][3]["failed"] == 4 and indexing[-1][3]["audio_s"] == pytest.approx(rep.audio_s)
    assert [d for _, d, _, _ in indexing] == sorted(d for _, d, _, _ in indexing)
    assert calls[-2:] == [("saving", 0, 1, {}), ("saving", 1, 1, {})]
    assert rep.audio_s > 10 and rep.real_time_factor > 0 and rep.speech_s <= rep.audio_s


def test_index_holds_embed_results_wherever_the_encoder_runs(tmp_path, clips, campplus):
    corpus = folders(tmp_path / "c", clips[:4])
    built = {}
    for where in (True, False):  # encoder in the workers / in the calling thread
        build_index(corpus, tmp_path / f"ix-{where}", embedder=campplus, workers=2, encode_in_workers=where)
        built[where] = contents(tmp_path / f"ix-{where}")
    assert_same_index(tmp_path / "ix-True", tmp_path / "ix-False")
    by_speaker = {s: v for s, v in built[True].values()}
    for path, spk in clips[:4]:
        np.testing.assert_allclose(by_speaker[spk], campplus.embed(path), atol=1e-6, rtol=0)


def test_workers_run_numpy_blas_on_one_thread(tmp_path, clips, campplus, monkeypatch):
    """With a worker per core, numpy's BLAS runs on one thread in them (its threads would spin on
    the other workers' cores: speakerid._threads) and is as before once the build is over; so in
    embed_batch with workers."""
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:  # numpy's (faiss's OpenMP build keeps a count per thread)
        return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas" and "numpy" in d["filepath"]]

    before = blas_threads()
    assert before, "threadpoolctl sees no BLAS of numpy's"
    seen: list[list[int]] = []
    prepare = campplus.prepare

    def recording(*a, **kw):
        seen.append(blas_threads())
        return prepare(*a, **kw)

    monkeypatch.setattr(campplus, "prepare", recording)
    build_index(folders(tmp_path / "c", clips[:3]), tmp_path / "ix", embedder=campplus, workers=2)
    assert len(seen) == 3 and all(t == [1] * len(before) for t in seen), seen
    assert blas_threads() == before
    monkeypatch.undo()
    seen.clear()
    embed_one = campplus.embed_detailed
    monkeypatch.setattr(campplus, "embed_detailed", lambda *a, **kw: (seen.append(blas_threads()), embed_one(*a, **kw))[1])
    campplus.embed_batch([p for p, _ in clips[:2]], workers=2)
    assert len(seen) == 2 and all(t == [1] * len(before) for t in seen), seen
    assert blas_threads() == before


def test_pyarrow_imports_pandas_before_the_workers_start(tmp_path, clips):
    """pyarrow imports pandas, where installed, at its first conversion of data (~0.2 s holding the
    GIL): the build makes that conversion before its workers start (index.clips.warm_conversion),
    not at its first add while they embed. Run in a fresh interpreter, where nothing has yet."""
    import importlib.util

    assert importlib.util.find_spec("pandas") is not None, "the test extras install pandas (via ray)"
    corpus = folders(tmp_path / "c", clips[:2])
    script = textwrap.dedent("""
        import json, sys
        from speakerid.config import EmbedOptions
        from speakerid.embedder import Embedder
        from speakerid.indexer import build_index
        emb = Embedder("campplus", embed=EmbedOptions(threads=1))
        before = "pandas" in sys.modules
        seen = []
        prepare = emb.prepare
        emb.prepare = lambda *a, **kw: (seen.append("pandas" in sys.modules), prepare(*a, **kw))[1]
        build_index(sys.argv[1], sys.argv[2], embedder=emb, workers=2)
        print(json.dumps({"before": before, "seen": seen}))
    """)
    out = subprocess.run([sys.executable, "-c", script, str(corpus), str(tmp_path / "ix")],
                         capture_output=True, text=True, timeout=300, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["before"] is False  # loading the model does not import pandas
    assert r["seen"] == [True, True]  # it is imported by the time the first worker prepares a clip


def test_incremental_rerun_and_added_files(tmp_path, clips, campplus):
    corpus = folders(tmp_path / "c", clips[:5])
    ix_dir = tmp_path / "ix"
    first = build_index(corpus, ix_dir, embedder=campplus)
    assert first.files_embedded == 5
    version = SpeakerIndex.open(ix_dir).version
    again = build_index(corpus, ix_dir, embedder=campplus)
    assert (again.files_embedded, again.files_skipped_known, again.files_failed) == (0, 5, 0)
    assert SpeakerIndex.open(ix_dir).version == version  # nothing changed: no new version
    # new files, a copy of a known file under another name, and a duplicate within the run
    folders(corpus, clips[5:7])
    shutil.copy(clips[0][0], corpus / clips[0][1] / "copy-of-known.flac")
    shutil.copy(clips[5][0], corpus / clips[5][1] / "copy-of-new.flac")
    more = build_index(corpus, ix_dir, embedder=campplus)
    assert (more.files_embedded, more.files_skipped_known, more.files_duplicate) == (2, 6, 1)
    assert more.utterances == 7 and more.speakers == 7
    assert len(contents(ix_dir)) == 7
    # add_files: a new speaker, plus a known clip under another name (skipped, warned)
    rep = add_files(ix_dir, [Item(clips[7][0], "newbie"), Item(clips[1][0], "impostor")], embedder=campplus)
    assert (rep.files_embedded, rep.files_skipped_known) == (1, 1)
    assert any("already indexed as speaker" in w for w in rep.warnings)
    assert "newbie" in SpeakerIndex.open(ix_dir).speakers()


def test_remove_speaker_recalibrates(tmp_path, clips, campplus):
    corpus = folders(tmp_path / "c", clips[:4])
    build_index(corpus, tmp_path / "ix", embedder=campplus)
    assert remove_speaker(tmp_path / "ix", clips[0][1]) == 1
    ix = SpeakerIndex.open(tmp_path / "ix")
    assert clips[0][1] not in ix.speakers() and len(ix.speakers()) == 3
    assert "speakers=3" in ix.info()["threshold_method"]
    with pytest.raises(SpeakerNotFoundError):
        remove_speaker(tmp_path / "ix", "nobody")
    with pytest.raises(IndexNotFoundError):
        remove_speaker(tmp_path / "nothing-here", "x")


def test_index_of_another_model_is_refused(tmp_path, clips, campplus):
    corpus = folders(tmp_path / "c", clips[:2])
    build_index(corpus, tmp_path / "ix", model="ge2e")
    with pytest.raises(ModelMismatchError, match="ge2e"):
        build_index(corpus, tmp_path / "ix", model="campplus")
    with pytest.raises(ModelMismatchError):
        add_files(tmp_path / "ix", [Item(clips[3][0], "x")], embedder=campplus)
    ix = SpeakerIndex.open(tmp_path / "ix")  # untouched and valid
    assert ix.spec.model == "ge2e" and len(ix) == 2
    with pytest.raises(ConfigError, match="flat"):
        build_index(corpus, tmp_path / "ix", index_type="hnsw")
    # no model given: the index's own model is used
    assert build_index(corpus, tmp_path / "ix").files_skipped_known == 2


def test_bad_arguments(tmp_path, clips, campplus):
    corpus = folders(tmp_path / "c", clips[:1])
    with pytest.raises(ConfigError, match="workers"):
        build_index(corpus, tmp_path / "ix", workers=0, embedder=campplus)
    with pytest.raises(ConfigError, match="checkpoint"):
        build_index(corpus, tmp_path / "ix", checkpoint_every_s=0, embedder=campplus)
    with pytest.raises(ConfigError, match="no clips"):
        add_files(tmp_path / "ix", [], embedder=campplus)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "thesis.tex").write_text("x")
    with pytest.raises(ConfigError, match="not a speaker index"):
        build_index(corpus, tmp_path / "foreign", embedder=campplus)


# --- concurrency, kill -9, Ctrl-C -------------------------------------------------------------

DRIVER = textwrap.dedent(
    """
    import sys
    from speakerid.indexer import BuildInterrupted, build_index

    def progress(stage, done, total, **extra):
        print(stage, done, flush=True)

    try:
        build_index(sys.argv[1], sys.argv[2], model="campplus", workers=1, checkpoint_every_s=0.15,
                    progress=progress)
    except BuildInterrupted as exc:
        print("interrupted", exc.report.files_embedded, flush=True)
        sys.exit(130)
    print("finished", flush=True)
    """
)


def _start_driver(tmp_path: Path, corpus: Path, ix: Path) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    return subprocess.Popen(
        [sys.executable, str(script), str(corpus), str(ix)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=ENV,
    )


def _read_until(proc: subprocess.Popen, pred) -> str | None:
    for line in proc.stdout:  # type: ignore[union-attr]
        if pred(line.split()):
            return line
    return None


@pytest.mark.slow
def test_kill9_at_several_points_then_resume_equals_uninterrupted_build(tmp_path, clips, campplus):
    corpus = folders(tmp_path / "c", clips[:14])
    n = 14
    build_index(corpus, tmp_path / "ref", embedder=campplus)
    ix = tmp_path / "killed"
    rng = random.Random(20240611)
    # kill after a few files, right as a checkpoint save starts, and late in the build
    early, late = rng.randint(1, 4), rng.randint(n - 4, n - 1)
    points = [
        lambda w: w[0] == "indexing" and int(w[1]) >= early,
        lambda w: w[0] == "checkpoint",
        lambda w: w[0] == "indexing" and int(w[1]) >= late,
    ]
    saved = []
    for stop_when in points:
        proc = _start_driver(tmp_path, corpus, ix)
        line = _read_until(proc, stop_when)
        time.sleep(rng.uniform(0.0, 0.03))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert line is not None or proc.returncode == 0, proc.stderr.read()  # type: ignore[union-attr]
        if (ix / "CURRENT").exists():
            saved.append(len(contents(ix)))  # every saved state is a valid index
    assert saved == sorted(saved) and saved[-1] > 0, saved
    rep = build_index(corpus, ix, embedder=campplus)
    assert rep.files_skipped_known == saved[-1] and rep.files_embedded == n - saved[-1]
    assert_same_index(ix, tmp_path / "ref")
    assert SpeakerIndex.open(ix).threshold == SpeakerIndex.open(tmp_path / "ref").threshold


@pytest.mark.slow
def test_ctrl_c_saves_what_is_done(tmp_path, clips, campplus):
    corpus = folders(tmp_path / "c", clips[:14])
    ix = tmp_path / "ix"
    proc = _start_driver(tmp_path, corpus, ix)
    assert _read_until(proc, lambda w: w[0] == "indexing" and int(w[1]) >= 4) is not None
    proc.send_signal(signal.SIGINT)
    line = _read_until(proc, lambda w: w[0] in ("interrupted", "finished"))
    proc.wait(timeout=30)
    assert line is not None and line.startswith("interrupted") and proc.returncode == 130
    done = int(line.split()[1])
    assert 4 <= done < 14
    assert len(contents(ix)) == done  # everything finished was saved, no more
    rep = build_index(corpus, ix, embedder=campplus)
    assert (rep.files_skipped_known, rep.files_embedded) == (done, 14 - done)


KILL_DRIVER = textwrap.dedent(
    """
    import sys
    from speakerid.indexer import build_index

    def progress(stage, done, total, **extra):  # every file is new and good: done = embedded
        print(stage, done, flush=True)

    build_index(sys.argv[1], sys.argv[2], model="campplus", workers=2, progress=progress)  # default checkpoints
    print("finished", flush=True)
    """
)
KILL_FILES = 120  # about 1500 s of speech: a kill ~5 s in lands mid-build even at ~400x real time


@pytest.mark.slow
def test_sigkill_at_5s_keeps_most_finished_work(tmp_path, librispeech, librispeech_rows, campplus):
    """A build with the default checkpoint settings (what the CLI runs), killed at ~5 s, loses
    at most the last couple of seconds of embedding work: the resume re-embeds few files."""
    rows = sorted(librispeech_rows, key=lambda r: r["file"])[:KILL_FILES]
    corpus = folders(tmp_path / "c", [((librispeech / r["file"]).resolve(), r["speaker"]) for r in rows])
    ix = tmp_path / "ix"
    script = tmp_path / "kill_driver.py"
    script.write_text(KILL_DRIVER)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script), str(corpus), str(ix)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    lines: list[tuple[float, list[str]]] = []

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append((time.monotonic(), line.split()))

    reader = threading.Thread(target=read)
    reader.start()

    def embedded() -> int:
        return max([int(w[1]) for _, w in list(lines) if w[0] == "indexing"], default=0)

    def embedding_for() -> float:  # seconds since the first file was embedded
        first = [t for t, w in list(lines) if w[0] == "indexing" and int(w[1]) > 0][:1]
        return time.monotonic() - first[0] if first else 0.0

    # ~5 s after the start (imports and model loading take 1-2 s of it), and after at least
    # 3 s of embedding on a slow or busy machine; on a fast one before the build is 60 % done
    while (
        (time.monotonic() - t0 < 5.0 or embedding_for() < 3.0)
        and embedded() < 0.6 * KILL_FILES and proc.poll() is None and time.monotonic() - t0 < 60
    ):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    t_kill = time.monotonic() - t0
    proc.wait(timeout=30)
    reader.join(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()  # type: ignore[union-attr]
    assert not [w for _, w in lines if w == ["finished"]]
    finished = embedded()  # files embedded (in memory) before the kill
    saved = len(contents(ix))
    rep = build_index(corpus, ix, embedder=campplus, workers=2)
    re_embedded = finished - saved  # finished before the kill, embedded again now
    assert rep.files_skipped_known == saved and rep.files_embedded == KILL_FILES - saved
    assert 10 <= finished < KILL_FILES
    print(f"kill at {t_kill:.1f} s: {finished} files finished, {saved} saved, {re_embedded} re-embedded")
    assert re_embedded <= 0.5 * finished, (saved, finished)  # most finished work was kept
    final = contents(ix)  # verified, no duplicate sha256
    assert len(final) == KILL_FILES
    assert {s for s, _ in final.values()} == {r["speaker"] for r in rows}
    assert set(final) == {hashlib.sha256((librispeech / r["file"]).read_bytes()).hexdigest() for r in rows}


def test_enrol_that_adds_nothing_writes_nothing(tmp_path, clips, campplus):
    """add_files (the enrol path) writes no version when no clip could be added; build_index
    still records failures (they are retried by the next build and listed by index info)."""
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(3 * 16000, np.float32), 16000)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(os.urandom(4000))
    ix = tmp_path / "ix"
    build_index(folders(tmp_path / "c", clips[:3]), ix, embedder=campplus)
    before = SpeakerIndex.open(ix)
    listing = sorted(p.name for p in ix.iterdir())
    rep = add_files(ix, [Item(silent, "ghost"), Item(junk, "ghost")], embedder=campplus)
    assert (rep.files_embedded, rep.files_failed) == (0, 2)
    assert {Path(p).name for p, _ in rep.failures} == {"silence.wav", "junk.wav"}  # reported, not stored
    after = SpeakerIndex.open(ix)
    assert after.version == before.version and sorted(p.name for p in ix.iterdir()) == listing
    assert after.failures().num_rows == 0 and "ghost" not in after.speakers()
    # a known clip under another name and a failure: still nothing added, nothing written
    rep = add_files(ix, [Item(clips[0][0], "alias"), Item(silent, "alias")], embedder=campplus)
    assert (rep.files_skipped_known, rep.files_failed) == (1, 1)
    assert SpeakerIndex.open(ix).version == before.version
    # a missing index is not created by an enrol that adds nothing
    rep = add_files(tmp_path / "new", [Item(silent, "ghost")], embedder=campplus)
    assert rep.files_failed == 1 and not (tmp_path / "new" / "CURRENT").exists()
    with pytest.raises(IndexNotFoundError):
        SpeakerIndex.open(tmp_path / "new")
    # one clip added: one new version, holding the failures of that call too
    rep = add_files(ix, [Item(clips[5][0], "zoe"), Item(silent, "zoe")], embedder=campplus)
    assert (rep.files_embedded, rep.files_failed) == (1, 1)
    added = SpeakerIndex.open(ix)
    assert added.version == before.version + 1 and "zoe" in added.speakers()
    assert [Path(p).name for p in added.failures()["path"].to_pylist()] == ["silence.wav"]
    # a build whose every file fails still records them (the existing design)
    bad = tmp_path / "bad"
    (bad / "ghost").mkdir(parents=True)
    shutil.copy(junk, bad / "ghost" / "junk2.wav")
    rep = build_index(bad, ix, embedder=campplus)
    assert (rep.files_embedded, rep.files_failed) == (0, 1)
    assert SpeakerIndex.open(ix).version == added.version + 1
    assert SpeakerIndex.open(ix).failures().num_rows == 2


def _cli_proc(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "speakerid.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=ENV, cwd=REPO,
    )


@pytest.mark.slow
def test_two_builds_at_once(tmp_path, clips):
    corpus = folders(tmp_path / "c", clips[:12])
    ix = tmp_path / "ix"
    procs = [_cli_proc("index", "build", str(corpus), "--index", str(ix), "--workers", "1") for _ in range(2)]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(r[0] for r in results)
    if codes == [0, 2]:  # the usual case: the second writer fails at once, clearly
        loser = next(r for r in results if r[0] == 2)
        assert loser[2].strip().count("\n") == 0 and "locked by another writer" in loser[2]
        assert "Traceback" not in loser[2]
    else:  # the builds did not overlap at all: the second one found everything indexed
        assert codes == [0, 0] and any("0 files, 12 already indexed" in r[1] for r in results), results
    assert len(contents(ix)) == 12


def test_locked_index_fails_fast_or_waits(tmp_path, clips, campplus):
    corpus = folders(tmp_path / "c", clips[:2])
    ix = tmp_path / "ix"
    build_index(corpus, ix, embedder=campplus)
    lock = SpeakerIndex.lock(ix)
    try:
        with pytest.raises(IndexLockedError, match=f"pid {os.getpid()}"):
            build_index(corpus, ix, embedder=campplus)
        threading.Timer(0.5, lock.release).start()
        rep = build_index(corpus, ix, embedder=campplus, wait_s=30)
        assert rep.files_skipped_known == 2
    finally:
        lock.release()


# --- CLI ------------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, capsys):
    from speakerid import cli as cli_mod

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["speakerid", *args])
        try:
            cli_mod.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _one_error_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


def test_cli_build_info_enroll_add_remove(tmp_path, clips, cli):
    corpus = folders(tmp_path / "c", clips[:4])
    (corpus / clips[0][1] / "junk.wav").write_bytes(os.urandom(3000))
    ix = str(tmp_path / "ix")
    code, out, err = cli("index", "build", str(corpus), "--index", ix, "--index-type", "flat")
    assert code == 1, err  # one file failed: listed, exit 1
    assert "indexed 4 files, 0 already indexed, 0 duplicates, 1 failed" in out and "x real time" in out
    assert "junk.wav" in err and "AudioDecodeError" in err
    code, out, _ = cli("index", "info", "--index", ix, "--json")
    info = json.loads(out)
    assert (info["speakers"], info["utterances"], info["failures"], info["model"]) == (4, 4, 1, "campplus")
    assert info["threshold"] is not None and info["failed_files"][0]["path"].endswith("junk.wav")
    code, out, _ = cli("index", "info", "--index", ix)
    assert code == 0 and "speakers   4" in out and "junk.wav" in out
    code, out, err = cli("enroll", "zoe", str(clips[10][0]), str(clips[11][0]), "--index", ix)
    assert code == 0 and "enrolled 2 files" in out, err
    code, out, err = cli("index", "add", str(clips[12][0]), "--speaker", "yann", "--index", ix)
    assert code == 0 and "added 1 files" in out, err
    more = folders(tmp_path / "more", clips[13:15])
    code, out, err = cli("index", "add", str(more), "--index", ix)
    assert code == 0 and "added 2 files" in out, err
    code, out, _ = cli("index", "remove", "zoe", "--index", ix)
    assert code == 0 and "removed zoe (2 clips)" in out
    assert sorted(SpeakerIndex.open(ix).speakers()) == sorted(
        [s for _, s in clips[:4]] + ["yann"] + [s for _, s in clips[13:15]]
    )


def test_cli_errors_are_one_line(tmp_path, clips, cli):
    (tmp_path / "empty").mkdir()
    ix = str(tmp_path / "ix")
    _one_error_line(*cli("index", "build", str(tmp_path / "empty"), "--index", ix)[::2], "empty")
    _one_error_line(*cli("index", "info", "--index", ix)[::2], "no speaker index")
    _one_error_line(*cli("index", "remove", "bob", "--index", ix)[::2], "no speaker index")
    corpus = folders(tmp_path / "c", clips[:1])
    assert cli("index", "build", str(corpus), "--index", ix)[0] == 0
    _one_error_line(*cli("index", "remove", "bob", "--index", ix)[::2], "'bob'")
    _one_error_line(*cli("index", "build", str(corpus), "--index", ix, "--model", "ge2e")[::2], "campplus")
    _one_error_line(*cli("index", "build", str(corpus), "--index", ix, "--index-type", "annoy")[::2], "--index-type")
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(32000, np.float32), 16000)
    _one_error_line(*cli("enroll", "ghost", str(silent), "--index", ix)[::2], "no clip of ghost", "NoSpeechError")
    with SpeakerIndex.lock(ix):
        _one_error_line(*cli("index", "build", str(corpus), "--index", ix)[::2], "locked by another writer")


def test_cli_json_outputs(tmp_path, clips, cli):
    """--json: one strict JSON object on stdout (the BuildReport for build/add/enroll); failed
    files are still listed on stderr and set the exit code."""
    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))

    corpus = folders(tmp_path / "c", clips[:3])
    (corpus / clips[0][1] / "junk.wav").write_bytes(os.urandom(3000))
    ix = str(tmp_path / "ix")
    code, out, err = cli("index", "build", str(corpus), "--index", ix, "--json")
    rep = strict(out)
    assert code == 1 and "junk.wav" in err
    assert (rep["files_total"], rep["files_embedded"], rep["files_failed"], rep["speakers"]) == (4, 3, 1, 3)
    assert rep["failures"][0]["path"].endswith("junk.wav") and rep["failures"][0]["error"].startswith("AudioDecodeError")
    assert rep["index_path"] == ix and rep["interrupted"] is False and isinstance(rep["warnings"], list)
    code, out, err = cli("enroll", "zoe", str(clips[10][0]), "--index", ix, "--json")
    assert code == 0 and strict(out)["files_embedded"] == 1, err
    code, out, err = cli("index", "add", str(clips[11][0]), "--speaker", "yann", "--index", ix, "--json")
    assert code == 0 and strict(out)["speakers"] == 5, err
    code, out, err = cli("index", "remove", "zoe", "--index", ix, "--json")
    removed = strict(out)
    assert code == 0 and (removed["removed"], removed["clips"], removed["speakers"]) == ("zoe", 1, 4), err
    assert removed["threshold_method"].startswith("gallery-impostor") or "verification" in removed["threshold_method"]
    code, out, _ = cli("index", "info", "--index", ix, "--json")
    info = strict(out)
    assert code == 0 and info["speakers"] == 4 and info["version"] == removed["version"]
    assert {"threshold_basis", "threshold_warnings", "near_duplicate_speakers"} <= set(info)
    assert info["threshold_warnings"] and "too small to calibrate" in info["threshold_warnings"][0]
    code, out, _ = cli("index", "info", "--index", ix)
    assert code == 0 and "basis" in out and "threshold warning: the gallery is too small" in out


def test_open_with_embedder_is_the_one_model_check(tmp_path, clips, campplus):
    from speakerid.index import open_with_embedder

    corpus = folders(tmp_path / "c", clips[:2])
    build_index(corpus, tmp_path / "ix", embedder=campplus)
    ix, emb = open_with_embedder(tmp_path / "ix", embedder=campplus)
    assert emb is campplus and ix.spec.model == "campplus" and not ix.writable
    ix, emb = open_with_embedder(tmp_path / "ix", model="campplus", embed=EmbedOptions(threads=1))
    assert (emb.model, emb.weights_sha256, emb.dim) == (ix.spec.model, ix.spec.weights_sha256, ix.dim)
    with pytest.raises(ModelMismatchError, match="built with model 'campplus'.*not model 'ge2e'"):
        open_with_embedder(tmp_path / "ix", model="ge2e")
    class OtherWeights:  # the same model name, as after its weights changed in the cache
        model, weights_sha256, dim = "campplus", "cd" * 32, 192

    with pytest.raises(ModelMismatchError, match=r"not weights_sha256 cdcdcdcdcdcd…; embed") as e:
        open_with_embedder(tmp_path / "ix", embedder=OtherWeights(), writable=True)  # type: ignore[arg-type]
    assert "--" not in str(e.value)
    with SpeakerIndex.open(tmp_path / "ix", writable=True):  # the failed open released the lock
        pass
    with pytest.raises(ConfigError, match="either an embedder or the options"):
        open_with_embedder(tmp_path / "ix", embedder=campplus, embed=EmbedOptions(threads=1))
    with pytest.raises(ConfigError, match="the embedder given runs 'campplus'"):
        open_with_embedder(tmp_path / "ix", model="ge2e", embedder=campplus)
