"""Stage 2: local speaker activity in each window, overlap included.

The segmentation model gives, per window and frame, which of its 3 local speakers talk (at most
two at once: overlap is a frame with two). From that come, per local speaker, the frames where
it talks alone (clean material for its embedding) and, per frame, how many people talk.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..models.segmentation import frame_timing

__all__ = ["FrameGrid", "LocalActivity", "local_activity"]


@dataclass(frozen=True)
class FrameGrid:
    """The segmentation model's frames in samples: frame ``i`` of a window starting at sample
    ``s`` is centred on ``s + center0 + i * step`` (step 270, centre 495 at 16 kHz)."""

    step: int
    center0: float
    frames: int

    @classmethod
    def for_window(cls, window: int, sample_rate_hz: int = 16000) -> FrameGrid:
        t = frame_timing(window, sample_rate_hz=sample_rate_hz)
        return cls(int(round(t.step_s * sample_rate_hz)), (t.start_s + t.duration_s / 2) * sample_rate_hz,
                   t.num_frames)

    @cached_property
    def _nearest(self) -> np.ndarray:
        n = int(round(self.center0 + self.step * self.frames))
        idx = np.rint((np.arange(n) - self.center0) / self.step).astype(np.int64)
        return np.clip(idx, 0, self.frames - 1)

    def sample_frames(self, n: int) -> np.ndarray:
        """The frame nearest to each of the first ``n`` samples of a window."""
        near = self._nearest
        if n <= len(near):
            return near[:n]
        return np.concatenate([near, np.full(n - len(near), self.frames - 1, np.int64)])


@dataclass(frozen=True, eq=False)
class LocalActivity:
    """Activity of one window: ``active`` (frames, 3) bool, past-the-end frames cleared."""

    active: np.ndarray

    @property
    def count(self) -> np.ndarray:
        """People talking in each frame."""
        return self.active.sum(axis=1)

    def solo(self, k: int) -> np.ndarray:
        """Frames where local speaker ``k`` talks alone."""
        return self.active[:, k] & (self.count == 1)

    def speakers(self) -> list[int]:
        return [k for k in range(self.active.shape[1]) if self.active[:, k].any()]


def local_activity(active: np.ndarray, valid: int, grid: FrameGrid) -> LocalActivity:
    """Clear the frames centred past the ``valid`` samples of a zero-padded window."""
    a = np.array(active, dtype=bool, copy=True)
    last = int(np.floor((valid - grid.center0) / grid.step)) + 1  # frames centred before `valid`
    a[max(last, 0):] = False
    return LocalActivity(a)


def frames_to_samples(mask: np.ndarray, grid: FrameGrid, n: int) -> np.ndarray:
    """Sample mask (n,) of a frame mask: each sample takes its nearest frame's value."""
    return mask[grid.sample_frames(n)]
