"""User-added ONNX encoders (``speakerid models add``) and the yaml files in configs/.

The encoders are tiny graphs built here with onnx.helper, with the signatures of the real
ones: AutoSpeech's (N, 300, 257) standardised |STFT| partials -> (N, D), and a WeSpeaker
export's "feats" (B, T, 80) fbank -> "embs" (B, D). Their embeddings on real speech are
checked against numpy references computed from speakerid.features and the upstream maths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
import yaml
from conftest import long_utterances, run_main
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from speakerid import Embedder, Settings, VadOptions, available_models
from speakerid import features as F
from speakerid.cli import app
from speakerid.config import AudioOptions, EmbedOptions, load_yaml
from speakerid.errors import ConfigError, ModelError
from speakerid.models import store
from speakerid.models.spec import ONNX_FILE, SPEC_FILE
from speakerid.models.user import UserModelConfig, add_model, remove_model

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SR = 16000
NO_VAD = VadOptions(enabled=False)
AS_DIM, FB_DIM = 16, 24


# --- tiny ONNX encoders --------------------------------------------------------------------


def _encoder(path: Path, in_name: str, out_name: str, bins: int, dim: int, *, square: bool = False,
             pool: bool = True, seed: int = 0) -> np.ndarray:
    """x (N, T, bins) -> mean over T of x (or x*x) -> @ W (bins, dim); returns W.

    With ``pool=False`` the output keeps the time axis: (N, T, dim), the wrong rank.
    """
    w = np.random.default_rng(seed).standard_normal((bins, dim)).astype(np.float32)
    nodes, x = [], in_name
    if square:
        nodes.append(helper.make_node("Mul", [x, x], ["squared"]))
        x = "squared"
    if pool:
        nodes.append(helper.make_node("ReduceMean", [x], ["pooled"], axes=[1], keepdims=0))
        x = "pooled"
    nodes.append(helper.make_node("MatMul", [x, "w"], [out_name]))
    out_shape = ["N", dim] if pool else ["N", "T", dim]
    graph = helper.make_graph(
        nodes, "tiny_speaker_encoder",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, ["N", "T", bins])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return w


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A SPEAKERID_HOME for this module (user models land here, not in the real cache)."""
    from speakerid.models.registry import WHEELS

    real = store.home() / "wheels"
    store.fetch_wheel(WHEELS["silero-vad"])  # no-op once cached
    h = tmp_path_factory.mktemp("speakerid-home")
    (h / "wheels").symlink_to(real, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPEAKERID_HOME", str(h))
        store.vad_onnx_path()
        yield h


@pytest.fixture(scope="module")
def speech(librispeech) -> list[np.ndarray]:
    """Utterances of at least 10 s from three speakers."""
    return [x for _, x in long_utterances(librispeech, 10.0)]


@pytest.fixture(scope="module")
def files(tmp_path_factory, speech) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("user-model-files")
    paths = {k: d / v for k, v in {
        "as_onnx": "proposed_veri.onnx", "rank_onnx": "wrong_rank.onnx", "fb_onnx": "wespeaker.onnx",
        "not_onnx": "not_a_model.onnx", "mean": "mean.npy", "std": "std.npy", "mean10": "mean10.npy",
        "std0": "std0.npy", "a1": "a1.wav", "a2": "a2.wav", "b": "b.wav",
    }.items()}
    _encoder(paths["as_onnx"], "input", "output", 257, AS_DIM, seed=1)
    _encoder(paths["rank_onnx"], "input", "output", 257, AS_DIM, pool=False)
    _encoder(paths["fb_onnx"], "feats", "embs", 80, FB_DIM, square=True, seed=2)
    paths["not_onnx"].write_bytes(b"this is not a protobuf\x00\x01")
    # per-bin statistics of |STFT| "from a training set" (here: a third speaker)
    spec = F.autospeech_spectrogram(F.normalize_volume(speech[2], -30.0), F.AutoSpeechOptions())
    np.save(paths["mean"], spec.mean(axis=0))
    np.save(paths["std"], spec.std(axis=0) + 1e-3)
    np.save(paths["mean10"], np.zeros(10, np.float32))
    std0 = spec.std(axis=0) + 1e-3
    std0[5] = 0.0
    np.save(paths["std0"], std0)
    x, y = speech[0], speech[1]
    sf.write(paths["a1"], x[: len(x) // 2], SR)
    sf.write(paths["a2"], x[len(x) // 2 :], SR)
    sf.write(paths["b"], y[: len(y) // 2], SR)
    return paths


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def mini(home, files, runner) -> str:
    """The AutoSpeech-like model, added through the CLI."""
    res = runner.invoke(app, ["models", "add", "mini", "--onnx", str(files["as_onnx"]), "--frontend", "autospeech",
                              "--mean", str(files["mean"]), "--std", str(files["std"]), "--threshold", "0.7"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"added mini: {AS_DIM}-d, front end autospeech")
    return "mini"


@pytest.fixture(scope="module")
def wes(home, files, runner) -> str:
    """The WeSpeaker-like model, added through the CLI with configs/wespeaker-fbank.yaml."""
    res = runner.invoke(app, ["models", "add", "wes", "--onnx", str(files["fb_onnx"]), "--frontend", "fbank",
                              "--config", str(CONFIGS / "wespeaker-fbank.yaml")])
    assert res.exit_code == 0, res.output
    return "wes"


def _leftovers(h: Path) -> list[str]:
    return sorted(p.name for p in (h / "models").iterdir() if p.name.startswith("."))


# --- numpy references ---------------------------------------------------------------------------


def _autospeech_reference(x: np.ndarray, w: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """AutoSpeech (ailia sample / VITA-Group functions.py): volume to -30 dBFS (increase only),
    |STFT|, standardise, 300-frame partials; embedding = mean of the network outputs over the
    partials; cosine scoring (so: L2-normalised)."""
    opts = F.AutoSpeechOptions()
    wav = F.normalize_volume(x, opts.target_dbfs, increase_only=True)
    parts = F.autospeech_partials(F.autospeech_spectrogram(wav, opts), mean, std, opts)
    outputs = parts.astype(np.float64).mean(axis=1) @ w.astype(np.float64)  # the tiny network
    v = outputs.mean(axis=0)
    return v / np.linalg.norm(v)


def _fbank_reference(x: np.ndarray, w: np.ndarray, opts: F.FbankOptions) -> np.ndarray:
    feats = F.kaldi_fbank(x, opts).astype(np.float64)
    v = (feats * feats).mean(axis=0) @ w.astype(np.float64)
    return v / np.linalg.norm(v)


def _weights(path: Path) -> np.ndarray:
    return numpy_helper.to_array(onnx.load(str(path)).graph.initializer[0])


def _unit(v: np.ndarray, dim: int) -> None:
    assert v.dtype == np.float32 and v.shape == (dim,)
    assert abs(float(np.linalg.norm(v.astype(np.float64))) - 1) < 1e-5


# --- AutoSpeech end to end -------------------------------------------------------------------


def test_added_autospeech_model_is_in_the_store(mini, home, files) -> None:
    assert available_models() == ["campplus", "campplus-int8", "ge2e", "mini"]
    d = home / "models" / "mini"
    assert sorted(p.name for p in d.iterdir()) == sorted([ONNX_FILE, SPEC_FILE, "mean.npy", "std.npy"])
    spec = json.loads((d / SPEC_FILE).read_text())
    assert spec["frontend"] == "autospeech" and spec["dim"] == AS_DIM and spec["sample_rate_hz"] == SR
    assert spec["frontend_options"]["partial_frames"] == 300 and spec["frontend_options"]["n_fft"] == 512
    assert spec["files"] == {"mean": "mean.npy", "std": "std.npy"}
    assert spec["weights_sha256"] == hashlib.sha256(files["as_onnx"].read_bytes()).hexdigest()
    assert spec["default_threshold"] == 0.7 and spec["builtin"] is False
    assert spec["input_name"] == "input" and spec["output_name"] == "output"
    np.testing.assert_array_equal(np.load(d / "mean.npy"), np.load(files["mean"]).astype(np.float32))
    assert store.pull("mini").name == "mini" and store.info("mini")["cached"] is True


def test_autospeech_embeddings_match_the_numpy_reference(mini, files, speech) -> None:
    emb = Embedder("mini", vad=NO_VAD)
    assert emb.dim == AS_DIM and emb.default_threshold == 0.7
    w, mean, std = _weights(files["as_onnx"]), np.load(files["mean"]), np.load(files["std"])
    x = speech[0]
    clips = {
        "whole": x,
        "quiet (volume normalised up)": (x * 0.02).astype(np.float32),
        "2 s (frames doubled)": x[: 2 * SR],
        "4.5 s": x[SR : int(5.5 * SR)],
    }
    for what, clip in clips.items():
        got = emb.embed(clip, SR)
        _unit(got, AS_DIM)
        np.testing.assert_allclose(got, _autospeech_reference(clip, w, mean, std), rtol=0, atol=2e-5,
                                   err_msg=what)


def test_autospeech_model_with_vad_and_cli_verify(mini, files, runner) -> None:
    v = Embedder("mini").embed(files["a1"])
    _unit(v, AS_DIM)
    res = runner.invoke(app, ["verify", str(files["a1"]), str(files["a2"]), "--model", "mini"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert re.fullmatch(r"similar: -?\d+\.\d{8}", lines[0]), res.stdout
    assert re.fullmatch(r"verification: (match|unmatch) \(threshold: 0\.700, model: mini\)", lines[1]), res.stdout
    res = runner.invoke(app, ["verify", str(files["a1"]), str(files["b"]), "-m", "mini", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["model"] == "mini" and data["threshold"] == 0.7 and -1 <= data["similarity"] <= 1


def test_models_list_and_info_show_user_models(mini, runner) -> None:
    res = runner.invoke(app, ["models", "list"])
    assert res.exit_code == 0, res.output
    names = [line.split()[0] for line in res.stdout.splitlines()]
    assert names[:3] == ["campplus", "campplus-int8", "ge2e"] and "mini" in names
    res = runner.invoke(app, ["models", "info", "mini"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["cached"] is True and info["spec"]["builtin"] is False and info["spec"]["dim"] == AS_DIM


BAD_ADDS = {
    "missing --mean": (["x", "--onnx", "as_onnx", "--frontend", "autospeech", "--std", "std"], "needs --mean"),
    "missing --std": (["x", "--onnx", "as_onnx", "--frontend", "autospeech", "--mean", "mean"], "needs --std"),
    "wrong mean size": (["x", "--onnx", "as_onnx", "--frontend", "autospeech", "--mean", "mean10", "--std", "std"],
                        "has 10 values, expected 257"),
    "zero std": (["x", "--onnx", "as_onnx", "--frontend", "autospeech", "--mean", "mean", "--std", "std0"],
                 "non-positive"),
    "not ONNX": (["x", "--onnx", "not_onnx", "--frontend", "autospeech", "--mean", "mean", "--std", "std"],
                 "not a loadable ONNX model"),
    "wrong output rank": (["x", "--onnx", "rank_onnx", "--frontend", "autospeech", "--mean", "mean", "--std", "std"],
                          "expected an (N, D) embedding output"),
    "built-in name": (["campplus", "--onnx", "as_onnx", "--frontend", "autospeech", "--mean", "mean", "--std", "std"],
                      "taken by a built-in model"),
    "bad name": (["../x", "--onnx", "as_onnx", "--frontend", "autospeech", "--mean", "mean", "--std", "std"],
                 "use letters, digits"),
    "unknown front end": (["x", "--onnx", "as_onnx", "--frontend", "mfcc"], "unknown front end 'mfcc'"),
    "missing ONNX file": (["x", "--onnx", "nowhere", "--frontend", "fbank"], "ONNX file not found"),
    "--mean with fbank": (["x", "--onnx", "fb_onnx", "--frontend", "fbank", "--mean", "mean"], "belong to the autospeech"),
    "autospeech graph as fbank": (["x", "--onnx", "as_onnx", "--frontend", "fbank"], "does not accept input"),
}


@pytest.mark.parametrize("case", sorted(BAD_ADDS))
def test_bad_models_add_is_one_error_line(case, home, files, monkeypatch, capsys) -> None:
    args, text = BAD_ADDS[case]
    args = [str(files[a]) if a in files else (str(files["as_onnx"].parent / a) if a == "nowhere" else a) for a in args]
    before = available_models()
    code, out, err = run_main(["models", "add", *args], monkeypatch, capsys)
    assert code == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], err
    assert ".x-" not in lines[0]  # names the user's file, not the store's temporary copy
    assert available_models() == before and "x" not in available_models()
    assert _leftovers(home) == []


# --- generic fbank front end (WeSpeaker exports) ------------------------------------------------


def test_wespeaker_yaml_describes_a_wespeaker_export() -> None:
    cfg = load_yaml(CONFIGS / "wespeaker-fbank.yaml", UserModelConfig)
    assert cfg.input_name == "feats" and cfg.output_name == "embs"
    assert cfg.default_threshold is not None and 0 < cfg.default_threshold < 1
    opts = F.FbankOptions(**cfg.frontend_options)
    assert opts.num_mel_bins == 80 and opts.sample_rate_hz == SR
    assert (opts.frame_length_ms, opts.frame_shift_ms) == (25.0, 10.0)
    assert opts.window_type == "hamming" and opts.dither == 0.0 and opts.cmn


def test_fbank_model_from_the_wespeaker_yaml(wes, home, files, speech) -> None:
    cfg = yaml.safe_load((CONFIGS / "wespeaker-fbank.yaml").read_text())
    spec = json.loads((home / "models" / "wes" / SPEC_FILE).read_text())
    assert spec["frontend"] == "kaldi_fbank" and spec["dim"] == FB_DIM
    assert spec["input_name"] == "feats" and spec["output_name"] == "embs"
    assert spec["frontend_options"] == cfg["frontend_options"]
    assert spec["default_threshold"] == cfg["default_threshold"] and spec["description"] == cfg["description"]
    assert spec["files"] == {} and spec["builtin"] is False

    emb = Embedder("wes", vad=NO_VAD)
    w, opts = _weights(files["fb_onnx"]), F.FbankOptions(**cfg["frontend_options"])
    for clip in (speech[1], speech[1][: 3 * SR]):
        got = emb.embed(clip, SR)
        _unit(got, FB_DIM)
        np.testing.assert_allclose(got, _fbank_reference(clip, w, opts), rtol=0, atol=2e-5)
    _unit(Embedder("wes").embed(files["b"]), FB_DIM)  # with VAD, from a file


def _yaml(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_or_bad_yaml_keys_are_rejected(home, files, tmp_path, monkeypatch, capsys) -> None:
    base = yaml.safe_load((CONFIGS / "wespeaker-fbank.yaml").read_text())
    top = _yaml(tmp_path, {**base, "frontend_option": {}})
    with pytest.raises(ConfigError, match="frontend_option"):
        add_model("y", files["fb_onnx"], frontend="fbank", config=top)
    nested = _yaml(tmp_path, {**base, "frontend_options": {**base["frontend_options"], "num_mel_bin": 80}})
    with pytest.raises(ConfigError, match="num_mel_bin"):
        add_model("y", files["fb_onnx"], frontend="fbank", config=nested)
    window = _yaml(tmp_path, {**base, "frontend_options": {**base["frontend_options"], "window_type": "bogus"}})
    with pytest.raises(ConfigError, match="bogus"):
        add_model("y", files["fb_onnx"], frontend="fbank", config=window)
    typed = _yaml(tmp_path, {**base, "default_threshold": "high"})
    with pytest.raises(ConfigError, match="default_threshold"):
        add_model("y", files["fb_onnx"], frontend="fbank", config=typed)
    names = _yaml(tmp_path, {**base, "input_name": "fbank"})
    with pytest.raises(ModelError, match=r"inputs \['feats'\]"):
        add_model("y", files["fb_onnx"], frontend="fbank", config=names)
    # and through the command line: one line, exit 2, the key named
    top = _yaml(tmp_path, {**base, "sample_rate": 8000})
    code, _, err = run_main(["models", "add", "y", "--onnx", files["fb_onnx"], "--frontend", "fbank",
                              "--config", top], monkeypatch, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "sample_rate" in err and err.startswith("error: ")
    assert "y" not in available_models() and _leftovers(home) == []


def test_fbank_model_without_yaml_uses_the_graph_names(home, files) -> None:
    spec = add_model("plain", files["fb_onnx"], frontend="fbank")
    try:
        assert spec.input_name == "feats" and spec.output_name == "embs" and spec.dim == FB_DIM
        assert spec.frontend_options == F.FbankOptions().__dict__ and spec.default_threshold == 0.5
        assert "plain" in available_models()
    finally:
        remove_model("plain")
    assert "plain" not in available_models()
    with pytest.raises(ConfigError):
        remove_model("campplus")


def test_unfinished_model_directories_are_not_models(mini, home) -> None:
    ghost = home / "models" / ".mini-unfinished"
    shutil.copytree(home / "models" / "mini", ghost)
    try:
        assert "mini" in available_models() and ghost.name not in available_models()
    finally:
        shutil.rmtree(ghost)


# --- configs/default.yaml ---------------------------------------------------------------------


def test_default_yaml_is_the_default_settings() -> None:
    settings = load_yaml(CONFIGS / "default.yaml")
    assert isinstance(settings, Settings)
    assert settings == Settings()
    assert settings.audio == AudioOptions() and settings.embed == EmbedOptions() and settings.vad == VadOptions()
    data = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    for section, cls in (("audio", AudioOptions), ("vad", VadOptions), ("embed", EmbedOptions)):
        assert set(data[section]) == {f.name for f in dataclasses.fields(cls)}, section  # documents every option


def test_settings_yaml_rejects_unknown_keys(tmp_path) -> None:
    data = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    for bad, key in [
        ({**data, "vad": {**data["vad"], "min_speech": 300}}, "min_speech"),
        ({**data, "embedding": {"window_s": 30}}, "embedding"),
        ({**data, "audio": {**data["audio"], "sample_rate": 8000}}, "sample_rate"),
    ]:
        with pytest.raises(ConfigError, match=key):
            load_yaml(_yaml(tmp_path, bad))
    for bad, key in [
        ({**data, "vad": {**data["vad"], "enabled": "yes"}}, "enabled"),
        ({**data, "embed": {**data["embed"], "window_s": 1.0}}, "window_s"),
    ]:
        with pytest.raises(ConfigError, match=key):
            load_yaml(_yaml(tmp_path, bad))
    ok = load_yaml(_yaml(tmp_path, {"vad": {"enabled": False}, "embed": {"window_s": 30}}))
    assert ok.vad.enabled is False and ok.embed.window_s == 30.0 and ok.audio == AudioOptions()
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml(tmp_path / "missing.yaml")
