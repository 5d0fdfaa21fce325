"""Stage 5: from clusters back to one global timeline in which overlap keeps both speakers.

1. In each window, its local speakers (or their pieces, see embeddings.py) are mapped to global
   clusters on embedding-to-centroid cosine, two local speakers of one window never to one
   cluster (a one-to-one assignment; a local speaker left over when the window has more of them
   than there are clusters takes its nearest cluster).
2. On the global frame grid (the model's 16.875 ms frames), each cluster's activity is the mean
   over the windows covering a frame; the number of people talking is the rounded mean of the
   windows' local counts.
3. Each frame keeps its ``count`` most active clusters (so two in an overlap), as pyannote's
   reconstruction does; runs of frames become turns, short gaps filled and specks dropped.

Memory is ``frames x clusters`` float32 scores plus as many booleans: ~4.3e5 frames for 2 hours,
so ~0.2 GB with 100 clusters; the per-frame ranking runs in chunks.
"""

from __future__ import annotations

import numpy as np

from .activity import FrameGrid
from .assignment import assign_max

__all__ = ["frame_activity", "piece_clusters", "turns_of"]

#: Frames ranked at once when choosing who talks (bounds the temporary index arrays).
_CHUNK_FRAMES = 16384


def _assign_window(sim: np.ndarray, spk: np.ndarray) -> np.ndarray:
    """Clusters of one window's pieces: pieces of different local speakers get different
    clusters (the model says they are different people); pieces of one may share one."""
    if len(np.unique(spk)) == len(spk):  # one piece per local speaker: an exact assignment
        taken = dict(assign_max(sim))
        return np.array([taken.get(r, int(np.argmax(sim[r]))) for r in range(len(sim))])
    out = np.full(len(sim), -1)
    for r in np.argsort(-sim.max(axis=1), kind="stable"):
        used = {int(out[q]) for q in range(len(sim)) if out[q] >= 0 and spk[q] != spk[r]}
        allowed = [c for c in range(sim.shape[1]) if c not in used] or list(range(sim.shape[1]))
        out[r] = allowed[int(np.argmax(sim[r, allowed]))]
    return out


def piece_clusters(win: np.ndarray, spk: np.ndarray, vectors: np.ndarray,
                   centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cluster of every embedded piece (see :func:`_assign_window`) and its cosine."""
    labels = np.full(len(win), -1, np.int64)
    score = np.zeros(len(win), np.float32)
    if len(win) == 0 or len(centroids) == 0:
        return labels, score
    sim = vectors @ centroids.T
    order = np.argsort(win, kind="stable")
    for rows in np.split(order, np.flatnonzero(np.diff(win[order])) + 1):
        labels[rows] = _assign_window(sim[rows], spk[rows])
        score[rows] = sim[rows, labels[rows]]
    return labels, score


def frame_activity(starts: np.ndarray, activities: list[np.ndarray], pieces: dict[int, list[tuple[int, int, int, int]]],
                   k: int, n_samples: int, grid: FrameGrid) -> np.ndarray:
    """``(frames, k)`` bool: who talks in each global frame (frames centred within the audio).
    ``pieces[w]``: (local speaker, first frame, end frame, cluster) of window ``w``; a local
    speaker's frames outside its pieces count for nobody."""
    n_frames = max(int(np.floor((n_samples - grid.center0) / grid.step)) + 1, 0)
    cover = np.zeros(n_frames, np.float32)
    count = np.zeros(n_frames, np.float32)
    score = np.zeros((n_frames, max(k, 1)), np.float32)
    for w, (start, act) in enumerate(zip(starts, activities)):
        o = int(round(start / grid.step))
        f = min(len(act), n_frames - o)
        if f <= 0:
            continue
        a = act[:f]
        cover[o : o + f] += 1
        count[o : o + f] += a.sum(axis=1)
        local = np.zeros((f, max(k, 1)), np.float32)
        for j, f0, f1, c in pieces.get(w, ()):
            if c >= 0 and f0 < f:
                np.maximum(local[f0:f1, c], a[f0:f1, j], out=local[f0:f1, c])
        score[o : o + f] += local
    cover = np.maximum(cover, 1)
    n_talk = np.rint(count / cover).astype(np.int64)
    score /= cover[:, None]
    out = np.zeros((n_frames, max(k, 1)), bool)
    keep = np.arange(score.shape[1])[None, :]
    for a in range(0, n_frames, _CHUNK_FRAMES):  # in chunks: the sort's index arrays stay small
        sc = score[a : a + _CHUNK_FRAMES]
        order = np.argsort(-sc, axis=1, kind="stable")
        chosen = np.zeros(sc.shape, bool)
        np.put_along_axis(chosen, order, keep < n_talk[a : a + _CHUNK_FRAMES, None], axis=1)
        out[a : a + _CHUNK_FRAMES] = chosen & (sc > 0)
    return out[:, :k]


def turns_of(active: np.ndarray, grid: FrameGrid, sample_rate_hz: int, duration_s: float,
             merge_gap_s: float, min_turn_s: float) -> list[tuple[int, float, float]]:
    """(cluster, start_s, end_s) runs of each column of ``active``."""
    out = []
    half = grid.step / 2
    for c in range(active.shape[1]):
        col = np.concatenate([[False], active[:, c], [False]])
        edges = np.flatnonzero(np.diff(col.astype(np.int8)))
        runs = []
        for a, b in zip(edges[::2], edges[1::2]):  # frames a..b-1
            s = max((a * grid.step + grid.center0 - half) / sample_rate_hz, 0.0)
            e = min(((b - 1) * grid.step + grid.center0 + half) / sample_rate_hz, duration_s)
            if runs and s - runs[-1][1] < merge_gap_s:
                runs[-1][1] = e
            else:
                runs.append([s, e])
        out.extend((c, s, e) for s, e in runs if e - s >= min_turn_s)
    return out
