"""Content-hash and path lookups (issue 11): the segments' lookup files against a full scan.

Every lookup here is checked against the answer of the dicts the indexer used to build over
every clip (``utterances()`` in id order, the newest clip winning), on galleries with several
segments, tombstones, unsaved clips, compactions, legacy segments without lookup files and a
format-1 index; verify catches damaged lookup files; ``add_files`` reads no clip rows.
"""

from __future__ import annotations

import hashlib
import os
import json
from pathlib import Path

import numpy as np
import pytest

from speakerid.config import EmbedOptions
from speakerid.embedder import Embedder
from speakerid.errors import IndexCorruptError
from speakerid.index import IndexSpec, SpeakerIndex, gallery, segments, verify_index
from speakerid.indexer import Item, add_files

DIM = 16
CAMPPLUS = IndexSpec(model="campplus", weights_sha256="92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",
                     dim=192)


def spec() -> IndexSpec:
    return IndexSpec(model="toy-model", weights_sha256="ab" * 32, dim=DIM)


def sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def add(ix: SpeakerIndex, rng: np.random.Generator, names: list[str], keys: list[int], paths: list[int] | None = None,
        dim: int = DIM) -> None:
    n = len(names)
    paths = keys if paths is None else paths
    ix.add(rng.standard_normal((n, dim)).astype(np.float32), names, [f"/a/{p}.wav" for p in paths],
           [sha(k) for k in keys], [2.0] * n, [1.5] * n)


def full_scan(ix: SpeakerIndex) -> tuple[dict[str, str], dict[str, str]]:
    """sha256 -> speaker and path -> sha256 over every live clip in id order (what the indexer built)."""
    utt = ix.utterances()
    shas = utt["sha256"].to_pylist()
    return dict(zip(shas, utt["speaker"].to_pylist())), dict(zip(utt["path"].to_pylist(), shas))


QUERIES = [sha(i) for i in range(300)] + ["zz" * 32, sha(1).upper(), "", sha(2)[:-1]]
PATHS = [f"/a/{i}.wav" for i in range(300)] + ["/a/x.wav", "relative.wav", "/a/\udcff.wav"]


def check(ix: SpeakerIndex) -> None:
    by_sha, by_path = full_scan(ix)
    assert ix.lookup_sha256(QUERIES) == {q: by_sha[q] for q in QUERIES if q in by_sha}
    assert ix.lookup_paths(PATHS) == {p: by_path[p] for p in PATHS if p in by_path}
    assert [ix.has_sha256(q) for q in QUERIES] == [q in by_sha for q in QUERIES]
    view = ix.clip_lookup()
    assert view.speakers_of(QUERIES) == ix.lookup_sha256(QUERIES)
    assert view.sha256_of_paths(PATHS) == ix.lookup_paths(PATHS)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(5)


def build(d: Path, rng: np.random.Generator, monkeypatch) -> SpeakerIndex:
    """Three saved segments, two tombstones, a re-added clip, unsaved clips; checked at each step."""
    monkeypatch.setattr(gallery, "MERGE_FANOUT", 100)  # several segments, no merge
    ix = SpeakerIndex.create(d, spec())
    add(ix, rng, [f"s{i // 10}" for i in range(40)], list(range(40)))
    check(ix)  # unsaved only
    ix.save()
    check(ix)
    # known content under a new speaker (sha 3: s5 is the newer), a path that changed (/a/5.wav
    # now holds sha 100), one content twice in a segment (sha 41: s6 is the newer)
    add(ix, rng, ["s4"] * 5 + ["s5", "s4", "s6"], [40, 41, 42, 43, 44, 3, 100, 41], [40, 41, 42, 43, 44, 45, 5, 46])
    ix.save()
    check(ix)
    assert ix.lookup_sha256([sha(3), sha(41)]) == {sha(3): "s5", sha(41): "s6"}
    assert ix.lookup_paths(["/a/5.wav"]) == {"/a/5.wav": sha(100)}
    assert ix.remove_speaker("s1") == 10  # tombstone: sha 10..19 are no longer known
    check(ix)
    assert not ix.has_sha256(sha(12))
    add(ix, rng, ["s1"], [12])  # a removed speaker's clip enrolled again
    check(ix)
    assert ix.lookup_sha256([sha(12)]) == {sha(12): "s1"}
    ix.save()
    check(ix)
    ix.remove_speaker("s5")  # sha 3 falls back to its older live clip (s0)
    assert ix.lookup_sha256([sha(3)]) == {sha(3): "s0"}
    ix.save()
    add(ix, rng, ["s7", "s8"], [200, 4], [200, 201])  # unsaved: new content, known content
    add(ix, rng, ["s9"], [202])
    ix.remove_speaker("s9")  # an unsaved clip removed with its speaker
    check(ix)
    assert ix.lookup_sha256([sha(200), sha(4), sha(202)]) == {sha(200): "s7", sha(4): "s8"}
    return ix


def test_lookups_match_a_full_scan(tmp_path: Path, rng, monkeypatch) -> None:
    d = tmp_path / "ix"
    ix = build(d, rng, monkeypatch)
    frozen = ix.clip_lookup()
    before = frozen.speakers_of(QUERIES)
    ix.save()
    check(ix)
    assert ix.info()["segments"] == 4 and ix.info()["dead_rows"] > 0
    add(ix, rng, ["late"], [250])
    ix.remove_speaker("s0")
    assert frozen.speakers_of(QUERIES) == before  # a clip_lookup answers for the state it was made in
    assert sha(250) not in before and ix.has_sha256(sha(250)) and not ix.has_sha256(sha(0))
    ix.save()
    ix.close()
    reader = SpeakerIndex.open(d)
    check(reader)
    with SpeakerIndex.open(d, writable=True) as w:
        w.compact()
        assert w.info()["segments"] == 1
        check(w)
    reader = SpeakerIndex.open(d)
    check(reader)
    names = {f for s in json.loads((d / reader_version(d) / "manifest.json").read_text())["segments"] for f in s["files"]}
    assert {n.split(".", 1)[1] for n in names} == {"faiss", "ids.npy", "clips.parquet", "speakers.parquet", "sha.npy",
                                                   "path.npy"}


def reader_version(d: Path) -> str:
    return (d / "CURRENT").read_text().strip()


def test_lookups_read_no_clip_rows(tmp_path: Path, rng, monkeypatch) -> None:
    d = tmp_path / "ix"
    with SpeakerIndex.create(d, spec()) as ix:
        add(ix, rng, [f"s{i % 7}" for i in range(300)], list(range(300)))
        ix.save()
        add(ix, rng, ["x"], [300])
        ix.save()
    reads: list[str] = []
    real_clips, real_column = segments.Segment.clips, segments.Segment.column
    monkeypatch.setattr(segments.Segment, "clips", lambda self: reads.append("rows") or real_clips(self))
    monkeypatch.setattr(segments.Segment, "column", lambda self, c: reads.append(c) or real_column(self, c))
    ix = SpeakerIndex.open(d)
    assert ix.has_sha256(sha(299)) and not ix.has_sha256(sha(1000))
    assert ix.lookup_paths(["/a/3.wav", "/a/300.wav", "/b"]) == {"/a/3.wav": sha(3), "/a/300.wav": sha(300)}
    assert reads == []  # the mapped lookup files answer
    assert ix.lookup_sha256([sha(8), sha(9)]) == {sha(8): "s1", sha(9): "s2"}
    assert reads == ["speaker"]  # the speaker of a hit: that segment's speaker column, once
    assert ix.lookup_sha256([sha(10)]) == {sha(10): "s3"} and reads == ["speaker"]


def strip_lookup_files(d: Path) -> int:
    """Make every segment of every version on disk one written before the lookup files: drop
    them from the manifests and delete them (the records are otherwise those of today)."""
    n = 0
    for v in sorted(p for p in d.iterdir() if p.name.startswith("v")):
        m = json.loads((v / "manifest.json").read_text())
        for rec in m["segments"]:
            for f in [f for f in rec["files"] if f.endswith((".sha.npy", ".path.npy"))]:
                del rec["files"][f]
                (d / "segments" / f).unlink(missing_ok=True)
                n += 1
        (v / "manifest.json").write_text(json.dumps(m, indent=1))
    return n


def test_segments_without_lookup_files_are_scanned(tmp_path: Path, rng, monkeypatch) -> None:
    d = tmp_path / "ix"
    with build(d, rng, monkeypatch) as ix:
        ix.save()
    want = full_scan(SpeakerIndex.open(d))
    assert strip_lookup_files(d) >= 6
    assert not list((d / "segments").glob("*.sha.npy"))
    assert verify_index(d).ok
    ix = SpeakerIndex.open(d)
    assert full_scan(ix) == want
    check(ix)
    with SpeakerIndex.open(d, writable=True) as w:
        add(w, rng, ["new"], [260])
        w.remove_speaker("s2")
        w.save()  # the new segment has lookup files, the old ones still none (no lookup scanned them)
        assert len(list((d / "segments").glob("*.sha.npy"))) == 1
        check(w)  # scans the old segments
        add(w, rng, ["newer"], [261])
        w.save()  # and keeps what the scan made: every segment now has its lookup files
        check(w)
    recs = json.loads((d / reader_version(d) / "manifest.json").read_text())["segments"]
    assert all(sum(f.endswith((".sha.npy", ".path.npy")) for f in r["files"]) == 2 for r in recs) and len(recs) == 6
    assert verify_index(d).ok  # the kept files say what the clip rows say
    reads: list[str] = []
    real_column = segments.Segment.column
    monkeypatch.setattr(segments.Segment, "column", lambda self, c: reads.append(c) or real_column(self, c))
    ix = SpeakerIndex.open(d)
    assert ix.has_sha256(sha(261)) and not ix.has_sha256(sha(25)) and ix.lookup_paths(["/a/5.wav"]) == {
        "/a/5.wav": sha(100)}
    assert set(reads) == {"speaker"}  # the tombstones' dead rows only; no sha256 / path column scanned
    monkeypatch.undo()
    check(ix)
    with SpeakerIndex.open(d, writable=True) as w:
        w.compact()
    check(SpeakerIndex.open(d))
    (rec,) = json.loads((d / reader_version(d) / "manifest.json").read_text())["segments"]
    assert sum(f.endswith((".sha.npy", ".path.npy")) for f in rec["files"]) == 2 and verify_index(d).ok


def test_format_1_index_lookups(tmp_path: Path, rng) -> None:
    from test_index_segments import spec as seg_spec, write_v1  # the format-1 writer the tests keep

    d = tmp_path / "v1"
    x = rng.standard_normal((12, 32)).astype(np.float32)
    write_v1(d, x / np.linalg.norm(x, axis=1, keepdims=True), [f"s{i % 3}" for i in range(12)], seg_spec(), remove="s1")
    ix = SpeakerIndex.open(d)
    assert ix.info()["format_version"] == 1
    by_sha, by_path = full_scan(ix)
    assert len(by_sha) == 8
    assert ix.lookup_sha256(QUERIES) == {q: by_sha[q] for q in QUERIES if q in by_sha}
    assert ix.lookup_paths(PATHS) == {p: by_path[p] for p in PATHS if p in by_path}


def test_verify_catches_damaged_lookup_files(tmp_path: Path, rng) -> None:
    d = tmp_path / "ix"
    with SpeakerIndex.create(d, spec()) as ix:
        add(ix, rng, ["a", "b", "c"] * 4, list(range(12)))
        ix.save()
    f = next((d / "segments").glob("*.sha.npy"))
    good = f.read_bytes()
    bad = bytearray(good)
    bad[-1] ^= 0xFF  # a flipped byte of the last row
    f.write_bytes(bytes(bad))
    with pytest.raises(IndexCorruptError, match=r"sha\.npy does not match its sha256"):
        SpeakerIndex.open(d)
    rep = verify_index(d)
    assert not rep.ok and "sha.npy" in rep.versions[0].problem
    # a wrong file whose hash the manifest records: verify cross-checks it against the clip rows
    f.write_bytes(good)
    a = np.load(f, allow_pickle=False)
    a["row"] = a["row"][::-1]
    _write_npy(f, a)
    v = d / reader_version(d) / "manifest.json"
    m = json.loads(v.read_text())
    m["segments"][0]["files"][f.name] = {"bytes": f.stat().st_size, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
    v.write_text(json.dumps(m))
    SpeakerIndex.open(d)  # opening checks sizes and hashes only
    rep = verify_index(d)
    assert not rep.ok and "lookup files disagree with its clip rows" in rep.versions[0].problem
    f.unlink()
    with pytest.raises(IndexCorruptError, match=r"sha\.npy is missing"):
        SpeakerIndex.open(d)


def _write_npy(f: Path, a: np.ndarray) -> None:
    with open(f, "wb") as out:
        np.save(out, a, allow_pickle=False)


@pytest.fixture(scope="module")
def campplus() -> Embedder:
    return Embedder("campplus", embed=EmbedOptions(threads=1))


def test_add_files_reads_no_clip_rows(tmp_path: Path, librispeech: Path, librispeech_rows: list[dict], campplus,
                                      monkeypatch) -> None:
    """Enrolling into a gallery: known content skipped (with the speaker it was indexed as), a
    path that changed warned about, a new clip added, and not one clip row read to do it."""
    rows = sorted((r for r in librispeech_rows if 3.0 <= float(r["duration_s"]) <= 5.0), key=lambda r: r["file"])
    known, changed, new = (librispeech / r["file"] for r in rows[:3])
    d = tmp_path / "ix"
    rng = np.random.default_rng(0)
    with SpeakerIndex.create(d, CAMPPLUS) as ix:
        n = 200
        x = rng.standard_normal((n, 192)).astype(np.float32)
        ix.add(x, [f"g{i % 20}" for i in range(n)], [f"/g/{i}.wav" for i in range(n)], [sha(i) for i in range(n)],
               [2.0] * n, [1.5] * n)
        ix.save()
        ix.add(x[:2], ["alice", "carol"], [os.path.abspath(known), os.path.abspath(changed)],  # as the indexer stores paths
               [hashlib.sha256(known.read_bytes()).hexdigest(), sha(999)], [2.0] * 2, [1.5] * 2)
        ix.save()
    reads: list[str] = []
    real_clips, real_column, real_utt = segments.Segment.clips, segments.Segment.column, SpeakerIndex.utterances

    def clips(self):
        if self.seq is not None and self._clips is None:
            reads.append(f"rows of {self.seq}")
        return real_clips(self)

    monkeypatch.setattr(segments.Segment, "clips", clips)
    monkeypatch.setattr(segments.Segment, "column", lambda self, c: reads.append(c) or real_column(self, c))
    monkeypatch.setattr(SpeakerIndex, "utterances", lambda self: reads.append("utterances") or real_utt(self))
    rep = add_files(d, [Item(known, "bob"), Item(changed, "carol"), Item(new, "dave")], embedder=campplus,
                    rebuild_threshold=False)
    assert (rep.files_skipped_known, rep.files_embedded, rep.files_failed) == (1, 2, 0)
    assert any("already indexed as speaker 'alice', not 'bob'" in w for w in rep.warnings)
    assert any(f"{os.path.abspath(changed)} changed since it was indexed" in w for w in rep.warnings)
    assert reads == ["speaker"]  # only for the known clip's speaker, from the segment holding it
    monkeypatch.undo()
    ix = SpeakerIndex.open(d)
    assert ix.lookup_sha256([hashlib.sha256(new.read_bytes()).hexdigest()]) == {
        hashlib.sha256(new.read_bytes()).hexdigest(): "dave"}
    assert len(ix) == 204 and verify_index(d).ok
