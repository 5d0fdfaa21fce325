"""Audio input: decode files or in-memory arrays to float32 mono at one sample rate.

Files are decoded with soundfile (libsndfile: wav, flac, ogg, mp3 and more) and, when
libsndfile cannot read them and PyAV is importable, with PyAV (m4a, aac, webm, ...).
Channels are averaged, the result is resampled with soxr and clipped to [-1, 1].

:func:`load` returns a whole file; :func:`iter_blocks` yields the same samples (up to
resampler float noise) in blocks of about ``block_s`` seconds with bounded memory.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from .config import AudioOptions
from .errors import (
    AudioDecodeError,
    AudioError,
    AudioNotFoundError,
    EmptyAudioError,
    InvalidAudioError,
    NotAFileError,
)

__all__ = ["AudioInfo", "probe", "load", "iter_blocks", "prepare"]

#: The options used when none are given.
DEFAULT_OPTIONS = AudioOptions()
#: soxr quality used everywhere (``"HQ"``: 20-bit precision, steep low-pass).
RESAMPLE_QUALITY = "HQ"
# soundfile raises LibsndfileError (a RuntimeError); bad arguments give ValueError/TypeError.
_DECODE_ERRORS = (RuntimeError, ValueError, TypeError, OSError)


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, as reported by its decoder (frames may be estimated for PyAV)."""

    path: Path
    sample_rate_hz: int
    channels: int
    frames: int
    duration_s: float
    format: str
    #: Problems found while opening the file that did not stop decoding (a truncated file...).
    warnings: tuple[str, ...] = ()


def _import_av() -> ModuleType | None:
    try:
        import av  # type: ignore[import-not-found]
    except Exception:  # ImportError, or a broken binary install
        return None
    return av


def _check_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AudioDecodeError(f"cannot read {p}: a symbolic link loop") from None
        if exc.errno == errno.ENOENT:
            if p.is_symlink():
                raise AudioNotFoundError(f"audio file not found: {p} is a broken symbolic link") from None
            raise AudioNotFoundError(f"audio file not found: {p}") from None
        raise AudioDecodeError(f"cannot read {p}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise NotAFileError(f"not a regular file: {p}")
    if st.st_size == 0:
        raise AudioDecodeError(f"cannot decode {p}: the file is empty (0 bytes)")
    return p


def _header_truncation(f: sf.SoundFile) -> str | None:
    """libsndfile's own finding that the data chunk is shorter than its header declares."""
    for line in str(getattr(f, "extra_info", "")).splitlines():
        key, _, rest = line.partition(":")
        if key.strip().lower() == "data" and "should be" in rest:
            declared, _, actual = rest.partition("(should be")
            return (f"truncated file: its header declares {declared.strip()} bytes of audio data, "
                    f"the file holds {actual.strip(' )')}")
    return None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "error_string", None) or str(exc) or type(exc).__name__
    return text.rstrip(".")


class _Decoder:
    """A file opened at its own rate: soundfile, or PyAV when soundfile fails."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = _check_path(path)
        self._sf: sf.SoundFile | None = None
        self._av: Any = None
        try:
            self._sf = sf.SoundFile(str(self.path))
        except _DECODE_ERRORS as exc:
            reason = _reason(exc)
            av = _import_av()
            if av is None:
                raise AudioDecodeError(
                    f"cannot decode {self.path}: {reason} "
                    "(unsupported or corrupt file; installing PyAV adds more formats)"
                ) from None
            self._open_av(av, reason)
            return
        f = self._sf
        self.info = AudioInfo(
            self.path,
            int(f.samplerate),
            int(f.channels),
            max(int(f.frames), 0),
            max(int(f.frames), 0) / f.samplerate,
            str(f.format),
            tuple(w for w in (_header_truncation(f),) if w),
        )

    def _open_av(self, av: ModuleType, sf_reason: str) -> None:
        try:
            container = av.open(str(self.path))
            streams = container.streams.audio
            if not streams:
                container.close()
                raise AudioDecodeError(f"cannot decode {self.path}: no audio stream")
            st = streams[0]
            rate = int(st.sample_rate or st.codec_context.sample_rate or 0)
            cc = st.codec_context
            channels = int(getattr(cc, "channels", 0) or cc.layout.nb_channels or 0)
            if st.duration is not None and st.time_base is not None:
                duration = float(st.duration * st.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            else:
                duration = 0.0
        except AudioError:
            raise
        except Exception as exc:  # PyAV raises its own FFmpegError tree
            raise AudioDecodeError(f"cannot decode {self.path}: {sf_reason}; PyAV: {_reason(exc)}") from None
        if rate <= 0 or channels <= 0:
            container.close()
            raise AudioDecodeError(f"cannot decode {self.path}: bad sample rate or channels")
        self._av = (av, container, st)
        frames = int(round(duration * rate))
        self.info = AudioInfo(self.path, rate, channels, frames, frames / rate, str(container.format.name))

    def close(self) -> None:
        if self._sf is not None:
            self._sf.close()
        elif self._av is not None:
            self._av[1].close()

    def __enter__(self) -> _Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def limit(self, opts: AudioOptions) -> int | None:
        """Frames to read at the file's rate (None: all of them)."""
        if opts.max_duration_s is None:
            return None
        return max(1, int(round(opts.max_duration_s * self.info.sample_rate_hz)))

    def blocks(self, block_frames: int, limit: int | None) -> Iterator[np.ndarray]:
        """Mono float32 blocks at the file's rate; non-finite samples raise."""
        try:
            if self._sf is not None:
                raw = self._sf.blocks(
                    block_frames, frames=-1 if limit is None else limit, dtype="float32", always_2d=True
                )
            else:
                raw = self._av_blocks(block_frames, limit)
            for block in raw:
                mono = _downmix(block)
                if not np.isfinite(mono).all():
                    raise InvalidAudioError(f"{self.path}: samples contain NaN or infinity")
                yield mono
        except AudioError:
            raise
        except Exception as exc:
            raise AudioDecodeError(f"cannot decode {self.path}: {_reason(exc)}") from None

    def _av_blocks(self, block_frames: int, limit: int | None) -> Iterator[np.ndarray]:
        av, container, st = self._av
        resampler = av.AudioResampler(format="fltp")  # same rate and layout, float planar
        parts: list[np.ndarray] = []
        have = total = 0
        for frame in container.decode(st):
            for out in resampler.resample(frame):
                arr = np.asarray(out.to_ndarray(), dtype=np.float32).T  # (n, channels)
                if limit is not None:
                    arr = arr[: limit - total]
                parts.append(arr)
                have += len(arr)
                total += len(arr)
                if have >= block_frames:
                    yield np.concatenate(parts)
                    parts, have = [], 0
                if limit is not None and total >= limit:
                    break
            if limit is not None and total >= limit:
                break
        if parts:
            yield np.concatenate(parts)


def _downmix(block: np.ndarray) -> np.ndarray:
    if block.ndim == 1:
        return np.ascontiguousarray(block, dtype=np.float32)
    if block.shape[1] == 1:
        return np.ascontiguousarray(block[:, 0], dtype=np.float32)
    return block.mean(axis=1, dtype=np.float32)


def _finish(x: np.ndarray) -> np.ndarray:
    np.clip(x, -1.0, 1.0, out=x)
    return x


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """Rate, channels and length of a file, without decoding its samples."""
    with _Decoder(path) as dec:
        return dec.info


def load(path: str | os.PathLike[str], opts: AudioOptions = DEFAULT_OPTIONS) -> np.ndarray:
    """Decode a file to float32 mono in [-1, 1] at ``opts.sample_rate_hz``.

    Only the first ``opts.max_duration_s`` seconds are read when it is set.
    """
    with _Decoder(path) as dec:
        rate = dec.info.sample_rate_hz
        limit = dec.limit(opts)
        block = max(int(opts.block_s * rate), 1)
        parts = list(dec.blocks(block, limit))
    x = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if x.size == 0:
        raise EmptyAudioError(f"{dec.path}: the file holds no samples")
    if rate != opts.sample_rate_hz:
        x = soxr.resample(x, rate, opts.sample_rate_hz, quality=RESAMPLE_QUALITY)
    return _finish(np.ascontiguousarray(x, dtype=np.float32))


def iter_blocks(
    path: str | os.PathLike[str], opts: AudioOptions = DEFAULT_OPTIONS, warnings: list[str] | None = None
) -> Iterator[np.ndarray]:
    """Yield :func:`load`'s samples in blocks of about ``opts.block_s`` seconds.

    Decoding, down-mixing and resampling run block by block (soxr.ResampleStream), so
    memory stays bounded whatever the file's length. Blocks are never empty; a file with
    no samples raises EmptyAudioError before the first block. Problems that do not stop
    decoding (a truncated file) are appended to ``warnings`` when a list is given.
    """
    with _Decoder(path) as dec:
        if warnings is not None:
            warnings.extend(dec.info.warnings)
        rate = dec.info.sample_rate_hz
        stream = None
        if rate != opts.sample_rate_hz:
            stream = soxr.ResampleStream(
                rate, opts.sample_rate_hz, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )
        n_in = 0
        for x in dec.blocks(max(int(opts.block_s * rate), 1), dec.limit(opts)):
            n_in += x.size
            if stream is not None:
                x = stream.resample_chunk(x, last=False)
            if x.size:
                yield _finish(np.asarray(x, dtype=np.float32))
        if n_in == 0:
            raise EmptyAudioError(f"{dec.path}: the file holds no samples")
        if stream is not None:
            tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                yield _finish(np.asarray(tail, dtype=np.float32))


_INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0, np.dtype(np.int8): 128.0}


def prepare(samples: np.ndarray, sample_rate_hz: int, opts: AudioOptions = DEFAULT_OPTIONS) -> np.ndarray:
    """Turn in-memory samples into float32 mono in [-1, 1] at ``opts.sample_rate_hz``.

    ``samples`` is 1-D, or 2-D as (frames, channels); int16/int32/int8 are scaled to
    [-1, 1], uint8 is offset-binary, floats are clipped to [-1, 1]. ``max_duration_s``
    keeps only the start.
    """
    if (
        isinstance(sample_rate_hz, bool)
        or not isinstance(sample_rate_hz, int | np.integer)
        or sample_rate_hz <= 0
    ):
        raise InvalidAudioError(f"sample rate must be a positive integer, got {sample_rate_hz!r}")
    rate = int(sample_rate_hz)
    try:
        arr = np.asarray(samples)
    except (ValueError, TypeError) as exc:
        raise InvalidAudioError(f"samples are not an array of numbers: {exc}") from None
    if arr.ndim not in (1, 2):
        raise InvalidAudioError(f"samples must be 1-D or 2-D (frames, channels), got {arr.ndim}-D")
    if arr.size == 0:
        raise InvalidAudioError("samples are empty")
    if arr.ndim == 2 and arr.shape[1] > arr.shape[0]:
        raise InvalidAudioError(
            f"samples of shape {arr.shape} look like (channels, frames); pass (frames, channels)"
        )
    if arr.dtype in _INT_SCALE:
        x = arr.astype(np.float32) / np.float32(_INT_SCALE[arr.dtype])
    elif arr.dtype == np.uint8:
        x = (arr.astype(np.float32) - 128.0) / 128.0
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise InvalidAudioError("samples contain NaN or infinity")
        x = arr.astype(np.float32)
    else:
        raise InvalidAudioError(f"unsupported sample dtype {arr.dtype}")
    if opts.max_duration_s is not None:
        x = x[: max(1, int(round(opts.max_duration_s * rate)))]
    x = _downmix(x)
    if rate != opts.sample_rate_hz:
        x = soxr.resample(x, rate, opts.sample_rate_hz, quality=RESAMPLE_QUALITY)
    return _finish(np.array(x, dtype=np.float32))
