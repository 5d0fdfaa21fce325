"""Speaker index: persistence, search, atomic saves, locking (synthetic unit vectors only)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from speakerid.errors import (
    ConfigError,
    EmptyGalleryError,
    IndexCorruptError,
    IndexExistsError,
    IndexLockedError,
    IndexNotFoundError,
    ModelMismatchError,
    SpeakerNotFoundError,
)
from speakerid.index import IndexSpec, SpeakerIndex, segments, storage

REPO = Path(__file__).resolve().parents[1]
DIM = 32
WEIGHTS = "ab" * 32


def spec(index_type: str = "flat", dim: int = DIM, **kw) -> IndexSpec:
    return IndexSpec(model="toy-model", weights_sha256=WEIGHTS, dim=dim, index_type=index_type, **kw)


def sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, dim: int, n_speakers: int, cos: float = 0.75) -> np.ndarray:
    """Speaker-like unit vectors: a random centroid per speaker plus isotropic noise.

    Plain random unit vectors have no neighbourhood structure at all, which makes ANN
    recall unrealistically poor; real embeddings cluster by speaker like these.
    """
    cent = unit(np.random.default_rng(1234), n_speakers, dim)
    noise = np.sqrt((1 / cos**2 - 1) / dim)
    x = cent[rng.integers(0, n_speakers, n)] + noise * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def add_clips(ix: SpeakerIndex, x: np.ndarray, speakers: list[str], start: int = 0) -> np.ndarray:
    n = len(x)
    return ix.add(
        x,
        speakers,
        [f"/audio/{start + i}.flac" for i in range(n)],
        [sha(start + i) for i in range(n)],
        [4.0] * n,
        [3.5] * n,
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def built(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, np.ndarray]:
    """A saved flat index: 40 clips of 4 speakers, one recorded failure, a threshold."""
    d = tmp_path / "idx"
    x = unit(rng, 40)
    with SpeakerIndex.create(d, spec()) as ix:
        add_clips(ix, x, [f"spk{i % 4}" for i in range(40)])
        ix.record_failures([("/audio/broken.flac", "AudioDecodeError: truncated")])
        ix.set_threshold(0.42, "eer on dev set")
        ix.save()
    return d, x


# --- round trip ---------------------------------------------------------------------------


def test_round_trip(built: tuple[Path, np.ndarray]) -> None:
    d, x = built
    ix = SpeakerIndex.open(d, model="toy-model", weights_sha256=WEIGHTS, dim=DIM)
    assert len(ix) == 40 and ix.speakers() == ["spk0", "spk1", "spk2", "spk3"]
    scores, ids = ix.search(x[:5], k=3)
    assert ids.shape == scores.shape == (5, 3)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()

    utt = ix.utterances()
    assert utt.schema.names == [
        "id",
        "speaker",
        "path",
        "sha256",
        "duration_s",
        "speech_s",
        "model",
        "added_at",
    ]
    assert utt.schema.field("added_at").type == pa.timestamp("us", tz="UTC")
    assert utt["model"].to_pylist() == ["toy-model"] * 40
    assert ix.has_sha256(sha(7)) and not ix.has_sha256(sha(99))
    assert ix.known_sha256() == {sha(i) for i in range(40)}

    names, cent = ix.speaker_centroids()
    want = np.stack([x[i::4].mean(0) for i in range(4)])
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    assert names == ["spk0", "spk1", "spk2", "spk3"]
    np.testing.assert_allclose(cent, want, atol=1e-5)
    np.testing.assert_allclose(ix.vectors([3, 9]), x[[3, 9]], atol=1e-6)

    assert ix.threshold == pytest.approx(0.42)
    assert ix.failures()["path"].to_pylist() == ["/audio/broken.flac"]
    info = ix.info()
    assert info["utterances"] == 40 and info["speakers"] == 4 and info["failures"] == 1
    assert info["model"] == "toy-model" and info["dim"] == DIM and info["index_type"] == "flat"
    assert info["bytes_on_disk"] > 0 and info["threshold_method"] == "eer on dev set"

    manifest = json.loads((d / (d / "CURRENT").read_text().strip() / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["metric"] == "ip"
    assert manifest["threshold"]["value"] == pytest.approx(0.42)
    assert manifest["counts"] == {"utterances": 40, "speakers": 4, "failures": 1, "dead_rows": 0}
    assert [s["rows"] for s in manifest["segments"]] == [40]  # one save, one segment
    spk = pq.read_table(d / "segments" / "s000001.speakers.parquet")
    assert spk["n_clips"].to_pylist() == [10] * 4 and spk.schema.field("sum").type == pa.list_(pa.float64())


def test_incremental_add_keeps_ids_and_clears_failures(built: tuple[Path, np.ndarray], rng) -> None:
    d, _ = built
    with SpeakerIndex.open(d, writable=True) as ix:
        ids = ix.add(unit(rng, 1), ["spk9"], ["/audio/broken.flac"], [sha(1000)], [2.0], [1.0])
        assert ids.tolist() == [40]
        assert ix.failures().num_rows == 0
        ix.record_failures([{"path": "/audio/x.wav", "error": "E"}, ("/audio/y.wav", "F")])
        ix.record_failures([("/audio/x.wav", "E2")])
        ix.save()
    ix = SpeakerIndex.open(d)
    assert len(ix) == 41 and "spk9" in ix.speakers() and ix.has_sha256(sha(1000))
    assert dict(zip(*ix.failures().select(["path", "error"]).to_pydict().values(), strict=True)) == {
        "/audio/x.wav": "E2",
        "/audio/y.wav": "F",
    }


def test_changes_need_writable(built: tuple[Path, np.ndarray]) -> None:
    d, x = built
    ix = SpeakerIndex.open(d)
    with pytest.raises(ConfigError, match="read-only"):
        add_clips(ix, x[:1], ["a"], start=500)
    with pytest.raises(ConfigError):
        ix.save()


def test_input_validation(tmp_path: Path, rng) -> None:
    with SpeakerIndex.create(tmp_path / "i", spec()) as ix:
        bad = unit(rng, 2)
        bad[1, 0] = np.nan
        with pytest.raises(ConfigError, match="NaN"):
            add_clips(ix, bad, ["a", "b"])
        with pytest.raises(ConfigError, match="zero"):
            add_clips(ix, np.zeros((1, DIM)), ["a"])
        with pytest.raises(ConfigError, match="items"):
            add_clips(ix, unit(rng, 2), ["a"])
        with pytest.raises(ConfigError, match="sha256"):
            ix.add(unit(rng, 1), ["a"], ["/p"], ["nothex"], [1.0], [1.0])
        with pytest.raises(ConfigError):
            ix.set_threshold(1.5, "manual")
        assert len(ix) == 0  # nothing half-added
        ids = add_clips(ix, 3.0 * unit(rng, 2), ["a", "b"])  # not unit norm: normalised
        np.testing.assert_allclose(np.linalg.norm(ix.vectors(ids), axis=1), 1.0, atol=1e-6)
        with pytest.raises(ConfigError):
            ix.search(unit(rng, 1), k=0)
    with pytest.raises(ConfigError):
        IndexSpec(model="m", weights_sha256=WEIGHTS, dim=DIM, index_type="annoy")  # type: ignore[arg-type]


# --- refusing the wrong index -------------------------------------------------------------


def test_model_mismatch_refused(built: tuple[Path, np.ndarray]) -> None:
    d, _ = built
    with pytest.raises(ModelMismatchError) as e:
        SpeakerIndex.open(d, model="other-model")
    assert "toy-model" in str(e.value) and "other-model" in str(e.value)
    with pytest.raises(ModelMismatchError, match="weights_sha256"):
        SpeakerIndex.open(d, model="toy-model", weights_sha256="cd" * 32)
    with pytest.raises(ModelMismatchError):
        SpeakerIndex.create(d, IndexSpec(model="other-model", weights_sha256=WEIGHTS, dim=DIM), exist_ok=True)


def test_dim_mismatch(built: tuple[Path, np.ndarray], rng) -> None:
    d, _ = built
    with pytest.raises(ModelMismatchError, match="dim"):
        SpeakerIndex.open(d, dim=DIM * 2)
    ix = SpeakerIndex.open(d, writable=True)
    with pytest.raises(ModelMismatchError, match="dim"):
        add_clips(ix, unit(rng, 1, DIM + 1), ["a"], start=100)
    with pytest.raises(ModelMismatchError, match="dim"):
        ix.search(unit(rng, 1, DIM - 1), k=1)
    ix.close()


def test_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError):
        SpeakerIndex.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexNotFoundError):
        SpeakerIndex.open(tmp_path / "empty")


def test_create_refuses_existing_and_foreign_dirs(built: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    d, _ = built
    with pytest.raises(IndexExistsError):
        SpeakerIndex.create(d, spec())
    with SpeakerIndex.create(d, spec(), exist_ok=True) as ix:
        assert len(ix) == 40
    foreign = tmp_path / "home"
    foreign.mkdir(mode=0o755)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a speaker index"):
        SpeakerIndex.create(foreign, spec())
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert stat.S_IMODE(foreign.stat().st_mode) == 0o755


# --- corruption ---------------------------------------------------------------------------


def live(d: Path) -> Path:
    return d / (d / "CURRENT").read_text().strip()


#: Every file a version names: its own two, a segment's four, a centroid snapshot's three.
FILES = [
    "v/failures.parquet", "v/manifest.json", "segments/s000001.faiss", "segments/s000001.ids.npy",
    "segments/s000001.clips.parquet", "segments/s000001.speakers.parquet",
]
SNAPSHOT_FILES = ["segments/s000002.faiss", "segments/c000003.faiss", "segments/c000003.npy", "segments/c000003.parquet"]


def file_of(d: Path, name: str) -> Path:
    return live(d) / name[2:] if name.startswith("v/") else d / name


def compacted(d: Path) -> None:
    with SpeakerIndex.open(d, writable=True) as ix:
        assert ix.compact()["segments_after"] == 1
    assert sorted(p.name for p in (d / "segments").iterdir())[:4] == [
        "c000003.faiss", "c000003.npy", "c000003.parquet", "s000001.clips.parquet"]  # the previous version's too


@pytest.mark.parametrize("name", FILES + SNAPSHOT_FILES)
def test_truncated_file_is_corrupt(built: tuple[Path, np.ndarray], name: str) -> None:
    d, _ = built
    if name in SNAPSHOT_FILES:
        compacted(d)
    p = file_of(d, name)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(IndexCorruptError):
        SpeakerIndex.open(d, verify=False)  # sizes are always checked


@pytest.mark.parametrize("name", FILES + SNAPSHOT_FILES)
def test_missing_or_garbled_file_is_corrupt(built: tuple[Path, np.ndarray], name: str) -> None:
    d, _ = built
    if name in SNAPSHOT_FILES:
        compacted(d)
    p = file_of(d, name)
    size = p.stat().st_size
    p.write_bytes(b"\xff" * size)  # same size: only the hash (or the parser) can tell
    with pytest.raises(IndexCorruptError):
        SpeakerIndex.open(d)
    p.unlink()
    with pytest.raises(IndexCorruptError):
        SpeakerIndex.open(d)


def test_big_files_are_hashed_by_verify_index_only(built: tuple[Path, np.ndarray], monkeypatch) -> None:
    """Opening hashes files up to VERIFY_MAX_BYTES (so it stays cheap for big galleries);
    verify_index hashes every file."""
    from speakerid.index import verify_index

    d, _ = built
    p = d / "segments" / "s000001.faiss"
    data = bytearray(p.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in a stored vector: parses fine
    p.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match="sha256"):
        SpeakerIndex.open(d)
    monkeypatch.setattr(segments, "VERIFY_MAX_BYTES", 100)
    assert len(SpeakerIndex.open(d)) == 40
    report = verify_index(d)
    assert not report.ok and "s000001.faiss does not match its sha256" in report.problems[0]


def test_bad_pointer_is_corrupt(built: tuple[Path, np.ndarray]) -> None:
    d, _ = built
    (d / "CURRENT").write_text("v999999\n")
    with pytest.raises(IndexCorruptError):
        SpeakerIndex.open(d)
    (d / "CURRENT").write_text("../../etc\n")
    with pytest.raises(IndexCorruptError):
        SpeakerIndex.open(d)
    (d / "CURRENT").unlink()
    with pytest.raises(IndexCorruptError, match="CURRENT"):
        SpeakerIndex.open(d)


def test_inconsistent_counts_are_corrupt(built: tuple[Path, np.ndarray]) -> None:
    """Well-formed files that disagree (hashes fixed up): caught when opening (ids against
    FAISS) or when the clip rows are read, and by verify_index."""
    from speakerid.index import verify_index

    d, _ = built
    v = live(d)
    manifest = json.loads((v / "manifest.json").read_text())
    seg = d / "segments"

    def fix(name: str) -> None:
        data = (seg / name).read_bytes()
        manifest["segments"][0]["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (v / "manifest.json").write_text(json.dumps(manifest))

    good_clips = (seg / "s000001.clips.parquet").read_bytes()
    pq.write_table(pq.read_table(seg / "s000001.clips.parquet").slice(0, 39), seg / "s000001.clips.parquet")
    fix("s000001.clips.parquet")
    ix = SpeakerIndex.open(d)  # clip rows are read on first use
    with pytest.raises(IndexCorruptError, match="39 clip rows for 40 ids"):
        ix.utterances()
    assert not verify_index(d).ok
    (seg / "s000001.clips.parquet").write_bytes(good_clips)
    fix("s000001.clips.parquet")
    np.save(seg / "s000001.ids.npy", np.arange(39, dtype=np.int64))
    fix("s000001.ids.npy")
    with pytest.raises(IndexCorruptError, match="40 vectors and 39 ids"):
        SpeakerIndex.open(d)


# --- removal and edge cases ---------------------------------------------------------------


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
def test_remove_speaker(tmp_path: Path, rng, index_type: str) -> None:
    d = tmp_path / index_type
    x = clustered(rng, 3000, DIM, n_speakers=30)
    speakers = [f"s{i % 30}" for i in range(3000)]
    with SpeakerIndex.create(d, spec(index_type, ivf_min_train_n=1000)) as ix:
        add_clips(ix, x, speakers)
        ix.save()
        assert (
            ix.info()["faiss_index"]
            == {"flat": "IndexFlatIP", "ivf": "IndexIVFFlat", "hnsw": "IndexHNSWFlat"}[index_type]
        )
        names_before, cent_before = ix.speaker_centroids()
        assert ix.remove_speaker("s3") == 100
        with pytest.raises(SpeakerNotFoundError):
            ix.remove_speaker("s3")
        ix.save()
    ix = SpeakerIndex.open(d)
    assert len(ix) == 2900 and "s3" not in ix.speakers() and not ix.has_sha256(sha(3))
    removed = set(range(3, 3000, 30))
    _, ids = ix.search(x[list(removed)[:20]], k=10)
    assert not removed & set(ids.ravel().tolist())
    kept = [i for i in range(0, 3000, 7) if i not in removed][:50]
    _, ids = ix.search(x[kept], k=1)
    assert ids[:, 0].tolist() == kept
    np.testing.assert_allclose(ix.vectors(kept), x[kept], atol=1e-6)
    names, cent = ix.speaker_centroids()
    np.testing.assert_allclose(cent, cent_before[[names_before.index(n) for n in names]], atol=1e-5)


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
def test_remove_last_speaker_then_empty_gallery(tmp_path: Path, rng, index_type: str) -> None:
    d = tmp_path / "i"
    with SpeakerIndex.create(d, spec(index_type)) as ix:
        add_clips(ix, unit(rng, 3), ["only"] * 3)
        ix.save()
        assert ix.remove_speaker("only") == 3
        ix.save()
    ix = SpeakerIndex.open(d)
    assert len(ix) == 0 and ix.speakers() == [] and ix.speaker_centroids()[1].shape == (0, DIM)
    with pytest.raises(EmptyGalleryError):
        ix.search(unit(rng, 1), k=1)


def test_empty_gallery(tmp_path: Path, rng) -> None:
    SpeakerIndex.create(tmp_path / "i", spec()).close()
    ix = SpeakerIndex.open(tmp_path / "i")
    assert ix.info()["utterances"] == 0 and ix.threshold is None
    with pytest.raises(EmptyGalleryError):
        ix.search(unit(rng, 2), k=5)


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw"])
def test_k_larger_than_gallery_and_single_query(tmp_path: Path, rng, index_type: str) -> None:
    with SpeakerIndex.create(tmp_path / "i", spec(index_type)) as ix:
        x = unit(rng, 5)
        add_clips(ix, x, ["a", "a", "b", "b", "c"])
        scores, ids = ix.search(x[2:3], k=50)
        assert ids.shape == (1, 5) and sorted(ids[0].tolist()) == [0, 1, 2, 3, 4]
        assert ids[0, 0] == 2 and np.isfinite(scores).all()
        scores1, ids1 = ix.search(x[2], k=2)  # a 1-d query is one row
        assert ids1.shape == (1, 2) and ids1[0, 0] == 2


# --- files on disk ------------------------------------------------------------------------


def test_file_modes_are_private(tmp_path: Path, rng) -> None:
    old = os.umask(0o022)
    try:
        d = tmp_path / "i"
        with SpeakerIndex.create(d, spec()) as ix:
            for round_ in range(3):
                add_clips(ix, unit(rng, 5), ["a"] * 5, start=round_ * 5)
                ix.save()
    finally:
        os.umask(old)
    seen = 0
    for root, _dirs, files in os.walk(d):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700, root
        for f in files:
            assert stat.S_IMODE(os.stat(Path(root) / f).st_mode) == 0o600, f
            seen += 1
    assert seen >= 12  # CURRENT, .lock, 2 files per kept version, 4 per segment
    versions = sorted(p.name for p in d.iterdir() if p.name.startswith("v"))
    assert len(versions) == 2  # live + previous; older ones collected


# --- crash atomicity ----------------------------------------------------------------------


class Crash(Exception):
    pass


SAVE_WRITES = [
    "s000002.faiss", "s000002.ids.npy", "s000002.clips.parquet", "s000002.speakers.parquet",
    "s000002.sha.npy", "s000002.path.npy", "failures.parquet", "manifest.json",
]


@pytest.mark.parametrize("fail_at", range(9))  # 6 segment files, the version's 2, CURRENT
def test_crash_in_save_keeps_previous_version(
    built: tuple[Path, np.ndarray], rng, monkeypatch, fail_at: int
) -> None:
    d, _ = built
    real_file, real_pointer = segments._put, storage.write_bytes
    calls = []

    def flaky_file(path: Path, fill):
        if len(calls) == fail_at:
            real_file(path, lambda put: put(b"partial"))  # leave a half-written file behind
            raise Crash(path.name)
        calls.append(path)
        return real_file(path, fill)

    def flaky_pointer(path: Path, data: bytes, mode: int) -> None:
        if len(calls) == fail_at:  # as if killed while writing CURRENT's temporary sibling
            (path.parent / f".{path.name}.dead.tmp").write_bytes(data[:2])
            raise Crash(path.name)
        calls.append(path)
        real_pointer(path, data, mode)

    ix = SpeakerIndex.open(d, writable=True)
    ix.remove_speaker("spk0")
    add_clips(ix, unit(rng, 3), ["new"] * 3, start=100)
    monkeypatch.setattr(segments, "_put", flaky_file)
    monkeypatch.setattr(storage, "write_bytes", flaky_pointer)
    with pytest.raises(Crash):
        ix.save()
    monkeypatch.undo()
    assert [p.name for p in calls][:fail_at] == SAVE_WRITES[:fail_at]
    before = SpeakerIndex.open(d)
    assert len(before) == 40 and "spk0" in before.speakers() and "new" not in before.speakers()
    ix.close()
    # a new writer (the crashed one's memory is gone) redoes the change; leftovers are collected
    with SpeakerIndex.open(d, writable=True) as ix:
        ix.remove_speaker("spk0")
        add_clips(ix, unit(rng, 3), ["new"] * 3, start=100)
        ix.save()
    after = SpeakerIndex.open(d)
    assert len(after) == 33 and "spk0" not in after.speakers() and "new" in after.speakers()
    assert not [p for p in d.iterdir() if ".tmp" in p.name]
    referenced = {f for s in json.loads((live(d) / "manifest.json").read_text())["segments"] for f in s["files"]}
    assert {p.name for p in (d / "segments").iterdir()} == referenced  # every kept version names these


@pytest.mark.parametrize("nth", [0, 1])  # renaming the new version's directory, replacing CURRENT
def test_crash_around_the_switch(built: tuple[Path, np.ndarray], rng, monkeypatch, nth: int) -> None:
    d, _ = built
    ix = SpeakerIndex.open(d, writable=True)
    add_clips(ix, unit(rng, 2), ["new"] * 2, start=100)
    real = os.replace
    calls = []

    def flaky(src, dst, *a, **k):
        calls.append(Path(dst).name)
        if len(calls) == nth + 1:
            raise Crash(Path(dst).name)
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(Crash):
        ix.save()
    monkeypatch.undo()
    assert calls[-1] == ("v000003", "CURRENT")[nth]
    assert len(SpeakerIndex.open(d)) == 40 and (d / "CURRENT").read_text() == "v000002\n"
    ix.close()
    with SpeakerIndex.open(d, writable=True) as ix:
        add_clips(ix, unit(rng, 2), ["new"] * 2, start=100)
        ix.save()
    assert len(SpeakerIndex.open(d)) == 42
    assert not [p for p in d.iterdir() if ".tmp" in p.name]


CHILD = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np
    from speakerid.index import IndexSpec, SpeakerIndex
    d, batch, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    def vec(i):
        v = np.random.default_rng(i).standard_normal(dim).astype(np.float32)
        return v / np.linalg.norm(v)
    ix = SpeakerIndex.create(d, IndexSpec("toy-model", "ab" * 32, dim), exist_ok=True, wait_s=30)
    print("open", flush=True)
    while True:
        start = len(ix)
        ids = range(start, start + batch)
        ix.add(np.stack([vec(i) for i in ids]), [f"s{i % 7}" for i in ids], [f"/a/{i}" for i in ids],
               [hashlib.sha256(str(i).encode()).hexdigest() for i in ids], [1.0] * batch, [1.0] * batch)
        ix.save()
        print(len(ix), flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_during_saves_leaves_a_valid_index(tmp_path: Path) -> None:
    """Kill a process that saves in a loop at random moments; every state must be whole."""
    d, batch, dim = tmp_path / "i", 300, 64
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = np.random.default_rng(7)
    seen = []
    for round_ in range(6):
        child = subprocess.Popen(
            [sys.executable, str(script), str(d), str(batch), str(dim)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert child.stdout is not None
        child.stdout.readline()  # "open": the save loop starts (imports take a while)
        if round_ == 0:
            child.stdout.readline()  # at least one save with data completes
        time.sleep(float(rng.uniform(0.0, 0.5)))
        child.send_signal(signal.SIGKILL)
        child.wait()
        if not (d / "CURRENT").exists():
            continue
        ix = SpeakerIndex.open(d)  # verify=True: hashes, counts and ids must all agree
        n = len(ix)
        assert n % batch == 0
        ids = ix.utterances()["id"].to_numpy()
        assert sorted(ids.tolist()) == list(range(n))
        if n:
            want = np.stack([np.random.default_rng(i).standard_normal(dim) for i in range(n)]).astype(
                np.float32
            )
            want /= np.linalg.norm(want, axis=1, keepdims=True)
            np.testing.assert_allclose(ix.vectors(np.arange(n)), want, atol=1e-6)
            assert int(ix.speaker_maps().n_clips.sum()) == n and len(set(ids.tolist())) == n
        seen.append(n)
    assert seen == sorted(seen) and seen[-1] > 0  # progress was kept, never lost


def test_readers_during_saves(tmp_path: Path) -> None:
    """Readers take no lock: opening while another process saves (and collects old versions)
    always yields one whole version."""
    d, batch = tmp_path / "i", 50
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), str(d), str(batch), "16"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert child.stdout is not None
        child.stdout.readline()  # "open"
        child.stdout.readline()  # first save done (its first one imports pyarrow's pandas shim: seconds)
        sizes = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            ix = SpeakerIndex.open(d)
            assert len(ix) % batch == 0 and len(ix) == ix.info()["utterances"]
            sizes.append(len(ix))
    finally:
        child.kill()
        child.wait()
    assert sizes == sorted(sizes) and len(set(sizes)) > 3


# --- concurrency --------------------------------------------------------------------------


def test_two_writers(built: tuple[Path, np.ndarray], rng) -> None:
    d, x = built
    first = SpeakerIndex.open(d, writable=True)
    t0 = time.monotonic()
    with pytest.raises(IndexLockedError, match=str(os.getpid())):
        SpeakerIndex.open(d, writable=True)
    with pytest.raises(IndexLockedError):
        SpeakerIndex.open(d, writable=True, wait_s=0.3)
    assert 0.3 <= time.monotonic() - t0 < 5
    with pytest.raises(IndexLockedError):
        SpeakerIndex.create(d, spec(), exist_ok=True)
    assert len(SpeakerIndex.open(d)) == 40  # readers need no lock
    add_clips(first, unit(rng, 1), ["z"], start=100)
    first.save()
    first.close()
    with SpeakerIndex.open(d, writable=True) as second:
        assert len(second) == 41


def test_second_writer_waits_for_the_first_process(built: tuple[Path, np.ndarray]) -> None:
    d, _ = built
    code = textwrap.dedent(
        f"""
        import time, numpy as np, hashlib
        from speakerid.index import SpeakerIndex
        ix = SpeakerIndex.open({str(d)!r}, writable=True)
        print("locked", flush=True)
        time.sleep(1.0)
        v = np.ones((1, {DIM}), np.float32)
        ix.add(v, ["from-child"], ["/c"], [hashlib.sha256(b"c").hexdigest()], [1.0], [1.0])
        ix.save()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(IndexLockedError):
            SpeakerIndex.open(d, writable=True, wait_s=0)
        with SpeakerIndex.open(d, writable=True, wait_s=30) as ix:  # waits for the child to finish
            assert "from-child" in ix.speakers() and len(ix) == 41
    finally:
        child.wait(timeout=30)
    assert child.returncode == 0


# --- approximate search quality -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_recall_at_10_vs_flat(tmp_path: Path, index_type: str) -> None:
    """20k clustered unit vectors (500 speakers x 40 clips), 200 held-out queries, default params."""
    rng = np.random.default_rng(3)
    n, dim = 20_000, 64
    data = clustered(rng, n + 200, dim, n_speakers=500)
    x, q = data[:n], data[n:]
    speakers = ["s"] * n
    t0 = time.monotonic()
    with SpeakerIndex.create(tmp_path / "flat", spec("flat", dim)) as flat:
        add_clips(flat, x, speakers)
        _, truth = flat.search(q, k=10)
    with SpeakerIndex.create(tmp_path / index_type, spec(index_type, dim, ivf_min_train_n=10_000)) as ix:
        add_clips(ix, x, speakers)
        ix.save()  # trains the IVF lists
        assert ix.info()["faiss_index"] in ("IndexHNSWFlat", "IndexIVFFlat")
    ix = SpeakerIndex.open(tmp_path / index_type)
    _, got = ix.search(q, k=10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), truth.tolist(), strict=True)])
    assert recall >= 0.95, recall
    assert time.monotonic() - t0 < 10
