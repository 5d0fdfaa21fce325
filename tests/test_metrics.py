"""Tests of speakerid.metrics: hand-worked cases and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from speakerid.errors import ConfigError
from speakerid.metrics import (
    DcfResult,
    EerResult,
    OpenSetRates,
    det_curve,
    eer,
    fnir_at_fpir,
    min_dcf,
    open_set_det_curve,
    open_set_rates,
    threshold_for_far,
    threshold_for_fpir,
    topk_accuracy,
)


def trials(targets, nontargets):
    scores = np.array(list(targets) + list(nontargets), dtype=float)
    labels = np.array([1] * len(targets) + [0] * len(nontargets))
    return scores, labels


# --- brute-force reference: loop over every threshold --------------------------------


def brute_points(scores, labels):
    """(threshold, fnr, fpr) for every distinct score and +inf, accept score >= threshold."""
    tar = [s for s, lab in zip(scores, labels) if lab == 1]
    non = [s for s, lab in zip(scores, labels) if lab == 0]
    points = []
    for thr in sorted(set(float(s) for s in scores)) + [math.inf]:
        fnr = sum(1 for s in tar if s < thr) / len(tar)
        fpr = sum(1 for s in non if s >= thr) / len(non)
        points.append((thr, fnr, fpr))
    return points


def brute_eer(scores, labels):
    pts = brute_points(scores, labels)
    for (_t0, fnr0, fpr0), (_t1, fnr1, fpr1) in zip(pts, pts[1:]):
        if fnr1 - fpr1 >= 0 > fnr0 - fpr0:
            if fnr1 == fpr1:
                return fnr1
            d0, d1 = fnr0 - fpr0, fnr1 - fpr1
            a = d0 / (d0 - d1)
            return fnr0 + a * (fnr1 - fnr0)
    raise AssertionError("no crossing")


def brute_min_dcf(scores, labels, p, c_miss=1.0, c_fa=1.0):
    c_def = min(c_miss * p, c_fa * (1 - p))
    return min((c_miss * p * fnr + c_fa * (1 - p) * fpr) / c_def
               for _, fnr, fpr in brute_points(scores, labels))


# --- det_curve ---------------------------------------------------------------------


def test_det_curve_points_and_ties():
    # targets 2, 3; non-targets 0, 1, 2 (a tie at 2)
    fpr, fnr, thr = det_curve(*trials([2, 3], [0, 1, 2]))
    np.testing.assert_array_equal(thr, [0, 1, 2, 3, np.inf])
    np.testing.assert_allclose(fpr, [1, 2 / 3, 1 / 3, 0, 0])
    np.testing.assert_allclose(fnr, [0, 0, 0, 1 / 2, 1])


def test_det_curve_matches_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 8, 60).astype(float)  # many ties
    labels = rng.integers(0, 2, 60)
    fpr, fnr, thr = det_curve(scores, labels)
    ref = brute_points(scores, labels)
    np.testing.assert_array_equal(thr, [p[0] for p in ref])
    np.testing.assert_allclose(fnr, [p[1] for p in ref])
    np.testing.assert_allclose(fpr, [p[2] for p in ref])


# --- eer ------------------------------------------------------------------------------


def test_eer_perfect_separation():
    r = eer(*trials([2, 3], [0, 1]))
    assert r == EerResult(eer=0.0, threshold=2.0)


def test_eer_fully_inverted():
    r = eer(*trials([0, 1], [2, 3]))
    assert r.eer == 1.0


def test_eer_all_scores_equal_is_half():
    r = eer(*trials([0.7] * 3, [0.7] * 5))
    assert r.eer == pytest.approx(0.5)
    assert r.threshold == 0.7  # upper bracket is reject-all: the highest score is reported


def test_eer_single_pair():
    assert eer([0.9, 0.1], [1, 0]).eer == 0.0
    assert eer([0.1, 0.9], [1, 0]).eer == 1.0
    assert eer([0.5, 0.5], [1, 0]).eer == pytest.approx(0.5)


def test_eer_hand_worked_interpolation():
    # DET points (thr: fnr, fpr): 0: (0, 1)  1: (0, 2/3)  2: (0, 1/3)  3: (1/2, 0)  inf: (1, 0)
    # FNR - FPR goes from -1/3 at thr 2 to +1/2 at thr 3; crossing at a = (1/3)/(5/6) = 0.4:
    # fpr = 1/3 - 0.4/3 = 0.2, fnr = 0.4 * 1/2 = 0.2; threshold 2 + 0.4 = 2.4
    r = eer(*trials([2, 3], [0, 1, 2]))
    assert r.eer == pytest.approx(0.2)
    assert r.threshold == pytest.approx(2.4)


def test_eer_hand_worked_no_ties():
    # targets 0.5, 0.8, 0.9; non-targets 0.1, 0.2, 0.6, 0.7
    # thr 0.6: fnr 1/3, fpr 2/4 -> -1/6;  thr 0.7: fnr 1/3, fpr 1/4 -> +1/12
    # FNR is flat on that segment, so EER = 1/3 (a = (1/6)/(1/4) = 2/3, thr 0.6 + 2/3 * 0.1)
    r = eer(*trials([0.5, 0.8, 0.9], [0.1, 0.2, 0.6, 0.7]))
    assert r.eer == pytest.approx(1 / 3)
    assert r.threshold == pytest.approx(0.6 + 0.1 * 2 / 3)


def test_eer_exact_det_point_on_diagonal():
    # thr 2: fnr 1/2, fpr 1/2 exactly
    r = eer(*trials([0, 3], [1, 2]))
    assert r == EerResult(eer=0.5, threshold=2.0)


@pytest.mark.parametrize("seed", range(8))
def test_eer_and_min_dcf_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 200))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = rng.normal(size=n) + 1.5 * labels
    if seed % 2:
        scores = np.round(scores, 1)  # ties across classes
    assert eer(scores, labels).eer == pytest.approx(brute_eer(scores, labels), abs=1e-12)
    for p in (0.01, 0.05, 0.5):
        got = min_dcf(scores, labels, p_target=p).min_dcf
        assert got == pytest.approx(brute_min_dcf(scores, labels, p), abs=1e-9)
    got = min_dcf(scores, labels, p_target=0.05, c_miss=10, c_fa=2).min_dcf
    assert got == pytest.approx(brute_min_dcf(scores, labels, 0.05, 10, 2), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_eer_symmetric_under_label_swap(seed):
    # swapping roles and negating scores traces the same polyline, so the EER is unchanged
    rng = np.random.default_rng(100 + seed)
    labels = rng.integers(0, 2, 50)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(size=50) + labels, 1)
    assert eer(-scores, 1 - labels).eer == pytest.approx(eer(scores, labels).eer, abs=1e-12)


def test_eer_threshold_operates_at_equal_rates_for_separable_gap():
    s, lab = trials([5.0, 6.0], [1.0, 2.0])
    r = eer(s, lab)
    assert r.eer == 0.0
    assert np.all(s[lab == 1] >= r.threshold) and np.all(s[lab == 0] < r.threshold)


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([], [], "empty"),
        ([0.1, 0.2], [1, 1], "target.*undefined"),
        ([0.1, 0.2], [0, 0], "non-target.*undefined"),
        ([0.1, np.nan], [1, 0], "NaN"),
        ([0.1, np.inf], [1, 0], "NaN or infinite"),
        ([0.1, 0.2], [1, 2], "0 .*or 1"),
        ([0.1, 0.2], [1.0, 0.5], "0 .*or 1"),
        ([0.1, 0.2, 0.3], [1, 0], "length"),
        ([[0.1, 0.2]], [[1, 0]], "1-D"),
        (["a", "b"], [1, 0], "numeric"),
    ],
)
def test_eer_invalid_input(scores, labels, match):
    with pytest.raises(ConfigError, match=match):
        eer(scores, labels)
    with pytest.raises(ConfigError):
        min_dcf(scores, labels)
    with pytest.raises(ConfigError):
        det_curve(scores, labels)


def test_eer_accepts_bool_labels():
    assert eer([0.9, 0.1], [True, False]).eer == 0.0


# --- min_dcf ----------------------------------------------------------------------------

# targets 5, 10; 99 non-targets at 0 and one at 7 (100 non-targets)
# DET points (thr: fnr, fpr): 0: (0, 1)  5: (0, .01)  7: (.5, .01)  10: (.5, 0)  inf: (1, 0)
DCF_SCORES, DCF_LABELS = trials([5, 10], [0] * 99 + [7])


def test_min_dcf_hand_p001():
    # normalised DCF = fnr + 99 fpr: 99, 0.99, 1.49, 0.5, 1 -> 0.5 at thr 10
    r = min_dcf(DCF_SCORES, DCF_LABELS, p_target=0.01)
    assert isinstance(r, DcfResult)
    assert r.min_dcf == pytest.approx(0.5)
    assert r.threshold == 10.0
    assert r.p_target == 0.01


def test_min_dcf_hand_p005():
    # normalised DCF = fnr + 19 fpr: 19, 0.19, 0.69, 0.5, 1 -> 0.19 at thr 5
    r = min_dcf(DCF_SCORES, DCF_LABELS, p_target=0.05)
    assert r.min_dcf == pytest.approx(0.19)
    assert r.threshold == 5.0


def test_min_dcf_hand_costs():
    # c_miss 10, p 0.01: c_def = min(0.1, 0.99) = 0.1; DCF = fnr + 9.9 fpr -> 0.099 at thr 5
    r = min_dcf(DCF_SCORES, DCF_LABELS, p_target=0.01, c_miss=10, c_fa=1)
    assert r.min_dcf == pytest.approx(0.099)
    assert r.threshold == 5.0


def test_min_dcf_reject_all_is_at_most_one():
    r = min_dcf(*trials([0, 1], [2, 3]), p_target=0.01)  # inverted system
    assert r.min_dcf == pytest.approx(1.0)
    assert r.threshold == math.inf


@pytest.mark.parametrize("kw", [{"p_target": 0}, {"p_target": 1}, {"c_miss": 0}, {"c_fa": -1}])
def test_min_dcf_bad_parameters(kw):
    with pytest.raises(ConfigError):
        min_dcf(DCF_SCORES, DCF_LABELS, **kw)


# --- topk_accuracy --------------------------------------------------------------------


def test_topk_basic():
    m = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]])
    r = topk_accuracy(m, [0, 2, 0], ks=(1, 2, 3))
    assert r == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}


def test_topk_ties_are_pessimistic():
    m = np.array([[0.9, 0.1, 0.9], [0.5, 0.5, 0.5]])
    # query 0: true class 0 tied with class 2 -> rank 2; query 1: three-way tie -> rank 3
    assert topk_accuracy(m, [0, 1], ks=(1, 2, 3)) == {1: 0.0, 2: 0.5, 3: 1.0}


def test_topk_k_larger_than_classes_is_capped():
    m = np.array([[0.1, 0.2], [0.3, 0.3]])
    assert topk_accuracy(m, [0, 1], ks=(1, 5)) == {1: 0.0, 5: 1.0}


@pytest.mark.parametrize(
    "m, idx, ks",
    [
        (np.zeros((0, 3)), [], (1,)),
        (np.zeros(3), [0], (1,)),
        (np.zeros((1, 3)), [3], (1,)),
        (np.zeros((1, 3)), [-1], (1,)),
        (np.zeros((1, 3)), [0.0], (1,)),
        (np.zeros((2, 3)), [0], (1,)),
        (np.zeros((1, 3)), [0], (0,)),
        (np.zeros((1, 3)), [0], ()),
        (np.zeros((1, 3)), [0], (True,)),
        (np.array([[np.nan, 0.0]]), [0], (1,)),
    ],
)
def test_topk_invalid(m, idx, ks):
    with pytest.raises(ConfigError):
        topk_accuracy(m, np.asarray(idx), ks=ks)


# --- thresholds for FAR / FPIR ----------------------------------------------------------


def test_threshold_for_far_basic():
    s = np.array([1.0, 2.0, 3.0])
    t = threshold_for_far(s, 1 / 3)
    assert 2.0 < t <= np.nextafter(2.0, np.inf)  # smallest float keeping only 3.0 accepted
    assert np.mean(s >= t) <= 1 / 3


def test_threshold_for_far_zero_and_one():
    s = np.array([1.0, 2.0, 3.0])
    t0 = threshold_for_far(s, 0.0)
    assert t0 > 3.0 and np.mean(s >= t0) == 0.0
    assert threshold_for_far(s, 1.0) == -math.inf


def test_threshold_for_far_ties():
    s = np.array([1.0, 5.0, 5.0, 5.0])
    t = threshold_for_far(s, 0.5)  # 2 of 4 allowed, but the three 5.0 move together
    assert t > 5.0 and np.mean(s >= t) == 0.0
    t = threshold_for_far(s, 0.75)
    assert 1.0 < t <= 5.0 and np.mean(s >= t) == 0.75


def test_threshold_for_far_float_rounding_of_rate():
    s = np.arange(100, dtype=float)
    t = threshold_for_far(s, 0.29)  # 0.29 * 100 == 28.999999999999996 in floats
    assert np.sum(s >= t) == 29


def test_threshold_for_far_float32_compares_exactly():
    s = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    t = threshold_for_far(s, 0.0)
    assert np.sum(s >= t) == 0
    assert np.sum(s >= np.float32(t)) == 0


@pytest.mark.parametrize("func", [threshold_for_far, threshold_for_fpir])
@pytest.mark.parametrize(
    "scores, rate", [([], 0.01), ([1.0], -0.1), ([1.0], 1.5), ([np.nan], 0.1), ([1.0], "x")]
)
def test_threshold_invalid(func, scores, rate):
    with pytest.raises(ConfigError):
        func(scores, rate)


def test_threshold_for_fpir_matches_far():
    rng = np.random.default_rng(3)
    s = rng.normal(size=257)
    for r in (0.0, 0.001, 0.01, 0.1, 0.5):
        t = threshold_for_fpir(s, r)
        assert t == threshold_for_far(s, r)
        assert np.mean(s >= t) <= r
        # smallest: the next float down accepts too many
        assert np.mean(s >= np.nextafter(t, -np.inf)) > r


# --- open-set identification ------------------------------------------------------------


def test_open_set_rates_hand():
    mated = [0.9, 0.8, 0.4, 0.95]
    top1 = np.array([True, True, True, False])
    non = [0.1, 0.5, 0.85, 0.3]
    r = open_set_rates(mated, top1, non, threshold=0.5)
    # non-mated >= 0.5: 0.5, 0.85 -> 2/4; mated misses: 0.4 (low score), 0.95 (not rank 1)
    assert r == OpenSetRates(fpir=0.5, fnir=0.5, threshold=0.5)


def test_fnir_at_fpir_hand():
    mated = [0.9, 0.8, 0.4, 0.95]
    top1 = np.array([True, True, True, False])
    non = [0.1, 0.5, 0.85, 0.3]
    r = fnir_at_fpir(mated, top1, non, fpir=0.25)  # one of four may pass: threshold > 0.5
    assert 0.5 < r.threshold <= np.nextafter(0.5, 1)
    assert r.fpir == 0.25 and r.fnir == 0.5
    r = fnir_at_fpir(mated, top1, non, fpir=0.0)  # threshold just above 0.85
    assert r.fpir == 0.0 and r.fnir == 0.75


def test_open_set_invalid():
    with pytest.raises(ConfigError):
        open_set_rates([], np.array([], dtype=bool), [0.1], 0.5)
    with pytest.raises(ConfigError):
        open_set_rates([0.5], np.array([True]), [], 0.5)
    with pytest.raises(ConfigError):
        open_set_rates([0.5], [1], [0.1], 0.5)  # not booleans
    with pytest.raises(ConfigError):
        open_set_rates([0.5, 0.6], np.array([True]), [0.1], 0.5)
    with pytest.raises(ConfigError):
        open_set_rates([0.5], np.array([True]), [0.1], float("nan"))


# --- open-set DET: brute force over every threshold --------------------------------------


def brute_open_set_points(mated, top1, non):
    """(threshold, fpir, fnir) at every distinct score of either set and +inf, by counting."""
    points = []
    for thr in sorted(set(map(float, mated)) | set(map(float, non))) + [math.inf]:
        fpir = sum(1 for s in non if s >= thr) / len(non)
        fnir = sum(1 for s, t in zip(mated, top1) if not (t and s >= thr)) / len(mated)
        points.append((thr, fpir, fnir))
    return points


def open_set_searches(seed, n_mated=70, n_non=55):
    rng = np.random.default_rng(seed)
    mated = rng.integers(0, 12, n_mated).astype(float) / 4  # many ties, within and across sets
    top1 = rng.random(n_mated) < 0.8
    non = rng.integers(0, 12, n_non).astype(float) / 5
    return mated, top1, non


def test_open_set_det_curve_hand():
    mated = [0.9, 0.8, 0.4, 0.95]
    top1 = np.array([True, True, True, False])
    non = [0.1, 0.5, 0.85, 0.3]
    fpir, fnir, thr = open_set_det_curve(mated, top1, non)
    np.testing.assert_array_equal(thr, [0.1, 0.3, 0.4, 0.5, 0.8, 0.85, 0.9, 0.95, np.inf])
    np.testing.assert_allclose(fpir, [1, 3 / 4, 2 / 4, 2 / 4, 1 / 4, 1 / 4, 0, 0, 0])
    # 0.95 is never a hit (not rank 1): FNIR starts at 1/4 and ends at 1
    np.testing.assert_allclose(fnir, [1 / 4, 1 / 4, 1 / 4, 2 / 4, 2 / 4, 3 / 4, 3 / 4, 1, 1])


@pytest.mark.parametrize("seed", range(5))
def test_open_set_det_curve_matches_brute_force(seed):
    mated, top1, non = open_set_searches(seed)
    fpir, fnir, thr = open_set_det_curve(mated, top1, non)
    ref = brute_open_set_points(mated, top1, non)
    np.testing.assert_array_equal(thr, [p[0] for p in ref])
    np.testing.assert_allclose(fpir, [p[1] for p in ref])
    np.testing.assert_allclose(fnir, [p[2] for p in ref])
    # every point is the operating point of open_set_rates at its threshold
    for f, n, t in zip(fpir, fnir, thr):
        r = open_set_rates(mated, top1, non, t)
        assert (r.fpir, r.fnir) == pytest.approx((f, n))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("target", [0.0, 0.01, 0.05, 0.2, 0.5, 1.0])
def test_fnir_at_fpir_matches_brute_force(seed, target):
    """The lowest threshold whose FPIR is within the target, found by scanning every score."""
    mated, top1, non = open_set_searches(seed)
    r = fnir_at_fpir(mated, top1, non, fpir=target)
    ok = [(t, fp, fn) for t, fp, fn in brute_open_set_points(mated, top1, non) if fp <= target]
    fewest_misses = min(fn for _, _, fn in ok)  # lower thresholds never miss more
    assert r.fpir <= target
    assert r.fnir == pytest.approx(fewest_misses)
    assert r.fpir == pytest.approx(max(fp for _, fp, fn in ok if fn == fewest_misses))


def test_open_set_det_curve_invalid():
    with pytest.raises(ConfigError):
        open_set_det_curve([0.5], np.array([True]), [])
    with pytest.raises(ConfigError):
        open_set_det_curve([0.5], [1], [0.1])  # not booleans
    with pytest.raises(ConfigError):
        open_set_det_curve([0.5, np.inf], np.array([True, True]), [0.1])
