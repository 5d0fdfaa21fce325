"""Stage 1: sliding windows over streamed audio, and the segmentation model on them.

Audio arrives in blocks (:func:`speakerid.audio.iter_blocks` for files); only the samples of
the windows not yet emitted are kept, so memory does not grow with the length of the input.
Windows start every ``step`` samples; the last one, and a clip shorter than one window, are
zero-padded to the full window (the model sees silence there, and the frames past the end of
the audio are ignored by the reconstruction).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..models.segmentation import POWERSET_MAPPING, Segmenter

__all__ = ["Window", "hard_activity", "segment_windows", "sliding_windows"]


@dataclass(frozen=True, eq=False)
class Window:
    """One window: where it starts, its samples (zero-padded) and how many are real audio."""

    index: int
    start: int
    audio: np.ndarray
    valid: int


def sliding_windows(blocks: Iterable[np.ndarray], window: int, step: int) -> Iterator[Window]:
    """Windows of ``window`` samples every ``step`` samples over the concatenated ``blocks``.

    Every sample lies in at least one window; nothing is emitted for empty input.
    """
    buf = np.zeros(0, np.float32)
    buf_start = 0  # sample index of buf[0]
    next_start = 0
    index = 0
    total = 0
    for block in blocks:
        block = np.asarray(block, dtype=np.float32)
        total += len(block)
        buf = np.concatenate([buf, block]) if len(buf) else block.copy()
        while next_start + window <= buf_start + len(buf):
            off = next_start - buf_start
            yield Window(index, next_start, buf[off : off + window].copy(), window)
            index += 1
            next_start += step
            drop = next_start - buf_start
            if drop > 0:
                buf, buf_start = buf[drop:], next_start
    covered = next_start - step + window if index else 0
    if total > covered:  # a tail after the last full window (or a clip shorter than one)
        off = next_start - buf_start
        tail = buf[off:]
        padded = np.zeros(window, np.float32)
        padded[: len(tail)] = tail
        yield Window(index, next_start, padded, len(tail))


def segment_windows(windows: list[Window], segmenter: Segmenter) -> np.ndarray:
    """Powerset posteriors ``(len(windows), frames, 7)`` (float16 probabilities, classes as
    :data:`speakerid.models.segmentation.POWERSET_MAPPING`) of a batch of windows. float16
    keeps 8 KB per window (12 MB for 2 hours at a 5 s step); the reconstruction averages them."""
    batch = np.stack([w.audio for w in windows])
    return np.exp(segmenter(batch)).astype(np.float16)


def hard_activity(posteriors: np.ndarray) -> np.ndarray:
    """Local-speaker activity ``(..., frames, 3)`` (bool) of the most likely powerset class."""
    return POWERSET_MAPPING[np.argmax(posteriors, axis=-1)].astype(bool)
