"""Open-set identification: which enrolled speaker is this, or nobody we know?

A query embedding is compared with every enrolled speaker; each speaker's score is formed from
its clips by a *scoring rule*:

* ``centroid``: cosine to the speaker's mean clip embedding (L2-normalised);
* ``best``: the best cosine over the speaker's clips;
* ``topn``: the mean of the speaker's ``top_n`` best clip cosines (all of them if it has fewer).

``best`` and ``topn`` run on FAISS: the query's nearest clips are searched, growing the
search until the k best speakers are known exactly (for the exact "flat" index; approximate
indexes give approximate scores). ``centroid`` is one small matrix product with the
speaker centroids. Scores are raw cosines in [-1, 1]. Everything scored here comes from the
gallery itself (:meth:`SpeakerIndex.speaker_maps`: names, the speaker of each clip id,
centroids), which keeps it up to date as speakers are added and removed.

The best speaker is accepted when its score reaches the threshold, else the verdict is
*unknown* (``Identification.speaker is None``). The default threshold is the index's own, set
by :mod:`speakerid.calibration` (whose names stay importable from here), else the model's
pairwise verification threshold.

``score_norm="asnorm"`` ranks and thresholds AS-normalised scores instead, with the gallery as
the cohort (:mod:`speakerid.scorenorm`); each Match keeps its raw cosine in ``score`` and the
normalised one in ``norm_score``. Given ``query_speech_s`` (the query's Embedding.speech_s),
the threshold follows the query's speech duration when the index's calibration fitted a
duration model (:mod:`speakerid.calibration.duration`, in the spirit of WeSpeaker's QMF).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .errors import ConfigError, EmptyGalleryError, SpeakeridError
from .index import SpeakerIndex, SpeakerMaps
from .index.backend import unit_rows
from .scorenorm import DEFAULT_COHORT_TOP_N, SCORE_NORMS, asnorm_rank, check_cohort_top_n, check_score_norm

#: Calibration lives in speakerid.calibration; these names stay importable from here.
_CALIBRATION_EXPORTS = (
    "DEFAULT_FAR", "MIN_TAIL_FIT_SPEAKERS", "NEAR_DUPLICATE_COSINE", "OpenSetCalibration", "calibrate_open_set",
    "calibrate_open_set_threshold", "gallery_impostor_scores", "min_calibration_speakers", "near_duplicate_speakers",
)
_CALIBRATION_NAMES = frozenset(
    {*_CALIBRATION_EXPORTS, "CALIBRATION_MAX_CLIPS", "CALIBRATION_SEED", "MAX_DUPLICATE_WARNINGS"}
)

__all__ = [
    "DEFAULT_COHORT_TOP_N", "DEFAULT_SCORE_NORM", "DEFAULT_SCORING", "DURATION_AWARE_DEFAULT", "DEFAULT_TOP_N", "SCORE_NORMS", "SCORINGS",
    "Identification", "Match", "Scoring", "identify",
    "model_verification_threshold", "rank_speakers", *_CALIBRATION_EXPORTS,
]


def __getattr__(name: str) -> Any:
    if name in _CALIBRATION_NAMES:  # imported on first use: calibration itself scores through this module
        from . import calibration

        return getattr(calibration, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_CALIBRATION_NAMES})


Scoring = Literal["centroid", "best", "topn"]
SCORINGS: tuple[str, ...] = ("centroid", "best", "topn")
#: Chosen on librispeech-251 with up to 3 enrol segments per speaker (benchmarks/eval_identify.py,
#: results/identify_librispeech.md): centroid ties best-clip on top-1 and open-set FNIR with
#: CAM++ and is the best on top-1 with GE2E; top-n is worse with both. It also costs one small
#: product whatever a speaker's clip count, and its score does not grow with that count.
DEFAULT_SCORING: Scoring = "centroid"
DEFAULT_TOP_N = 3
#: Score normalisation by default: none. On benchmarks/eval_norm.py (results/norm.md, campplus,
#: 7 rows x 4 gallery sizes x 30 draws, cohort top-100) AS-norm left top-1 within 0.12 points and
#: did not lower the oracle FNIR @ FPIR 1 % (6.23 / 7.12 / 8.18 / 10.83 % raw at 25 / 50 / 100 /
#: 200 speakers, 9.13 / 7.89 / 8.12 / 11.15 % AS-norm), and at its calibrated threshold it let more
#: strangers in on small galleries (mean FA 2.35 / 1.33 % against 1.58 / 1.05 % at 25 / 50).
DEFAULT_SCORE_NORM = "none"
#: Whether the CLI and the REST service pass each query's speech seconds (the duration-aware
#: threshold). Off: on the same table it moved the mean open-set false-accept rate over the rows
#: from 1.58 / 1.05 / 0.75 / 1.28 % (fixed; 25 / 50 / 100 / 200 speakers) to 2.28 / 1.71 / 0.93 /
#: 1.12 %, further from the 1 % target on small galleries, and raised the oracle FNIR @ FPIR 1 %
#: at 25-100 speakers (6.23 -> 8.94 % at 25).
DURATION_AWARE_DEFAULT = False
#: The first FAISS search fetches this many neighbours per speaker wanted (times clips/speaker).
_GROWTH = 4


@dataclass(frozen=True)
class Match:
    """One candidate identity: its score (raw cosine under the scoring rule) and 1-based rank.

    ``norm_score`` is its AS-normalised score when identification normalised (None otherwise);
    the rank and the threshold then follow it.
    """

    speaker: str
    score: float
    rank: int
    norm_score: float | None = None

    @property
    def decision_score(self) -> float:
        """The score the threshold applies to: the normalised one if any, else the cosine."""
        return self.score if self.norm_score is None else self.norm_score


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
    #: The normalisation the scores went through ("none": raw cosine; "asnorm": the
    #: threshold applies to Match.norm_score). "none" also when AS-norm was asked for but the
    #: gallery is too small for a cohort (threshold_method then says so).
    score_norm: str = "none"
    #: The query's speech seconds the threshold was chosen for (None: a fixed threshold).
    query_speech_s: float | None = None

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "speaker": self.speaker,
            "accepted": self.accepted,
            "score": None if self.best is None else self.best.score,
            "norm_score": None if self.best is None else self.best.norm_score,
            "threshold": self.threshold,
            "threshold_method": self.threshold_method,
            "scoring": self.scoring,
            "score_norm": self.score_norm,
            "query_speech_s": self.query_speech_s,
            "matches": [
                {"speaker": m.speaker, "score": m.score, "rank": m.rank, "norm_score": m.norm_score}
                for m in self.matches
            ],
        }


# validation


def check_scoring(scoring: str, top_n: int) -> None:
    """ConfigError unless ``scoring`` is a rule of SCORINGS and ``top_n`` a positive integer."""
    if scoring not in SCORINGS:
        raise ConfigError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
    if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 1:
        raise ConfigError(f"top_n must be a positive integer, got {top_n!r}")


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_threshold(value: Any) -> float:
    """``value`` as a float (ConfigError unless it is a finite real number)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ConfigError(f"threshold must be a finite number, got {value!r}")
    return float(value)


def check_index(index: Any) -> SpeakerIndex:
    if not isinstance(index, SpeakerIndex):
        raise ConfigError(f"index must be a SpeakerIndex, got {type(index).__name__}")
    return index


# scoring


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
    index: SpeakerIndex, q: np.ndarray, k: int, exclude: list[np.ndarray] | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """A search of the index's stored centroid FAISS index (flat, or HNSW for big galleries,
    plus the exact overlay of speakers changed since the last compaction): the k best
    (ordinals, scores) of each query, ties to the first name, excluded ordinals left out."""
    return index.rank_centroids(q, k, exclude)


def _group_row(
    g: SpeakerMaps,
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
    g: SpeakerMaps,
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
    check_scoring(scoring, top_n)
    g = check_index(index).speaker_maps()
    q = unit_rows(query_vectors, index.dim, "query vectors", one_row_ok=True)
    if len(index) == 0 or not g.names:
        raise EmptyGalleryError(f"the index at {index.path} holds no speakers")
    ex: list[np.ndarray] | None = None
    if exclude is not None:
        ex_list = list(exclude)
        if len(ex_list) != len(q):
            raise ConfigError(f"exclude has {len(ex_list)} items for {len(q)} queries")
        pos = g.ordinal
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
        ranked = _centroid_rank(index, q, k_eff, ex)
    else:
        ranked = _search_rank(index, g, q, k_eff, scoring, top_n, ex)
    return [
        [Match(g.names[int(o)], float(s), r + 1) for r, (o, s) in enumerate(zip(ords, scs))]
        for ords, scs in ranked
    ]


# thresholds


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
        return check_threshold(threshold), "argument"
    if index.threshold is not None:
        return float(index.threshold), index.threshold_method or "index"
    fallback = model_verification_threshold(index.spec.model)
    if fallback is None:
        raise ConfigError(
            f"the index at {index.path} has no threshold and model {index.spec.model!r} has no "
            "default one: pass a threshold"
        )
    return fallback, f"{index.spec.model} verification threshold (the index has none)"


def _speech_per_query(query_speech_s: Any, n: int) -> list[float | None]:
    """``query_speech_s`` as one value (or None) per query (ConfigError if it is malformed)."""
    if query_speech_s is None:
        return [None] * n
    items = [query_speech_s] * n if isinstance(query_speech_s, numbers.Real) else list(query_speech_s)
    if len(items) != n:
        raise ConfigError(f"query_speech_s has {len(items)} items for {n} queries")
    out: list[float | None] = []
    for x in items:
        if x is None:
            out.append(None)
        elif isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(float(x)) or x < 0:
            raise ConfigError(f"query_speech_s must be seconds >= 0 (or None), got {x!r}")
        else:
            out.append(float(x))
    return out


def _asnorm_matches(
    index: SpeakerIndex, q: np.ndarray, k: int, scoring: str, top_n: int, cohort_top_n: int
) -> list[list[Match]] | None:
    """AS-normalised top-k of each query (None: the gallery is too small for a cohort)."""
    g = index.speaker_maps()
    if len(index) == 0 or not g.names:
        raise EmptyGalleryError(f"the index at {index.path} holds no speakers")
    ranked = asnorm_rank(index, q, max(1, min(k, len(g.names))), scoring, top_n, cohort_top_n)
    if ranked is None:
        return None
    return [
        [Match(g.names[int(o)], float(r), i + 1, float(n)) for i, (o, r, n) in enumerate(zip(*row))]
        for row in ranked
    ]


def identify(
    index: SpeakerIndex,
    query_vectors: Any,
    k: int = 5,
    threshold: float | None = None,
    scoring: str = DEFAULT_SCORING,
    *,
    top_n: int = DEFAULT_TOP_N,
    score_norm: str = DEFAULT_SCORE_NORM,
    cohort_top_n: int = DEFAULT_COHORT_TOP_N,
    query_speech_s: Any = None,
) -> list[Identification]:
    """Identify each query embedding (rows of ``query_vectors``; a 1-d vector is one query).

    Returns one :class:`Identification` per query with the ``k`` best speakers (all of them
    when ``k`` exceeds the number enrolled). ``threshold`` defaults to the index's own (see
    :func:`speakerid.calibration.calibrate_open_set`), else the model's verification threshold.

    ``score_norm="asnorm"`` ranks by AS-normalised score against the gallery's other speakers
    (``cohort_top_n`` cohort scores per side; :mod:`speakerid.scorenorm`); a given
    ``threshold`` then applies to the normalised score, and the default one is the
    calibration's threshold for normalised scores (computed in the process, and cached, when
    the index was calibrated without it). A gallery of fewer than 3 speakers has no cohort:
    scores stay raw and ``Identification.score_norm`` is "none".

    ``query_speech_s`` (seconds of speech of each query, e.g. ``Embedding.speech_s``; one
    number for all, or one per query, None for unknown) makes the default threshold follow the
    query's duration where the calibration fitted a duration model.

    Raises EmptyGalleryError when no speaker is enrolled and ModelMismatchError when the
    vectors have another dimension than the index's.
    """
    k = _check_k(k)
    check_scoring(scoring, top_n)
    norm = check_score_norm(score_norm)
    cohort_top_n = check_cohort_top_n(cohort_top_n)
    check_index(index)
    if threshold is not None:
        threshold = check_threshold(threshold)
    ranked: list[list[Match]] | None = None
    note = ""
    if norm == "asnorm":
        q = unit_rows(query_vectors, index.dim, "query vectors", one_row_ok=True)
        ranked = _asnorm_matches(index, q, k, scoring, top_n, cohort_top_n)
        if ranked is None:
            norm = "none"
            note = "; AS-norm not applied: the gallery has too few speakers for a cohort (raw cosine)"
    if ranked is None:
        ranked = rank_speakers(index, query_vectors, k, scoring, top_n=top_n)
    speech = _speech_per_query(query_speech_s, len(ranked))
    if threshold is not None:
        thresholds = [(threshold, "argument")] * len(ranked)
    else:
        from .calibration.duration import default_thresholds

        thresholds = default_thresholds(index, norm, speech, scoring=scoring, top_n=top_n, cohort_top_n=cohort_top_n)
    results = []
    for matches, (thr, method), d in zip(ranked, thresholds, speech):
        accepted = bool(matches) and matches[0].decision_score >= thr
        results.append(
            Identification(
                matches=tuple(matches),
                accepted=accepted,
                threshold=thr,
                speaker=matches[0].speaker if accepted else None,
                scoring=scoring,
                threshold_method=method + note,
                score_norm=norm,
                query_speech_s=d,
            )
        )
    return results
