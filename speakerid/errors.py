"""Typed errors raised by the library.

The library never prints or exits; the CLI turns any ``SpeakeridError`` into one
line on stderr and exit code 2.
"""

from __future__ import annotations


class SpeakeridError(Exception):
    """Base class of every error speakerid raises on purpose."""


class ConfigError(SpeakeridError, ValueError):
    """An option or configuration file is invalid (unknown key, bad value)."""


class CorpusError(ConfigError):
    """A speakers folder or manifest cannot be indexed (empty, no speaker folders, bad columns)."""


# --- audio -----------------------------------------------------------------


class AudioError(SpeakeridError):
    """Base class of audio input problems."""


class AudioNotFoundError(AudioError, FileNotFoundError):
    """The audio path does not exist."""


class NotAFileError(AudioError, IsADirectoryError):
    """The audio path is a directory or another non-regular file."""


class AudioDecodeError(AudioError):
    """The file could not be decoded (empty, truncated, unknown format, bad bytes)."""


class EmptyAudioError(AudioError):
    """The file decoded but holds no samples."""


class InvalidAudioError(AudioError, ValueError):
    """Samples given in memory are unusable (NaN/inf, wrong shape, bad rate)."""


class NoSpeechError(AudioError):
    """Voice activity detection found no speech in the clip."""


class TooShortError(NoSpeechError):
    """The clip has some speech, but less than the minimum needed for an embedding."""


# --- models ----------------------------------------------------------------


class ModelError(SpeakeridError):
    """Base class of model store problems."""


class UnknownModelError(ModelError, KeyError):
    """A model name that is neither built in nor added by the user."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelNotAvailableError(ModelError):
    """The model is not cached and could not be pulled (offline, pip failure...)."""


class WeightsHashError(ModelError):
    """Downloaded weights do not match the pinned sha256."""


class CorruptModelError(ModelError):
    """A cached model file no longer matches the size or sha256 recorded when it was written, or
    ONNX Runtime cannot load it, and it could not be rebuilt (user-added models never can)."""


class CheckpointError(ModelError):
    """A torch checkpoint could not be read safely (unexpected pickled object, bad archive)."""


class ModelMismatchError(SpeakeridError):
    """Embeddings or an index made with another model (name, weights or dim) were given."""


# --- index -----------------------------------------------------------------


class IndexError_(SpeakeridError):
    """Base class of speaker index problems (named with a trailing _ to not shadow IndexError)."""


class IndexNotFoundError(IndexError_, FileNotFoundError):
    """No index at that directory."""


class IndexCorruptError(IndexError_):
    """The index directory is incomplete or its files disagree."""


class IndexLockedError(IndexError_):
    """Another process is writing this index."""


class EmptyGalleryError(IndexError_):
    """Identification against an index with no enrolled speakers."""


class SpeakerNotFoundError(IndexError_, KeyError):
    """A speaker name that the index does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class IndexExistsError(IndexError_, FileExistsError):
    """create() found an index already there (pass exist_ok=True to open it instead)."""


# --- diarization -----------------------------------------------------------


class PlotUnavailableError(SpeakeridError):
    """A plot was asked for but matplotlib is not installed."""
