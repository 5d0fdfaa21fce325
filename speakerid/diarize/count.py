"""How many people talk in a clip (for ``identify``'s multi-speaker warning)."""

from __future__ import annotations

import os

import numpy as np

from .options import DiarizeOptions
from .pipeline import diarize

__all__ = ["MULTI_SPEAKER_MIN_S", "count_speakers", "is_multi_speaker"]

#: A second voice counts when it talks at least this long in the clip.
MULTI_SPEAKER_MIN_S = 1.0


def count_speakers(source: str | os.PathLike | np.ndarray, *, sample_rate_hz: int | None = None,
                   min_speech_s: float = MULTI_SPEAKER_MIN_S, options: DiarizeOptions | None = None) -> int:
    """The number of speakers diarization finds in ``source`` who talk at least
    ``min_speech_s`` (0 when there is no speech). Raises as :func:`diarize` does."""
    tl = diarize(source, sample_rate_hz=sample_rate_hz, options=options)
    return sum(1 for label in tl.labels() if tl.speech_s(label) >= min_speech_s)


def is_multi_speaker(source: str | os.PathLike | np.ndarray, *, sample_rate_hz: int | None = None,
                     min_speech_s: float = MULTI_SPEAKER_MIN_S) -> bool:
    """Whether more than one person talks (each at least ``min_speech_s``) in ``source``."""
    return count_speakers(source, sample_rate_hz=sample_rate_hz, min_speech_s=min_speech_s) > 1
