"""The restricted unpickler's metadata stand-ins: torch's TorchVersion and pyannote.audio's
Specifications / Problem / Resolution load as inert objects; anything else is still refused,
including when it hides inside such an object."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import pickletools
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from speakerid.errors import CheckpointError
from speakerid.models import torchzip
from speakerid.models.torchzip import PickledMetadata, TorchVersion


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


#: What pyannote.audio 3.0 pickles beside its state dict (the same opcodes: NEWOBJ for
#: TorchVersion and Specifications, REDUCE for the enums, BUILD with the dataclass fields).
_PYANNOTE_META = (
    b"\x80\x02}(" + _str("torch") + _global("torch.torch_version", "TorchVersion")
    + _str("2.0.1+cu117") + b"\x85\x81"
    + _str("specifications") + _global("pyannote.audio.core.task", "Specifications") + b")\x81}("
    + _str("problem") + _global("pyannote.audio.core.task", "Problem") + b"K\x01\x85R"
    + _str("resolution") + _global("pyannote.audio.core.task", "Resolution") + b"K\x01\x85R"
    + _str("duration") + b"G" + struct.pack(">d", 10.0)
    + _str("classes") + b"](" + _str("speaker#1") + _str("speaker#2") + b"e"
    + b"ub" + b"u."
)


def _zip(path: Path, data_pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/version", "3\n")
    return path


def test_pyannote_metadata_loads_as_stand_ins(tmp_path) -> None:
    pickletools.dis(_PYANNOTE_META, out=io.StringIO())  # a well-formed pickle
    obj = torchzip.load_checkpoint(_zip(tmp_path / "meta.pt", _PYANNOTE_META))
    assert isinstance(obj["torch"], TorchVersion) and obj["torch"] == "2.0.1+cu117"
    specs = obj["specifications"]
    assert isinstance(specs, PickledMetadata) and specs.qualname == "pyannote.audio.core.task.Specifications"
    assert specs.args == () and set(specs.state) == {"problem", "resolution", "duration", "classes"}
    assert specs.state["problem"].qualname == "pyannote.audio.core.task.Problem"
    assert specs.state["problem"].args == (1,) and specs.state["resolution"].args == (1,)
    assert specs.state["duration"] == 10.0 and specs.state["classes"] == ["speaker#1", "speaker#2"]
    assert "pyannote" not in sys.modules  # the real classes were never imported
    assert "Specifications" in repr(specs)


def test_torch_saved_metadata_still_loads(tmp_path) -> None:
    import torch  # the test oracle, not a run-time dependency

    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {"w": torch.ones(2, 3)}, "versions": {"torch": torch.__version__}}, path)
    obj = torchzip.load_checkpoint(path)
    assert isinstance(obj["versions"]["torch"], TorchVersion) and obj["versions"]["torch"] == str(torch.__version__)
    np.testing.assert_array_equal(torchzip.state_dict(path, "state_dict")["w"], np.ones((2, 3), np.float32))


@pytest.mark.parametrize(
    "what, payload",
    [
        ("os.system", _global("os", "system") + _str("true") + b"\x85R"),
        ("posix.system", _global("posix", "system") + _str("true") + b"\x85R"),
        ("builtins.eval", _global("builtins", "eval") + _str("1+1") + b"\x85R"),
        ("builtins.getattr", _global("builtins", "getattr")
         + _global("pyannote.audio.core.task", "Problem") + _str("__init__") + b"\x86R"),
        ("another pyannote class", _global("pyannote.audio.core.model", "Model") + b")\x81"),
        ("another torch class", _global("torch.torch_version", "Version") + b")\x81"),
    ],
)
def test_other_globals_are_still_refused(tmp_path, what: str, payload: bytes) -> None:
    # plain, and hidden in the state of a Specifications stand-in
    wrapped = (b"\x80\x02" + _global("pyannote.audio.core.task", "Specifications") + b")\x81}("
               + _str("problem") + payload + b"ub.")
    for i, pkl in enumerate((b"\x80\x02" + payload + b".", wrapped)):
        path = _zip(tmp_path / f"evil-{i}.pt", pkl)
        with pytest.raises(CheckpointError, match="refusing to run pickled code"):
            torchzip.load_checkpoint(path)


def test_os_system_payload_never_runs(tmp_path) -> None:
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {sentinel}",)

    class EvalEvil:
        def __reduce__(self):
            return builtins.eval, (f"open({str(sentinel)!r}, 'w').close()",)

    for i, evil in enumerate((Evil(), EvalEvil())):
        version = _global("torch.torch_version", "TorchVersion") + _str("2.0.1") + b"\x85\x81"
        pkl = b"\x80\x02}(" + _str("version") + version + _str("x") + pickle.dumps(evil, protocol=2)[2:-1] + b"u."
        with pytest.raises(CheckpointError, match="system|eval"):
            torchzip.load_checkpoint(_zip(tmp_path / f"evil-{i}.pt", pkl))
        assert not sentinel.exists()
