"""Kaldi log-mel filterbank (CAM++ and other Kaldi-style models), in numpy.

The numpy fbank follows kaldi-native-fbank step by step (feature-window.cc, mel-computations.cc,
feature-fbank.cc): frame sizes, window and mel triangles are computed in float32 as there; the
per-frame arithmetic and the FFT run in float64 (kaldi-native-fbank's FFT is float32 KISS FFT,
whose rounding moves the log of near-silent bins by up to ~2.4e-3 on real speech).
kaldi-native-fbank itself is only the tests' oracle (tests/knf_oracle.py), not a run-time
dependency: the numpy path covers every option, dither included, and is 2-3.5x faster
(BENCHMARKS.md: 2.8 against 9.7 ms for 10 s of speech).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import ConfigError, InvalidAudioError
from .._scratch import FFT_OUT, Scratch
from .base import FrontEnd


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
    #: Standard deviation of the Gaussian noise added to every frame's samples (on the [-1, 1]
    #: scale of the samples), as kaldi does; the noise is seeded (see :func:`kaldi_fbank`).
    dither: float = 0.0
    preemphasis: float = 0.97  # frame_opts.preemph_coeff
    remove_dc_offset: bool = True
    window_type: str = "povey"  # povey, hamming, hanning, hann, rectangular, blackman, sine
    round_to_power_of_two: bool = True
    snip_edges: bool = True
    low_freq_hz: float = 20.0  # mel_opts.low_freq
    high_freq_hz: float = 0.0  # mel_opts.high_freq; 0 = Nyquist, < 0 = offset from Nyquist
    use_power: bool = True  # power (not magnitude) spectrum
    #: Subtract the per-utterance mean over time from every bin (CMN without variance).
    cmn: bool = True


_F32 = np.float32
_FLT_EPSILON = float(np.finfo(np.float32).eps)  # kaldi's log floor
WINDOW_TYPES = ("povey", "hamming", "hanning", "hann", "rectangular", "blackman", "sine")
#: Frames per numpy block: small blocks keep the temporaries in cache (measured fastest).
_FBANK_BLOCK_FRAMES = 32
#: The fbank's whole-signal and per-block temporaries, reused per thread (speakerid._scratch: 10 s
#: of speech on an AVX2 EPYC VM, 12.3-14.4 ms with fresh arrays, 8.7-10.8 ms reused).
_SCRATCH = Scratch()


def _check_options(opts: FbankOptions) -> None:
    """What kaldi-native-fbank refuses, refused with a ConfigError (mel bins: _mel_triangles)."""
    if opts.window_type not in WINDOW_TYPES:
        raise ConfigError(f"kaldi fbank: invalid window type {opts.window_type!r}; choose one of {', '.join(WINDOW_TYPES)}")
    if not 0.0 <= opts.preemphasis <= 1.0:
        raise ConfigError(f"kaldi fbank: preemphasis must be in [0, 1], got {opts.preemphasis}")
    if not (math.isfinite(opts.dither) and opts.dither >= 0.0):
        raise ConfigError(f"kaldi fbank: dither must be >= 0, got {opts.dither}")
    sizes = (opts.sample_rate_hz, opts.frame_length_ms, opts.frame_shift_ms, opts.low_freq_hz, opts.high_freq_hz)
    if not all(math.isfinite(v) for v in sizes) or opts.sample_rate_hz <= 0:
        raise ConfigError(f"kaldi fbank: rate, frame sizes and mel edges must be finite, got {sizes}")


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
    elif kind == "blackman":  # kaldi's default coefficient 0.42
        c = float(_F32(0.42))
        w = c - 0.5 * np.cos(a * i) + (0.5 - c) * np.cos(2.0 * a * i)
    else:
        raise ConfigError(f"kaldi fbank: invalid window type {kind!r}")
    out = w.astype(_F32).astype(np.float64)
    out.flags.writeable = False
    return out


def _mel_scale(hz: np.ndarray | np.floating) -> np.ndarray:
    """kaldi's MelScale, 1127 * logf(1 + f / 700), in float32."""
    inner = (_F32(1.0) + np.asarray(hz, _F32) / _F32(700.0)).astype(np.float64)
    return (_F32(1127.0) * np.log(inner).astype(_F32)).astype(_F32)


def _mel_triangles(
    num_bins: int, sample_rate_hz: int, padded: int, low_hz: float, high_hz: float
) -> tuple[np.ndarray, np.ndarray]:
    """kaldi's mel triangles: ``(weights, inside)``, both ``(num_bins, padded // 2)``."""
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
    return np.where(inside, np.where(mel <= center, rising, falling), 0.0), inside


@lru_cache(maxsize=8)
def _kaldi_mel_matrix(num_bins: int, sample_rate_hz: int, padded: int, low_hz: float, high_hz: float) -> np.ndarray:
    """kaldi's mel triangles as a ``(padded // 2 + 1, num_bins)`` float64 matrix (the Nyquist row
    zero, as kaldi leaves it out): ``power @ matrix`` is the mel energies. One BLAS product is
    ~4x faster than summing each triangle (np.add.reduceat) on 10 s of speech."""
    weights, _ = _mel_triangles(num_bins, sample_rate_hz, padded, low_hz, high_hz)
    m = np.zeros((padded // 2 + 1, num_bins))
    m[: padded // 2] = weights.T
    m.flags.writeable = False
    return m


def _kaldi_signal(x: np.ndarray, length: int, shift: int, snip_edges: bool) -> tuple[np.ndarray, int]:
    """(signal, frame count): kaldi's frames are ``signal[f * shift : f * shift + length]``.

    With ``snip_edges`` the signal is ``x``; otherwise frames are centred on ``f * shift +
    shift // 2`` and reach past both ends, where kaldi's ExtractWindow reflects the samples
    (-1 -> 0, n -> n - 1, repeatedly): the signal is ``x`` padded with those reflections."""
    n = x.size
    count = (1 + (n - length) // shift if n >= length else 0) if snip_edges else (n + shift // 2) // shift
    if count == 0 or snip_edges:
        return x, count
    first = shift // 2 - length // 2
    idx = np.mod(np.arange(first, first + shift * (count - 1) + length), 2 * n)
    return x[np.where(idx >= n, 2 * n - 1 - idx, idx)], count


def _numpy_fbank(x: np.ndarray, opts: FbankOptions, dither_seed: int | None = 0) -> np.ndarray:
    """Raw (no CMN) log-mel filterbank, vectorised over blocks of frames.

    Per frame kaldi removes the DC offset, pre-emphasises (y[i] = x[i] - c x[i-1], y[0] =
    (1 - c) x[0]) and windows. Both first steps are linear, so they run on the whole signal once
    (d = x[1:] - c x[:-1]; each frame's mean from a cumulative sum) and a frame is then
    ``window * (d - (1 - c) mean)`` read from a strided view: two passes over the frames
    instead of six (10 s of speech: 6.3 -> 4.7 ms with the mel product below, 3.5 ms with the
    frame means from chunk sums and the pre-emphasis in place). Dither noise,
    drawn per frame as kaldi does, goes through the same linear steps and is added."""
    length, shift, padded = _frame_sizes(opts)
    bins = opts.num_mel_bins
    mel_matrix = _kaldi_mel_matrix(bins, opts.sample_rate_hz, padded, opts.low_freq_hz, opts.high_freq_hz)
    get = _SCRATCH.get
    x64 = get("x64", x.shape, np.float64)
    x64[:] = x
    sig, n = _kaldi_signal(x64, length, shift, opts.snip_edges)
    out = np.empty((n, bins), dtype=np.float32)
    if n == 0:
        return out
    window = _kaldi_window(opts.window_type, length)
    c = float(_F32(opts.preemphasis))
    starts = shift * np.arange(n)
    if opts.remove_dc_offset:  # frame sums from sums of gcd(length, shift)-sample chunks
        g = math.gcd(length, shift)
        chunks = (shift * (n - 1) + length) // g
        csum = np.zeros(chunks + 1)
        np.cumsum(sig[: chunks * g].reshape(chunks, g).sum(axis=1), out=csum[1:])
        first = starts // g
        means = (csum[first + length // g] - csum[first]) / length
    else:
        means = np.zeros(n)
    # in place: a cumulative sum and two temporaries of the whole signal cost 1.6 of the 4.7 ms
    # of 10 s of speech (each fresh 1.3 MB array is page-faulted in); this way 0.2 ms
    diff = get("diff", (sig.size - 1,), np.float64)
    np.multiply(sig[:-1], -c, out=diff)
    diff += sig[1:]
    rest = np.lib.stride_tricks.sliding_window_view(diff, length - 1)[::shift] if length > 1 else None
    rng = np.random.default_rng(dither_seed) if opts.dither != 0.0 else None
    block = min(_FBANK_BLOCK_FRAMES, n)
    buf = get("frames", (block, padded), np.float64)
    buf[:, length:] = 0.0  # columns past ``length`` stay zero: the FFT padding
    spec_buf = get("spec", (block, padded // 2 + 1), np.complex128)
    power_buf, imag_buf = get("power", spec_buf.shape, np.float64), get("imag", spec_buf.shape, np.float64)
    e_buf = get("mel", (block, bins), np.float64)
    for s in range(0, n, block):
        m = min(block, n - s)
        b, mu = buf[:m], means[s : s + m, None]
        b[:, 0] = (1.0 - c) * (sig[starts[s : s + m]] - mu[:, 0])
        if rest is not None:
            np.subtract(rest[s : s + m], (1.0 - c) * mu, out=b[:, 1:length])
        if rng is not None:  # kaldi's Dither: fresh N(0, dither^2) noise (float32) on each frame's own samples
            noise = opts.dither * rng.standard_normal((m, length), dtype=np.float32).astype(np.float64)
            if opts.remove_dc_offset:
                noise -= noise.mean(axis=1, keepdims=True)
            b[:, 1:length] += noise[:, 1:] - c * noise[:, :-1]
            b[:, 0] += (1.0 - c) * noise[:, 0]
        b[:, :length] *= window
        spec = np.fft.rfft(b, axis=1, out=spec_buf[:m]) if FFT_OUT else np.fft.rfft(b, axis=1)
        power = np.square(spec.real, out=power_buf[:m])
        power += np.square(spec.imag, out=imag_buf[:m])
        if not opts.use_power:
            np.sqrt(power, out=power)
        e = np.matmul(power, mel_matrix, out=e_buf[:m])
        np.maximum(e, _FLT_EPSILON, out=e)
        np.log(e, out=out[s : s + m], casting="same_kind")
    return out


def kaldi_fbank(samples: np.ndarray, opts: FbankOptions, *, dither_seed: int | None = 0) -> np.ndarray:
    """Log-mel filterbank of ``samples`` (1-D float in [-1, 1]): float32 ``(frames, bins)``.

    kaldi-native-fbank's algorithm in numpy (float64 FFT). The samples are used as they are
    (not scaled to the int16 range): with ``cmn`` a global gain only shifts every log energy by
    a constant, which the mean subtraction removes, except in bins floored at kaldi's epsilon;
    the [-1, 1] scale is what CAM++ was run with in senko. Fewer samples than one frame give
    ``(0, bins)``.

    Dither (``opts.dither`` > 0) adds ``dither * N(0, 1)`` noise to each frame's samples before
    DC removal and pre-emphasis, as kaldi does, from ``numpy.random.default_rng(dither_seed)``
    created afresh on every call: the same samples always give the same features (so embeddings
    stay reproducible). ``dither_seed=None`` draws fresh noise each call, as kaldi-native-fbank.
    """
    x = np.asarray(samples)
    if x.ndim != 1:
        raise InvalidAudioError(f"kaldi_fbank expects 1-D samples, got shape {x.shape}")
    _check_options(opts)
    x = np.ascontiguousarray(x, dtype=np.float32)
    feats = _numpy_fbank(x, opts, dither_seed)
    if opts.cmn and len(feats):
        feats -= feats.mean(axis=0, dtype=np.float64).astype(np.float32)
    return feats


class KaldiFbank(FrontEnd):
    """Kaldi fbank + mean normalisation (CAM++, WeSpeaker and 3D-Speaker exports): the encoder
    takes each whole window, ``(1, frames, bins)`` (padding would change its statistics pooling)."""

    name = "kaldi_fbank"
    user_name = "fbank"
    options_type = FbankOptions

    def features(self, speech: np.ndarray) -> np.ndarray:
        return kaldi_fbank(speech, self.options)

    @classmethod
    def probe(cls, options: FbankOptions) -> np.ndarray:
        """The features of 2 s of silence, as a batch of one (bad options fail here)."""
        return kaldi_fbank(np.zeros(options.sample_rate_hz * 2, np.float32), options)[None]
