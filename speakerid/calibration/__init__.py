"""Open-set calibration: the threshold an index accepts its best speaker at, from the gallery
itself.

With N enrolled speakers, a stranger is compared with all N and the best of those N impostor
scores is far higher than one impostor trial, so the pairwise verification threshold accepts
many strangers. :func:`calibrate_open_set` measures that "best-of-gallery" impostor score on the
gallery itself (leave one speaker out, :func:`gallery_impostor_scores`) and picks the threshold
for the target false-accept rate. See benchmarks/results/identify_librispeech.md.

Two things would make that calibration lie, and :func:`calibrate_open_set` handles both and
says so (the index's ``threshold_basis``, ``threshold_warnings``, ``near_duplicate_speakers``;
the indexer's reports carry the warnings):

* **One voice under two names.** Its clips score ~1.0 against its other name, so a few such
  pairs push a 1 % quantile to 0.97-1.0 and every query comes back unknown. Names whose
  centroids have cosine >= NEAR_DUPLICATE_COSINE are counted as one voice: one name's clips
  are impostor queries, and none is the other's impostor.
* **A small gallery.** A 1 % target needs 100 impostor scores from 100 different speakers
  (:func:`min_calibration_speakers`); with fewer, the empirical quantile is the highest score,
  which lets about 1 stranger in (speakers + 1) through. From MIN_TAIL_FIT_SPEAKERS speakers
  the threshold is extrapolated from an exponential tail fitted to the highest scores instead
  (on librispeech-251, 20-speaker CAM++ galleries then accept 1.4 % of unenrolled speakers,
  against 3.9 % at the highest score floored at 0.588). The same tail fit, over the 20 highest
  scores (TAIL_FIT_MAX_SCORES), is used at every size: an empirical quantile is biased there
  (the tied top pair, see TAIL_FIT_MAX_SCORES) and rests on one or two scores.

The impostor trials themselves (and the near-duplicate check) are in
:mod:`speakerid.calibration.impostors`; they are scored by :func:`speakerid.identify.rank_speakers`,
the rule identification itself uses, over the gallery's own
:meth:`~speakerid.index.SpeakerIndex.speaker_maps`.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError
from ..identify import (
    DEFAULT_SCORING,
    DEFAULT_TOP_N,
    check_index,
    check_scoring,
    check_threshold,
    model_verification_threshold,
    rank_speakers,
)
from ..index import SpeakerIndex
from ..metrics import threshold_for_far
from ..scorenorm import DEFAULT_COHORT_TOP_N, asnorm_rank, check_cohort_top_n
from .duration import SCORE_MODELS_KEY, CalibrationCrops, DurationModel, fit_duration_model, gallery_crops
from .impostors import (
    CALIBRATION_MAX_CLIPS,
    CALIBRATION_SEED,
    NEAR_DUPLICATE_COSINE,
    ImpostorQueries,
    Impostors,
    check_max_clips,
    gallery_impostor_scores,
    impostor_queries,
    impostor_trials,
    near_duplicate_speakers,
)

__all__ = [
    "CALIBRATION_MAX_CLIPS",
    "CALIBRATION_SEED",
    "CalibrationCrops",
    "DEFAULT_FAR",
    "DurationModel",
    "MIN_TAIL_FIT_SPEAKERS",
    "NEAR_DUPLICATE_COSINE",
    "OpenSetCalibration",
    "asnorm_score_model",
    "calibrate_open_set",
    "calibrate_open_set_threshold",
    "fit_score_models",
    "gallery_crops",
    "gallery_impostor_scores",
    "min_calibration_speakers",
    "near_duplicate_speakers",
    "recalibration_due",
    "refresh_open_set",
]

log = logging.getLogger("speakerid")

#: Target false-accept rate of unenrolled speakers for the calibrated threshold.
DEFAULT_FAR = 0.01
#: With fewer distinct speakers than this, no impostor tail is fitted (see calibrate_open_set).
MIN_TAIL_FIT_SPEAKERS = 10
#: The threshold is extrapolated from an exponential tail over the (at most) 20 highest impostor
#: scores at every gallery size (from MIN_TAIL_FIT_SPEAKERS speakers). Chosen on 100-200 seeded
#: gallery draws per size and condition, apart from benchmarks/eval_norm.py's (librispeech-251
#: CAM++, 7 conditions; results/norm.md):
#: * the former rule, the 1 % empirical quantile from 100 speakers, accepted 1.7-2.0 % of
#:   strangers at 100 speakers: with one clip per speaker the leave-one-out scores come in tied
#:   pairs (i's best other speaker is j and j's is i), so the quantile that lets "1 score" through
#:   is the top pair's, and a stranger forms such a top pair with the gallery 2 times in (G + 1);
#: * an order statistic that accounts for the pairs (above the highest score at 199 speakers) was
#:   on target (0.68-1.00 %) but one extreme pair set it: 8-49 % of enrolled queries missed at
#:   200 speakers, against 1-26 % with the 20-score tail (FA 0.67-1.39 %);
#: * over the upper half (the former small-gallery rule) the fit is over-cautious at 50-100
#:   speakers (0.09-0.89 %: bounded cosine tails are lighter than exponential); over the 20
#:   highest, 0.46-1.39 % (15: up to 1.74 %; 25: down to 0.20 %).
TAIL_FIT_MAX_SCORES = 20
#: The empirical quantile is used instead where at least this many impostor scores lie above
#: it (e.g. 1000 one-clip speakers at 1 %, or many clips per speaker): the tied top pair then
#: biases it by 2 in (this + 1) at most, and it rests on as many scores as the tail fit.
EMPIRICAL_MIN_ABOVE = 10
#: Near-duplicate pairs named one by one in warnings (info() lists them all).
MAX_DUPLICATE_WARNINGS = 10


# thresholds


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


def _tail_fit(scores: np.ndarray, far: float, max_k: int | None = None) -> tuple[float, int]:
    """Threshold at ``far`` from an exponential tail fitted to the k highest of ``scores``.

    Peaks over threshold: with u the (k+1)-th highest of n scores and beta the mean excess of
    the k highest over u, P(score >= t) ~ (k/n) exp(-(t - u) / beta). k is n // 2 without
    ``max_k``; with it, min(n // 2, max_k) but at least 2 far n (so that the fit always
    extrapolates by a factor of 2 or more and rests on many scores in a large gallery).
    Cosine tails are bounded, i.e. lighter than exponential, so the fit errs high (fewer false
    accepts) the further below the tail u lies: hence the cap (TAIL_FIT_MAX_SCORES).
    Returns (threshold, k); without ``max_k`` (the former rule) never below the highest score.
    """
    x = np.sort(scores.astype(np.float64))[::-1]
    n = len(x)
    if max_k is None:
        k = max(1, n // 2)
    else:
        k = max(1, min(n // 2, int(max_k)), math.ceil(2.0 * far * n - 1e-9))
        k = min(k, n - 1)
    top = float(np.nextafter(np.float32(x[0]), np.float32(np.inf)))
    if n < 2:
        return top, k
    u = x[k]
    beta = float(np.mean(x[:k] - u))
    if beta <= 0 or far >= k / n:
        return top, k
    value = float(u + beta * math.log((k / n) / far))
    return (max(top, value) if max_k is None else value), k


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
    #: What identification needs beyond ``threshold``, per score normalisation ("none",
    #: "asnorm"): the duration models and the AS-norm threshold (stored in the index's
    #: threshold record as "score_models"; {} when not fitted).
    score_models: dict[str, Any] = field(default_factory=dict)


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


def _check_far(far: Any) -> float:
    if isinstance(far, bool) or not isinstance(far, numbers.Real) or not 0.0 <= float(far) <= 1.0:
        raise ConfigError(f"far must be a rate in [0, 1], got {far!r}")
    return float(far)


def _floor_value(floor: float | None | Literal["model"], model: str) -> float | None:
    if floor == "model":
        return model_verification_threshold(model)
    return None if floor is None else check_threshold(floor)


def _without_impostors(model: str, imp: Impostors, floor: float | None, warnings: list[str],
                       common: dict[str, Any]) -> OpenSetCalibration:
    """One voice (under one name or several) or no impostor score: the model's threshold."""
    fallback = model_verification_threshold(model) if floor is None else floor
    n = common["speakers"]
    one = "1 speaker" if n == 1 else f"{n} names of 1 voice"
    method = (
        f"{model} verification threshold (gallery has {one}: no impostors to calibrate on)"
        if fallback is not None
        else f"none: gallery has {one} and the model has no verification threshold"
    )
    return OpenSetCalibration(
        threshold=fallback, method=method, basis="verification-threshold" if fallback is not None else "none",
        n_scores=0, voices=imp.voices, gallery_value=None, floored=False, near_duplicates=imp.near_duplicates,
        warnings=tuple(warnings), **common,
    )


def _gallery_value(scores: np.ndarray, far: float, voices: int, need: int | None) -> tuple[float, str, str]:
    """(threshold, basis, what it rests on) from the impostor scores of ``voices`` distinct voices.

    The empirical quantile where at least EMPIRICAL_MIN_ABOVE scores lie above it (and
    ``need`` voices are there); else from MIN_TAIL_FIT_SPEAKERS voices on, an exponential tail
    over the TAIL_FIT_MAX_SCORES highest scores ("calibrated" from ``need`` voices on,
    "tail-fit" below it); with fewer, the highest score.
    """
    if need is None or (voices >= need and far * len(scores) >= EMPIRICAL_MIN_ABOVE):
        return threshold_for_far(scores, far), "calibrated", ""
    if voices >= MIN_TAIL_FIT_SPEAKERS:
        value, k = _tail_fit(scores, far, TAIL_FIT_MAX_SCORES)
        return value, "calibrated" if voices >= need else "tail-fit", (
            f"extrapolated from an exponential tail fitted to the {k} highest of the {len(scores)} impostor scores"
        )
    value = float(np.nextafter(np.float32(scores.max()), np.float32(np.inf)))
    return value, "gallery-max", (
        f"the highest of the {len(scores)} impostor scores (too few speakers to fit a tail; on its own "
        f"it lets about 1 stranger in {voices + 1} through, not {far:g})"
    )


def _from_impostors(model: str, imp: Impostors, scoring: str, top_n: int, floor: float | None,
                    warnings: list[str], common: dict[str, Any]) -> OpenSetCalibration:
    """The threshold from the gallery's impostor scores, floored, with what it rests on."""
    far, need, scores = common["far"], common["min_speakers"], imp.scores
    method = f"gallery-impostor far={far:g} n={len(scores)} speakers={common['speakers']} scoring={scoring}"
    if scoring == "topn":
        method += f" top_n={top_n}"
    if imp.near_duplicates:
        n_dup = len(imp.near_duplicates)
        method += f"; {n_dup} near-duplicate speaker pair{'s' if n_dup > 1 else ''} counted as one voice ({imp.voices} voices)"
    value, basis, rests = _gallery_value(scores, far, imp.voices, need)
    value = min(1.0, max(-1.0, float(value)))
    gallery_value, floored = value, False
    if basis == "calibrated" and rests:
        method += f"; {rests}"
    if basis != "calibrated":
        method += (
            f"; too few speakers to calibrate ({imp.voices} distinct, {need} needed for far={far:g}): "
            f"{basis}, {rests}"
        )
    if floor is not None and value < floor:
        method += f"; floored at {floor:.4g} (gallery value {value:.4g})"
        value, floored = floor, True
    if basis != "calibrated":
        what = (
            f"is the {model} verification threshold, above the gallery's own value {gallery_value:.3f}, {rests}"
            if floored
            else f"is {rests}"
        )
        warnings = [*warnings, (
            f"the gallery is too small to calibrate the open-set threshold for a false-accept rate of "
            f"{far:g}: {imp.voices} distinct speakers, at least {need} needed (one impostor score per "
            f"speaker); the threshold {value:.3f} {what}"
        )]
    return OpenSetCalibration(
        threshold=value, method=method, basis="verification-threshold" if floored else basis,
        n_scores=len(scores), voices=imp.voices, gallery_value=gallery_value, floored=floored,
        near_duplicates=imp.near_duplicates, warnings=tuple(warnings), **common,
    )


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
    crops: CalibrationCrops | None = None,
    score_models: bool = True,
    asnorm: bool = False,
    cohort_top_n: int = DEFAULT_COHORT_TOP_N,
) -> OpenSetCalibration:
    """Set the index's open-set threshold for a false-accept rate ``far``; say what it rests on.

    The threshold comes from :func:`gallery_impostor_scores` (leave-one-speaker-out
    best-of-gallery scores), so it grows with the gallery:

    * from MIN_TAIL_FIT_SPEAKERS speakers, it is extrapolated from an exponential tail fitted
      to the TAIL_FIT_MAX_SCORES highest of those scores: "calibrated" with at least
      :func:`min_calibration_speakers` distinct speakers (100 for 1 %), "tail-fit" with fewer,
      when the 1 % quantile could not even be read off the gallery, and a warning says so;
    * with fewer than MIN_TAIL_FIT_SPEAKERS it is the highest score ("gallery-max"), with a
      warning;
    * it is never set below ``floor`` (default: the model's pairwise verification threshold;
      "verification-threshold" when that decides).

    Names that look like one voice (see :func:`near_duplicate_speakers`) are counted once and
    are not each other's impostors, and each such pair is a warning. The value, method,
    basis, warnings and pairs are stored with ``index.set_threshold`` (the index must be open
    writable; saving is the caller's job). Call it again whenever the gallery changes.

    With ``score_models`` (default) it also fits what identification uses beyond the fixed
    threshold (:func:`fit_score_models`): a duration model of the impostor scores, so that
    the threshold follows the query's speech seconds (:mod:`speakerid.calibration.duration`;
    ``crops``, embeddings of shorter crops of the enrolled clips, e.g. from
    :func:`gallery_crops`, give it short durations to fit on), and with ``asnorm`` the
    threshold and duration model of AS-normalised scores (``cohort_top_n``, see
    :mod:`speakerid.scorenorm`). They are stored in the threshold record too. ``asnorm`` is off
    by default because AS-norm is (its (S, S) cohort product would cost seconds per save of a
    10k-speaker index); identification with ``score_norm="asnorm"`` calibrates it in the
    process when the index lacks it.
    """
    far = _check_far(far)
    check_scoring(scoring, top_n)
    check_max_clips(max_clips)
    if near_duplicate_cosine is not None:
        near_duplicate_cosine = check_threshold(near_duplicate_cosine)
    model = check_index(index).spec.model
    floor_value = _floor_value(floor, model)
    common: dict[str, Any] = {"far": far, "speakers": len(index.speakers()), "min_speakers": min_calibration_speakers(far)}
    if common["speakers"] == 0:
        cal = OpenSetCalibration(threshold=None, method="gallery-impostor: empty gallery, no threshold", basis="none",
                                 n_scores=0, voices=0, gallery_value=None, floored=False, **common)
    else:
        imp = impostor_trials(index, scoring, top_n, int(max_clips), int(seed), near_duplicate_cosine)
        dup_warnings = _duplicate_warnings(imp.near_duplicates, near_duplicate_cosine or 1.0)
        if imp.voices == 1 or len(imp.scores) == 0:
            cal = _without_impostors(model, imp, floor_value, dup_warnings, common)
        else:
            cal = _from_impostors(model, imp, scoring, top_n, floor_value, dup_warnings, common)
    if score_models and cal.threshold is not None and cal.voices >= 2:
        cal = replace(cal, score_models=fit_score_models(
            index, far, scoring=scoring, top_n=top_n, max_clips=int(max_clips), seed=int(seed),
            near_duplicate_cosine=near_duplicate_cosine, crops=crops, cohort_top_n=check_cohort_top_n(cohort_top_n),
            floor=floor_value, asnorm=asnorm))
    index.set_threshold(cal.threshold, cal.method, basis=cal.basis, warnings=cal.warnings,
                        near_duplicates=cal.near_duplicates,
                        extra={SCORE_MODELS_KEY: cal.score_models} if cal.score_models else None)
    for w in cal.warnings:
        log.debug("calibration of %s: %s", index.path, w)
    return cal


#: A gallery change recalibrates the threshold once this share of its speakers were added, given
#: clips or removed since the last calibration; smaller changes are only counted in the threshold
#: record. The threshold is a quantile of best-of-gallery impostor scores, whose false-accept rate
#: grows about linearly with the gallery (1 - (1 - p)^S ~ S p): a 1 % larger gallery moves a 1 %
#: FA target to ~1.01 %, far inside the +/- 0.5 points the calibration is judged on (eval_norm).
#: A calibration costs 0.16 s at 1e3 speakers but 3-6 s at 1e5 (1e6 clips: impostor queries and
#: near-duplicate search over every speaker), which made every one-clip enrolment of a big
#: gallery (REST, ``index add``) cost seconds; now 1 in ~1000 enrolments there pays it.
RECALIBRATE_SHARE = 0.01
#: Galleries smaller than this recalibrate on every change (it is cheap there: <= 0.2 s).
RECALIBRATE_ALWAYS_BELOW = 1000


def recalibration_due(index: SpeakerIndex, changed_speakers: int) -> bool:
    """Whether ``changed_speakers`` more changed speakers (on top of those counted in the
    threshold record since the last calibration) call for a new calibration: always without a
    threshold or under RECALIBRATE_ALWAYS_BELOW speakers, else from RECALIBRATE_SHARE."""
    if isinstance(changed_speakers, bool) or not isinstance(changed_speakers, int) or changed_speakers < 0:
        raise ConfigError(f"changed_speakers must be a non-negative integer, got {changed_speakers!r}")
    n = len(check_index(index).speakers())
    if index.threshold_method is None or n < RECALIBRATE_ALWAYS_BELOW:
        return True
    return index.threshold_changed_speakers + changed_speakers >= RECALIBRATE_SHARE * n


def refresh_open_set(
    index: SpeakerIndex, changed_speakers: int, *, force: bool = False,
    floor: float | None | Literal["model"] = "model",
) -> OpenSetCalibration | None:
    """After a gallery change of ``changed_speakers`` speakers (added, given clips or removed):
    :func:`calibrate_open_set` (default settings, ``floor``) when :func:`recalibration_due` or
    ``force``, returning its result; else the change is counted in the threshold record (see
    ``SpeakerIndex.threshold_changed_speakers``) and None is returned. Near-duplicate names
    enrolled in between are warned of at the next calibration. The index must be open writable;
    saving is the caller's job."""
    if force or recalibration_due(index, changed_speakers):
        return calibrate_open_set(index, floor=floor)
    index.count_threshold_changes(changed_speakers)
    return None


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


# score normalisation and duration models


def _raw_best(index: SpeakerIndex, qs: ImpostorQueries, scoring: str, top_n: int) -> np.ndarray:
    ranked = rank_speakers(index, qs.vectors, 1, scoring, top_n=top_n, exclude=qs.exclude_names)
    return np.array([r[0].score if r else np.nan for r in ranked], np.float64)


def _asnorm_best(index: SpeakerIndex, qs: ImpostorQueries, scoring: str, top_n: int,
                 cohort_top_n: int) -> np.ndarray | None:
    ranked = asnorm_rank(index, qs.vectors, 1, scoring, top_n, cohort_top_n, exclude=qs.exclude_ordinals)
    if ranked is None:
        return None
    return np.array([n[0] if len(n) else np.nan for _, _, n in ranked], np.float64)


def _asnorm_model(index: SpeakerIndex, qs: ImpostorQueries, far: float, scoring: str, top_n: int,
                  cohort_top_n: int) -> dict[str, Any] | None:
    norm = _asnorm_best(index, qs, scoring, top_n, cohort_top_n)
    if norm is None:
        return None
    full = norm[: qs.n_clips]
    full = full[np.isfinite(full)]
    if not len(full):
        return None
    need = min_calibration_speakers(far)
    value, basis, rests = _gallery_value(full.astype(np.float32), far, qs.voices, need)
    method = (f"gallery-impostor asnorm far={far:g} n={len(full)} speakers={len(index.speakers())} "
              f"scoring={scoring} cohort_top_n={cohort_top_n}")
    if basis != "calibrated":
        method += f"; too few speakers to calibrate ({qs.voices} distinct, {need} needed): {basis}, {rests}"
    dm = fit_duration_model(norm, qs.speech_s, far, qs.voices, need)
    return {"threshold": float(value), "method": method, "basis": basis, "scoring": scoring, "top_n": int(top_n),
            "cohort_top_n": int(cohort_top_n), "n_scores": int(len(full)),
            "duration": None if dm is None else dm.to_record()}


def fit_score_models(
    index: SpeakerIndex,
    far: float = DEFAULT_FAR,
    *,
    scoring: str = DEFAULT_SCORING,
    top_n: int = DEFAULT_TOP_N,
    max_clips: int = CALIBRATION_MAX_CLIPS,
    seed: int = CALIBRATION_SEED,
    near_duplicate_cosine: float | None = NEAR_DUPLICATE_COSINE,
    crops: CalibrationCrops | None = None,
    cohort_top_n: int = DEFAULT_COHORT_TOP_N,
    floor: float | None = None,
    asnorm: bool = True,
) -> dict[str, Any]:
    """Per score normalisation, what identification needs beyond the fixed raw threshold.

    ``{"far": far, "none": {"duration": ...}, "asnorm": {"threshold", "method", "basis",
    "scoring", "top_n", "cohort_top_n", "n_scores", "duration"}}``, from the leave-one-speaker-out
    impostor queries (the gallery's clips and ``crops``). A duration is None where too few
    trials fit one, "asnorm" is missing for a gallery too small for a cohort. ``floor`` bounds
    the raw duration model from below (the raw threshold's floor).
    """
    qs = impostor_queries(index, max_clips, seed, near_duplicate_cosine, crops)
    out: dict[str, Any] = {"far": far}
    if qs is None or qs.voices < 2:
        return out
    need = min_calibration_speakers(far)
    raw = _raw_best(index, qs, scoring, top_n)
    dm: DurationModel | None = fit_duration_model(raw, qs.speech_s, far, qs.voices, need, floor=floor)
    out["none"] = {"scoring": scoring, "duration": None if dm is None else dm.to_record()}
    am = _asnorm_model(index, qs, far, scoring, top_n, cohort_top_n) if asnorm else None
    if am is not None:
        out["asnorm"] = am
    return out


def asnorm_score_model(
    index: SpeakerIndex,
    far: float = DEFAULT_FAR,
    *,
    scoring: str = DEFAULT_SCORING,
    top_n: int = DEFAULT_TOP_N,
    cohort_top_n: int = DEFAULT_COHORT_TOP_N,
    max_clips: int = CALIBRATION_MAX_CLIPS,
    seed: int = CALIBRATION_SEED,
    near_duplicate_cosine: float | None = NEAR_DUPLICATE_COSINE,
) -> dict[str, Any]:
    """The AS-norm threshold record of a gallery (as in :func:`fit_score_models`, without
    crops), leaving the index unchanged. ConfigError for a gallery with no cohort (fewer than
    :data:`speakerid.scorenorm.MIN_SPEAKERS` speakers, where identification does not normalise)."""
    qs = impostor_queries(index, max_clips, seed, near_duplicate_cosine)
    am = None if qs is None or qs.voices < 2 else _asnorm_model(index, qs, far, scoring, top_n, cohort_top_n)
    if am is None:
        raise ConfigError(
            f"the gallery at {index.path} is too small to calibrate a threshold for AS-normalised scores: pass one"
        )
    return am
