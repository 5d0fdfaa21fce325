"""GE2E (Resemblyzer) parity: our numpy front end + ONNX graph vs the upstream torch model.

The oracle is Resemblyzer 0.1.4's own ``VoiceEncoder`` (voice_encoder.py from the pinned
wheel, real pretrained weights) whose ``audio`` module is replaced by a stub holding only the
reference front end, ``librosa.feature.melspectrogram`` called with Resemblyzer's arguments
(the real audio.py imports webrtcvad and scipy, which are not test dependencies).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import librosa
import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
import torch

from speakerid.errors import CheckpointError, ConfigError
from speakerid.features import (
    Ge2eMelOptions,
    ge2e_mel,
    ge2e_partial_starts,
    ge2e_partials,
    normalize_volume,
)
from speakerid.models.ge2e import CONVERTER_VERSION, build_onnx
from speakerid.models.torchzip import state_dict

SR = 16000
MIN_COSINE = 0.9999
#: Our mel vs librosa's, relative to the clip's largest mel value (observed: ~2e-7).
MEL_MAX_REL = 1e-5


def _reference_mel(wav: np.ndarray) -> np.ndarray:
    """Resemblyzer's audio.wav_to_mel_spectrogram (hparams: 16 kHz, 25 ms, 10 ms, 40 bands)."""
    frames = librosa.feature.melspectrogram(y=wav, sr=SR, n_fft=400, hop_length=160, n_mels=40)
    return frames.astype(np.float32).T


@pytest.fixture(scope="module")
def weights(upstream: Path) -> Path:
    return upstream / "resemblyzer" / "pretrained.pt"


@pytest.fixture(scope="module")
def state(weights: Path) -> dict[str, np.ndarray]:
    return state_dict(weights, key="model_state")


@pytest.fixture(scope="module")
def voice_encoder_module(upstream: Path) -> Iterator[types.ModuleType]:
    """resemblyzer.voice_encoder imported from the wheel with a stub resemblyzer.audio."""
    names = ["resemblyzer", "resemblyzer.audio", "resemblyzer.hparams", "resemblyzer.voice_encoder"]
    saved = {name: sys.modules.get(name) for name in names}
    package = types.ModuleType("resemblyzer")
    package.__path__ = [str(upstream / "resemblyzer")]
    audio = types.ModuleType("resemblyzer.audio")
    audio.wav_to_mel_spectrogram = _reference_mel  # type: ignore[attr-defined]
    package.audio = audio  # type: ignore[attr-defined]
    sys.modules["resemblyzer"] = package
    sys.modules["resemblyzer.audio"] = audio
    try:
        module = importlib.import_module("resemblyzer.voice_encoder")
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    yield module


@pytest.fixture(scope="module")
def reference(voice_encoder_module: types.ModuleType, weights: Path):
    torch.set_num_threads(1)
    encoder = voice_encoder_module.VoiceEncoder(device="cpu", verbose=False, weights_fpath=weights)
    return encoder.eval()


@pytest.fixture(scope="module")
def session(state: dict[str, np.ndarray]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    model = build_onnx(state)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _ours(session: ort.InferenceSession, wav: np.ndarray) -> np.ndarray:
    partials = ge2e_partials(wav, Ge2eMelOptions())
    embeds = session.run(["embedding"], {"mels": partials})[0]
    raw = embeds.mean(axis=0)
    return raw / np.linalg.norm(raw)


def _load(path: Path) -> np.ndarray:
    wav, sr = sf.read(path, dtype="float32")
    assert sr == SR and wav.ndim == 1
    return wav


@pytest.fixture(scope="module")
def clips(librispeech: Path) -> list[np.ndarray]:
    paths = sorted(librispeech.glob("*.flac"))[:6]
    assert len(paths) == 6
    return [normalize_volume(_load(p), -30.0) for p in paths]


def _test_signals(clips: list[np.ndarray]) -> dict[str, np.ndarray]:
    signals = {f"librispeech-{i}": clip for i, clip in enumerate(clips)}
    long = np.concatenate(clips)
    assert long.size >= 30 * SR
    signals["30s"] = long[: 30 * SR]
    signals["0.5s"] = clips[0][SR : SR + SR // 2]
    for n in (100, 12_345, 16_001, 25_599, 25_600, 25_601, 40_037, 57_913):
        signals[f"{n}-samples"] = clips[1][SR : SR + n]
    signals["silence-1s"] = np.zeros(SR, dtype=np.float32)
    return signals


@pytest.mark.slow
def test_utterance_embeddings_match_torch(reference, session, clips) -> None:
    cosines = {}
    for name, wav in _test_signals(clips).items():
        with torch.no_grad():
            expected = reference.embed_utterance(wav)
        got = _ours(session, wav)
        assert got.shape == (256,) and np.all(np.isfinite(got)), name
        cosines[name] = float(np.dot(expected, got))
    worst = min(cosines, key=cosines.get)  # type: ignore[arg-type]
    assert cosines[worst] >= MIN_COSINE, (worst, cosines)


def test_partial_embeddings_match_torch_forward(reference, session, clips) -> None:
    partials = ge2e_partials(clips[2], Ge2eMelOptions())
    with torch.no_grad():
        expected = reference(torch.from_numpy(partials.copy())).numpy()
    got = session.run(["embedding"], {"mels": partials})[0]
    assert got.shape == expected.shape == (partials.shape[0], 256)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_partials_are_the_reference_slices(reference, clips) -> None:
    opts = Ge2eMelOptions()
    rng = np.random.default_rng(0)
    lengths = [0, 1, 159, 160, 161, 8000, 25_599, 25_600, 25_601, 12_320 * 3, 480_000]
    lengths += rng.integers(0, 200_000, size=200).tolist()
    for n in lengths:
        _, mel_slices = reference.compute_partial_slices(n, opts.partials_per_s, opts.min_coverage)
        assert ge2e_partial_starts(n, opts) == [s.start for s in mel_slices], n
    wav = clips[3][: 3 * SR + 777]
    _, mel_slices = reference.compute_partial_slices(wav.size, 1.3, 0.75)
    padded = np.pad(wav, (0, max(0, mel_slices[-1].stop * 160 - wav.size)))
    mel = _reference_mel(padded)
    expected = np.stack([mel[s] for s in mel_slices])
    got = ge2e_partials(wav, Ge2eMelOptions())
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=MEL_MAX_REL * expected.max())


@pytest.mark.filterwarnings("ignore:n_fft=400 is too large")
def test_mel_matches_librosa(clips) -> None:
    rng = np.random.default_rng(1)
    signals = list(clips) + [
        rng.standard_normal(n).astype(np.float32) * 0.1 for n in (1, 200, 399, 400, 401, 16_003)
    ]
    worst = 0.0
    for wav in signals:
        expected = _reference_mel(wav)
        got = ge2e_mel(wav, Ge2eMelOptions())
        assert got.shape == expected.shape == (1 + wav.size // 160, 40)
        assert got.dtype == np.float32
        diff = np.abs(got.astype(np.float64) - expected)
        worst = max(worst, float(diff.max() / expected.max()))
        # element-wise too, with a floor for the near-zero bands
        assert np.all(diff <= 1e-5 * np.abs(expected) + 1e-6 * expected.max())
    assert worst < MEL_MAX_REL, worst


def test_mel_filterbank_matches_librosa() -> None:
    from speakerid.features import mel_filterbank

    expected = librosa.filters.mel(sr=SR, n_fft=400, n_mels=40)
    got = mel_filterbank(SR, 400, 40)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)


def test_normalize_volume() -> None:
    rng = np.random.default_rng(2)
    quiet = (rng.standard_normal(SR) * 1e-3).astype(np.float32)
    out = normalize_volume(quiet, -30.0)
    assert out.dtype == np.float32
    dbfs = 20 * np.log10(np.sqrt(np.mean((out.astype(np.float64) * 32767) ** 2)) / 32767)
    assert dbfs == pytest.approx(-30.0, abs=1e-4)
    loud = (rng.standard_normal(SR) * 0.3).astype(np.float32)
    np.testing.assert_array_equal(normalize_volume(loud, -30.0), loud)
    down = normalize_volume(loud, -30.0, increase_only=False)
    assert np.sqrt(np.mean(down.astype(np.float64) ** 2)) < np.sqrt(np.mean(loud**2))
    for silent in (np.zeros(SR, dtype=np.float32), np.zeros(0, dtype=np.float32)):
        out = normalize_volume(silent, -30.0)
        assert out.shape == silent.shape and np.all(out == 0)


def test_graph_shapes_and_zero_guard(state) -> None:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    model = build_onnx(state)
    assert model.producer_version == CONVERTER_VERSION
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    for n, t in ((1, 160), (3, 160), (2, 37)):
        out = sess.run(["embedding"], {"mels": rng.random((n, t, 40), dtype=np.float32)})[0]
        assert out.shape == (n, 256)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
        assert np.all(out >= 0)

    # ReLU can zero every unit: the embedding must then be zeros, not NaN.
    dead = dict(state)
    dead["linear.weight"] = np.zeros_like(state["linear.weight"])
    dead["linear.bias"] = np.full_like(state["linear.bias"], -1.0)
    sess = ort.InferenceSession(
        build_onnx(dead).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    out = sess.run(["embedding"], {"mels": rng.random((2, 160, 40), dtype=np.float32)})[0]
    assert np.all(out == 0)


def test_bad_state_and_options(state) -> None:
    broken = {k: v for k, v in state.items() if k != "lstm.weight_hh_l1"}
    with pytest.raises(CheckpointError, match="weight_hh_l1"):
        build_onnx(broken)
    wrong = dict(state)
    wrong["linear.weight"] = np.zeros((128, 256), dtype=np.float32)
    with pytest.raises(CheckpointError, match="shape"):
        build_onnx(wrong)
    with pytest.raises(ConfigError):
        Ge2eMelOptions(min_coverage=0.0)
    with pytest.raises(ConfigError):
        Ge2eMelOptions(partials_per_s=0.1)  # step longer than a partial
