"""Stage 3: one speaker embedding per (window, local speaker).

Each local speaker's embedding is taken from the samples of the frames where it talks alone,
so that overlapped speech does not blend two voices into one vector. A local speaker with less
than ``min_embed_speech_s`` of solo speech is embedded from all its frames (overlap included)
when those reach that length, and marked not ``clean``: such embeddings are assigned to the
clusters found from the clean ones but do not shape them. Shorter ones get no embedding.

The embeddings go through :class:`speakerid.Embedder`'s public two-step API: ``prepare``
(front end) for every piece, then one ``encode`` call per batch of windows (per worker thread).
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from ..embedder import Embedder
from .activity import FrameGrid, LocalActivity, frames_to_samples
from .windows import Window

__all__ = ["LocalEmbeddings", "embed_local_speakers"]

#: Fewer samples than this never give an embedding, clean or not (0.5 s at 16 kHz).
MIN_ANY_SAMPLES = 8000


@dataclass
class LocalEmbeddings:
    """Growing arrays of embeddings, one row per piece embedded: a (window, local speaker), or
    with ``piece_s`` one stretch of it, frames ``[first, end)`` of the window."""

    window: list[int]
    speaker: list[int]
    vectors: list[np.ndarray]
    speech_s: list[float]
    clean: list[bool]
    first: list[int] = field(default_factory=list)
    end: list[int] = field(default_factory=list)

    @classmethod
    def empty(cls) -> LocalEmbeddings:
        return cls([], [], [], [], [], [], [])

    def __len__(self) -> int:
        return len(self.window)

    def arrays(self, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        vec = np.stack(self.vectors).astype(np.float32) if self.vectors else np.zeros((0, dim), np.float32)
        return (np.asarray(self.window, np.int64), np.asarray(self.speaker, np.int64), vec,
                np.asarray(self.speech_s, np.float64), np.asarray(self.clean, bool))

    def spans(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.first, np.int64), np.asarray(self.end, np.int64)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _spans(act: LocalActivity, k: int, piece_frames: int | None) -> list[tuple[int, int]]:
    """Frame spans covering local speaker ``k``'s speech: one, or (``piece_frames``) stretches cut
    at its pauses, each with at least ``piece_frames`` frames of solo speech (a short tail joins
    the stretch before it). A voice the model tracked as one local speaker but that changes at a
    pause is then embedded piece by piece instead of blended into one vector."""
    runs = _runs(act.active[:, k])
    if piece_frames is None or len(runs) < 2:
        return [(runs[0][0], runs[-1][1])]
    solo = act.solo(k)
    spans: list[list[int]] = []
    have = 0
    for a, b in runs:
        if spans and have < piece_frames:
            spans[-1][1] = b
        else:
            spans.append([a, b])
            have = 0
        have += int(solo[a:b].sum())
    if len(spans) > 1 and have < piece_frames:
        spans[-2][1] = spans[-1][1]
        spans.pop()
    return [(a, b) for a, b in spans]


def _pieces(w: Window, act: LocalActivity, grid: FrameGrid, min_samples: int,
            piece_frames: int | None) -> list[tuple[int, int, int, np.ndarray, bool]]:
    out = []
    for k in act.speakers():
        for f0, f1 in _spans(act, k, piece_frames):
            span = np.zeros(len(act.active), bool)
            span[f0:f1] = True
            for frames, clean in ((act.solo(k) & span, True), (act.active[:, k] & span, False)):
                mask = frames_to_samples(frames, grid, w.valid)
                if mask.sum() >= (min_samples if clean else MIN_ANY_SAMPLES):
                    out.append((k, f0, f1, w.audio[: w.valid][mask], clean))
                    break
    return out


def balanced_parts(lengths: list[int], n: int) -> list[list[int]]:
    """Indices of ``lengths`` in ``n`` parts of about equal total length (longest first, each to
    the lightest part), so that the worker threads of a batch finish together: pieces run from
    0.5 to 10 s, and parts cut by count left one core idle while the other embedded a long one."""
    parts: list[list[int]] = [[] for _ in range(max(n, 1))]
    loads = [0] * len(parts)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        p = loads.index(min(loads))
        parts[p].append(i)
        loads[p] += lengths[i]
    return [sorted(part) for part in parts if part]


def embed_local_speakers(
    windows: list[Window], activities: list[LocalActivity], embedder: Embedder, grid: FrameGrid,
    min_embed_speech_s: float, into: LocalEmbeddings, sample_rate_hz: int = 16000,
    pool: Executor | None = None, workers: int = 1, piece_s: float | None = None,
) -> None:
    """Embed the local speakers of a batch of windows and append them to ``into``.

    With a ``pool``, the batch is split into ``workers`` interleaved parts, each prepared and
    encoded in one ``encode`` call on a worker thread (ONNX Runtime sessions run concurrently)."""
    min_samples = max(int(min_embed_speech_s * sample_rate_hz), MIN_ANY_SAMPLES)
    piece_frames = None if piece_s is None else max(int(round(piece_s * sample_rate_hz / grid.step)), 1)
    jobs = [(w.index, k, f0, f1, samples, clean)
            for w, act in zip(windows, activities)
            for k, f0, f1, samples, clean in _pieces(w, act, grid, min_samples, piece_frames)]
    if not jobs:
        return

    def run(part: list) -> list:
        return embedder.encode([embedder.prepare(j[4], sample_rate_hz) for j in part])

    n = max(1, min(workers, len(jobs))) if pool is not None else 1
    parts = [[jobs[i] for i in part] for part in balanced_parts([len(j[4]) for j in jobs], n)]
    results = list(pool.map(run, parts)) if pool is not None and n > 1 else [run(parts[0])]
    ordered = sorted(((j, e) for part, embs in zip(parts, results) for j, e in zip(part, embs)),
                     key=lambda je: je[0][:3])
    for (wi, k, f0, f1, samples, clean), emb in ordered:
        into.window.append(wi)
        into.speaker.append(k)
        into.first.append(f0)
        into.end.append(f1)
        into.vectors.append(emb.vector)
        into.speech_s.append(len(samples) / sample_rate_hz)
        into.clean.append(clean)
