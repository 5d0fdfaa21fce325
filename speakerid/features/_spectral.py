"""Signal helpers shared by the GE2E and AutoSpeech front ends: volume normalisation, periodic
windows and librosa-style centred STFT frames."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Literal

import numpy as np

from ..errors import ConfigError, InvalidAudioError

_INT16_MAX = 2**15 - 1
#: Frames per STFT block: bounds memory on long inputs without slowing short ones.
_STFT_BLOCK_FRAMES = 2048


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
