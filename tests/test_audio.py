"""speakerid.audio: decoding, down-mixing, resampling, blocks, typed errors."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speakerid import audio
from speakerid.audio import AudioInfo, iter_blocks, load, prepare, probe
from speakerid.config import AudioOptions
from speakerid.errors import (
    AudioDecodeError,
    AudioNotFoundError,
    EmptyAudioError,
    InvalidAudioError,
    NotAFileError,
    SpeakeridError,
)


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def write(path: Path, x: np.ndarray, rate: int, **kw) -> Path:
    sf.write(str(path), x, rate, **kw)
    return path


# --- bad inputs --------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.wav"
    for fn in (load, probe, lambda q: list(iter_blocks(q))):
        with pytest.raises(AudioNotFoundError, match="nope.wav"):
            fn(p)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(NotAFileError, match=str(tmp_path.name)):
        load(tmp_path)
    with pytest.raises(NotAFileError):
        list(iter_blocks(tmp_path))


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty.wav.*empty"):
        load(p)


def test_zero_samples(tmp_path: Path) -> None:
    p = write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    assert probe(p).frames == 0
    with pytest.raises(EmptyAudioError, match="zero.wav"):
        load(p)
    with pytest.raises(EmptyAudioError):
        list(iter_blocks(p))


def test_truncated_header(tmp_path: Path) -> None:
    good = write(tmp_path / "good.wav", tone(440, 1, 16000), 16000, subtype="PCM_16")
    p = tmp_path / "trunc.wav"
    p.write_bytes(good.read_bytes()[:20])
    with pytest.raises(AudioDecodeError, match="trunc.wav"):
        load(p)
    with pytest.raises(AudioDecodeError):
        probe(p)


def test_truncated_data_still_decodes_what_is_there(tmp_path: Path) -> None:
    good = write(tmp_path / "good.wav", tone(440, 1, 16000), 16000, subtype="PCM_16")
    p = tmp_path / "cut.wav"
    p.write_bytes(good.read_bytes()[: 44 + 2 * 8000])
    x = load(p)
    assert 7000 <= len(x) <= 8000
    assert audio.probe(p).warnings and "truncated" in audio.probe(p).warnings[0]
    assert not audio.probe(good).warnings


def test_random_bytes(tmp_path: Path) -> None:
    p = tmp_path / "noise.wav"
    p.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioDecodeError, match="noise.wav"):
        load(p)


def test_unsupported_format_without_pyav(tmp_path: Path, monkeypatch) -> None:
    p = tmp_path / "song.m4a"
    p.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
    monkeypatch.setattr(audio, "_import_av", lambda: None)
    with pytest.raises(AudioDecodeError, match="song.m4a.*PyAV"):
        load(p)


def test_nan_samples(tmp_path: Path) -> None:
    x = tone(440, 1, 16000)
    x[1234] = np.nan
    p = write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(InvalidAudioError, match="nan.wav.*NaN"):
        load(p)
    with pytest.raises(InvalidAudioError):
        list(iter_blocks(p))


def test_errors_are_typed(tmp_path: Path) -> None:
    """Whatever the bad input, only SpeakeridError subclasses escape."""
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    (tmp_path / "b.flac").write_bytes(b"fLaC" + bytes(10))
    (tmp_path / "c.mp3").write_bytes(b"ID3" + bytes(5))
    (tmp_path / "d.ogg").write_bytes(b"OggS" + bytes(30))
    for p in sorted(tmp_path.iterdir()):
        with pytest.raises(SpeakeridError):
            load(p)


# --- content -------------------------------------------------------------------------


def test_clipped_audio(tmp_path: Path) -> None:
    p = write(tmp_path / "loud.wav", tone(440, 1, 16000, amp=1.8), 16000, subtype="FLOAT")
    x = load(p)
    assert x.dtype == np.float32 and x.max() <= 1.0 and x.min() >= -1.0
    assert x.max() == 1.0 and x.min() == -1.0
    # full-scale int16, resampled: soxr overshoot is clipped too
    q = write(tmp_path / "full.wav", np.sign(tone(300, 1, 44100)), 44100, subtype="PCM_16")
    y = load(q)
    assert np.abs(y).max() <= 1.0


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 48000])
def test_resampled_tone(tmp_path: Path, rate: int) -> None:
    p = write(tmp_path / f"t{rate}.wav", tone(440, 3, rate), rate, subtype="PCM_16")
    info = probe(p)
    assert info == AudioInfo(p, rate, 1, 3 * rate, 3.0, "WAV")
    x = load(p)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 48000) <= 1
    assert abs(peak_hz(x, 16000) - 440) < 1.0
    assert np.abs(x[1000:-1000]).max() == pytest.approx(0.5, abs=0.01)


def test_stereo_44k_downmix(tmp_path: Path) -> None:
    left = tone(440, 2, 44100)
    right = tone(1000, 2, 44100, amp=0.2)
    p = write(tmp_path / "st.wav", np.stack([left, right], 1), 44100, subtype="PCM_16")
    assert probe(p).channels == 2
    x = load(p)
    assert abs(len(x) - 32000) <= 1
    expected = (tone(440, 2, 16000) + tone(1000, 2, 16000, amp=0.2)) / 2
    # HQ resampling of 16-bit audio: the mean of the channels, to quantisation noise
    assert np.abs(x[500:-500] - expected[500:-500]).max() < 2e-3
    spec = np.abs(np.fft.rfft(x))
    assert spec[880] > 2 * spec[2000] > 0  # both tones, 0.25 vs 0.1 amplitude (2 s: bin = 0.5 Hz)


def test_non_ascii_path(tmp_path: Path) -> None:
    d = tmp_path / "données 日本"
    d.mkdir()
    p = write(d / "Gérard_Ωμέγα.flac", tone(440, 1, 16000), 16000)
    assert len(load(p)) == 16000
    assert probe(str(p)).format == "FLAC"
    assert sum(map(len, iter_blocks(p))) == 16000


@pytest.mark.parametrize("ext,fmt", [("mp3", "MP3"), ("ogg", "OGG")])
def test_lossy_formats(tmp_path: Path, ext: str, fmt: str) -> None:
    p = write(tmp_path / f"a.{ext}", tone(440, 2, 22050), 22050)
    assert probe(p).format == fmt
    x = load(p)
    assert abs(len(x) - 32000) <= 16000 * 0.06  # codec delay / padding
    assert abs(peak_hz(x, 16000) - 440) < 1.0
    assert np.abs(x).max() == pytest.approx(0.5, abs=0.05)


def test_max_duration_reads_only_the_window(tmp_path: Path) -> None:
    x = tone(440, 4, 16000)
    x[3 * 16000] = np.nan  # a whole-file read would raise
    p = write(tmp_path / "long.wav", x, 16000, subtype="FLOAT")
    opts = AudioOptions(max_duration_s=1.5)
    assert len(load(p, opts)) == 24000
    assert sum(map(len, iter_blocks(p, opts))) == 24000
    q = write(tmp_path / "long48.wav", tone(440, 4, 48000), 48000)
    assert len(load(q, opts)) == 24000
    assert sum(map(len, iter_blocks(q, AudioOptions(max_duration_s=1.5, block_s=0.3)))) == 24000


def test_blocks_equal_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = int(44100 * 23.7)
    x = np.stack([tone(440, 23.7, 44100), 0.2 * rng.standard_normal(n).astype(np.float32)], 1)
    p = write(tmp_path / "st.wav", x, 44100, subtype="PCM_16")
    whole = load(p)
    for block_s in (60.0, 5.3, 0.77):
        blocks = list(iter_blocks(p, AudioOptions(block_s=block_s)))
        assert all(b.dtype == np.float32 and b.ndim == 1 and b.size for b in blocks)
        if block_s < 23:
            assert len(blocks) > 3
        y = np.concatenate(blocks)
        assert len(y) == len(whole)
        np.testing.assert_allclose(y, whole, atol=1e-5)


def test_one_hour_blocks_bounded_memory(tmp_path: Path) -> None:
    """A 1-hour 8 kHz file (58 MB int16) streams to 16 kHz in ~60 s blocks."""
    rate, minutes = 8000, 60
    p = tmp_path / "hour.wav"
    with sf.SoundFile(str(p), "w", rate, 1, "PCM_16") as f:
        t = np.arange(60 * rate) / rate
        block = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # whole cycles per minute
        for _ in range(minutes):
            f.write(block)
    assert probe(p).duration_s == 3600.0
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        total = count = 0
        mid = None
        for b in iter_blocks(p):
            total += b.size
            count += 1
            if count == 30:
                mid = b[:16000].copy()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - t0
    assert abs(total - 3600 * 16000) <= 2
    assert count >= 59
    assert peak < 40e6, f"peak traced memory {peak / 1e6:.1f} MB"  # whole file would be >230 MB
    assert mid is not None and abs(peak_hz(mid, 16000) - 440) < 1.5
    assert elapsed < 60


# --- in-memory input -----------------------------------------------------------------


def test_prepare_int16_and_float() -> None:
    i16 = (tone(440, 1, 16000) * 32767).astype(np.int16)
    x = prepare(i16, 16000)
    assert x.dtype == np.float32 and np.abs(x - tone(440, 1, 16000)).max() < 1e-4
    y = prepare(tone(440, 1, 16000).astype(np.float64) * 3, 16000)
    assert y.dtype == np.float32 and y.max() == 1.0 and y.min() == -1.0


def test_prepare_stereo_and_resample() -> None:
    st = np.stack([tone(440, 1, 48000), np.zeros(48000, np.float32)], 1)
    x = prepare(st, 48000)
    assert len(x) == 16000
    assert np.abs(x[200:-200]).max() == pytest.approx(0.25, abs=0.01)
    assert abs(peak_hz(x, 16000) - 440) < 1.5
    assert len(prepare(tone(440, 2, 8000), 8000, AudioOptions(max_duration_s=1))) == 16000


@pytest.mark.parametrize(
    "samples,rate,match",
    [
        (np.array([0.1, np.nan, 0.2], np.float32), 16000, "NaN"),
        (np.array([0.1, np.inf] * 10), 16000, "NaN"),
        (np.zeros(0, np.float32), 16000, "empty"),
        (np.zeros((4, 0), np.float32), 16000, "empty"),
        (np.zeros((2, 3, 4), np.float32), 16000, "3-D"),
        (np.float32(0.5), 16000, "0-D"),
        (np.zeros(100, np.float32), 0, "positive"),
        (np.zeros(100, np.float32), -16000, "positive"),
        (np.zeros(100, np.float32), 16000.5, "positive"),
        (np.zeros(100, np.float32), True, "positive"),
        (np.zeros((2, 1000), np.float32), 16000, "channels, frames"),
        (np.zeros(100, np.complex64), 16000, "dtype"),
        (["a", "b"], 16000, "dtype"),
    ],
)
def test_prepare_invalid(samples, rate, match: str) -> None:
    with pytest.raises(InvalidAudioError, match=match):
        prepare(samples, rate)


# --- PyAV fallback (PyAV is optional: a minimal stand-in exercises the glue) ----------


class _FakeAV:
    """Just the PyAV surface audio.py uses; decodes a .npy file of shape (frames, ch)."""

    class AudioResampler:
        def __init__(self, format: str) -> None:
            assert format == "fltp"

        def resample(self, frame):
            return [frame]

    class _Frame:
        def __init__(self, planar: np.ndarray) -> None:
            self._planar = planar

        def to_ndarray(self) -> np.ndarray:
            return self._planar

    class _Container:
        def __init__(self, data: np.ndarray, rate: int) -> None:
            from fractions import Fraction
            from types import SimpleNamespace as NS

            self._data = data
            cc = NS(channels=data.shape[1], sample_rate=rate, layout=NS(nb_channels=data.shape[1]))
            st = NS(sample_rate=rate, codec_context=cc, duration=len(data), time_base=Fraction(1, rate))
            self.streams = NS(audio=[st])
            self.format = NS(name="fake")
            self.duration = None
            self.closed = False

        def decode(self, stream):
            for i in range(0, len(self._data), 1000):  # 1000-frame packets
                yield _FakeAV._Frame(self._data[i : i + 1000].T.copy())

        def close(self) -> None:
            self.closed = True

    def open(self, path: str):
        if not path.endswith(".npy"):
            raise OSError("Invalid data found when processing input")
        return _FakeAV._Container(np.load(path, allow_pickle=False), 44100)


def test_pyav_fallback(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(audio, "_import_av", lambda: _FakeAV())
    st = np.stack([tone(440, 3, 44100), tone(440, 3, 44100, amp=0.1)], 1)
    p = tmp_path / "clip.npy"
    np.save(p, st)
    info = probe(p)
    assert (info.sample_rate_hz, info.channels, info.frames, info.format) == (44100, 2, 132300, "fake")
    x = load(p)
    assert abs(len(x) - 48000) <= 1 and abs(peak_hz(x, 16000) - 440) < 1.0
    assert np.abs(x[500:-500]).max() == pytest.approx(0.3, abs=0.01)
    y = np.concatenate(list(iter_blocks(p, AudioOptions(block_s=0.31))))
    np.testing.assert_allclose(y, x, atol=1e-5)
    assert len(load(p, AudioOptions(max_duration_s=1.0))) == 16000
    assert sum(map(len, iter_blocks(p, AudioOptions(max_duration_s=0.5, block_s=0.1)))) == 8000
    bad = tmp_path / "bad.xyz"
    bad.write_bytes(b"junk" * 10)
    with pytest.raises(AudioDecodeError, match="bad.xyz.*PyAV: Invalid data"):
        load(bad)


# --- PyAV (a default dependency): m4a/AAC and Opus, as VoxCeleb2 ships ------------------------


def _encode(path: Path, x: np.ndarray, rate: int, codec: str) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(x[None, :].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = rate
        for pkt in [*s.encode(frame), *s.encode(None)]:
            c.mux(pkt)
    return path


@pytest.mark.parametrize(("suffix", "codec"), [(".m4a", "aac"), (".opus", "libopus")])
def test_compressed_speech_decodes_out_of_the_box(suffix, codec, tmp_path: Path, librispeech: Path) -> None:
    import soxr

    from speakerid import Embedder

    x, sr = sf.read(librispeech / "103-1240-0000.flac", dtype="float32")
    x = x[: 6 * sr]
    up = soxr.resample(x, sr, 48000)
    p = _encode(tmp_path / f"speech{suffix}", up, 48000, codec)
    y = load(p)
    assert abs(len(y) - len(x)) < 0.05 * sr  # codec priming/padding only
    emb = Embedder("campplus")
    cos = float(emb.embed(p) @ emb.embed(x, sample_rate_hz=sr))
    assert cos > 0.95, cos  # the same speech, lossy-coded
