"""Index recovery: verify_index reports damaged versions, rollback switches to an intact one.

Synthetic unit vectors: what is tested is the on-disk versioning, not the embeddings.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_main

from speakerid.errors import ConfigError, IndexCorruptError, IndexLockedError, IndexNotFoundError
from speakerid.identify import identify
from speakerid.index import IndexCheck, IndexSpec, SpeakerIndex, rollback, verify_index

DIM = 32


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def add(ix: SpeakerIndex, x: np.ndarray, speakers: list[str], start: int) -> None:
    n = len(x)
    ix.add(x, speakers, [f"/audio/{start + i}.flac" for i in range(n)],
           [hashlib.sha256(str(start + i).encode()).hexdigest() for i in range(n)], [4.0] * n, [3.5] * n)


@pytest.fixture
def two_versions(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """v2: 40 clips of 4 speakers; v3 (current): v2 plus 6 clips of "newcomer"."""
    rng = np.random.default_rng(0)
    d = tmp_path / "idx"
    old, new = unit(rng, 40), unit(rng, 6)
    with SpeakerIndex.create(d, IndexSpec("toy-model", "ab" * 32, DIM)) as ix:  # v1: empty
        add(ix, old, [f"spk{i % 4}" for i in range(40)], 0)
        ix.set_threshold(0.5, "test")
        ix.save()  # v2
        add(ix, new, ["newcomer"] * 6, 100)
        ix.save()  # v3; v1 is collected
    assert sorted(p.name for p in d.iterdir() if p.name.startswith("v")) == ["v000002", "v000003"]
    return d, old, new


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def assert_answers(d: Path, x: np.ndarray, n: int) -> None:
    """The index opens (every hash checked), holds n clips and finds each stored vector."""
    ix = SpeakerIndex.open(d)
    assert len(ix) == n
    scores, ids = ix.search(x, k=1)
    assert ids[:, 0].tolist() == list(range(len(x)))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    res = identify(ix, x[:4], k=2, scoring="best")  # the stored threshold (0.5) decides
    assert [r.speaker for r in res] == ["spk0", "spk1", "spk2", "spk3"]


@pytest.mark.parametrize(
    ("damage", "file", "what"),
    [
        (flip_byte, "s000002.faiss", "sha256"),  # same size: only the hash tells
        (truncate, "s000002.clips.parquet", "bytes"),
        (truncate, "s000002.speakers.parquet", "bytes"),
        (flip_byte, "../v000003/failures.parquet", "sha256"),
    ],
)
def test_damaged_current_version_is_reported_and_rolled_back(two_versions, damage, file: str, what: str) -> None:
    d, old, _ = two_versions
    damage(d / "segments" / file)  # s000002 holds v3's newcomer clips; v2 names s000001 only
    file = Path(file).name

    # opening still fails with the typed error, which now says what can be done
    with pytest.raises(IndexCorruptError) as e:
        SpeakerIndex.open(d)
    msg = str(e.value)
    assert file in msg and what in msg and "v000003" in msg
    assert "an intact earlier version exists: roll back to version 2" in msg
    assert "--" not in msg  # library messages never name CLI flags
    assert e.value.rollback_to == 2  # type: ignore[attr-defined]

    report = verify_index(d)
    assert isinstance(report, IndexCheck)
    assert not report.ok and report.current == 3 and report.pointer_problem is None
    assert [(v.version, v.current, v.intact) for v in report.versions] == [(3, True, False), (2, False, True)]
    bad, good = report.versions
    assert file in bad.problem and what in bad.problem
    assert good.problem is None and (good.utterances, good.speakers) == (40, 4) and good.bytes_on_disk > 0
    assert report.rollback_to == 2 and report.problems == [bad.problem]
    assert report.to_dict()["versions"][0]["intact"] is False

    assert rollback(d) == 2
    assert (d / "CURRENT").read_text() == "v000002\n"
    assert stat.S_IMODE((d / "CURRENT").stat().st_mode) == 0o600
    assert_answers(d, old, 40)
    after = verify_index(d)
    assert after.ok and after.current == 2 and after.rollback_to is None
    assert [(v.version, v.intact) for v in after.versions] == [(3, False), (2, True)]  # kept for inspection

    # the index is writable again; the next save collects the damaged version
    rng = np.random.default_rng(5)
    with SpeakerIndex.open(d, writable=True) as ix:
        assert ix.version == 2
        add(ix, unit(rng, 2), ["late"] * 2, 500)
        ix.save()
        assert ix.version == 4
    assert sorted(p.name for p in d.iterdir() if p.name.startswith("v")) == ["v000002", "v000004"]
    assert verify_index(d).ok and len(SpeakerIndex.open(d)) == 42


def test_intact_index_verifies_and_rollback_undoes_the_last_save(two_versions) -> None:
    d, old, _ = two_versions
    report = verify_index(d)
    assert report.ok and report.problems == [] and report.leftovers == ()
    assert [(v.version, v.current, v.intact, v.utterances) for v in report.versions] == [
        (3, True, True, 46), (2, False, True, 40)
    ]
    assert report.rollback_to == 2
    assert rollback(d, to_version=2) == 2
    assert_answers(d, old, 40)
    assert rollback(d, to_version=3) == 3  # and forward again: v3 is intact too
    assert len(SpeakerIndex.open(d)) == 46


def test_missing_pointer(two_versions) -> None:
    d, _, new = two_versions
    (d / "CURRENT").unlink()
    with pytest.raises(IndexCorruptError, match="CURRENT is missing.*an intact version exists: roll back to version 3"):
        SpeakerIndex.open(d)
    report = verify_index(d)
    assert report.current is None and "CURRENT" in report.pointer_problem and not report.ok
    assert report.rollback_to == 3  # the newest intact version
    assert rollback(d) == 3
    assert len(SpeakerIndex.open(d)) == 46


def test_rollback_refusals(two_versions, tmp_path: Path) -> None:
    d, _, _ = two_versions
    with pytest.raises(ConfigError, match="already the current version"):
        rollback(d, to_version=3)
    with pytest.raises(ConfigError, match=r"no version 7 \(versions on disk: 2, 3\)"):
        rollback(d, to_version=7)
    for bad in (0, -1, True, "2", 2.0):
        with pytest.raises(ConfigError):
            rollback(d, to_version=bad)  # type: ignore[arg-type]
    with SpeakerIndex.lock(d):  # another writer: refused, nothing switched
        with pytest.raises(IndexLockedError):
            rollback(d)
    assert (d / "CURRENT").read_text() == "v000003\n"
    # both versions damaged: nothing to roll back to, and the open error offers nothing
    flip_byte(d / "segments" / "s000002.faiss")
    flip_byte(d / "segments" / "s000001.faiss")  # named by v2 and v3
    with pytest.raises(IndexCorruptError, match="no intact version older than version 3"):
        rollback(d)
    with pytest.raises(IndexCorruptError, match="sha256"):
        rollback(d, to_version=2)
    with pytest.raises(IndexCorruptError) as e:
        SpeakerIndex.open(d)
    assert "roll back" not in str(e.value)
    assert verify_index(d).rollback_to is None and (d / "CURRENT").read_text() == "v000003\n"
    with pytest.raises(IndexNotFoundError):
        verify_index(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexNotFoundError):
        verify_index(tmp_path / "empty")
    with pytest.raises(IndexNotFoundError):
        rollback(tmp_path / "empty")


def test_pointer_to_a_missing_version_and_leftovers(two_versions) -> None:
    d, old, _ = two_versions
    (d / "CURRENT").write_text("v000009\n")
    os.mkdir(d / ".tmp-v000010-abcd", 0o700)  # an interrupted save (as older releases named it)
    os.mkdir(d / ".v000011.k2j4.tmp", 0o700)  # an interrupted save
    (d / ".CURRENT.x7q1.tmp").write_text("v0")  # an interrupted switch
    report = verify_index(d)
    assert report.current == 9 and not report.ok
    assert report.versions[0].version == 9 and "does not exist" in report.versions[0].problem
    assert report.leftovers == (".CURRENT.x7q1.tmp", ".tmp-v000010-abcd", ".v000011.k2j4.tmp")
    assert report.rollback_to == 3
    assert rollback(d) == 3


def test_rollback_switch_is_atomic(two_versions, monkeypatch) -> None:
    d, _, _ = two_versions
    flip_byte(d / "segments" / "s000002.faiss")

    def boom(*a, **k):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        rollback(d)
    monkeypatch.undo()
    assert (d / "CURRENT").read_text() == "v000003\n"  # untouched: still the damaged one
    assert not [p for p in d.iterdir() if ".tmp" in p.name]
    assert rollback(d) == 2


def test_create_over_a_lost_pointer_does_not_delete_the_data(two_versions) -> None:
    """A build into a directory whose CURRENT was lost must not collect the intact versions."""
    d, _, _ = two_versions
    (d / "CURRENT").unlink()
    with pytest.raises(IndexCorruptError, match="version 3 is intact and holds 46 clips; roll back to version 3"):
        SpeakerIndex.create(d, IndexSpec("toy-model", "ab" * 32, DIM), exist_ok=True)
    assert sorted(p.name for p in d.iterdir() if p.name.startswith("v")) == ["v000002", "v000003"]
    assert rollback(d) == 3 and len(SpeakerIndex.open(d)) == 46


# --- the CLI: speakerid index verify / rollback ------------------------------------------------


def strict_json(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_cli_verify_and_rollback(two_versions, monkeypatch, capsys) -> None:
    d, old, _ = two_versions
    code, out, err = run_main(["index", "verify", "-i", d], monkeypatch, capsys)
    assert code == 0, err
    assert "every version is intact" in out and "v000003 current" in out and err == ""
    code, out, _ = run_main(["index", "verify", "-i", d, "--json"], monkeypatch, capsys)
    report = strict_json(out)
    assert code == 0 and report["ok"] is True and report["current"] == 3 and report["problems"] == []
    assert [v["version"] for v in report["versions"]] == [3, 2] and report["rollback_to"] == 2

    flip_byte(d / "segments" / "s000002.faiss")
    code, out, err = run_main(["index", "verify", "-i", d], monkeypatch, capsys)
    assert code == 1  # damage found, and listed
    assert "v000003 current DAMAGED" in out and "s000002.faiss does not match its sha256" in out
    assert "speakerid index rollback" in out and "1 problem found:" in err and "s000002.faiss" in err
    code, out, err = run_main(["index", "verify", "-i", d, "--json"], monkeypatch, capsys)
    report = strict_json(out)
    assert code == 1 and report["ok"] is False and report["rollback_to"] == 2 and len(report["problems"]) == 1
    assert report["versions"][0]["intact"] is False and "s000002.faiss" in err

    code, out, err = run_main(["index", "rollback", "-i", d, "--json"], monkeypatch, capsys)
    assert code == 0, err
    assert strict_json(out) == {"path": str(d), "previous": 3, "current": 2}
    assert_answers(d, old, 40)
    # the damaged version is kept for inspection: verify still reports it, but the index is usable
    code, out, _ = run_main(["index", "verify", "-i", d, "--json"], monkeypatch, capsys)
    assert code == 1 and strict_json(out)["ok"] is True and strict_json(out)["current"] == 2


def test_cli_rollback_to_and_usage_errors(two_versions, tmp_path: Path, monkeypatch, capsys) -> None:
    d, _, _ = two_versions
    code, out, err = run_main(["index", "rollback", "-i", d, "--to", "2"], monkeypatch, capsys)
    assert code == 0 and "rolled back from version 3 to version 2" in out, err
    code, out, err = run_main(["index", "rollback", "-i", d, "--to", "3", "--wait", "1"], monkeypatch, capsys)
    assert code == 0 and "to version 3" in out, err
    for args, message in [
        (["--to", "3"], "already the current version"),
        (["--to", "7"], "no version 7 (versions on disk: 2, 3)"),
        (["--to", "0"], "to_version must be a positive integer"),
    ]:
        code, out, err = run_main(["index", "rollback", "-i", d, *args], monkeypatch, capsys)
        assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
        assert out == ""
    with SpeakerIndex.lock(d):
        code, _, err = run_main(["index", "rollback", "-i", d, "--json"], monkeypatch, capsys)
        assert code == 2 and "locked by another writer" in err
    for cmd in ("verify", "rollback"):
        code, out, err = run_main(["index", cmd, "-i", tmp_path / "nowhere"], monkeypatch, capsys)
        assert code == 2 and "no speaker index" in err and out == ""
    code, _, err = run_main(["index", "rollback", "-i", d, "--to", "two"], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err  # a usage error


def test_cli_verify_in_a_subprocess(two_versions) -> None:
    """The installed entry point: exit codes and one JSON object on stdout."""
    d, _, _ = two_versions
    truncate(d / "v000002" / "failures.parquet")  # an older version is damaged: still damage found
    proc = subprocess.run([sys.executable, "-m", "speakerid", "index", "verify", "-i", str(d), "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1, proc.stderr
    report = strict_json(proc.stdout)
    assert report["ok"] is True and [v["intact"] for v in report["versions"]] == [True, False]
    assert "failures.parquet" in proc.stderr
