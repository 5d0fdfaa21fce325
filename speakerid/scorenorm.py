"""AS-norm of identification scores, with the gallery itself as the cohort.

For a query *q* and a candidate speaker *e* with raw score *s* (the cosine of the scoring rule),
adaptive symmetric score normalisation (Matejka et al., Interspeech 2017) gives::

    s' = 0.5 * ((s - mu_e) / sd_e + (s - mu_q) / sd_q)

where mu/sd are the mean and standard deviation of the ``cohort_top_n`` highest cohort scores:

* of *e*: its centroid against the centroids of every *other* enrolled speaker (its own clips,
  which make its centroid, are never in its cohort);
* of *q*: the query against the centroids of every enrolled speaker but *e* (and but the
  speakers a caller excludes, e.g. the query's own voice in the calibration's
  leave-one-speaker-out trials).

The cohort is the gallery, so nothing needs to be enrolled twice and the normalisation follows
the gallery as speakers are added and removed. The per-speaker statistics (one (S, S) product
in blocks) are computed on first use and cached in the process, keyed by the index directory,
its version and a fingerprint of the speaker names and centroids (unsaved additions and
removals change the fingerprint, so the cache never serves a gallery it was not computed on).

With fewer than ``MIN_SPEAKERS`` (4) enrolled speakers there is no cohort of at least
``MIN_COHORT`` scores on each side (with the calibration's held-out speaker also left out), so
no standard deviation to normalise by: :func:`asnorm_rank` returns None and identification
falls back to raw cosine and says so (``Identification.score_norm == "none"``, and the
threshold is the raw one).

With the ``centroid`` rule every speaker is normalised and ranked exactly. With ``best`` and
``topn`` only the SHORTLIST best speakers by raw score are normalised and re-ranked (their raw
scores come from the clip search; the cohort is still the centroids).
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError

if TYPE_CHECKING:
    from .index import SpeakerIndex, SpeakerMaps

__all__ = [
    "DEFAULT_COHORT_TOP_N", "MIN_COHORT", "MIN_SPEAKERS", "SCORE_NORMS", "SpeakerStats", "asnorm_rank", "check_cohort_top_n",
    "check_score_norm", "clear_cache", "gallery_key", "speaker_stats",
]

SCORE_NORMS: tuple[str, ...] = ("none", "asnorm")
#: Cohort scores per side. On benchmarks/eval_norm.py (results/norm.md, campplus, 7 rows, 10 draws)
#: the oracle FNIR @ FPIR 1 % of 200-speaker galleries fell as the cohort grew: 28.5 / 13.1 / 10.9 /
#: 8.9 / 8.4 % at top-10 / 25 / 50 / 100 / 200 (raw cosine 9.8 %); galleries of 100 or fewer use their
#: whole cohort from 100 on. 100 bounds the cost per query and speaker for large galleries.
DEFAULT_COHORT_TOP_N = 100
#: A side with fewer cohort scores than this is not normalised (no meaningful deviation).
MIN_COHORT = 2
#: AS-norm needs this many enrolled speakers: a cohort of MIN_COHORT on each side even when the
#: calibration leaves one speaker out. Smaller galleries are scored raw.
MIN_SPEAKERS = MIN_COHORT + 2
#: With the best / topn rules, this many speakers (by raw score) are normalised and re-ranked.
SHORTLIST = 50
#: Standard deviations below this are clamped (a cohort of identical scores).
MIN_STD = 1e-6
_BLOCK = 1024
_CACHE_ENTRIES = 16


def check_score_norm(score_norm: Any) -> str:
    if score_norm not in SCORE_NORMS:
        raise ConfigError(f"score_norm must be one of {', '.join(SCORE_NORMS)}, got {score_norm!r}")
    return str(score_norm)


def check_cohort_top_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < MIN_COHORT:
        raise ConfigError(f"cohort_top_n must be an integer >= {MIN_COHORT}, got {n!r}")
    return int(n)


@dataclass(frozen=True, eq=False)
class SpeakerStats:
    """The enrolled side of AS-norm for one gallery state, by speaker ordinal."""

    #: Mean and std of each speaker's ``top_n`` best cohort scores (its centroid against the others).
    mean: np.ndarray
    std: np.ndarray
    #: Each speaker's cohort, best first: ordinals and scores (min(top_n + 1, S - 1) of them),
    #: so that one more speaker can be left out exactly (:func:`_enrolled_without`).
    top_ordinals: np.ndarray
    top_scores: np.ndarray
    top_n: int
    key: tuple[str, int, str]


_lock = threading.Lock()
_cache: OrderedDict[tuple[Any, ...], SpeakerStats] = OrderedDict()
_fingerprints: weakref.WeakKeyDictionary[SpeakerMaps, str] = weakref.WeakKeyDictionary()


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def gallery_key(index: SpeakerIndex) -> tuple[str, int, str]:
    """(directory, version, fingerprint of the names and centroids): one gallery state, as far
    as AS-norm can tell (its statistics depend on nothing else)."""
    g = index.speaker_maps()
    with _lock:
        fp = _fingerprints.get(g)
    if fp is None:
        h = hashlib.blake2b(digest_size=16)
        h.update("\0".join(g.names).encode())
        h.update(np.ascontiguousarray(g.centroids).tobytes())  # the cohort is the centroids, nothing else
        fp = h.hexdigest()
        with _lock:
            _fingerprints[g] = fp
    return (str(index.path), int(index.version), fp)


def _sorted_top(sims: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the m highest entries (ordinals, values), best first."""
    if m >= sims.shape[1]:
        idx = np.argsort(-sims, axis=1, kind="stable")
    else:
        part = np.argpartition(-sims, m - 1, axis=1)[:, :m]
        vals = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        idx = np.take_along_axis(part, order, axis=1)
    idx = idx[:, :m]
    return idx, np.take_along_axis(sims, idx, axis=1)


def _mean_std(sum1: np.ndarray, sum2: np.ndarray, n: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    mu = sum1 / n
    var = np.maximum(sum2 / n - mu * mu, 0.0)
    return mu, np.maximum(np.sqrt(var), MIN_STD)


def speaker_stats(index: SpeakerIndex, top_n: int = DEFAULT_COHORT_TOP_N) -> SpeakerStats | None:
    """The enrolled side's statistics (cached per gallery state), or None with fewer than
    MIN_SPEAKERS speakers."""
    top_n = check_cohort_top_n(top_n)
    key = gallery_key(index)
    ck = (*key, top_n)
    with _lock:
        hit = _cache.get(ck)
        if hit is not None:
            _cache.move_to_end(ck)
            return hit
    g = index.speaker_maps()
    s = len(g.names)
    if s < MIN_SPEAKERS:
        return None
    c = g.centroids.astype(np.float32)
    m = min(top_n + 1, s - 1)
    n_use = min(top_n, s - 1)
    ords = np.empty((s, m), np.int64)
    vals = np.empty((s, m), np.float64)
    for a in range(0, s, _BLOCK):
        sims = (c[a : a + _BLOCK] @ c.T).astype(np.float64)
        rows = np.arange(a, min(a + _BLOCK, s))
        sims[rows - a, rows] = -np.inf  # a speaker is not in its own cohort
        ords[rows], vals[rows] = _sorted_top(sims, m)
    mu, sd = _mean_std(vals[:, :n_use].sum(axis=1), np.square(vals[:, :n_use]).sum(axis=1), n_use)
    st = SpeakerStats(mean=mu, std=sd, top_ordinals=ords, top_scores=vals, top_n=top_n, key=key)
    with _lock:
        _cache[ck] = st
        while len(_cache) > _CACHE_ENTRIES:
            _cache.popitem(last=False)
    return st


def _enrolled_without(st: SpeakerStats, s: int, owner: int, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Enrolled-side (mean, std) of candidates ``cand`` with speaker ``owner`` also left out of
    their cohorts (the calibration's held-out voice: a stranger is not in the gallery)."""
    n2 = min(st.top_n, s - 2)
    if n2 < MIN_COHORT:
        return st.mean[cand].copy(), np.full(len(cand), np.nan)
    ords, vals = st.top_ordinals[cand], st.top_scores[cand]
    hit = ords[:, : n2 + 1] == owner
    has = hit.any(axis=1)
    v = vals[:, : n2 + 1]
    s1 = np.where(has, v.sum(axis=1) - np.where(hit, v, 0.0).sum(axis=1), v[:, :n2].sum(axis=1))
    s2 = np.where(has, np.square(v).sum(axis=1) - np.where(hit, v * v, 0.0).sum(axis=1),
                  np.square(v[:, :n2]).sum(axis=1))
    return _mean_std(s1, s2, n2)


def _query_side(sims: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query and candidate, the query side's (mean, std) over its top_n cohort scores with
    that candidate left out; entries already -inf in ``sims`` are not in the cohort. Also a
    per-query flag: False when the cohort has fewer than MIN_COHORT scores."""
    nq, s = sims.shape
    avail = np.isfinite(sims).sum(axis=1)  # speakers a query may be compared with
    n_i = np.minimum(top_n, avail - 1)  # cohort size once the candidate is left out
    m = min(top_n + 1, s)
    idx, top = _sorted_top(sims, m)
    top = np.where(np.isfinite(top), top, 0.0)
    p1 = np.cumsum(top, axis=1)
    p2 = np.cumsum(top * top, axis=1)
    rank = np.full((nq, s), s, np.int64)
    np.put_along_axis(rank, idx, np.broadcast_to(np.arange(m), idx.shape), axis=1)
    rows = np.arange(nq)
    ok = n_i >= MIN_COHORT
    nn = np.maximum(n_i, 1)
    inside = rank <= nn[:, None]  # the candidate is among the first n_i + 1: drop it from them
    with np.errstate(invalid="ignore"):
        s_in1 = p1[rows, np.minimum(nn, m - 1)][:, None] - sims
        s_in2 = p2[rows, np.minimum(nn, m - 1)][:, None] - sims * sims
    s_out1 = p1[rows, nn - 1][:, None]
    s_out2 = p2[rows, nn - 1][:, None]
    mu, sd = _mean_std(np.where(inside, s_in1, s_out1), np.where(inside, s_in2, s_out2), nn[:, None])
    return mu, sd, ok


def _top_k(cand: np.ndarray, norm: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best normalised scores (ties: the lower ordinal first)."""
    order = np.lexsort((cand, -norm))
    return order[:k]


def asnorm_rank(
    index: SpeakerIndex,
    q: np.ndarray,
    k: int,
    scoring: str,
    top_n: int,
    cohort_top_n: int,
    exclude: list[np.ndarray] | None = None,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
    """Per query (unit rows ``q``), the k best speakers by AS-normalised score:
    (ordinals, raw scores, normalised scores), best first. None when the gallery is too small
    for a cohort (see the module docs). ``exclude`` (ordinals per query) leaves speakers out
    of the ranking and of every cohort (held-out trials): the enrolled side then leaves out
    the query's first excluded speaker too.
    """
    st = speaker_stats(index, cohort_top_n)
    if st is None:
        return None
    g = index.speaker_maps()
    s = len(g.names)
    c = g.centroids
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for a in range(0, len(q), 256):
        qb = q[a : a + 256]
        sims = (qb @ c.T).astype(np.float64)
        if exclude is not None:
            for i, ex in enumerate(exclude[a : a + 256]):
                if len(ex):
                    sims[i, ex] = -np.inf
        raw_of = None
        if scoring != "centroid":
            raw_of = _shortlist(index, qb, k, scoring, top_n, g, None if exclude is None else exclude[a : a + 256])
        mu_q, sd_q, ok = _query_side(sims, cohort_top_n)
        for i in range(len(qb)):
            if not ok[i]:
                return None
            if raw_of is None:
                cand = np.flatnonzero(np.isfinite(sims[i]))
                raw = sims[i, cand]
            else:
                cand, raw = raw_of[i]
            mu_e, sd_e = st.mean[cand], st.std[cand]
            ex = None if exclude is None else exclude[a + i]
            if ex is not None and len(ex):
                mu_e, sd_e = _enrolled_without(st, s, int(ex[0]), cand)
                if np.isnan(sd_e).any():
                    return None
            norm = 0.5 * ((raw - mu_e) / sd_e + (raw - mu_q[i, cand]) / sd_q[i, cand])
            pick = _top_k(cand, norm, min(k, len(cand)))
            out.append((cand[pick], raw[pick], norm[pick]))
    return out


def _shortlist(index: SpeakerIndex, qb: np.ndarray, k: int, scoring: str, top_n: int, g: SpeakerMaps,
               exclude: list[np.ndarray] | None) -> list[tuple[np.ndarray, np.ndarray]]:
    from .identify import rank_speakers

    ex = None if exclude is None else [[g.names[int(o)] for o in e] for e in exclude]
    ranked = rank_speakers(index, qb, max(k, SHORTLIST), scoring, top_n=top_n, exclude=ex)
    return [
        (np.array([g.ordinal[m.speaker] for m in r], np.int64), np.array([m.score for m in r], np.float64))
        for r in ranked
    ]

