"""Acoustic front ends: samples (float32, mono, 16 kHz, [-1, 1]) -> feature matrices.

Each front end is a pure function of the samples and a frozen options dataclass; the options
of a model travel in its spec (see speakerid.models.spec), never as call-site flags.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from .errors import ConfigError, InvalidAudioError, ModelError

# === kaldi fbank (CAM++ and other Kaldi-style models) ======================




@dataclass(frozen=True)
class FbankOptions:
    """Kaldi log-mel filterbank options (kaldi-native-fbank names in the comments).

    The defaults are those of CAM++ as used by 3D-Speaker and senko: 80 bins, 25/10 ms
    povey frames, no dither, per-utterance mean normalisation.
    """

    num_mel_bins: int = 80  # mel_opts.num_bins
    sample_rate_hz: int = 16000  # frame_opts.samp_freq
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0  # non-zero makes features random; keep 0 for reproducible embeddings
    preemphasis: float = 0.97  # frame_opts.preemph_coeff
    remove_dc_offset: bool = True
    window_type: str = "povey"  # povey, hamming, hanning, rectangular, blackman
    round_to_power_of_two: bool = True
    snip_edges: bool = True
    low_freq_hz: float = 20.0  # mel_opts.low_freq
    high_freq_hz: float = 0.0  # mel_opts.high_freq; 0 = Nyquist, < 0 = offset from Nyquist
    use_power: bool = True  # power (not magnitude) spectrum
    #: Subtract the per-utterance mean over time from every bin (CMN without variance).
    cmn: bool = True


def _knf_options(opts: FbankOptions):
    import kaldi_native_fbank as knf

    o = knf.FbankOptions()
    f = o.frame_opts
    f.samp_freq = float(opts.sample_rate_hz)
    f.frame_length_ms = float(opts.frame_length_ms)
    f.frame_shift_ms = float(opts.frame_shift_ms)
    f.dither = float(opts.dither)
    f.preemph_coeff = float(opts.preemphasis)
    f.remove_dc_offset = bool(opts.remove_dc_offset)
    f.window_type = opts.window_type
    f.round_to_power_of_two = bool(opts.round_to_power_of_two)
    f.snip_edges = bool(opts.snip_edges)
    m = o.mel_opts
    m.num_bins = int(opts.num_mel_bins)
    m.low_freq = float(opts.low_freq_hz)
    m.high_freq = float(opts.high_freq_hz)
    m.is_librosa = False  # Kaldi triangles on the HTK mel scale
    o.use_energy = False
    o.use_power = bool(opts.use_power)
    o.use_log_fbank = True
    return o


def _knf_fbank(x: np.ndarray, opts: FbankOptions) -> np.ndarray:
    """Raw (no CMN) log-mel filterbank from kaldi-native-fbank: the reference implementation."""
    import kaldi_native_fbank as knf

    fb = knf.OnlineFbank(_knf_options(opts))
    if x.size:
        fb.accept_waveform(float(opts.sample_rate_hz), x)
    fb.input_finished()
    n = fb.num_frames_ready
    feats = np.empty((n, opts.num_mel_bins), dtype=np.float32)
    for i in range(n):  # get_frame returns a view into the extractor's buffer: copy each row
        feats[i] = fb.get_frame(i)
    return feats


# The numpy fbank follows kaldi-native-fbank step by step (feature-window.cc, mel-computations.cc,
# feature-fbank.cc): frame sizes, window and mel triangles are computed in float32 as there; the
# per-frame arithmetic and the FFT run in float64 (kaldi-native-fbank's FFT is float32 KISS FFT,
# whose rounding moves the log of near-silent bins by up to ~2.4e-3 on real speech).
_F32 = np.float32
_FLT_EPSILON = float(np.finfo(np.float32).eps)  # kaldi's log floor
_NUMPY_WINDOWS = ("povey", "hamming", "hanning", "hann", "rectangular", "blackman", "sine")
#: Frames per numpy block: small blocks keep the temporaries in cache (measured fastest).
_FBANK_BLOCK_FRAMES = 32


def _frame_sizes(opts: FbankOptions) -> tuple[int, int, int]:
    """(frame length, frame shift, FFT size) in samples, as FrameExtractionOptions computes them."""
    sr, ms = _F32(opts.sample_rate_hz), _F32(0.001)
    length = int(sr * ms * _F32(opts.frame_length_ms))
    shift = int(sr * ms * _F32(opts.frame_shift_ms))
    if length < 1 or shift < 1:
        raise ConfigError(f"kaldi fbank frames of {length} samples every {shift}: both must be >= 1")
    padded = 1 << (length - 1).bit_length() if opts.round_to_power_of_two else length
    return length, shift, padded


@lru_cache(maxsize=8)
def _kaldi_window(kind: str, length: int) -> np.ndarray:
    """kaldi's analysis window (computed in float64, stored as float32 as kaldi does)."""
    i = np.arange(length, dtype=np.float64)
    a = 2.0 * np.pi / (length if kind == "hann" else max(length - 1, 1))
    if kind in ("hanning", "hann"):
        w = 0.5 - 0.5 * np.cos(a * i)
    elif kind == "sine":
        w = np.sin(0.5 * a * i)
    elif kind == "hamming":
        w = 0.54 - 0.46 * np.cos(a * i)
    elif kind == "povey":
        w = (0.5 - 0.5 * np.cos(a * i)) ** 0.85
    elif kind == "rectangular":
        w = np.ones(length)
    else:  # blackman, kaldi's default coefficient 0.42
        c = float(_F32(0.42))
        w = c - 0.5 * np.cos(a * i) + (0.5 - c) * np.cos(2.0 * a * i)
    out = w.astype(_F32).astype(np.float64)
    out.flags.writeable = False
    return out


def _mel_scale(hz: np.ndarray | np.floating) -> np.ndarray:
    """kaldi's MelScale, 1127 * logf(1 + f / 700), in float32."""
    inner = (_F32(1.0) + np.asarray(hz, _F32) / _F32(700.0)).astype(np.float64)
    return (_F32(1127.0) * np.log(inner).astype(_F32)).astype(_F32)


@lru_cache(maxsize=8)
def _kaldi_mel_banks(
    num_bins: int, sample_rate_hz: int, padded: int, low_hz: float, high_hz: float
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """kaldi's mel triangles over the first ``padded // 2`` FFT bins, as two interleaved sets.

    Even bins never overlap one another, nor do odd bins, so each set is one weight per FFT bin
    (``padded // 2 + 1`` values, the last one zero) and ``np.add.reduceat`` indices whose even
    slots delimit each bin's triangle.
    """
    n_fft = padded // 2
    sr = _F32(sample_rate_hz)
    nyquist = _F32(0.5) * sr
    low = _F32(low_hz)
    high = _F32(high_hz) if high_hz > 0 else _F32(nyquist + _F32(high_hz))
    if num_bins < 3 or not (0 <= low < nyquist and 0 < high <= nyquist and low < high):
        raise ConfigError(
            f"kaldi fbank: {num_bins} mel bins from {low_hz} to {high_hz} Hz at {sample_rate_hz} Hz "
            "(need >= 3 bins and 0 <= low < high <= Nyquist)"
        )
    mel_low, mel_high = _mel_scale(low), _mel_scale(high)
    delta = _F32((mel_high - mel_low) / _F32(num_bins + 1))
    b = np.arange(num_bins, dtype=_F32)[:, None]
    left = (mel_low + b * delta).astype(_F32)
    center = (mel_low + (b + _F32(1)) * delta).astype(_F32)
    right = (mel_low + (b + _F32(2)) * delta).astype(_F32)
    mel = _mel_scale((sr / _F32(padded)) * np.arange(n_fft, dtype=_F32))[None]
    inside = (mel > left) & (mel < right)
    if not inside.any(axis=1).all():
        raise ConfigError(f"kaldi fbank: {num_bins} mel bins leave some bins empty; use fewer")
    rising = ((mel - left) / (center - left)).astype(_F32)
    falling = ((right - mel) / (right - center)).astype(_F32)
    weights = np.where(inside, np.where(mel <= center, rising, falling), 0.0)
    sets = []
    for parity in (0, 1):
        ins = inside[parity::2]
        w = np.zeros(n_fft + 1)
        w[:n_fft] = weights[parity::2].sum(axis=0)  # one triangle at most per FFT bin
        first = ins.argmax(axis=1)
        stop = n_fft - ins[:, ::-1].argmax(axis=1)
        idx = np.stack([first, stop], axis=1).reshape(-1)
        w.flags.writeable = idx.flags.writeable = False
        sets.append((w, idx))
    return sets[0], sets[1]


def _kaldi_frames(x: np.ndarray, length: int, shift: int, snip_edges: bool) -> np.ndarray:
    """(frames, length) view or copy of ``x``, as kaldi's ExtractWindow cuts them."""
    n = x.size
    count = (1 + (n - length) // shift if n >= length else 0) if snip_edges else (n + shift // 2) // shift
    if count == 0:
        return np.zeros((0, length))
    if snip_edges:
        return np.lib.stride_tricks.sliding_window_view(x, length)[::shift][:count]
    idx = shift // 2 - length // 2 + shift * np.arange(count)[:, None] + np.arange(length)
    idx = np.mod(idx, 2 * n)  # reflect at both ends: -1 -> 0, n -> n - 1 (repeatedly)
    return x[np.where(idx >= n, 2 * n - 1 - idx, idx)]


def _numpy_fbank(x: np.ndarray, opts: FbankOptions) -> np.ndarray:
    """Raw (no CMN) log-mel filterbank, vectorised over blocks of frames."""
    length, shift, padded = _frame_sizes(opts)
    bins = opts.num_mel_bins
    even, odd = _kaldi_mel_banks(bins, opts.sample_rate_hz, padded, opts.low_freq_hz, opts.high_freq_hz)
    frames = _kaldi_frames(x.astype(np.float64), length, shift, opts.snip_edges)
    n = frames.shape[0]
    out = np.empty((n, bins), dtype=np.float32)
    if n == 0:
        return out
    window = _kaldi_window(opts.window_type, length)
    c = float(_F32(opts.preemphasis))
    block = min(_FBANK_BLOCK_FRAMES, n)
    buf = np.zeros((block, padded))  # columns past ``length`` stay zero: the FFT padding
    mel = np.empty((block, bins))
    for s in range(0, n, block):
        fr = frames[s : s + block]
        m = fr.shape[0]
        b, e = buf[:m], mel[:m]
        # DC removal then pre-emphasis: y[i] = x[i] - c x[i-1] - (1 - c) mean, y[0] = (1 - c) (x[0] - mean)
        np.multiply(fr[:, :-1], -c, out=b[:, 1:length])
        b[:, 1:length] += fr[:, 1:]
        np.multiply(fr[:, 0], 1.0 - c, out=b[:, 0])
        if opts.remove_dc_offset:
            b[:, :length] -= (1.0 - c) * fr.mean(axis=1, keepdims=True)
        b[:, :length] *= window
        spec = np.fft.rfft(b, axis=1)
        power = np.square(spec.real)
        power += np.square(spec.imag)
        if not opts.use_power:
            np.sqrt(power, out=power)
        e[:, 0::2] = np.add.reduceat(power * even[0], even[1], axis=1)[:, ::2]
        e[:, 1::2] = np.add.reduceat(power * odd[0], odd[1], axis=1)[:, ::2]
        np.maximum(e, _FLT_EPSILON, out=e)
        np.log(e, out=out[s : s + m], casting="same_kind")
    return out


def _numpy_supported(opts: FbankOptions) -> bool:
    return opts.dither == 0.0 and opts.window_type in _NUMPY_WINDOWS and 0.0 <= opts.preemphasis <= 1.0


def kaldi_fbank(samples: np.ndarray, opts: FbankOptions) -> np.ndarray:
    """Log-mel filterbank of ``samples`` (1-D float in [-1, 1]): float32 ``(frames, bins)``.

    Computed with numpy (kaldi-native-fbank's algorithm, float64 FFT), or with
    kaldi-native-fbank itself for options the numpy path does not cover (dither). The samples
    are used as they are (not scaled to the int16 range): with ``cmn`` a global gain only
    shifts every log energy by a constant, which the mean subtraction removes, except in bins
    floored at kaldi's epsilon; the [-1, 1] scale is what CAM++ was run with in senko. Fewer
    samples than one frame give ``(0, bins)``.
    """
    x = np.asarray(samples)
    if x.ndim != 1:
        raise InvalidAudioError(f"kaldi_fbank expects 1-D samples, got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    feats = _numpy_fbank(x, opts) if _numpy_supported(opts) else _knf_fbank(x, opts)
    if opts.cmn and len(feats):
        feats -= feats.mean(axis=0, dtype=np.float64).astype(np.float32)
    return feats


# === GE2E mel (Resemblyzer) =================================================
#
# Mirrors Resemblyzer 0.1.4 (audio.wav_to_mel_spectrogram, audio.normalize_volume,
# VoiceEncoder.compute_partial_slices / embed_utterance), whose mel spectrogram is
# librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, n_mels=40) with
# librosa's defaults: centred frames with zero padding, periodic Hann window, power 2, Slaney
# mel scale and Slaney area normalisation. Not a log-mel: the network takes linear power.

# (dataclass and InvalidAudioError are imported by the kaldi fbank section above.)


_INT16_MAX = 2**15 - 1
#: Frames per STFT block: bounds memory on long inputs without slowing short ones.
_STFT_BLOCK_FRAMES = 2048


@dataclass(frozen=True)
class Ge2eMelOptions:
    """Resemblyzer's front end (hparams.py of Resemblyzer 0.1.4)."""

    sample_rate_hz: int = 16000
    window_ms: float = 25.0
    hop_ms: float = 10.0
    num_mel_bins: int = 40
    #: Volume normalisation target of :func:`normalize_volume` (increase only).
    target_dbfs: float = -30.0
    #: Frames per partial utterance fed to the network (1.6 s).
    partial_frames: int = 160
    #: Partial utterances per second of audio (sets the step between partials).
    partials_per_s: float = 1.3
    #: Keep the last, zero-padded partial only if the audio covers this share of it.
    min_coverage: float = 0.75

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0 or self.num_mel_bins <= 0 or self.partial_frames <= 0:
            raise ConfigError(f"invalid GE2E front end options: {self}")
        if self.n_fft <= 0 or self.hop_length <= 0:
            raise ConfigError(f"GE2E window and hop must be at least one sample: {self}")
        if not 0.0 < self.min_coverage <= 1.0:
            raise ConfigError(f"GE2E min_coverage must be in (0, 1], got {self.min_coverage}")
        if not 0 < self.frame_step <= self.partial_frames:
            raise ConfigError(
                f"GE2E partials_per_s={self.partials_per_s} gives a step of {self.frame_step} "
                f"frames; it must be between 1 and partial_frames={self.partial_frames}"
            )

    @property
    def n_fft(self) -> int:
        return int(self.sample_rate_hz * self.window_ms / 1000)

    @property
    def hop_length(self) -> int:
        return int(self.sample_rate_hz * self.hop_ms / 1000)

    @property
    def frame_step(self) -> int:
        """Frames between the starts of two partials (77 with the defaults)."""
        if self.partials_per_s <= 0:
            return 0
        return int(np.round((self.sample_rate_hz / self.partials_per_s) / self.hop_length))


def normalize_volume(samples: np.ndarray, target_dbfs: float, increase_only: bool = True) -> np.ndarray:
    """Scale ``samples`` so their RMS level is ``target_dbfs`` (dB relative to int16 full scale).

    Same maths as Resemblyzer's ``normalize_volume``; with ``increase_only`` louder input is
    returned unchanged. Silent (all-zero) or empty input is returned unchanged instead of
    being multiplied by infinity. Returns float32.
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.size == 0:
        return x.copy()
    rms = float(np.sqrt(np.mean(np.square(x.astype(np.float64) * _INT16_MAX))))
    if not np.isfinite(rms) or rms <= 0.0:
        return x.copy()
    change_db = target_dbfs - 20.0 * np.log10(rms / _INT16_MAX)
    if increase_only and change_db < 0:
        return x.copy()
    return (x.astype(np.float64) * 10.0 ** (change_db / 20.0)).astype(np.float32)


def _periodic_window(kind: str, length: int) -> np.ndarray:
    """``scipy.signal.get_window(kind, length, fftbins=True)`` for Hann and Hamming."""
    phase = 2.0 * np.pi * np.arange(length) / length
    if kind == "hann":
        return 0.5 - 0.5 * np.cos(phase)
    if kind == "hamming":
        return 0.54 - 0.46 * np.cos(phase)
    raise ConfigError(f"unknown window {kind!r} (hann or hamming)")


@lru_cache(maxsize=8)
def _fft_window(kind: str, win_length: int, n_fft: int) -> np.ndarray:
    """The analysis window zero-padded (centred) to ``n_fft``, like librosa's ``pad_center``."""
    out = np.zeros(n_fft, dtype=np.float64)
    left = (n_fft - win_length) // 2
    out[left : left + win_length] = _periodic_window(kind, win_length)
    out.flags.writeable = False
    return out


def _stft_blocks(
    samples: np.ndarray, n_fft: int, hop: int, window: np.ndarray, pad_mode: Literal["constant", "reflect"]
) -> Iterator[np.ndarray]:
    """Complex STFT of centred frames, ``(frames, n_fft // 2 + 1)``, in blocks of frames.

    Frame t covers ``padded[t * hop : t * hop + n_fft]`` where ``padded`` is ``samples`` padded
    by ``n_fft // 2`` on both sides with ``pad_mode`` ("constant": zeros, "reflect"), as
    ``librosa.stft(center=True)``; there are ``1 + len(samples) // hop`` frames.
    """
    y = np.asarray(samples, dtype=np.float64)
    if pad_mode == "reflect" and y.size == 0:
        raise InvalidAudioError("cannot reflect-pad an empty signal")
    padded = np.pad(y, n_fft // 2, mode=pad_mode)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    for start in range(0, frames.shape[0], _STFT_BLOCK_FRAMES):
        yield np.fft.rfft(frames[start : start + _STFT_BLOCK_FRAMES] * window, axis=1)


def _hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / f_sp
    high = hz >= min_log_hz
    mel[high] = min_log_mel + np.log(hz[high] / min_log_hz) / logstep
    return mel


def _mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * f_sp
    high = mel >= min_log_mel
    hz[high] = min_log_hz * np.exp(logstep * (mel[high] - min_log_mel))
    return hz


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate_hz: int, n_fft: int, n_mels: int) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` Slaney-scale, Slaney-normalised triangular filters.

    Same construction as ``librosa.filters.mel(sr, n_fft, n_mels)`` (fmin 0, fmax sr / 2,
    htk False, norm "slaney"), computed in float64. Read-only (cached).
    """
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate_hz)
    edges_mel = np.linspace(
        _hz_to_mel_slaney(np.array([0.0]))[0],
        _hz_to_mel_slaney(np.array([sample_rate_hz / 2.0]))[0],
        n_mels + 2,
    )
    edges = _mel_to_hz_slaney(edges_mel)
    widths = np.diff(edges)
    ramps = edges[:, np.newaxis] - fft_freqs[np.newaxis, :]
    lower = -ramps[:-2] / widths[:-1, np.newaxis]
    upper = ramps[2:] / widths[1:, np.newaxis]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, np.newaxis]
    weights.flags.writeable = False
    return weights


def ge2e_mel(samples: np.ndarray, opts: Ge2eMelOptions) -> np.ndarray:
    """Linear mel power spectrogram ``(1 + len(samples) // hop, num_mel_bins)``, float32.

    Equal (to float32 rounding) to Resemblyzer's ``wav_to_mel_spectrogram``, i.e.
    ``librosa.feature.melspectrogram(...).T`` with librosa 0.11 defaults.
    """
    n_fft, hop = opts.n_fft, opts.hop_length
    window = _fft_window("hann", n_fft, n_fft)
    fbank_t = mel_filterbank(opts.sample_rate_hz, n_fft, opts.num_mel_bins).T
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    out = np.empty((1 + x.size // hop, opts.num_mel_bins), dtype=np.float32)
    row = 0
    for block in _stft_blocks(x, n_fft, hop, window, "constant"):
        power = np.square(block.real) + np.square(block.imag)
        out[row : row + block.shape[0]] = power @ fbank_t
        row += block.shape[0]
    return out


def ge2e_partial_starts(num_samples: int, opts: Ge2eMelOptions) -> list[int]:
    """First frame of each partial, as Resemblyzer's ``VoiceEncoder.compute_partial_slices``.

    Partials are ``partial_frames`` long and ``frame_step`` apart, covering the whole signal;
    the last one is dropped when the audio fills less than ``min_coverage`` of it (unless it
    is the only one). There is always at least one partial.
    """
    hop, length, step = opts.hop_length, opts.partial_frames, opts.frame_step
    n_frames = int(np.ceil((num_samples + 1) / hop))
    starts = list(range(0, max(1, n_frames - length + step + 1), step))
    coverage = (num_samples - starts[-1] * hop) / (length * hop)
    if coverage < opts.min_coverage and len(starts) > 1:
        starts.pop()
    return starts


def ge2e_partials(samples: np.ndarray, opts: Ge2eMelOptions) -> np.ndarray:
    """Partial-utterance mel spectrograms ``(N, partial_frames, num_mel_bins)``, float32.

    Reproduces ``VoiceEncoder.embed_utterance`` up to the network: the signal is zero-padded
    to the end of the last partial, its mel spectrogram computed, and the partials cut from it.
    Volume normalisation is not applied here (see :func:`normalize_volume`). The utterance
    embedding is the L2-normalised mean of the network's outputs over the partials.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    starts = ge2e_partial_starts(x.size, opts)
    end = (starts[-1] + opts.partial_frames) * opts.hop_length
    if end >= x.size:
        x = np.pad(x, (0, end - x.size))
    mel = ge2e_mel(x, opts)
    return np.stack([mel[s : s + opts.partial_frames] for s in starts])


# === AutoSpeech |STFT| ======================================================
#
# Mirrors AutoSpeech (VITA-Group/AutoSpeech data_objects/audio.py and transforms.py, also used
# verbatim by the ailia-models auto_speech sample): volume normalised to -30 dBFS (increase
# only, :func:`normalize_volume`), then |librosa.core.stft(wav, n_fft=512, hop_length=160,
# win_length=400)| with librosa's defaults of the time (0.7.2: periodic Hann window zero-padded
# to 512, centred frames with reflect padding), standardised per frequency bin with the
# training set's mean and std, and cut into 300-frame partials with a 150-frame shift.


@dataclass(frozen=True)
class AutoSpeechOptions:
    """AutoSpeech's front end (data_objects/params_data.py; the ailia sample's constants)."""

    sample_rate_hz: int = 16000
    #: Volume normalisation target of :func:`normalize_volume` (increase only).
    target_dbfs: float = -30.0
    n_fft: int = 512
    window_ms: float = 25.0
    hop_ms: float = 10.0
    partial_frames: int = 300
    partial_shift_frames: int = 150
    #: Analysis window: upstream uses librosa's default, a periodic Hann window.
    window: str = "hann"

    def __post_init__(self) -> None:
        if self.window not in ("hann", "hamming"):
            raise ConfigError(f"AutoSpeech window must be 'hann' or 'hamming', got {self.window!r}")
        if not 0 < self.win_length <= self.n_fft or self.hop_length <= 0:
            raise ConfigError(f"invalid AutoSpeech STFT options: {self}")
        if self.partial_frames <= 0 or self.partial_shift_frames <= 0:
            raise ConfigError(f"invalid AutoSpeech partial options: {self}")

    @property
    def win_length(self) -> int:
        return int(self.sample_rate_hz * self.window_ms / 1000)

    @property
    def hop_length(self) -> int:
        return int(self.sample_rate_hz * self.hop_ms / 1000)

    @property
    def num_bins(self) -> int:
        return self.n_fft // 2 + 1


def autospeech_spectrogram(samples: np.ndarray, opts: AutoSpeechOptions) -> np.ndarray:
    """Linear STFT magnitude ``(1 + len(samples) // hop, n_fft // 2 + 1)``, float32.

    Equal (to float32 rounding) to ``np.abs(librosa.stft(samples, n_fft=512, hop_length=160,
    win_length=400, window=opts.window, center=True, pad_mode="reflect")).T``. Volume
    normalisation is a separate step (:func:`normalize_volume`). Raises
    :class:`InvalidAudioError` for empty input (it cannot be reflect-padded).
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    window = _fft_window(opts.window, opts.win_length, opts.n_fft)
    out = np.empty((1 + x.size // opts.hop_length, opts.num_bins), dtype=np.float32)
    row = 0
    for block in _stft_blocks(x, opts.n_fft, opts.hop_length, window, "reflect"):
        out[row : row + block.shape[0]] = np.abs(block)
        row += block.shape[0]
    return out


def autospeech_partials(
    spec: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    opts: AutoSpeechOptions,
) -> np.ndarray:
    """Standardised partials ``(N, partial_frames, bins)``, float32, as AutoSpeech's test set.

    ``(spec - mean) / std`` per frequency bin, then AutoSpeech's ``generate_test_sequence``:
    while the spectrogram has no more than ``partial_frames`` frames, every frame is doubled
    (``np.repeat(.., 2, axis=0)``: a time stretch, not a tiling); partials then start at 0,
    ``partial_shift_frames``, ... while they fit entirely (a tail shorter than a partial is
    dropped). The utterance embedding is the mean of the network's outputs over partials.
    """
    s = np.asarray(spec)
    if s.ndim != 2 or s.shape[0] == 0:
        raise InvalidAudioError(f"expected a non-empty (frames, bins) spectrogram, got {s.shape}")
    bins = s.shape[1]
    m = np.asarray(mean, dtype=np.float64).reshape(-1)
    d = np.asarray(std, dtype=np.float64).reshape(-1)
    if m.shape != (bins,) or d.shape != (bins,):
        raise ModelError(f"AutoSpeech mean/std have {m.size}/{d.size} values for {bins} frequency bins")
    feats = ((s.astype(np.float64) - m) / d).astype(np.float32)
    while feats.shape[0] <= opts.partial_frames:
        feats = np.repeat(feats, 2, axis=0)
    length, shift = opts.partial_frames, opts.partial_shift_frames
    starts = range(0, feats.shape[0] - length + 1, shift)
    return np.stack([feats[i : i + length] for i in starts])
