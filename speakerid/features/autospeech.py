"""AutoSpeech |STFT| partials.

Mirrors AutoSpeech (VITA-Group/AutoSpeech data_objects/audio.py and transforms.py, also used
verbatim by the ailia-models auto_speech sample): volume normalised to -30 dBFS (increase
only, :func:`normalize_volume`), then |librosa.core.stft(wav, n_fft=512, hop_length=160,
win_length=400)| with librosa's defaults of the time (0.7.2: periodic Hann window zero-padded
to 512, centred frames with reflect padding), standardised per frequency bin with the
training set's mean and std, and cut into 300-frame partials with a 150-frame shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, InvalidAudioError, ModelError
from ._spectral import _fft_window, _stft_blocks, normalize_volume
from .base import PartialsFrontEnd


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


class AutoSpeech(PartialsFrontEnd):
    """AutoSpeech's front end: volume normalised, |STFT| standardised by the model's mean/std
    (``mean.npy``, ``std.npy`` in its directory), 300-frame partials."""

    name = "autospeech"
    user_name = "autospeech"
    options_type = AutoSpeechOptions
    files = ("mean", "std")

    def __init__(self, options: AutoSpeechOptions, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__(options)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    @classmethod
    def file_size(cls, options: AutoSpeechOptions) -> int:
        """Mean and std hold one value per STFT bin."""
        return options.num_bins

    @classmethod
    def probe(cls, options: AutoSpeechOptions) -> np.ndarray:
        return np.zeros((2, options.partial_frames, options.num_bins), np.float32)

    def features(self, speech: np.ndarray) -> np.ndarray:
        speech = normalize_volume(speech, self.options.target_dbfs, increase_only=True)
        spec = autospeech_spectrogram(speech, self.options)
        return autospeech_partials(spec, self.mean, self.std, self.options)
