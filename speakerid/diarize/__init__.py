"""Who is talking when: overlap-aware speaker diarization, named from a speaker index.

    >>> from speakerid import diarize
    >>> timeline = diarize("meeting.wav", index="index/default")
    >>> print(timeline.to_rttm("meeting"))

Stages, one module each: :mod:`.windows`, :mod:`.activity`, :mod:`.embeddings`,
:mod:`.clustering`, :mod:`.reconstruct`, :mod:`.naming`, :mod:`.verify`; :mod:`.pipeline` runs
them.
"""

from .count import count_speakers, is_multi_speaker
from .enroll import enroll_from_timeline
from .options import DiarizeOptions
from .pipeline import Diarizer, diarize
from .timeline import Timeline, Turn, read_rttm

__all__ = [
    "DiarizeOptions", "Diarizer", "Timeline", "Turn", "count_speakers", "diarize", "enroll_from_timeline",
    "is_multi_speaker", "read_rttm",
]
