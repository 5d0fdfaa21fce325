"""Stage 5: from clusters back to one global timeline in which overlap keeps both speakers.

1. In each window, its local speakers (or their pieces, see embeddings.py) are mapped to global
   clusters on embedding-to-centroid cosine, two local speakers of one window never to one
   cluster (a one-to-one assignment; a local speaker left over when the window has more of them
   than there are clusters takes its nearest cluster).
2. On the global frame grid (the model's 16.875 ms frames), each cluster's score is the mean
   over the windows covering a frame of its local speakers' soft activity (the segmentation's
   posteriors), weighted by a Hamming taper over each window (its edges, seen with the least
   context, count least); how many people talk comes from the mean of the windows' powerset
   probabilities of 0, 1 and 2 speakers (see frame_activity for the thresholds).
3. Each frame keeps its ``count`` best-scoring clusters (so two in an overlap), as pyannote's
   reconstruction does; runs of frames become turns, short gaps filled and specks dropped.

Why soft and tapered (measured on the 60 synthetic conversations of build_conversations.py,
seed 0, benchmarks/results/diarize.md): the previous hard average over the two windows of a
5 s step tied whenever they disagreed (a tie went to the lower cluster index, and 1.5 people
rounded to an overlap); with the taper DER at collar 0 went 20.9 % -> 19.6 % and false names
14.5 % -> 13.3 % (the detached-stretch weight: 19.4 % and 13.1 %), and the posteriors with the
speech and overlap thresholds of DiarizeOptions (chosen on the seed-1 set) took them to 19.0 %
and 11.5 %.

Memory is ``frames x clusters`` float32 scores plus as many booleans: ~4.3e5 frames for 2 hours,
so ~0.2 GB with 100 clusters; the per-frame ranking runs in chunks.
"""

from __future__ import annotations

import numpy as np

from ..models.segmentation import POWERSET_MAPPING
from .activity import FrameGrid
from .assignment import assign_max

__all__ = ["frame_activity", "nobody_probability", "piece_clusters", "turns_of"]

SAMPLE_RATE_HZ = 16000
#: Frames ranked at once when choosing who talks (bounds the temporary index arrays).
_CHUNK_FRAMES = 16384
_SIZES = POWERSET_MAPPING.sum(axis=1)
#: Floor of the Hamming taper of a window's frames (see _window_weights).
EDGE_WEIGHT = 0.02
#: A piece's stretch DETACH_GAP_S or more from its main stretch and shorter than DETACH_MAX_S
#: counts DETACHED_WEIGHT (see _detached_weights). Measured on the 60 synthetic conversations
#: (seed 0), with the Hamming taper: DER 19.6 % -> 19.4 %, false names 13.3 % -> 13.1 %.
DETACH_GAP_S = 0.5
DETACH_MAX_S = 1.5
DETACHED_WEIGHT = 0.05


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


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _detached_weights(mask: np.ndarray, gap: int, small: int) -> np.ndarray:
    """Per-frame weight of one piece of a local speaker: 1, except for the stretches that lie
    ``gap`` frames or more away from the piece's main stretch and hold fewer than ``small``
    frames, weighted DETACHED_WEIGHT. Those were too short to be embedded on their own, so their
    cluster is the piece's, inherited rather than measured (at a window's edge the model often
    gives a newcomer the local speaker of someone who spoke earlier in the window)."""
    w = np.ones(len(mask), np.float32)
    runs = _runs(mask)
    if len(runs) < 2:
        return w
    groups = [[runs[0]]]
    for r in runs[1:]:
        if r[0] - groups[-1][-1][1] >= gap:
            groups.append([r])
        else:
            groups[-1].append(r)
    size = [sum(b - a for a, b in g) for g in groups]
    main = int(np.argmax(size))
    for i, g in enumerate(groups):
        if i != main and size[i] < small:
            for a, b in g:
                w[a:b] = DETACHED_WEIGHT
    return w


def _window_weights(frames: int) -> np.ndarray:
    """Weight of each frame of a window in the aggregation: a Hamming taper (the model sees the
    least context at a window's edges), floored so that the edges of the file still count."""
    return (np.hamming(frames) * (1 - EDGE_WEIGHT) + EDGE_WEIGHT).astype(np.float32)


def _count_probs(post: np.ndarray) -> np.ndarray:
    """``(frames, 3)`` probabilities of 0, 1 and 2 people talking, from powerset posteriors."""
    n = _SIZES
    return np.stack([post[:, n == i].sum(axis=1) for i in range(3)], axis=1)


def frame_activity(starts: np.ndarray, activities: list[np.ndarray], pieces: dict[int, list[tuple[int, int, int, int]]],
                   k: int, n_samples: int, grid: FrameGrid, posteriors: list[np.ndarray] | None = None, *,
                   speech_threshold: float = 0.2, overlap_ratio: float = 0.45) -> np.ndarray:
    """``(frames, k)`` bool: who talks in each global frame (frames centred within the audio).

    ``pieces[w]``: (local speaker, first frame, end frame, cluster) of window ``w``; a local
    speaker's frames outside its pieces count for nobody. ``posteriors[w]``: the window's
    powerset posteriors (frames, 7); without them the hard ``activities`` stand in.

    Per frame, over the windows covering it (Hamming-weighted): the probabilities of 0, 1, 2
    people talking are averaged; the frame is speech when P(0) < ``speech_threshold`` and holds
    two people when ``overlap_ratio`` * P(2) > P(1). Each cluster's score is the weighted mean of
    its local speakers' soft activity; the frame keeps its ``count`` best-scoring clusters."""
    n_frames = max(int(np.floor((n_samples - grid.center0) / grid.step)) + 1, 0)
    cover = np.zeros(n_frames, np.float32)
    count = np.zeros((n_frames, 3), np.float32)
    score = np.zeros((n_frames, max(k, 1)), np.float32)
    detach_gap = int(round(DETACH_GAP_S * SAMPLE_RATE_HZ / grid.step))
    detach_small = int(round(DETACH_MAX_S * SAMPLE_RATE_HZ / grid.step))
    taper = None
    for w, (start, act) in enumerate(zip(starts, activities)):
        o = int(round(start / grid.step))
        valid = int(np.floor((n_samples - start - grid.center0) / grid.step)) + 1  # frames within the audio
        f = min(len(act), n_frames - o, valid)
        if f <= 0:
            continue
        if taper is None or len(taper) != len(act):
            taper = _window_weights(len(act))
        tw = taper[:f]
        a = act[:f]
        if posteriors:
            post = posteriors[w][:f].astype(np.float32)
            soft, probs = post @ POWERSET_MAPPING, _count_probs(post)
        else:
            soft = a.astype(np.float32)
            probs = np.stack([a.sum(axis=1) == i for i in range(3)], axis=1).astype(np.float32)
        cover[o : o + f] += tw
        count[o : o + f] += probs * tw[:, None]
        local = np.zeros((f, max(k, 1)), np.float32)
        for j, f0, f1, c in pieces.get(w, ()):
            if c < 0 or f0 >= f:
                continue
            f1 = min(f1, f)
            col = soft[f0:f1, j] * _detached_weights(a[f0:f1, j], detach_gap, detach_small)
            np.maximum(local[f0:f1, c], col, out=local[f0:f1, c])
        score[o : o + f] += local * tw[:, None]
    cover = np.maximum(cover, 1e-6)
    count /= cover[:, None]
    n_talk = np.where(count[:, 0] < speech_threshold, np.where(overlap_ratio * count[:, 2] > count[:, 1], 2, 1), 0)
    out = np.zeros((n_frames, max(k, 1)), bool)
    keep = np.arange(score.shape[1])[None, :]
    for a in range(0, n_frames, _CHUNK_FRAMES):  # in chunks: the sort's index arrays stay small
        sc = score[a : a + _CHUNK_FRAMES]
        order = np.argsort(-sc, axis=1, kind="stable")
        chosen = np.zeros(sc.shape, bool)
        np.put_along_axis(chosen, order, keep < n_talk[a : a + _CHUNK_FRAMES, None], axis=1)
        out[a : a + _CHUNK_FRAMES] = chosen & (sc > 0)
    return out[:, :k]


def nobody_probability(starts: np.ndarray, n_samples: int, grid: FrameGrid, posteriors: list[np.ndarray],
                       frames: int) -> np.ndarray:
    """``(n_frames,)`` float32: the windows' Hamming-weighted mean probability that nobody talks
    in each global frame, as :func:`frame_activity` computes it."""
    n_frames = max(int(np.floor((n_samples - grid.center0) / grid.step)) + 1, 0)
    cover = np.zeros(n_frames, np.float32)
    nobody = np.zeros(n_frames, np.float32)
    taper = _window_weights(frames)
    for start, post in zip(starts, posteriors):
        o = int(round(start / grid.step))
        valid = int(np.floor((n_samples - start - grid.center0) / grid.step)) + 1
        f = min(len(post), n_frames - o, valid)
        if f <= 0:
            continue
        cover[o : o + f] += taper[:f]
        nobody[o : o + f] += post[:f, 0].astype(np.float32) * taper[:f]
    return nobody / np.maximum(cover, 1e-6)


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
