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
"""

from __future__ import annotations

import math
import numbers
import weakref
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
    "Match",
    "Scoring",
    "calibrate_open_set_threshold",
    "gallery_impostor_scores",
    "identify",
    "model_verification_threshold",
    "rank_speakers",
]

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
    g: _Gallery, q: np.ndarray, k: int, exclude: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    sims = q @ g.centroids().T  # (nq, speakers)
    if exclude is not None:
        sims[np.arange(len(q)), exclude] = -np.inf
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
    exclude: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Speaker scores from one query's nearest clips, or None if more clips are needed.

    ``need_of[s]`` clips of speaker s make its score (1 for best, min(top_n, clips) for topn).
    Unseen clips score at most the last score found, which bounds every incomplete speaker.
    """
    spk = g.speaker_of(ids)
    ok = (spk >= 0) & np.isfinite(scores) & (spk != exclude)
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
    exclude: np.ndarray | None,
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
            ex = -1 if exclude is None else int(exclude[i])
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

    ``exclude`` (optional, one speaker name or None per query) leaves that speaker out of
    the query's ranking: the leave-one-speaker-out trials of the calibration.
    """
    k = _check_k(k)
    _check_scoring(scoring, top_n)
    g = _gallery(index)
    q = _queries(query_vectors, index.dim)
    if len(index) == 0 or not g.names:
        raise EmptyGalleryError(f"the index at {index.path} holds no speakers")
    ex: np.ndarray | None = None
    if exclude is not None:
        ex_list = list(exclude)
        if len(ex_list) != len(q):
            raise ConfigError(f"exclude has {len(ex_list)} items for {len(q)} queries")
        pos = {s: i for i, s in enumerate(g.names)}
        ex = np.array([-1 if s is None else pos.get(s, -1) for s in ex_list], dtype=np.int64)
    excluding = ex is not None and bool((ex >= 0).any())
    k_eff = max(1, min(k, len(g.names) - (1 if excluding else 0)))
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


def gallery_impostor_scores(
    index: SpeakerIndex,
    scoring: str = DEFAULT_SCORING,
    *,
    top_n: int = DEFAULT_TOP_N,
    max_clips: int = CALIBRATION_MAX_CLIPS,
    seed: int = CALIBRATION_SEED,
) -> np.ndarray:
    """Best-of-gallery impostor scores, leaving one speaker out.

    For each enrolled clip (at most ``max_clips``, a seeded sample spread over speakers) the
    best score among the *other* enrolled speakers, under ``scoring``: what an unenrolled
    voice scores against a gallery of this size and make-up. Empty with < 2 speakers.
    """
    _check_scoring(scoring, top_n)
    if isinstance(max_clips, bool) or not isinstance(max_clips, (int, np.integer)) or max_clips < 1:
        raise ConfigError(f"max_clips must be a positive integer, got {max_clips!r}")
    g = _gallery(index)
    if len(g.names) < 2:
        return np.zeros(0, np.float32)
    rows = _calibration_clips(g, int(max_clips), int(seed))
    vecs = index.vectors(g.sorted_ids[rows])
    owners = [g.names[int(s)] for s in g.sorted_spk[rows]]
    ranked = rank_speakers(index, vecs, 1, scoring, top_n=top_n, exclude=owners)
    return np.array([r[0].score for r in ranked], dtype=np.float32)


def calibrate_open_set_threshold(
    index: SpeakerIndex,
    far: float = DEFAULT_FAR,
    *,
    scoring: str = DEFAULT_SCORING,
    top_n: int = DEFAULT_TOP_N,
    max_clips: int = CALIBRATION_MAX_CLIPS,
    seed: int = CALIBRATION_SEED,
    floor: float | None | Literal["model"] = "model",
) -> float | None:
    """Set (and return) the index's open-set threshold for a false-accept rate ``far``.

    The threshold is chosen with :func:`speakerid.metrics.threshold_for_far` on
    :func:`gallery_impostor_scores` (leave-one-speaker-out best-of-gallery scores), so it
    grows with the gallery. It is never set below ``floor`` (default: the model's pairwise
    verification threshold, which is what a tiny gallery needs). A gallery of one speaker
    has no impostors: the model's verification threshold is used and the method says so.
    The result is stored with ``index.set_threshold`` (the index must be open writable;
    saving is the caller's job). Returns None (stored as None) for an empty gallery or when
    no threshold can be had. Call it again whenever the gallery changes.
    """
    if isinstance(far, bool) or not isinstance(far, numbers.Real) or not 0.0 <= float(far) <= 1.0:
        raise ConfigError(f"far must be a rate in [0, 1], got {far!r}")
    far = float(far)
    _check_scoring(scoring, top_n)
    model = index.spec.model
    if floor == "model":
        floor_value = model_verification_threshold(model)
    elif floor is None:
        floor_value = None
    else:
        floor_value = _check_threshold(floor)
    n_speakers = len(index.speakers())
    if n_speakers == 0:
        index.set_threshold(None, "gallery-impostor: empty gallery, no threshold")
        return None
    if n_speakers == 1:
        fallback = model_verification_threshold(model) if floor_value is None else floor_value
        method = (
            f"{model} verification threshold (gallery has 1 speaker: no impostors to calibrate on)"
            if fallback is not None
            else "none: gallery has 1 speaker and the model has no verification threshold"
        )
        index.set_threshold(fallback, method)
        return fallback
    imp = gallery_impostor_scores(index, scoring, top_n=top_n, max_clips=max_clips, seed=seed)
    value = min(1.0, max(-1.0, threshold_for_far(imp, far)))
    method = f"gallery-impostor far={far:g} n={len(imp)} speakers={n_speakers} scoring={scoring}"
    if scoring == "topn":
        method += f" top_n={top_n}"
    if floor_value is not None and value < floor_value:
        method += f"; floored at {floor_value:.4g} (gallery value {value:.4g})"
        value = floor_value
    index.set_threshold(value, method)
    return value
