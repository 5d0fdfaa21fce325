"""Evaluation protocols on corpora with one utterance per speaker (e.g. librispeech-251).

Split in time: an utterance of at least ``min_split_s`` seconds is cut at its midpoint; the
first half enrols, the second half queries. Shorter utterances cannot give two usable halves:
they give no target trial and no query, but (for identification) they enrol whole, so they stay
in the gallery as distractors.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

__all__ = ["MIN_SPLIT_S", "Utterance", "read_speakers_csv", "split_in_time"]

MIN_SPLIT_S = 4.0


@dataclass(frozen=True)
class Utterance:
    speaker: str
    path: Path
    duration_s: float


def read_speakers_csv(directory: str | Path) -> list[Utterance]:
    """The utterances listed in ``speakers.csv`` (columns file, speaker, duration_s)."""
    d = Path(directory)
    try:
        with open(d / "speakers.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise ConfigError(f"{d}: no speakers.csv (expected librispeech-251 layout)") from None
    return [Utterance(r["speaker"], d / r["file"], float(r["duration_s"])) for r in rows]


def split_in_time(
    samples: np.ndarray, sample_rate_hz: int, min_split_s: float = MIN_SPLIT_S
) -> tuple[np.ndarray, np.ndarray] | None:
    """(enrol, query) halves of an utterance, or None when it is shorter than ``min_split_s``."""
    if len(samples) < min_split_s * sample_rate_hz:
        return None
    mid = len(samples) // 2
    return samples[:mid], samples[mid:]
