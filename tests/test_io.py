"""speakerid._io: hashing, atomic files and directories, modes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from speakerid import _io


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # several blocks and a tail
    p = tmp_path / "x.bin"
    p.write_bytes(data)
    assert _io.sha256_file(p) == hashlib.sha256(data).hexdigest() == _io.sha256_bytes(data)
    (tmp_path / "empty").write_bytes(b"")
    assert _io.sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_atomic_file_replaces_and_sets_mode(tmp_path: Path) -> None:
    p = tmp_path / "f.txt"
    p.write_text("old")
    os.chmod(p, 0o644)
    _io.write_bytes(p, b"new")
    assert p.read_bytes() == b"new" and _mode(p) == 0o600
    _io.write_bytes(p, b"shared", mode=_io.SHARED_FILE)
    assert _mode(p) == 0o644
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.txt"]


def test_atomic_file_keeps_the_old_content_on_error(tmp_path: Path) -> None:
    p = tmp_path / "f.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError), _io.atomic_file(p, text=True) as f:
        f.write("half")
        raise RuntimeError("crash")
    assert p.read_text() == "old" and sorted(x.name for x in tmp_path.iterdir()) == ["f.txt"]


def test_write_json_is_strict(tmp_path: Path) -> None:
    _io.write_json(tmp_path / "a.json", {"b": 1, "a": [1.5]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": [1.5], "b": 1}
    with pytest.raises(ValueError):
        _io.write_json(tmp_path / "n.json", {"x": float("nan")})
    assert not (tmp_path / "n.json").exists()


def test_atomic_dir_swaps_whole_directories(tmp_path: Path) -> None:
    d = tmp_path / "model"
    with _io.atomic_dir(d, mode=_io.SHARED_DIR) as tmp:
        (tmp / "a").write_text("1")
        assert not d.exists()
    assert (d / "a").read_text() == "1" and _mode(d) == 0o755
    with _io.atomic_dir(d) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(x.name for x in d.iterdir()) == ["b"] and _mode(d) == 0o700
    with pytest.raises(KeyError), _io.atomic_dir(d) as tmp:
        (tmp / "c").write_text("3")
        raise KeyError("crash")
    assert sorted(x.name for x in d.iterdir()) == ["b"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["model"]  # nothing left beside it


def test_mkdir_private(tmp_path: Path) -> None:
    d = _io.mkdir_private(tmp_path / "a" / "b")
    assert d.is_dir() and _mode(d) == 0o700
