"""AutoSpeech front end: |STFT| magnitude (vs librosa.stft) and the 300-frame partials."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from speakerid.errors import ConfigError, InvalidAudioError, ModelError
from speakerid.features import (
    AutoSpeechOptions,
    autospeech_partials,
    autospeech_spectrogram,
    normalize_volume,
)

BINS = 257
#: Our |STFT| vs librosa's, relative to the clip's largest magnitude (observed: ~1e-7).
MAX_REL = 1e-5
OPTS = AutoSpeechOptions()


def _reference(wav: np.ndarray, window: str = "hann") -> np.ndarray:
    """AutoSpeech's wav_to_spectrogram (librosa 0.7.2 defaults made explicit)."""
    spec = librosa.stft(
        wav, n_fft=512, hop_length=160, win_length=400, window=window, center=True, pad_mode="reflect"
    )
    return np.abs(spec).astype(np.float32).T


@pytest.fixture(scope="module")
def clips(librispeech: Path) -> list[np.ndarray]:
    paths = sorted(librispeech.glob("*.flac"))[10:13]
    out = []
    for path in paths:
        wav, sr = sf.read(path, dtype="float32")
        assert sr == 16000
        out.append(normalize_volume(wav, -30.0))
    return out


def _check(wav: np.ndarray, opts: AutoSpeechOptions) -> float:
    expected = _reference(wav, opts.window)
    got = autospeech_spectrogram(wav, opts)
    assert got.dtype == np.float32
    assert got.shape == expected.shape == (1 + wav.size // 160, BINS)
    diff = np.abs(got.astype(np.float64) - expected)
    assert np.all(diff <= 1e-5 * expected + 1e-6 * expected.max())
    return float(diff.max() / expected.max())


@pytest.mark.filterwarnings("ignore:n_fft=512 is too large")
def test_spectrogram_matches_librosa(clips) -> None:
    rng = np.random.default_rng(0)
    signals = list(clips) + [
        (rng.standard_normal(n) * 0.1).astype(np.float32)
        for n in (2, 100, 255, 256, 257, 511, 512, 513, 4_801, 16_000)
    ]
    worst = max(_check(wav, AutoSpeechOptions()) for wav in signals)
    assert worst < MAX_REL, worst
    worst = max(_check(wav, AutoSpeechOptions(window="hamming")) for wav in signals[:4])
    assert worst < MAX_REL, worst


def test_spectrogram_edges() -> None:
    with pytest.raises(InvalidAudioError):
        autospeech_spectrogram(np.zeros(0, dtype=np.float32), AutoSpeechOptions())
    silent = autospeech_spectrogram(np.zeros(1600, dtype=np.float32), AutoSpeechOptions())
    assert silent.shape == (11, BINS) and np.all(silent == 0)
    with pytest.raises(ConfigError):
        AutoSpeechOptions(window="blackman")
    with pytest.raises(ConfigError):
        AutoSpeechOptions(window_ms=40.0)  # 640-sample window > n_fft


def _stats(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.standard_normal(BINS), rng.random(BINS) + 0.5


def test_partials_long_input() -> None:
    rng = np.random.default_rng(1)
    mean, std = _stats(rng)
    spec = rng.random((1000, BINS), dtype=np.float32)
    parts = autospeech_partials(spec, mean, std, OPTS)
    assert parts.dtype == np.float32
    assert parts.shape == (5, 300, BINS)  # starts 0, 150, ..., 600; 750 + 300 > 1000
    feats = (spec - mean) / std
    for k in range(5):
        np.testing.assert_allclose(parts[k], feats[150 * k : 150 * k + 300], rtol=1e-6, atol=1e-6)


def test_partials_exactly_300_frames_are_doubled() -> None:
    # AutoSpeech doubles while frames <= 300, so exactly 300 frames become 600.
    rng = np.random.default_rng(2)
    mean, std = _stats(rng)
    spec = rng.random((300, BINS), dtype=np.float32)
    parts = autospeech_partials(spec, mean, std, OPTS)
    assert parts.shape == (3, 300, BINS)
    doubled = np.repeat((spec - mean) / std, 2, axis=0)
    np.testing.assert_allclose(parts[1], doubled[150:450], rtol=1e-6, atol=1e-6)
    assert autospeech_partials(spec[:1].repeat(301, axis=0), mean, std, OPTS).shape == (1, 300, BINS)


def test_partials_short_input_is_stretched() -> None:
    rng = np.random.default_rng(3)
    mean, std = _stats(rng)
    spec = rng.random((50, BINS), dtype=np.float32)
    parts = autospeech_partials(spec, mean, std, OPTS)
    assert parts.shape == (1, 300, BINS)  # 50 -> 100 -> 200 -> 400 frames
    # each frame repeated 8 times in a row (np.repeat, not np.tile)
    np.testing.assert_allclose(parts[0, :8], np.broadcast_to((spec[0] - mean) / std, (8, BINS)), rtol=1e-6)
    np.testing.assert_allclose(parts[0, 8], (spec[1] - mean) / std, rtol=1e-6)
    one = autospeech_partials(spec[:1], mean, std, OPTS)
    assert one.shape == (2, 300, BINS)  # 1 -> 512 frames: starts 0 and 150


def test_partials_errors() -> None:
    rng = np.random.default_rng(4)
    mean, std = _stats(rng)
    with pytest.raises(InvalidAudioError):
        autospeech_partials(np.zeros((0, BINS), dtype=np.float32), mean, std, OPTS)
    with pytest.raises(ModelError):
        autospeech_partials(np.zeros((10, BINS), dtype=np.float32), mean[:-1], std, OPTS)


def test_end_to_end_shapes(clips) -> None:
    rng = np.random.default_rng(5)
    mean, std = _stats(rng)
    opts = AutoSpeechOptions()
    spec = autospeech_spectrogram(clips[0], opts)
    parts = autospeech_partials(spec, mean, std, opts)
    frames = spec.shape[0]
    assert frames > 300
    assert parts.shape == (1 + (frames - 300) // 150, 300, BINS)
    assert np.all(np.isfinite(parts))
