"""Open-set identification: which enrolled speaker is this, or nobody we know?

A query embedding is compared with every enrolled speaker; each speaker's score is formed from
its clips by a *scoring rule*:

* ``centroid``: cosine to the speaker's mean clip embedding (L2-normalised);
* ``best``: the best cosine over the speaker's clips;
* ``topn``: the mean of the speaker's ``top_n`` best clip cosines (all of them if it has fewer).

``best`` and ``topn`` run on FAISS: the query's nearest clips are searched, growing the
search until the k best speakers are known exactly (for the exact "flat" index; approximate
indexes give approximate scores). ``centroid`` is one small matrix product with the
speaker centroids. Scores are raw cosines in [-1, 1].

The best speaker is accepted when its score reaches the threshold, else the verdict is
*unknown* (``Identification.speaker is None``). The default threshold is the index's own,
set by :func:`calibrate_open_set_threshold`: with N enrolled speakers, a stranger is compared
with all N and the best of those N impostor scores is far higher than one impostor trial, so
the pairwise verification threshold accepts many strangers. The calibration measures that
"best-of-gallery" impostor score on the gallery itself (leave one speaker out) and picks the
threshold for the target false-accept rate. See benchmarks/results/identify_librispeech.md.

Two things would make that calibration lie, and :func:`calibrate_open_set` handles both and
says so (the index's info: ``threshold_basis``, ``threshold_warnings``,
``near_duplicate_speakers``; the indexer's reports carry the warnings):

* **One voice under two names.** Its clips score ~1.0 against its other name, so a few such
  pairs push a 1 % quantile to 0.97-1.0 and every query comes back unknown. Names whose
  centroids have cosine >= NEAR_DUPLICATE_COSINE are counted as one voice: one name's clips
  are impostor queries, and none is the other's impostor.
* **A small gallery.** A 1 % target needs 100 impostor scores from 100 different speakers
  (:func:`min_calibration_speakers`); with fewer, the empirical quantile is the highest score,
  which lets about 1 stranger in (speakers + 1) through. From MIN_TAIL_FIT_SPEAKERS speakers
  the threshold is extrapolated from an exponential tail fitted to the upper half of the
  scores instead (on librispeech-251, 20-speaker CAM++ galleries then accept 1.4 % of
  unenrolled speakers, against 3.9 % at the highest score floored at 0.588).
"""

from __future__ import annotations

import logging
import math
import numbers
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ConfigError, EmptyGalleryError, ModelMismatchError, SpeakeridError
from .index import SpeakerIndex
from .metrics import threshold_for_far

__all__ = [
    "DEFAULT_FAR",
    "DEFAULT_SCORING",
    "DEFAULT_TOP_N",
    "SCORINGS",
    "Identification",
    "MIN_TAIL_FIT_SPEAKERS",
    "NEAR_DUPLICATE_COSINE",
    "Match",
    "OpenSetCalibration",
    "Scoring",
    "calibrate_open_set",
    "calibrate_open_set_threshold",
    "gallery_impostor_scores",
    "identify",
    "min_calibration_speakers",
    "model_verification_threshold",
    "near_duplicate_speakers",
    "rank_speakers",
]

log = logging.getLogger("speakerid")

Scoring = Literal["centroid", "best", "topn"]
SCORINGS: tuple[str, ...] = ("centroid", "best", "topn")
#: Chosen on librispeech-251 with up to 3 enrol segments per speaker (benchmarks/eval_identify.py,
#: results/identify_librispeech.md): centroid ties best-clip on top-1 and open-set FNIR with
#: CAM++ and is the best on top-1 with GE2E; top-n is worse with both. It also costs one small
#: product whatever a speaker's clip count, and its score does not grow with that count.
DEFAULT_SCORING: Scoring = "centroid"
DEFAULT_TOP_N = 3
#: Target false-accept rate of unenrolled speakers for the calibrated threshold.
DEFAULT_FAR = 0.01
#: Calibration uses at most this many gallery clips as impostor queries (bounded cost).
CALIBRATION_MAX_CLIPS = 2000
CALIBRATION_SEED = 0
#: Two names whose centroids have at least this cosine are taken for one voice enrolled twice.
#: Measured on librispeech-251 (one clip per speaker, 31,375 pairs of different speakers): the
#: highest centroid cosine of two different speakers is 0.874 with CAM++ (the next 0.703; 0.709
#: with two-clip centroids) and 0.877 with GE2E; the same clips enrolled twice give 1.000, and
#: the two halves of one recording 0.894 (CAM++ median; 5 % reach 0.95). 0.95 clears the
#: different-speaker maximum of both models by 0.07.
NEAR_DUPLICATE_COSINE = 0.95
#: With fewer distinct speakers than this, no impostor tail is fitted (see calibrate_open_set).
MIN_TAIL_FIT_SPEAKERS = 10
#: Near-duplicate pairs named one by one in warnings (info() lists them all).
MAX_DUPLICATE_WARNINGS = 10
_DUPLICATE_BLOCK = 1024
#: The first FAISS search fetches this many neighbours per speaker wanted (times clips/speaker).
_GROWTH = 4


@dataclass(frozen=True)
class Match:
    """One candidate identity: its score (raw cosine under the scoring rule) and 1-based rank."""

    speaker: str
    score: float
    rank: int


@dataclass(frozen=True)
class Identification:
    """The verdict for one query.

    ``matches`` are the top-k speakers, best first. ``accepted`` says whether the best one
    reaches ``threshold``; ``speaker`` is then its name, else None (an unknown voice).
    """

    matches: tuple[Match, ...]
    accepted: bool
    threshold: float
    speaker: str | None
    scoring: str = DEFAULT_SCORING
    #: How the threshold was chosen (the index's method, "argument", or the model fallback).
    threshold_method: str = ""

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "speaker": self.speaker,
            "accepted": self.accepted,
            "score": None if self.best is None else self.best.score,
            "threshold": self.threshold,
            "threshold_method": self.threshold_method,
            "scoring": self.scoring,
            "matches": [{"speaker": m.speaker, "score": m.score, "rank": m.rank} for m in self.matches],
        }


# --- validation ---------------------------------------------------------------------------


def _check_scoring(scoring: str, top_n: int) -> None:
    if scoring not in SCORINGS:
        raise ConfigError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
    if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 1:
        raise ConfigError(f"top_n must be a positive integer, got {top_n!r}")


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _queries(x: Any, dim: int) -> np.ndarray:
    """(n, dim) float32 unit rows; a 1-d vector is one query."""
    try:
        a = np.asarray(x)
    except ValueError as e:
        raise ConfigError(f"query vectors must be a 2-d array (n, {dim}): {e}") from e
    if a.dtype.kind not in "fiu":
        raise ConfigError(f"query vectors must be numeric, got dtype {a.dtype}")
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ConfigError(f"query vectors must be a 2-d array (n, {dim}), got shape {a.shape}")
    if a.shape[1] != dim:
        raise ModelMismatchError(
            f"query vectors have dim {a.shape[1]} but the index holds dim {dim} embeddings "
            "(embed with the index's model)"
        )
    a = np.array(a, dtype=np.float32, order="C")
    if not np.isfinite(a).all():
        raise ConfigError("query vectors contain NaN or infinite values")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if len(a) and (norms < 1e-6).any():
        raise ConfigError("query vectors contain an all-zero vector")
    return a / norms


def _check_threshold(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ConfigError(f"threshold must be a finite number, got {value!r}")
    return float(value)


# --- a snapshot of the gallery, cached per index object -----------------------------------


class _Gallery:
    """Speaker ordinals of the FAISS ids, clip counts and centroids of one index state."""

    def __init__(self, index: SpeakerIndex) -> None:
        utt = index.utterances()
        self.utt_ref = utt  # identity marks the state: add/remove/save replace the table
        self.names = index.speakers()
        ids = utt["id"].to_numpy().astype(np.int64)
        ordinal = pc.index_in(utt["speaker"], value_set=pa.array(self.names, pa.string()))
        spk = ordinal.to_numpy(zero_copy_only=False).astype(np.int64)
        order = np.argsort(ids)
        self.sorted_ids, self.sorted_spk = ids[order], spk[order]
        self.n_clips = np.bincount(spk, minlength=len(self.names)).astype(np.int64)
        self._centroids: np.ndarray | None = None
        self._index = index

    def centroids(self) -> np.ndarray:
        if self._centroids is None:
            names, c = self._index.speaker_centroids()
            if names != self.names:  # cannot happen unless the index changed under us
                raise SpeakeridError("the index changed while it was being read")
            self._centroids = np.ascontiguousarray(c, dtype=np.float32)
        return self._centroids

    def speaker_of(self, ids: np.ndarray) -> np.ndarray:
        """Speaker ordinal of each FAISS id (-1 for the -1 padding of approximate search)."""
        pos = np.searchsorted(self.sorted_ids, ids)
        pos = np.minimum(pos, len(self.sorted_ids) - 1)
        out = self.sorted_spk[pos]
        return np.where((ids >= 0) & (self.sorted_ids[pos] == ids), out, -1)


_galleries: weakref.WeakKeyDictionary[SpeakerIndex, _Gallery] = weakref.WeakKeyDictionary()


def _gallery(index: SpeakerIndex) -> _Gallery:
    if not isinstance(index, SpeakerIndex):
        raise ConfigError(f"index must be a SpeakerIndex, got {type(index).__name__}")
    g = _galleries.get(index)
    if g is None or g.utt_ref is not index.utterances():
        g = _galleries[index] = _Gallery(index)
    return g


# --- scoring ------------------------------------------------------------------------------


def _top(ordinals: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (ordinal, score), best first; ties go to the first name (ordinals follow
    the sorted speaker names)."""
    if len(scores) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        cut = scores[part].min()
        part = np.flatnonzero(scores >= cut)  # keep every tie at the cut, sort, then trim
        ordinals, scores = ordinals[part], scores[part]
    order = np.lexsort((ordinals, -scores))[:k]
    return ordinals[order], scores[order]


def _centroid_rank(
    g: _Gallery, q: np.ndarray, k: int, exclude: list[np.ndarray] | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    sims = q @ g.centroids().T  # (nq, speakers)
    if exclude is not None:
        lens = [len(e) for e in exclude]
        if sum(lens):
            sims[np.repeat(np.arange(len(q)), lens), np.concatenate(exclude)] = -np.inf
    if k == 1:  # the calibration's case: one vectorised argmax (the first name wins a tie, as in _top)
        best = np.argmax(sims, axis=1)
        score = sims[np.arange(len(q)), best].astype(np.float64)
        return [
            (best[i : i + 1], score[i : i + 1]) if np.isfinite(score[i]) else (best[:0], score[:0])
            for i in range(len(q))
        ]
    all_ord = np.arange(len(g.names))
    out = []
    for i in range(len(q)):
        keep = np.isfinite(sims[i])
        out.append(_top(all_ord[keep], sims[i][keep].astype(np.float64), k))
    return out


def _group_row(
    g: _Gallery,
    scores: np.ndarray,
    ids: np.ndarray,
    need_of: np.ndarray,
    k: int,
    exhausted: bool,
    exclude: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Speaker scores from one query's nearest clips, or None if more clips are needed.

    ``need_of[s]`` clips of speaker s make its score (1 for best, min(top_n, clips) for topn).
    Unseen clips score at most the last score found, which bounds every incomplete speaker.
    """
    k = min(k, len(g.names) - (0 if exclude is None else len(exclude)))
    if k < 1:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    spk = g.speaker_of(ids)
    ok = (spk >= 0) & np.isfinite(scores)
    if exclude is not None and len(exclude):
        ok &= ~np.isin(spk, exclude)
    spk, sc = spk[ok], scores[ok].astype(np.float64)
    uniq, inv = np.unique(spk, return_inverse=True)
    counts = np.bincount(inv, minlength=len(uniq))
    order = np.argsort(inv, kind="stable")  # grouped by speaker, each group still best first
    within = np.empty(len(inv), np.int64)
    within[order] = np.arange(len(inv)) - np.repeat(np.cumsum(counts) - counts, counts)
    need = need_of[uniq]
    take = within < need[inv]
    sums = np.bincount(inv, weights=np.where(take, sc, 0.0), minlength=len(uniq))
    seen = np.minimum(counts, need)
    complete = seen >= need
    if exhausted:  # every clip was searched (or the approximate index found no more)
        return _top(uniq, sums / seen, k) if len(uniq) else (uniq, sums)
    found = scores[np.isfinite(scores)]
    bound = float(found[-1]) if len(found) else math.inf  # no unseen clip scores higher
    upper = (sums + (need - seen) * bound) / need
    rival = max([bound, *upper[~complete].tolist()])
    final = sums[complete] / need[complete]
    if int((final >= rival).sum()) < k:
        return None
    return _top(uniq[complete], final, k)


def _search_rank(
    index: SpeakerIndex,
    g: _Gallery,
    q: np.ndarray,
    k: int,
    scoring: str,
    top_n: int,
    exclude: list[np.ndarray] | None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    n = len(index)
    need_of = np.minimum(g.n_clips, top_n) if scoring == "topn" else np.ones_like(g.n_clips)
    per_speaker = max(1.0, n / max(1, len(g.names)))
    m = min(n, max(32, int(_GROWTH * (k + 1) * math.ceil(per_speaker))))
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(q)
    pending = np.arange(len(q))
    while len(pending):
        scores, ids = index.search(q[pending], m)
        exhausted = m >= n or ids.shape[1] < m
        still = []
        for row, i in enumerate(pending):
            ex = None if exclude is None else exclude[i]
            res = _group_row(g, scores[row], ids[row], need_of, k, exhausted, ex)
            if res is None:
                still.append(i)
            else:
                out[i] = res
        pending = np.asarray(still, dtype=np.int64)
        m = min(n, m * _GROWTH)
    return [r for r in out if r is not None]


def rank_speakers(
    index: SpeakerIndex,
    query_vectors: Any,
    k: int = 5,
    scoring: str = DEFAULT_SCORING,
    *,
    top_n: int = DEFAULT_TOP_N,
    exclude: Any = None,
) -> list[list[Match]]:
    """The k best speakers of each query under ``scoring`` (no threshold applied).

    ``exclude`` (optional, one item per query: None, a speaker name, or a collection of
    names) leaves those speakers out of the query's ranking: the leave-one-speaker-out trials
    of the calibration. A query whose every speaker is excluded gets an empty list.
    """
    k = _check_k(k)
    _check_scoring(scoring, top_n)
    g = _gallery(index)
    q = _queries(query_vectors, index.dim)
    if len(index) == 0 or not g.names:
        raise EmptyGalleryError(f"the index at {index.path} holds no speakers")
    ex: list[np.ndarray] | None = None
    if exclude is not None:
        ex_list = list(exclude)
        if len(ex_list) != len(q):
            raise ConfigError(f"exclude has {len(ex_list)} items for {len(q)} queries")
        pos = {s: i for i, s in enumerate(g.names)}
        ex = []
        for item in ex_list:
            names = () if item is None else (item,) if isinstance(item, str) else tuple(item)
            if not all(isinstance(s, str) for s in names):
                raise ConfigError(f"exclude items are None, a speaker name or names, got {item!r}")
            ex.append(np.array(sorted({pos[s] for s in names if s in pos}), dtype=np.int64))
    k_eff = max(1, min(k, len(g.names)))
    if len(q) == 0:
        return []
    if scoring == "centroid":
        ranked = _centroid_rank(g, q, k_eff, ex)
    else:
        ranked = _search_rank(index, g, q, k_eff, scoring, top_n, ex)
    return [
        [Match(g.names[int(o)], float(s), r + 1) for r, (o, s) in enumerate(zip(ords, scs))]
        for ords, scs in ranked
    ]


# --- thresholds ---------------------------------------------------------------------------


def model_verification_threshold(model: str) -> float | None:
    """The model's pairwise verification threshold (its calibrated default), if it is known."""
    from .models import store

    try:
        info = store.info(model)
    except SpeakeridError:
        return None
    value = info.get("default_threshold", info.get("spec", {}).get("default_threshold"))
    return None if value is None else float(value)


def _resolve_threshold(index: SpeakerIndex, threshold: float | None) -> tuple[float, str]:
    if threshold is not None:
        return _check_threshold(threshold), "argument"
    if index.threshold is not None:
        return float(index.threshold), str(index.info()["threshold_method"] or "index")
    fallback = model_verification_threshold(index.spec.model)
    if fallback is None:
        raise ConfigError(
            f"the index at {index.path} has no threshold and model {index.spec.model!r} has no "
            "default one: pass a threshold"
        )
    return fallback, f"{index.spec.model} verification threshold (the index has none)"


def identify(
    index: SpeakerIndex,
    query_vectors: Any,
    k: int = 5,
    threshold: float | None = None,
    scoring: str = DEFAULT_SCORING,
    *,
    top_n: int = DEFAULT_TOP_N,
) -> list[Identification]:
    """Identify each query embedding (rows of ``query_vectors``; a 1-d vector is one query).

    Returns one :class:`Identification` per query with the ``k`` best speakers (all of them
    when ``k`` exceeds the number enrolled). ``threshold`` defaults to the index's own (see
    :func:`calibrate_open_set_threshold`), else the model's verification threshold.
    Raises EmptyGalleryError when no speaker is enrolled and ModelMismatchError when the
    vectors have another dimension than the index's.
    """
    k = _check_k(k)
    _check_scoring(scoring, top_n)
    thr, method = _resolve_threshold(index, threshold)
    results = []
    for matches in rank_speakers(index, query_vectors, k, scoring, top_n=top_n):
        accepted = bool(matches) and matches[0].score >= thr
        results.append(
            Identification(
                matches=tuple(matches),
                accepted=accepted,
                threshold=thr,
                speaker=matches[0].speaker if accepted else None,
                scoring=scoring,
                threshold_method=method,
            )
        )
    return results


def _calibration_clips(g: _Gallery, max_clips: int, seed: int) -> np.ndarray:
    """Row positions (into sorted ids) of at most ``max_clips`` clips, spread over speakers.

    Each speaker's clips are shuffled; clips are then taken round by round (every speaker's
    first pick, then every speaker's second...), so no speaker dominates the sample.
    """
    n = len(g.sorted_ids)
    if n <= max_clips:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n)
    spk = g.sorted_spk[shuffled]
    order = np.argsort(spk, kind="stable")
    counts = np.bincount(spk, minlength=len(g.names))
    rank_in_spk = np.empty(n, np.int64)
    rank_in_spk[order] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    tiebreak = rng.random(n)
    pick = np.lexsort((tiebreak, rank_in_spk))[:max_clips]
    return np.sort(shuffled[pick])


def near_duplicate_speakers(
    index: SpeakerIndex,
    min_cosine: float = NEAR_DUPLICATE_COSINE,
    *,
    speakers: Sequence[str] | None = None,
) -> list[tuple[str, str, float]]:
    """Pairs of enrolled names whose centroids have cosine >= ``min_cosine``: one voice
    enrolled under two names (or the same clips enrolled twice), as (a, b, cosine) with
    a < b, highest cosine first.

    ``speakers`` limits the search to pairs with at least one of those names (the cost is
    len(speakers) x all speakers x dim; default: every pair). See NEAR_DUPLICATE_COSINE for
    how the default bound was chosen.
    """
    min_cosine = _check_threshold(min_cosine)
    g = _gallery(index)
    if len(g.names) < 2:
        return []
    cent = g.centroids()
    if speakers is None:
        rows = np.arange(len(g.names))
    else:
        pos = {s: i for i, s in enumerate(g.names)}
        rows = np.array(sorted({pos[s] for s in speakers if s in pos}), dtype=np.int64)
    found: dict[tuple[int, int], float] = {}
    for start in range(0, len(rows), _DUPLICATE_BLOCK):
        block = rows[start : start + _DUPLICATE_BLOCK]
        sims = cent[block] @ cent.T
        sims[np.arange(len(block)), block] = -np.inf  # a speaker is not its own duplicate
        for r, c in zip(*np.nonzero(sims >= min_cosine)):
            a, b = sorted((int(block[r]), int(c)))
            found[(a, b)] = float(sims[r, c])
    pairs = [(g.names[a], g.names[b], cos) for (a, b), cos in found.items()]
    return sorted(pairs, key=lambda t: (-t[2], t[0], t[1]))


def _voice_groups(n: int, pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """Union-find over speaker ordinals: the group representative (lowest ordinal) of each."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)], dtype=np.int64)


@dataclass(frozen=True)
class _Impostors:
    scores: np.ndarray
    #: Near-duplicate pairs found (names, cosine) and the number of distinct voices.
    near_duplicates: tuple[tuple[str, str, float], ...]
    voices: int


def _impostors(
    index: SpeakerIndex,
    scoring: str,
    top_n: int,
    max_clips: int,
    seed: int,
    near_duplicate_cosine: float | None,
) -> _Impostors:
    g = _gallery(index)
    if len(g.names) < 2:
        return _Impostors(np.zeros(0, np.float32), (), len(g.names))
    rows = _calibration_clips(g, max_clips, seed)
    owner = g.sorted_spk[rows]
    pairs: list[tuple[str, str, float]] = []
    if near_duplicate_cosine is not None:
        sampled = [g.names[int(o)] for o in np.unique(owner)]
        pairs = near_duplicate_speakers(index, near_duplicate_cosine, speakers=sampled)
    pos = {s: i for i, s in enumerate(g.names)}
    rep = _voice_groups(len(g.names), [(pos[a], pos[b]) for a, b, _ in pairs])
    voices = int(len(np.unique(rep)))
    # one voice enrolled under several names: only its first name's clips are impostor
    # queries, and each query leaves its whole group out (they are not impostors of it)
    keep = rep[owner] == owner
    rows, owner = rows[keep], owner[keep]
    members: dict[int, list[str]] = {}
    for i, r in enumerate(rep.tolist()):
        members.setdefault(r, []).append(g.names[i])
    exclude = [members[int(rep[o])] for o in owner]
    vecs = index.vectors(g.sorted_ids[rows])
    ranked = rank_speakers(index, vecs, 1, scoring, top_n=top_n, exclude=exclude)
    scores = np.array([r[0].score for r in ranked if r], dtype=np.float32)
    return _Impostors(scores, tuple(pairs), voices)


def gallery_impostor_scores(
    index: SpeakerIndex,
    scoring: str = DEFAULT_SCORING,
    *,
    top_n: int = DEFAULT_TOP_N,
    max_clips: int = CALIBRATION_MAX_CLIPS,
    seed: int = CALIBRATION_SEED,
    near_duplicate_cosine: float | None = NEAR_DUPLICATE_COSINE,
) -> np.ndarray:
    """Best-of-gallery impostor scores, leaving one speaker out.

    For each enrolled clip (at most ``max_clips``, a seeded sample spread over speakers) the
    best score among the *other* enrolled speakers, under ``scoring``: what an unenrolled
    voice scores against a gallery of this size and make-up. Empty with < 2 speakers.

    Names that look like one voice (centroid cosine >= ``near_duplicate_cosine``, see
    :func:`near_duplicate_speakers`; None: no such check) count as one speaker: only the
    clips of the first name are queries, and each query leaves the whole group out.
    """
    _check_scoring(scoring, top_n)
    _check_max_clips(max_clips)
    if near_duplicate_cosine is not None:
        near_duplicate_cosine = _check_threshold(near_duplicate_cosine)
    return _impostors(index, scoring, top_n, int(max_clips), int(seed), near_duplicate_cosine).scores


def _check_max_clips(max_clips: Any) -> None:
    if isinstance(max_clips, bool) or not isinstance(max_clips, (int, np.integer)) or max_clips < 1:
        raise ConfigError(f"max_clips must be a positive integer, got {max_clips!r}")


def min_calibration_speakers(far: float) -> int | None:
    """Distinct speakers a gallery needs to calibrate a threshold for ``far`` from its own
    impostor scores: ceil(1/far), so that at least one impostor score may lie above the
    threshold (below that the empirical threshold is just the highest score, whose
    false-accept rate is about 1/(speakers+1), not ``far``). None for far = 0.

    The count is of speakers, not clips: clips of one speaker are one stranger voice tried
    several times, not independent strangers.
    """
    if far <= 0:
        return None
    return max(1, math.ceil(1.0 / far - 1e-9))


def _tail_fit(scores: np.ndarray, far: float) -> tuple[float, int]:
    """Threshold at ``far`` from an exponential tail fitted above the median of ``scores``.

    Peaks over threshold: with u the (k+1)-th highest of n scores (k = n // 2) and beta the
    mean excess of the k highest over u, P(score >= t) ~ (k/n) exp(-(t - u) / beta). Cosine
    tails are bounded, i.e. lighter than exponential, so this errs high (fewer false
    accepts). Returns (threshold, k); never below the highest score.
    """
    x = np.sort(scores.astype(np.float64))[::-1]
    n = len(x)
    k = max(1, n // 2)
    top = float(np.nextafter(np.float32(x[0]), np.float32(np.inf)))
    if n < 2:
        return top, k
    u = x[k]
    beta = float(np.mean(x[:k] - u))
    if beta <= 0 or far >= k / n:
        return top, k
    return max(top, float(u + beta * math.log((k / n) / far))), k


@dataclass(frozen=True)
class OpenSetCalibration:
    """What :func:`calibrate_open_set` set, and what it rests on."""

    #: The threshold stored in the index (None: none could be had).
    threshold: float | None
    #: The index's threshold_method string.
    method: str
    #: What the value rests on: "calibrated" (the gallery's own impostor scores, enough of
    #: them), "tail-fit" (too few speakers: an exponential tail fitted to them and
    #: extrapolated), "gallery-max" (too few to fit: the highest impostor score),
    #: "verification-threshold" (the floor, or a one-voice gallery) or "none".
    basis: str
    far: float
    #: Impostor scores used, enrolled names, distinct voices (names merged when near-duplicate).
    n_scores: int
    speakers: int
    voices: int
    #: Distinct speakers needed to calibrate for ``far`` (:func:`min_calibration_speakers`).
    min_speakers: int | None
    #: The value from the gallery before the floor was applied (None without impostors).
    gallery_value: float | None
    floored: bool
    near_duplicates: tuple[tuple[str, str, float], ...] = ()
    warnings: tuple[str, ...] = ()


def _duplicate_warnings(pairs: Sequence[tuple[str, str, float]], bound: float) -> list[str]:
    out = [
        f"speakers {a!r} and {b!r} look like one voice enrolled twice (centroid cosine {c:.3f} >= "
        f"{bound:g}); they are not counted as each other's impostors when calibrating the threshold"
        for a, b, c in pairs[:MAX_DUPLICATE_WARNINGS]
    ]
    if len(pairs) > MAX_DUPLICATE_WARNINGS:
        out.append(
            f"... and {len(pairs) - MAX_DUPLICATE_WARNINGS} more pairs of speakers that look like one "
            "voice enrolled twice (the index info lists them all)"
        )
    return out


def calibrate_open_set(
    index: SpeakerIndex,
    far: float = DEFAULT_FAR,
    *,
    scoring: str = DEFAULT_SCORING,
    top_n: int = DEFAULT_TOP_N,
    max_clips: int = CALIBRATION_MAX_CLIPS,
    seed: int = CALIBRATION_SEED,
    floor: float | None | Literal["model"] = "model",
    near_duplicate_cosine: float | None = NEAR_DUPLICATE_COSINE,
) -> OpenSetCalibration:
    """Set the index's open-set threshold for a false-accept rate ``far``; say what it rests on.

    The threshold comes from :func:`gallery_impostor_scores` (leave-one-speaker-out
    best-of-gallery scores), so it grows with the gallery:

    * with at least :func:`min_calibration_speakers` distinct speakers (100 for 1 %), it is
      :func:`speakerid.metrics.threshold_for_far` of those scores ("calibrated");
    * with fewer, the 1 % quantile cannot be read off the gallery: the threshold is
      extrapolated from an exponential tail fitted to the upper half of the scores
      ("tail-fit", MIN_TAIL_FIT_SPEAKERS or more speakers) or is the highest score
      ("gallery-max"), and a warning says so;
    * it is never set below ``floor`` (default: the model's pairwise verification threshold;
      "verification-threshold" when that decides).

    Names that look like one voice (see :func:`near_duplicate_speakers`) are counted once and
    are not each other's impostors, and each such pair is a warning. The value, method,
    basis, warnings and pairs are stored with ``index.set_threshold`` (the index must be open
    writable; saving is the caller's job). Call it again whenever the gallery changes.
    """
    if isinstance(far, bool) or not isinstance(far, numbers.Real) or not 0.0 <= float(far) <= 1.0:
        raise ConfigError(f"far must be a rate in [0, 1], got {far!r}")
    far = float(far)
    _check_scoring(scoring, top_n)
    _check_max_clips(max_clips)
    if near_duplicate_cosine is not None:
        near_duplicate_cosine = _check_threshold(near_duplicate_cosine)
    model = index.spec.model
    if floor == "model":
        floor_value = model_verification_threshold(model)
    elif floor is None:
        floor_value = None
    else:
        floor_value = _check_threshold(floor)
    n_speakers = len(index.speakers())
    need = min_calibration_speakers(far)

    def done(value: float | None, method: str, basis: str, **kw: Any) -> OpenSetCalibration:
        cal = OpenSetCalibration(
            threshold=value, method=method, basis=basis, far=far, speakers=n_speakers, min_speakers=need, **kw
        )
        index.set_threshold(
            value, method, basis=basis, warnings=cal.warnings, near_duplicates=cal.near_duplicates
        )
        for w in cal.warnings:
            log.debug("calibration of %s: %s", index.path, w)
        return cal

    if n_speakers == 0:
        return done(None, "gallery-impostor: empty gallery, no threshold", "none", n_scores=0, voices=0,
                    gallery_value=None, floored=False)
    imp = _impostors(index, scoring, top_n, int(max_clips), int(seed), near_duplicate_cosine)
    dup_warnings = _duplicate_warnings(imp.near_duplicates, near_duplicate_cosine or 1.0)
    if imp.voices == 1 or len(imp.scores) == 0:
        fallback = model_verification_threshold(model) if floor_value is None else floor_value
        one = "1 speaker" if n_speakers == 1 else f"{n_speakers} names of 1 voice"
        method = (
            f"{model} verification threshold (gallery has {one}: no impostors to calibrate on)"
            if fallback is not None
            else f"none: gallery has {one} and the model has no verification threshold"
        )
        return done(fallback, method, "verification-threshold" if fallback is not None else "none",
                    n_scores=0, voices=imp.voices, gallery_value=None, floored=False,
                    near_duplicates=imp.near_duplicates, warnings=tuple(dup_warnings))

    scores = imp.scores
    method = f"gallery-impostor far={far:g} n={len(scores)} speakers={n_speakers} scoring={scoring}"
    if scoring == "topn":
        method += f" top_n={top_n}"
    warnings = list(dup_warnings)
    if imp.near_duplicates:
        n_dup = len(imp.near_duplicates)
        method += f"; {n_dup} near-duplicate speaker pair{'s' if n_dup > 1 else ''} counted as one voice ({imp.voices} voices)"
    if need is None or imp.voices >= need:
        basis = "calibrated"
        value = threshold_for_far(scores, far)
    elif imp.voices >= MIN_TAIL_FIT_SPEAKERS:
        basis = "tail-fit"
        value, k = _tail_fit(scores, far)
        rests = f"extrapolated from an exponential tail fitted to the {k} highest of the {len(scores)} impostor scores"
    else:
        basis = "gallery-max"
        value = float(np.nextafter(np.float32(scores.max()), np.float32(np.inf)))
        rests = (
            f"the highest of the {len(scores)} impostor scores (too few speakers to fit a tail; on its own "
            f"it lets about 1 stranger in {imp.voices + 1} through, not {far:g})"
        )
    value = min(1.0, max(-1.0, float(value)))
    gallery_value, floored = value, False
    if basis != "calibrated":
        method += (
            f"; too few speakers to calibrate ({imp.voices} distinct, {need} needed for far={far:g}): "
            f"{basis}, {rests}"
        )
    if floor_value is not None and value < floor_value:
        method += f"; floored at {floor_value:.4g} (gallery value {value:.4g})"
        value, floored = floor_value, True
    if basis != "calibrated":
        what = (
            f"is the {model} verification threshold, above the gallery's own value {gallery_value:.3f}, {rests}"
            if floored
            else f"is {rests}"
        )
        warnings.append(
            f"the gallery is too small to calibrate the open-set threshold for a false-accept rate of "
            f"{far:g}: {imp.voices} distinct speakers, at least {need} needed (one impostor score per "
            f"speaker); the threshold {value:.3f} {what}"
        )
    if floored:
        basis = "verification-threshold"
    return done(value, method, basis, n_scores=len(scores), voices=imp.voices, gallery_value=gallery_value,
                floored=floored, near_duplicates=imp.near_duplicates, warnings=tuple(warnings))


def calibrate_open_set_threshold(
    index: SpeakerIndex,
    far: float = DEFAULT_FAR,
    *,
    scoring: str = DEFAULT_SCORING,
    top_n: int = DEFAULT_TOP_N,
    max_clips: int = CALIBRATION_MAX_CLIPS,
    seed: int = CALIBRATION_SEED,
    floor: float | None | Literal["model"] = "model",
    near_duplicate_cosine: float | None = NEAR_DUPLICATE_COSINE,
) -> float | None:
    """Set (and return) the index's open-set threshold for a false-accept rate ``far``.

    :func:`calibrate_open_set` with only the value returned (None, stored as None, for an
    empty gallery or when no threshold can be had); the index's info() says what it rests
    on (``threshold_basis``, ``threshold_warnings``, ``near_duplicate_speakers``).
    """
    return calibrate_open_set(
        index, far, scoring=scoring, top_n=top_n, max_clips=max_clips, seed=seed, floor=floor,
        near_duplicate_cosine=near_duplicate_cosine,
    ).threshold
