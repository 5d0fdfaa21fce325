"""Evaluation metrics for verification (EER, minDCF), closed-set and open-set identification.

Pure numpy. Conventions shared by every function here:

* A trial is *accepted* when ``score >= threshold`` (higher score = more likely the same
  speaker). Tied scores therefore always move together: no threshold separates them.
* Labels are 1 for target (same speaker) and 0 for non-target trials.
* Scores must be finite (NaN or +-inf raise :class:`ConfigError`), inputs must be 1-D.
* Invalid or degenerate input raises :class:`~speakerid.errors.ConfigError`; nothing prints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = [
    "DcfResult",
    "EerResult",
    "OpenSetRates",
    "det_curve",
    "eer",
    "fnir_at_fpir",
    "min_dcf",
    "open_set_det_curve",
    "open_set_rates",
    "threshold_for_far",
    "threshold_for_fpir",
    "topk_accuracy",
]


@dataclass(frozen=True)
class EerResult:
    """Equal error rate (a fraction in [0, 1]) and the threshold where it occurs."""

    eer: float
    threshold: float


@dataclass(frozen=True)
class DcfResult:
    """Normalised minimum detection cost, its threshold and the target prior used."""

    min_dcf: float
    threshold: float
    p_target: float


@dataclass(frozen=True)
class OpenSetRates:
    """Open-set identification error rates (fractions) at ``threshold``."""

    fpir: float
    fnir: float
    threshold: float


# --- validation ---------------------------------------------------------------


def _scores_1d(x: Any, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """Finite 1-D float array; float16/32/64 keep their dtype, anything else becomes float64."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name} must be numeric: {e}") from None
    if arr.dtype.kind not in "biuf":
        raise ConfigError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.dtype not in (np.float16, np.float32, np.float64):
        arr = arr.astype(np.float64)
    if arr.ndim != 1:
        raise ConfigError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ConfigError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} holds NaN or infinite values")
    return arr


def _trials(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated (float64 scores, bool is_target) for a verification trial list."""
    s = _scores_1d(scores, "scores").astype(np.float64)
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ConfigError(f"labels must be 1-D, got shape {lab.shape}")
    if lab.shape != s.shape:
        raise ConfigError(f"scores and labels differ in length: {s.size} vs {lab.size}")
    if lab.dtype.kind not in "biuf" or not np.all((lab == 0) | (lab == 1)):
        raise ConfigError("labels must be 0 (non-target) or 1 (target)")
    is_target = lab == 1
    n_tar = int(is_target.sum())
    if n_tar == 0 or n_tar == s.size:
        kind = "non-target" if n_tar == 0 else "target"
        raise ConfigError(
            f"all {s.size} trials are {kind}: error rates (and EER/DCF) are undefined "
            "without both target and non-target trials"
        )
    return s, is_target


def _rate(value: Any, name: str) -> float:
    try:
        r = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not 0.0 <= r <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value!r}")
    return r


# --- verification ------------------------------------------------------------


def _det_counts(s: np.ndarray, is_target: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per candidate threshold: (thresholds, missed targets, false-accepted non-targets)."""
    order = np.argsort(s, kind="stable")
    s_sorted, tar_sorted = s[order], is_target[order]
    # first index of each distinct score: trials before it are rejected at that threshold
    thr, first = np.unique(s_sorted, return_index=True)
    tar_below = np.concatenate(([0], np.cumsum(tar_sorted)))[first]
    non_below = first - tar_below
    n_tar = int(is_target.sum())
    n_non = s.size - n_tar
    thresholds = np.append(thr, np.inf)  # +inf: reject every trial
    misses = np.append(tar_below, n_tar)
    false_accepts = np.append(n_non - non_below, 0)
    return thresholds, misses, false_accepts


def det_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detection error trade-off points ``(fpr, fnr, thresholds)``, thresholds ascending.

    There is one point per distinct score (accept ``score >= threshold``), so tied scores
    move together, plus a final point at ``threshold = +inf`` (reject all: fpr 0, fnr 1).
    The first point (lowest score) accepts every trial: fpr 1, fnr 0.
    """
    s, is_target = _trials(scores, labels)
    thresholds, misses, fas = _det_counts(s, is_target)
    n_tar = int(is_target.sum())
    return fas / (s.size - n_tar), misses / n_tar, thresholds


def eer(scores: Any, labels: Any) -> EerResult:
    """Equal error rate, interpolated linearly between the two DET points bracketing FNR = FPR.

    The DET points (see :func:`det_curve`) are joined by straight lines in (FPR, FNR)
    probability space (not probit space) and the EER is where that polyline crosses
    FNR = FPR. This is exactly the widely used ``brentq(lambda x: 1 - x - interp1d(fpr,
    tpr)(x), 0, 1)`` recipe over ``sklearn.metrics.roc_curve`` found in many VoxCeleb
    training repositories. It is *not* Kaldi's ``compute-eer`` nor voxceleb_trainer's
    ``tuneThresholdfromScore``: those return an un-interpolated DET point (Kaldi the miss
    rate at the first crossing, voxceleb_trainer ``max(fpr, fnr)`` at ``argmin |fnr - fpr|``)
    and can differ from this value by up to one trial's worth of error rate.

    The threshold is interpolated linearly between the two bracketing thresholds (any
    value in that open interval operates at the upper DET point); when the upper bracket
    is the reject-all point (+inf) the highest score is returned. If a DET point lies
    exactly on FNR = FPR, the lowest such threshold is used.

    Raises ConfigError for empty input, mismatched lengths, non-finite scores, labels not
    0/1, and when all trials are target or all non-target (the EER is then undefined).
    """
    s, is_target = _trials(scores, labels)
    thresholds, misses, fas = _det_counts(s, is_target)
    n_tar, n_non = int(is_target.sum()), s.size - int(is_target.sum())
    # sign of FNR - FPR in exact integer arithmetic; -1 at the lowest score, +1 at +inf
    gap = misses * n_non - fas * n_tar
    j = int(np.argmax(gap >= 0))  # >= 1 since gap[0] = -n_non * n_tar < 0
    if gap[j] == 0:
        return EerResult(eer=float(misses[j] / n_tar), threshold=float(thresholds[j]))
    t = -gap[j - 1] / (gap[j] - gap[j - 1])  # fraction of the way from point j-1 to j
    fpr_lo, fpr_hi = fas[j - 1] / n_non, fas[j] / n_non
    value = fpr_lo + t * (fpr_hi - fpr_lo)
    lo, hi = thresholds[j - 1], thresholds[j]
    thr = lo + t * (hi - lo) if np.isfinite(hi) else lo
    return EerResult(eer=float(value), threshold=float(thr))


def min_dcf(
    scores: Any, labels: Any, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> DcfResult:
    """Minimum normalised detection cost over every DET point (NIST SRE / VoxSRC definition).

    ``DCF(t) = c_miss * P_miss(t) * p_target + c_fa * P_fa(t) * (1 - p_target)``, divided by
    ``min(c_miss * p_target, c_fa * (1 - p_target))`` (the cost of the best trivial system),
    minimised over the points of :func:`det_curve`. Both trivial points (accept all, reject
    all) are candidates, so the result is at most 1. Ties in cost go to the lowest threshold;
    the threshold is +inf when rejecting every trial is optimal.
    """
    p = float(p_target)
    if not 0.0 < p < 1.0:
        raise ConfigError(f"p_target must be in (0, 1), got {p_target!r}")
    cm, cf = float(c_miss), float(c_fa)
    if not (np.isfinite(cm) and np.isfinite(cf) and cm > 0 and cf > 0):
        raise ConfigError(f"c_miss and c_fa must be finite and > 0, got {c_miss!r}, {c_fa!r}")
    fpr, fnr, thresholds = det_curve(scores, labels)
    cost = (cm * p * fnr + cf * (1.0 - p) * fpr) / min(cm * p, cf * (1.0 - p))
    i = int(np.argmin(cost))
    return DcfResult(min_dcf=float(cost[i]), threshold=float(thresholds[i]), p_target=p)


# --- closed-set identification ----------------------------------------------------


def topk_accuracy(
    score_matrix: Any, true_index: Any, ks: Iterable[int] = (1, 5)
) -> dict[int, float]:
    """Fraction of queries whose true class is among the ``k`` best scores, for each ``k``.

    Ties are pessimistic and deterministic: the rank of the true class is the number of
    classes scoring ``>=`` its score, so a tie with the true class counts against it (two
    classes tied at the top give rank 2). A ``k`` larger than the number of classes is
    capped (accuracy 1.0); the returned dict is keyed by the ``k`` values as requested.
    """
    m = np.asarray(score_matrix)
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ConfigError(
            f"score_matrix must be non-empty (n_queries, n_classes), got shape {m.shape}"
        )
    m = _scores_1d(m.ravel(), "score_matrix").reshape(m.shape).astype(np.float64)
    idx = np.asarray(true_index)
    if idx.shape != (m.shape[0],) or idx.dtype.kind not in "iu":
        raise ConfigError(f"true_index must be {m.shape[0]} integers, got {idx.dtype} {idx.shape}")
    if np.any(idx < 0) or np.any(idx >= m.shape[1]):
        raise ConfigError(f"true_index values must be in [0, {m.shape[1]})")
    ks = list(ks)
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1]
    if not ks or bad:
        raise ConfigError(f"ks must be positive integers, got {ks!r}")
    true_scores = m[np.arange(m.shape[0]), idx]
    rank = np.sum(m >= true_scores[:, None], axis=1)  # 1 = strictly best
    return {int(k): float(np.mean(rank <= min(int(k), m.shape[1]))) for k in ks}


# --- open-set identification / thresholds ------------------------------------------


def _threshold_at_rate(scores: Any, rate: Any, name: str, rate_name: str) -> float:
    s = _scores_1d(scores, name)
    r = _rate(rate, rate_name)
    n = s.size
    allowed = int(np.floor(r * n))  # largest c with c / n <= r, fixed up for float rounding
    while allowed + 1 <= n and (allowed + 1) / n <= r:
        allowed += 1
    while allowed > 0 and allowed / n > r:
        allowed -= 1
    if allowed >= n:
        return float("-inf")
    # the (allowed+1)-th highest score must be rejected: go one float step above it
    pivot = np.sort(s)[n - 1 - allowed]
    return float(np.nextafter(pivot, np.inf, dtype=s.dtype))


def threshold_for_far(impostor_scores: Any, far: float) -> float:
    """Smallest threshold whose false-accept rate on ``impostor_scores`` is ``<= far``.

    FAR(t) = fraction of scores ``>= t``. The result is one floating-point step (in the
    scores' own dtype, so float32 scores compare exactly) above the ``(c+1)``-th highest
    score, with ``c`` the largest count allowed by ``far``; with ties the achieved FAR may be
    well below ``far``. ``far = 0`` gives a threshold just above the highest score;
    ``far = 1`` gives ``-inf`` (accept everything). Empty input raises ConfigError.
    """
    return _threshold_at_rate(impostor_scores, far, "impostor_scores", "far")


def threshold_for_fpir(nonmated_top_scores: Any, fpir: float) -> float:
    """Smallest threshold with FPIR ``<= fpir``: the fraction of non-mated searches whose best
    (rank-1) score is ``>= threshold``. Same computation as :func:`threshold_for_far`."""
    return _threshold_at_rate(nonmated_top_scores, fpir, "nonmated_top_scores", "fpir")


def _open_set_searches(
    mated_true_scores: Any, mated_is_top1: Any, nonmated_top_scores: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated (float64 mated true scores, bool rank-1 flags, float64 non-mated top scores)."""
    ms = _scores_1d(mated_true_scores, "mated_true_scores").astype(np.float64)
    top1 = np.asarray(mated_is_top1)
    if top1.shape != ms.shape or top1.dtype != np.bool_:
        raise ConfigError(
            f"mated_is_top1 must be {ms.size} booleans, got {top1.dtype} {top1.shape}"
        )
    ns = _scores_1d(nonmated_top_scores, "nonmated_top_scores").astype(np.float64)
    return ms, top1, ns


def open_set_rates(
    mated_true_scores: Any, mated_is_top1: Any, nonmated_top_scores: Any, threshold: float
) -> OpenSetRates:
    """FPIR and rank-1 FNIR at ``threshold`` (NIST FRVT / ISO/IEC 19795-1 definitions).

    * ``mated_true_scores``: per mated search (probe enrolled in the gallery), the score of
      its true identity.
    * ``mated_is_top1``: per mated search, whether the true identity is ranked first
      (decide ties as the caller's system does; :func:`topk_accuracy` counts them as misses).
    * ``nonmated_top_scores``: per non-mated search, its best score over the gallery.

    FPIR = fraction of non-mated searches with top score ``>= threshold``; FNIR = fraction of
    mated searches whose true identity is not returned at rank 1 with score ``>= threshold``.
    Both search sets must be non-empty.
    """
    ms, top1, ns = _open_set_searches(mated_true_scores, mated_is_top1, nonmated_top_scores)
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ConfigError(f"threshold must be a number, got {threshold!r}") from None
    if np.isnan(t):
        raise ConfigError("threshold is NaN")
    hit = top1 & (ms >= t)
    return OpenSetRates(fpir=float(np.mean(ns >= t)), fnir=float(np.mean(~hit)), threshold=t)


def fnir_at_fpir(
    mated_true_scores: Any, mated_is_top1: Any, nonmated_top_scores: Any, fpir: float = 0.01
) -> OpenSetRates:
    """Rank-1 FNIR at the threshold from :func:`threshold_for_fpir` on the non-mated searches.

    The returned ``fpir`` is the achieved rate (``<=`` the requested one; lower with ties).
    """
    thr = threshold_for_fpir(nonmated_top_scores, fpir)
    return open_set_rates(mated_true_scores, mated_is_top1, nonmated_top_scores, thr)


def open_set_det_curve(
    mated_true_scores: Any, mated_is_top1: Any, nonmated_top_scores: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open-set DET points ``(fpir, fnir, thresholds)``, thresholds ascending.

    One point per distinct score of either search set (the only thresholds where a rate
    changes), plus a final point at ``threshold = +inf`` (reject all: FPIR 0, FNIR 1). At
    each threshold the rates are those of :func:`open_set_rates`: FPIR is the fraction of
    non-mated searches with top score ``>= threshold``, FNIR the fraction of mated searches
    whose true identity is not returned at rank 1 with score ``>= threshold``. A mated search
    whose true identity is not ranked first is missed at every threshold, so FNIR never falls
    below the rank-1 miss rate.
    """
    ms, top1, ns = _open_set_searches(mated_true_scores, mated_is_top1, nonmated_top_scores)
    thresholds = np.append(np.unique(np.concatenate([ms, ns])), np.inf)
    hits = np.sort(ms[top1])
    fpir = 1.0 - np.searchsorted(np.sort(ns), thresholds, side="left") / ns.size
    fnir = 1.0 - (hits.size - np.searchsorted(hits, thresholds, side="left")) / ms.size
    return fpir, fnir, thresholds
