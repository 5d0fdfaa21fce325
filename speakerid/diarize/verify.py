"""Stage 7: checking each frame's speaker against short embeddings of the audio there.

The timeline of reconstruct.py takes its speakers from the segmentation model's local speakers,
mapped to clusters one (piece of a) local speaker at a time. Where the model tracked two voices
as one local speaker (a turn change without a pause, a short interjection, the edge of an
overlap) the second voice inherits the first one's cluster, and with it its name. Measured on
the 20 development conversations (seed 1): more than half of the false-name time lies in
stretches of 0.5 s or longer, mostly more than 0.5 s from the edge of the named turn, so it is
not boundary jitter that a few frames of trimming would remove.

So, in the streaming pass, the audio is also cut into back-to-back chunks of ``chunk_s``
(1 s) and each chunk holding speech gets one CAM++ embedding (:func:`embed_chunks`). After
clustering, every frame gets, per cluster, the cosine of the chunk embeddings around it
(interpolated between chunk centres) with the cluster's chunk centroid (the mean of the chunks
in which the cluster talks alone: 1 s embeddings are compared with 1 s embeddings), and
:func:`check_frames`

* moves a frame where one speaker talks to another cluster (not talking there) whose cosine
  beats its own by ``reassign_margin`` (None: never), and
* takes the frame away from a *named* cluster whose cosine does not beat every other cluster
  that is not talking there by ``check_margin``: the name goes only where the short embedding
  agrees with it; the frame is left to nobody (said nothing about), since it is uncertain.

Frames without a chunk embedding on either side (silence, or the scan made none) are kept.
Besides, a named cluster keeps only the frames of confident speech (``name_speech_threshold``):
after the embedding check, frames in which the reference is silent were the largest part left.
The figures behind the defaults are in DiarizeOptions.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from ..embedder import Embedder
from .activity import FrameGrid, LocalActivity
from .windows import Window

__all__ = ["ChunkEmbeddings", "check_frames", "embed_chunks"]

#: A chunk is embedded when the segmentation finds speech (any local speaker) in at least this
#: share of its frames; chunks of silence tell nothing about who talks.
MIN_SPEECH_SHARE = 0.25
#: Frames checked at once (bounds the (frames, clusters) temporaries on long input).
_BLOCK_FRAMES = 16384


@dataclass
class ChunkEmbeddings:
    """Embeddings of the chunks ``[i * hop_s, i * hop_s + chunk_s)`` that hold speech."""

    chunk_s: float
    index: list[int] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    #: The next chunk a window may embed (each chunk is embedded once, by the first window
    #: that holds all of it).
    next_index: int = 0
    #: Start-to-start distance of the chunks (None: chunk_s, back to back).
    hop_s: float | None = None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def step_s(self) -> float:
        return self.chunk_s if self.hop_s is None else self.hop_s

    def arrays(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        vec = np.stack(self.vectors).astype(np.float32) if self.vectors else np.zeros((0, dim), np.float32)
        return np.asarray(self.index, np.int64), vec


def embed_chunks(windows: list[Window], activities: list[LocalActivity], embedder: Embedder, grid: FrameGrid,
                 into: ChunkEmbeddings, sample_rate_hz: int = 16000, pool: Executor | None = None,
                 workers: int = 1) -> None:
    """Embed the chunks that the windows of a batch hold first (in order), those with speech."""
    size = int(round(into.chunk_s * sample_rate_hz))
    hop = int(round(into.step_s * sample_rate_hz))
    jobs: list[tuple[int, np.ndarray]] = []
    for w, act in zip(windows, activities):
        speech = act.active.any(axis=1)
        while True:
            i = into.next_index
            a = i * hop - w.start  # the chunk's first sample within the window
            if a + size > w.valid:
                break
            into.next_index += 1
            if a < 0:  # began before this window and did not fit in the one before: skipped
                continue
            f0 = int(np.ceil((a - grid.center0) / grid.step))
            f1 = int(np.floor((a + size - grid.center0) / grid.step)) + 1
            frames = speech[max(f0, 0) : max(f1, 0)]
            if len(frames) and frames.mean() >= MIN_SPEECH_SHARE:
                jobs.append((i, w.audio[a : a + size]))
    if not jobs:
        return

    def run(part: list) -> list:
        return embedder.encode([embedder.prepare(x, sample_rate_hz) for _, x in part])

    n = max(1, min(workers, len(jobs))) if pool is not None else 1
    parts = [jobs[i::n] for i in range(n)]
    results = list(pool.map(run, parts)) if pool is not None and n > 1 else [run(parts[0])]
    for i, emb in sorted(((j[0], e) for part, embs in zip(parts, results) for j, e in zip(part, embs)),
                         key=lambda ie: ie[0]):
        into.index.append(i)
        into.vectors.append(emb.vector.astype(np.float32))


def _frame_sims(sim: np.ndarray, have: np.ndarray, t_s: np.ndarray, chunk_s: float,
                hop_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Per frame (times ``t_s``): the cosines, interpolated between the two nearest chunk
    centres (one of them when the other has no embedding), and whether any was there."""
    x = (t_s - chunk_s / 2) / hop_s
    n = len(have)
    i0 = np.clip(np.floor(x).astype(np.int64), 0, n - 1)
    i1 = np.clip(i0 + 1, 0, n - 1)
    w1 = np.clip(x - np.floor(x), 0.0, 1.0).astype(np.float32)
    w1 = np.where(x < 0, 0.0, np.where(i1 == i0, 0.0, w1))
    h0, h1 = have[i0], have[i1]
    w1 = np.where(h0 & h1, w1, np.where(h1, 1.0, 0.0)).astype(np.float32)
    out = sim[i0] * (1 - w1)[:, None] + sim[i1] * w1[:, None]
    return out, h0 | h1


#: A cluster's chunk centroid is the mean of the chunks in which it alone talks in at least
#: this share of the frames, when it has at least PURE_MIN_CHUNKS of them (else its centroid).
#: Measured on the dev set (check 0.1, moves 0.2, name speech threshold 0.1): against the
#: clusters' own centroids false names 3.4 %, named accuracy 88.3 %, DER 22.5 %; against these
#: 2.8 %, 88.1 %, 22.9 %.
PURE_SHARE = 0.8
PURE_MIN_CHUNKS = 3


#: Added to the check margin in frames where two clusters talk (a chunk there blends two voices,
#: so each scores lower against its own centroid). Measured on the dev set at the defaults:
#: 0 / -0.1 / -0.2 / no check in overlaps: false names 2.8 / 4.1 / 5.1 / 6.5 %, DER 22.9 / 20.6 /
#: 19.0 / 18.1 %, named accuracy (solo speech) 88.1 / 88.3 / 88.4 / 88.4 %. So the check does
#: take names off real overlaps (in tests/test_diarize.py's 2 s overlap, both names stay in
#: 0.6 s), and it is what keeps the false names of hypothesised overlaps down.
OVERLAP_MARGIN_DELTA = 0.0


def _chunk_centroids(active: np.ndarray, centroids: np.ndarray, idx: np.ndarray, vec: np.ndarray, n_chunks: int,
                     chunk_s: float, hop_s: float, grid: FrameGrid, sample_rate_hz: int) -> np.ndarray:
    """Per cluster, the centroid 1 s chunk embeddings are compared with: the mean of its own
    clean chunks (a 1 s embedding is not comparable with the centroid of longer pieces)."""
    k = active.shape[1]
    t_s = (np.arange(len(active)) * grid.step + grid.center0) / sample_rate_hz
    ci = np.minimum((t_s / hop_s).astype(np.int64), n_chunks)  # n_chunks: past the last one
    ci[t_s - ci * hop_s >= chunk_s] = n_chunks  # in the gap between two chunks: in none
    frames = np.bincount(ci, minlength=n_chunks + 1)[:n_chunks]
    solo = np.flatnonzero(active.sum(axis=1) == 1)  # frames of one speaker (no frames x k copies:
    per = np.zeros((n_chunks + 1, k), np.int64)       # 2 hours hold ~4e5 frames, maybe 100 clusters)
    np.add.at(per, (ci[solo], np.argmax(active[solo], axis=1)), 1)
    pure = per[idx] >= PURE_SHARE * np.maximum(frames[idx], 1)[:, None]  # (embedded chunks, k)
    out = centroids.astype(np.float32, copy=True)
    for c in range(k):
        if pure[:, c].sum() >= PURE_MIN_CHUNKS:
            m = vec[pure[:, c]].mean(axis=0)
            out[c] = m / max(float(np.linalg.norm(m)), 1e-12)
    return out


def check_frames(active: np.ndarray, known: np.ndarray, centroids: np.ndarray, chunks: ChunkEmbeddings | None,
                 grid: FrameGrid, sample_rate_hz: int, *, check_margin: float | None,
                 reassign_margin: float | None, nobody: np.ndarray | None = None,
                 name_speech_threshold: float | None = None) -> np.ndarray:
    """``active`` (frames, k) after the checks of the module notes (a new array); besides, with
    ``nobody`` (per frame, the probability that nobody talks) a named cluster also loses the
    frames where that is ``name_speech_threshold`` or more."""
    out = active.copy()
    k = active.shape[1]
    known = np.asarray(known, bool)
    if nobody is not None and name_speech_threshold is not None:
        unsure = nobody[: len(out)] >= name_speech_threshold
        for c in np.flatnonzero(known):
            out[unsure, c] = False
    idx, vec = chunks.arrays(centroids.shape[1] if centroids.ndim == 2 else 0) if chunks is not None else ([], None)
    if len(idx) == 0 or k < 2 or len(centroids) != k or (check_margin is None and reassign_margin is None):
        return out
    active = out.copy()
    n_chunks = int(idx.max()) + 1
    sim = np.zeros((n_chunks, k), np.float32)
    sim[idx] = vec @ _chunk_centroids(active, centroids, idx, vec, n_chunks, chunks.chunk_s, chunks.step_s, grid,
                                      sample_rate_hz).T
    have = np.zeros(n_chunks, bool)
    have[idx] = True
    for a in range(0, len(active), _BLOCK_FRAMES):
        act = active[a : a + _BLOCK_FRAMES]
        t_s = ((np.arange(a, a + len(act)) * grid.step) + grid.center0) / sample_rate_hz
        s, ok = _frame_sims(sim, have, t_s, chunks.chunk_s, chunks.step_s)
        # the best cluster not talking in the frame (others that talk are not rivals; limiting
        # them to the clusters that talk within 5 / 10 / 20 s was measured: on the dev set
        # false names 5.9 / 5.2 / 4.8 % against 4.75 % with all, for 1.4 / 0.4 / 0 points of DER)
        rival = np.where(act, -np.inf, s)
        best = np.argmax(rival, axis=1)
        best_s = rival[np.arange(len(act)), best]
        blk = out[a : a + len(act)]
        if reassign_margin is not None:
            solo = act.sum(axis=1) == 1
            own = np.argmax(act, axis=1)
            own_s = s[np.arange(len(act)), own]
            move = np.flatnonzero(ok & solo & (best_s - own_s > reassign_margin))
            blk[move, own[move]] = False
            blk[move, best[move]] = True
        if check_margin is not None:
            cur = blk.copy()
            rival = np.where(cur, -np.inf, s)
            best_s = rival.max(axis=1)
            margin = np.where(cur.sum(axis=1) >= 2, check_margin + OVERLAP_MARGIN_DELTA, check_margin)
            doubt = ok[:, None] & cur & known[None, :] & (s - best_s[:, None] < margin[:, None])
            blk[doubt] = False
    return out
