"""GE2E mel partials (Resemblyzer).

Mirrors Resemblyzer 0.1.4 (audio.wav_to_mel_spectrogram, audio.normalize_volume,
VoiceEncoder.compute_partial_slices / embed_utterance), whose mel spectrogram is
librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, n_mels=40) with
librosa's defaults: centred frames with zero padding, periodic Hann window, power 2, Slaney
mel scale and Slaney area normalisation. Not a log-mel: the network takes linear power.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import ConfigError
from ._spectral import _fft_window, _stft_blocks, normalize_volume
from .base import PartialsFrontEnd


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


class Ge2eMel(PartialsFrontEnd):
    """Resemblyzer's GE2E front end: volume normalised (increase only), then mel partials."""

    name = "ge2e_mel"
    options_type = Ge2eMelOptions

    def features(self, speech: np.ndarray) -> np.ndarray:
        speech = normalize_volume(speech, self.options.target_dbfs, increase_only=True)
        return ge2e_partials(speech, self.options)

    @classmethod
    def probe(cls, options: Ge2eMelOptions) -> np.ndarray:
        return np.zeros((2, options.partial_frames, options.num_mel_bins), np.float32)
