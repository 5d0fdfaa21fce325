"""Does a clip given to ``identify`` hold several voices? The multi-speaker flag.

``identify`` assumes one speaker per clip; on a clip where two people talk it would silently name
one of them (or neither). :class:`SpeakerCheck` runs the diarization pipeline on the clip with
options for short clips (:data:`CLIP_OPTIONS`) and says how many voices talk in it, so that
identify can flag the result (``multi_speaker``) and warn.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from .diarize import DiarizeOptions, Diarizer
from .errors import TooShortError

__all__ = ["CLIP_OPTIONS", "MIN_VOICE_S", "SpeakerCheck", "SpeakerCount", "multi_speaker_warning"]

#: Diarization options for one identify clip (seconds to a minute), measured on librispeech-251
#: (the first 60 utterances by file name, 1.6-17 s, one speaker each; 30 two-speaker mixes of
#: 5 s + 5 s and 30 of 3 s + 3 s made from them; benchmarks: see the issue 13 notes):
#:
#: * ``min_cluster_speech_s`` / ``min_speaker_s`` 2 s instead of the conversation defaults of 4 s,
#:   which fold a second voice of 5 s into the first: 4 s flags 12 of 30 5+5 mixes, 2 s flags 27
#:   of 30 (15 of 30 3+3 mixes) and none of the 60 single-speaker clips; 1.5 s flagged 2 of 60
#:   single-speaker clips, 1 s 3 of 60;
#: * the default 5 s step: a 10 s step (one window per 10 s) cost 10 % less but flagged 1 of the
#:   60 single-speaker clips;
#: * one embedding thread: identify already embeds several clips at once.
#:
#: The check costs 1.15x to 1.6x identify's own embedding of the clip (medians over those clips,
#: two runs, benchmarks/results/multispeaker.md): the segmentation model alone is a quarter of it
#: and misses 9 of the 30 5+5 mixes (it gives both voices to one local speaker); the rest is
#: CAM++ over the clip's speech, which tells the second voice from the first.
CLIP_OPTIONS = DiarizeOptions(min_cluster_speech_s=2.0, min_speaker_s=2.0, workers=1)
#: A voice counts when it talks at least this long (a cough or a word in the background does not).
MIN_VOICE_S = 1.0


@dataclass(frozen=True)
class SpeakerCount:
    """Voices found in a clip: ``speakers`` (None: the clip is too short to tell) and the speech
    seconds of each, largest first."""

    speakers: int | None
    speech_s: tuple[float, ...] = ()

    @property
    def multi_speaker(self) -> bool:
        return self.speakers is not None and self.speakers > 1

    def warning(self) -> str | None:
        return multi_speaker_warning(self.speakers, self.speech_s) if self.multi_speaker else None


def multi_speaker_warning(speakers: int | None, speech_s: tuple[float, ...] = ()) -> str:
    talk = ", ".join(f"{s:.1f} s" for s in speech_s)
    return (f"multi_speaker: {speakers} voices talk in this clip ({talk}); identify names one speaker per "
            "clip: use `speakerid diarize` to find who spoke when")


class SpeakerCheck:
    """The segmentation model and CAM++ loaded once (lazily, on the first call, so that a command
    that never needs them does not pay for them); callable from several threads at once."""

    def __init__(self, options: DiarizeOptions = CLIP_OPTIONS, min_voice_s: float = MIN_VOICE_S) -> None:
        self.options = options
        self.min_voice_s = min_voice_s
        self._diarizer: Diarizer | None = None
        self._lock = threading.Lock()

    @property
    def diarizer(self) -> Diarizer:
        with self._lock:
            if self._diarizer is None:
                self._diarizer = Diarizer(self.options)
            return self._diarizer

    def __call__(self, source: str | os.PathLike | np.ndarray, sample_rate_hz: int | None = None) -> SpeakerCount:
        """How many voices talk in ``source`` (a path, or samples with ``sample_rate_hz``).
        Audio errors raise as in :func:`speakerid.diarize.diarize`; a clip under 0.5 s is not
        checked (``speakers`` None)."""
        try:
            tl = self.diarizer(source, sample_rate_hz=sample_rate_hz)
        except TooShortError:
            return SpeakerCount(None)
        speech = sorted((tl.speech_s(label) for label in tl.labels()), reverse=True)
        voices = tuple(round(s, 1) for s in speech if s >= self.min_voice_s)
        return SpeakerCount(len(voices), voices)
