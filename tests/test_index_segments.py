"""Index format 2: append-only segments, tombstones, compaction, the stored centroid index,
memory-mapped opening and the upgrade of format-1 indexes (synthetic unit vectors only)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from speakerid.errors import ConfigError, ModelMismatchError
from speakerid.identify import identify, rank_speakers
from speakerid.index import IndexSpec, SpeakerIndex, backend, clips, gallery, storage, verify_index
from speakerid.index.speakers import Roster

REPO = Path(__file__).resolve().parents[1]
DIM = 32


def spec(index_type: str = "flat", **kw) -> IndexSpec:
    return IndexSpec(model="toy-model", weights_sha256="ab" * 32, dim=DIM, index_type=index_type, **kw)


def sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def clustered(rng: np.random.Generator, n_speakers: int, per: int, cos: float = 0.75) -> tuple[np.ndarray, list[str]]:
    """``per`` clips of each of ``n_speakers`` speakers: a random direction plus isotropic noise."""
    cent = rng.standard_normal((n_speakers, DIM))
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    noise = np.sqrt((1 / cos**2 - 1) / DIM)
    x = np.repeat(cent, per, axis=0) + noise * rng.standard_normal((n_speakers * per, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), [f"s{i:05d}" for i in range(n_speakers) for _ in range(per)]


def add(ix: SpeakerIndex, x: np.ndarray, names: list[str], start: int) -> np.ndarray:
    n = len(x)
    return ix.add(x, names, [f"/a/{start + i}.wav" for i in range(n)], [sha(start + i) for i in range(n)],
                  [2.0] * n, [1.5] * n)


def manifest(d: Path) -> dict:
    return json.loads((d / (d / "CURRENT").read_text().strip() / "manifest.json").read_text())


def files(d: Path) -> dict[str, tuple[int, int]]:
    """name -> (inode, mtime_ns) of every segment file."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (d / "segments").iterdir()}


def exact_rank(ix: SpeakerIndex, q: np.ndarray, k: int) -> list[list[str]]:
    names, cent = ix.speaker_centroids()
    sims = q @ cent.T
    return [[names[j] for j in np.lexsort((np.arange(len(names)), -s))[:k]] for s in sims]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(11)


def test_saves_append_and_removal_is_a_tombstone(tmp_path: Path, rng, monkeypatch) -> None:
    monkeypatch.setattr(gallery, "MERGE_FANOUT", 100)  # no merging here
    d = tmp_path / "ix"
    x, names = clustered(rng, 30, 10)
    with SpeakerIndex.create(d, spec()) as ix:
        add(ix, x, names, 0)
        ix.save()
        before = files(d)
        add(ix, x[:1], ["s00000"], 1000)
        ix.save()
        after = files(d)
        # one clip = one new segment (6 small files); nothing written before is touched
        assert {k: v for k, v in after.items() if k in before} == before
        new = sorted(set(after) - set(before))
        assert new == ["s000002.clips.parquet", "s000002.faiss", "s000002.ids.npy", "s000002.path.npy",
                       "s000002.sha.npy", "s000002.speakers.parquet"]
        assert sum((d / "segments" / f).stat().st_size for f in new) < 20_000
        assert ix.remove_speaker("s00003") == 10
        assert ix.remove_speaker("s00000") == 11  # its clips in two segments
        ix.save()
        assert files(d) == after  # removal rewrote no segment
    m = manifest(d)
    assert m["tombstones"] == {"s00003": 2, "s00000": 2} and m["counts"]["dead_rows"] == 21
    ix = SpeakerIndex.open(d)
    assert len(ix) == 280 and "s00003" not in ix.speakers() and len(ix.speakers()) == 28
    assert not ix.has_sha256(sha(30)) and not ix.has_sha256(sha(1000)) and ix.has_sha256(sha(40))
    _, ids = ix.search(x[30:40], k=5)
    assert not np.isin(ids, np.arange(30, 40)).any()  # the removed clips are never found
    assert ix.utterances().num_rows == 280 and "s00003" not in ix.utterances()["speaker"].to_pylist()
    with pytest.raises(ConfigError, match="unknown vector ids"):
        ix.vectors([31])
    assert identify(ix, x[30], k=3, threshold=0.0)[0].matches[0].speaker != "s00003"


def test_readding_a_removed_speaker(tmp_path: Path, rng) -> None:
    d = tmp_path / "ix"
    x, names = clustered(rng, 5, 4)
    with SpeakerIndex.create(d, spec()) as ix:
        add(ix, x, names, 0)
        ix.save()
        ix.remove_speaker("s00001")
        add(ix, x[4:6], ["s00001"] * 2, 100)  # back, with two clips (unsaved, then saved)
        ix.save()
        ix.remove_speaker("s00002")
        add(ix, x[8:9], ["s00002"], 200)
        ix.remove_speaker("s00002")  # its unsaved clip goes with it
        add(ix, x[9:10], ["s00002"], 300)
        ix.save()
    for ix in (SpeakerIndex.open(d), ):
        maps = ix.speaker_maps()
        assert dict(zip(maps.names, maps.n_clips.tolist())) == {"s00000": 4, "s00001": 2, "s00002": 1, "s00003": 4,
                                                               "s00004": 4}
        assert len(ix) == 15 and ix.utterances()["id"].to_pylist()[-3:] == [20, 21, 23]
        names_, cent = ix.speaker_centroids()
        want = x[4:6].sum(0) / np.linalg.norm(x[4:6].sum(0))
        np.testing.assert_allclose(cent[1], want, atol=1e-6)
    with SpeakerIndex.open(d, writable=True) as ix:
        done = ix.compact()
        assert done["segments_after"] == 1 and done["dead_rows_dropped"] == 8
    ix = SpeakerIndex.open(d)
    assert manifest(d)["tombstones"] == {} and len(ix) == 15 and ix.info()["segments"] == 1
    np.testing.assert_allclose(ix.speaker_centroids()[1][1], want, atol=1e-6)


def test_compaction_keeps_every_answer(tmp_path: Path, rng, monkeypatch) -> None:
    monkeypatch.setattr(gallery, "MERGE_FANOUT", 100)
    d = tmp_path / "ix"
    x, names = clustered(rng, 40, 6)
    with SpeakerIndex.create(d, spec()) as ix:
        for i in range(0, 240, 30):  # 8 saves, 8 segments
            add(ix, x[i : i + 30], names[i : i + 30], i)
            ix.save()
        ix.remove_speaker("s00007")
        ix.save()
    q = x[::7] + 0.01
    ix = SpeakerIndex.open(d)
    assert ix.info()["segments"] == 8
    def answers(ix: SpeakerIndex) -> tuple[list, list, np.ndarray]:
        ranked = [rank_speakers(ix, q, 5, scoring=s) for s in ("centroid", "best", "topn")]
        return (ix.search(q, 10)[1].tolist(), [[[m.speaker for m in r] for r in rs] for rs in ranked],
                np.array([[[m.score for m in r] for r in rs] for rs in ranked]))

    want = answers(ix)
    with SpeakerIndex.open(d, writable=True) as w:
        w.compact()
    ix = SpeakerIndex.open(d)
    assert ix.info()["segments"] == 1 and ix.info()["dead_rows"] == 0 and len(ix) == 234
    got = answers(ix)
    assert got[:2] == want[:2]
    np.testing.assert_allclose(got[2], want[2], atol=2e-5)  # snapshot centroids are stored as float32
    assert {p.name[:7] for p in (d / "segments").iterdir()} >= {"s000009", "c000010"}
    assert verify_index(d).ok


def test_automatic_merges_and_full_compaction(tmp_path: Path, rng, monkeypatch) -> None:
    d = tmp_path / "ix"
    x, names = clustered(rng, 100, 10)
    with SpeakerIndex.create(d, spec()) as ix:
        for i in range(16):  # 16 saves of 3 clips: merged in fours (tiered), never 16 segments
            add(ix, x[3 * i : 3 * i + 3], names[3 * i : 3 * i + 3], 3 * i)
            ix.save()
            assert ix.info()["segments"] <= 2 * gallery.MERGE_FANOUT
        assert len(ix) == 48 and ix.info()["segments"] <= 4
        monkeypatch.setattr(gallery, "FULL_MIN_ROWS", 100)
        add(ix, x[48:], names[48:], 48)  # 952 rows after 48: the tail outgrows the base
        ix.save()
        assert ix.info()["segments"] == 1 and ix.info()["centroid_index"] == "IndexFlatIP"
        for s in ("s00050", "s00051", "s00052"):
            ix.remove_speaker(s)
        ix.save()  # 30 dead rows of 1000 < 25 %: a tombstone only
        assert ix.info()["dead_rows"] == 30
        for i in range(53, 80):
            ix.remove_speaker(f"s{i:05d}")
        ix.save()  # 300 dead rows: compacted
        assert ix.info()["dead_rows"] == 0 and len(ix) == 700
    assert verify_index(d).ok and len(SpeakerIndex.open(d)) == 700


@pytest.mark.parametrize("ann", [False, True])
def test_centroid_search_exact_top_k_and_recall(tmp_path: Path, ann: bool) -> None:
    """The stored centroid index against an exact search of every centroid: flat is exact
    (same top-k, ties to the first name), IVF reports its recall."""
    rng = np.random.default_rng(5)
    x, names = clustered(rng, 600, 3)
    s = spec(centroid_ann_min_n=100, centroid_nprobe_n=6) if ann else spec()
    d = tmp_path / "ix"
    with SpeakerIndex.create(d, s) as ix:
        add(ix, x, names, 0)
        ix.save(compact=True)
        # changed since the snapshot: served by the exact overlay, stale snapshot rows masked
        add(ix, x[:3] * -1 + 0.1, ["s00001"] * 3, 5000)
        add(ix, x[3:6], ["zz-new"] * 3, 6000)
        ix.remove_speaker("s00002")
        ix.save()
    ix = SpeakerIndex.open(d)
    assert ix.info()["centroid_index"] == ("IndexIVFScalarQuantizer+IndexRefineFlat" if ann else "IndexFlatIP")
    q = x[rng.integers(0, len(x), 100)] + rng.normal(0, 0.05, (100, DIM)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    truth = exact_rank(ix, q, 10)
    _, got = ix.search_speakers(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)])
    if ann:  # 6 of 15 lists probed
        assert 0.5 < recall < 1.0 and 0.5 < ix.speaker_search_recall(200, 10) < 1.0
        assert [g[0] for g in got] == [t[0] for t in truth]  # the speaker itself is always found
    else:
        assert got == truth and ix.speaker_search_recall(50, 10) == 1.0
        ranked = rank_speakers(ix, q[:20], 10)
        assert [[m.speaker for m in r] for r in ranked] == truth[:20]
    assert "s00002" not in sum(got, []) and "zz-new" in sum(ix.search_speakers(x[3:6], 1)[1], [])
    ranked = rank_speakers(ix, q[:20], 10)
    scores = q[:20] @ ix.speaker_centroids()[1].T
    np.testing.assert_allclose([r[0].score for r in ranked], scores.max(1), atol=1e-5)


def test_centroid_ties_and_exclusion(tmp_path: Path) -> None:
    v = np.eye(DIM, dtype=np.float32)
    with SpeakerIndex.create(tmp_path / "ix", spec()) as ix:
        add(ix, v[[0, 0, 1]], ["b", "a", "c"], 0)  # a and b: the same centroid
        for compact in (False, True):
            ix.save(compact=compact)
            r = rank_speakers(ix, v[0], 3)[0]
            assert [m.speaker for m in r] == ["a", "b", "c"]  # a tie goes to the first name
            r = rank_speakers(ix, np.stack([v[0], v[0]]), 1, exclude=["a", {"a", "b", "c"}])
            assert [m.speaker for m in r[0]] == ["b"] and r[1] == []


def test_a_reader_keeps_its_version_through_compaction(tmp_path: Path, rng) -> None:
    """Readers map the files when opening: a compaction (and the collection of the files the
    reader's version names) leaves it answering."""
    d = tmp_path / "ix"
    x, names = clustered(rng, 20, 5)
    with SpeakerIndex.create(d, spec()) as w:
        add(w, x[:50], names[:50], 0)
        w.save()
        reader = SpeakerIndex.open(d)
        for i in range(3):
            add(w, x[50 + 10 * i : 60 + 10 * i], names[50 + 10 * i : 60 + 10 * i], 50 + 10 * i)
            w.save(compact=True)  # the reader's segment files are deleted by the third
    assert not (d / "segments" / "s000001.faiss").exists()
    assert len(reader) == 50 and reader.utterances().num_rows == 50  # rows read only now
    assert reader.search(x[:3], 1)[1][:, 0].tolist() == [0, 1, 2]
    assert identify(reader, x[0], 1, threshold=0.0)[0].speaker == "s00000"


def test_open_maps_clip_segments_and_reads_no_clip_rows(tmp_path: Path, rng, monkeypatch) -> None:
    d = tmp_path / "ix"
    x, names = clustered(rng, 50, 4)
    with SpeakerIndex.create(d, spec()) as ix:
        add(ix, x, names, 0)
        ix.save(compact=True)
    import faiss

    from speakerid.index import segments

    flags, reads = [], []
    real_read, real_clips, real_column = faiss.read_index, segments.Segment.clips, segments.Segment.column
    monkeypatch.setattr(faiss, "read_index", lambda p, f=0: flags.append(f) or real_read(p, f))
    monkeypatch.setattr(segments.Segment, "clips", lambda self: reads.append("rows") or real_clips(self))
    monkeypatch.setattr(segments.Segment, "column", lambda self, c: reads.append(c) or real_column(self, c))
    ix = SpeakerIndex.open(d)
    # clip segments are mapped; the centroid index, which every query searches, is read whole
    assert flags == [0, faiss.IO_FLAG_MMAP_IFC]
    assert reads == []  # clip rows are read on first use only
    assert identify(ix, x[0], 3, threshold=0.0)[0].speaker == "s00000"
    assert reads == []  # centroid scoring needs none
    assert ix.search(x[:1], 1)[1][0, 0] == 0 and reads == []  # nor clip search without removals
    assert ix.has_sha256(sha(3)) and reads == []  # resume reads the mapped lookup file, no column


def test_model_mismatch_and_modes(tmp_path: Path, rng) -> None:
    d = tmp_path / "ix"
    x, names = clustered(rng, 3, 2)
    with SpeakerIndex.create(d, spec()) as ix:
        add(ix, x, names, 0)
        ix.save()
        ix.save(compact=True)
    with pytest.raises(ModelMismatchError):
        SpeakerIndex.open(d, model="other")
    for root, _dirs, fs in os.walk(d):
        assert (os.stat(root).st_mode & 0o777) == 0o700
        assert all((os.stat(Path(root) / f).st_mode & 0o777) == 0o600 for f in fs)


# --- format 1 ---------------------------------------------------------------------------------


def write_v1(d: Path, x: np.ndarray, names: list[str], s: IndexSpec, remove: str | None = None) -> None:
    """A format-1 index written by the format-1 writer the code keeps (storage.write_version)."""
    storage.make_directory(d)
    ids = np.arange(len(x), dtype=np.int64)
    keep = np.array([n != remove for n in names])
    n = int(keep.sum())
    cols = clips.checked_columns(n, [nm for nm, k in zip(names, keep) if k], [f"/a/{i}.wav" for i in ids[keep]],
                                 [sha(int(i)) for i in ids[keep]], [2.0] * n, [1.5] * n)
    roster = Roster(s.dim)
    roster.add(cols["speakers"], x[keep], cols["speech_s"])
    for number in (1, 2):
        storage.write_version(d, storage.StoredVersion(
            number=number, spec=s, faiss_index=backend.build_faiss_index(s, x[keep], ids[keep]),
            utterances=clips.clip_rows(ids[keep], cols, s.model), speakers=roster.table(),
            failures=storage.FAILURES_SCHEMA.empty_table(), threshold={"value": 0.3, "method": "test", "set_at": None},
            next_id=len(x), created_at="2026-01-01T00:00:00+00:00", updated_at="2026-01-01T00:00:00+00:00",
        ))


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_format_1_opens_and_upgrades(tmp_path: Path, rng, index_type: str) -> None:
    d = tmp_path / "v1"
    x, names = clustered(rng, 12, 5)
    write_v1(d, x, names, spec(index_type), remove="s00004")
    assert json.loads((d / "v000002" / "manifest.json").read_text())["format_version"] == 1
    ix = SpeakerIndex.open(d)  # read-only: read whole, converted in memory
    assert ix.info()["format_version"] == 1 and len(ix) == 55 and ix.threshold == pytest.approx(0.3)
    want = [[m.speaker for m in r] for r in rank_speakers(ix, x[::5], 3)]
    assert [r[0] for r in want] == [n if n != "s00004" else r[0] for n, r in zip(names[::5], want)]
    best = [[m.speaker for m in r] for r in rank_speakers(ix, x[::5], 3, scoring="best")]
    assert (d / "CURRENT").read_text() == "v000002\n"  # reading changed nothing
    assert verify_index(d).ok

    assert SpeakerIndex.upgrade(d) == 1
    assert manifest(d)["format_version"] == 2 and (d / "CURRENT").read_text() == "v000003\n"
    assert SpeakerIndex.upgrade(d) == 2  # a no-op now
    ix = SpeakerIndex.open(d)
    assert ix.info()["format_version"] == 2 and len(ix) == 55 and ix.threshold == pytest.approx(0.3)
    assert [[m.speaker for m in r] for r in rank_speakers(ix, x[::5], 3)] == want
    assert [[m.speaker for m in r] for r in rank_speakers(ix, x[::5], 3, scoring="best")] == best
    assert ix.known_sha256() == {sha(i) for i in range(60) if names[i] != "s00004"}
    report = verify_index(d)
    assert report.ok and [v.version for v in report.versions] == [3, 2]  # the v1 version is kept
    with SpeakerIndex.open(d, writable=True) as w:
        add(w, x[:1], ["late"], 999)
        assert w.add(x[:1], ["late"], ["/b"], [sha(1234)], [1.0], [1.0]).tolist() == [61]  # ids go on
        w.save()
    assert len(SpeakerIndex.open(d)) == 57


def test_writable_open_converts_format_1_and_rollback_goes_back(tmp_path: Path, rng) -> None:
    from speakerid.index import rollback

    d = tmp_path / "v1"
    x, names = clustered(rng, 4, 5)
    write_v1(d, x, names, spec())
    with SpeakerIndex.open(d, writable=True) as w:
        assert w.info()["format_version"] == 2 and w.version == 3
    assert rollback(d) == 2 and SpeakerIndex.open(d).info()["format_version"] == 1


def test_cli_compact_and_upgrade(tmp_path: Path, rng) -> None:
    d = tmp_path / "v1"
    x, names = clustered(rng, 4, 5)
    write_v1(d, x, names, spec())
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def cli(*args: str) -> dict:
        p = subprocess.run([sys.executable, "-m", "speakerid", "index", *args, "-i", str(d), "--json"],
                           capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    assert cli("upgrade") == {"path": str(d), "format_before": 1, "format": 2}
    with SpeakerIndex.open(d, writable=True) as w:
        w.remove_speaker("s00001")
        w.save()
    got = cli("compact")
    assert got["dead_rows_dropped"] == 5 and got["segments_after"] == 1
    info = cli("info")
    assert info["format_version"] == 2 and info["segments"] == 1 and info["utterances"] == 15
