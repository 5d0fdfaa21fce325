"""The open-set threshold estimator of speakerid.calibration on galleries where the answer is
known: speakers drawn i.i.d. (so the gallery's leave-one-speaker-out scores and a stranger's
best score are exchangeable), many draws, the false-accept rate measured on many strangers.
Also the threshold record's ``extra`` (the public way the score models are stored)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from speakerid.calibration import TAIL_FIT_MAX_SCORES, _tail_fit, calibrate_open_set, gallery_impostor_scores
from speakerid.calibration.duration import SCORE_MODELS_KEY, score_models
from speakerid.errors import ConfigError
from speakerid.index import IndexSpec, SpeakerIndex
from speakerid.metrics import threshold_for_far

DIM = 24


def _gallery(path: Path, vecs: np.ndarray) -> SpeakerIndex:
    ix = SpeakerIndex.create(path, IndexSpec("campplus", "ab" * 32, vecs.shape[1]), save=False)
    keys = [f"s{i:04d}" for i in range(len(vecs))]
    ix.add(vecs, keys, [f"/a/{k}.wav" for k in keys], [hashlib.sha256(k.encode()).hexdigest() for k in keys],
           [5.0] * len(keys), [5.0] * len(keys))
    return ix


def _voices(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_tail_fit_rests_on_the_highest_scores() -> None:
    x = np.random.default_rng(0).standard_normal(199) * 0.05 + 0.4
    value, k = _tail_fit(x, 0.01, TAIL_FIT_MAX_SCORES)
    assert k == 20 and TAIL_FIT_MAX_SCORES == 20
    # the fit only sees the 21 highest: changing the rest does not move it
    y = np.sort(x)
    y[:150] -= 0.3
    assert _tail_fit(y, 0.01, 20)[0] == pytest.approx(value)
    # a large gallery: k grows to 2 far n, so the fit still extrapolates by a factor of 2
    assert _tail_fit(np.random.default_rng(1).standard_normal(5000), 0.01, 20)[1] == 100
    # the former rule (no max_k): the upper half, never below the highest score
    assert _tail_fit(x, 0.01)[1] == 99 and _tail_fit(x, 0.01)[0] > x.max()
    assert _tail_fit(x, 0.2, 20)[0] < x.max()  # the new one may lie below it (e.g. far 20 %)


@pytest.mark.parametrize("size, lo, hi, old_min", [(200, 0.005, 0.015, 0.016), (50, 0.005, 0.015, None)])
def test_open_set_threshold_lands_on_its_target(tmp_path: Path, size: int, lo: float, hi: float,
                                                old_min: float | None) -> None:
    """i.i.d. voices: the mean false-accept rate over 60 galleries is within the band of the
    1 % target (the tail over the 20 highest leave-one-out scores), where the former empirical
    quantile accepted about 2 % at 200 speakers (the tied top pair, see TAIL_FIT_MAX_SCORES)."""
    rng = np.random.default_rng(7)
    fa, fa_old = [], []
    for d in range(60):
        gal = _voices(rng, size)
        strangers = _voices(rng, 400)
        with _gallery(tmp_path / f"g{d}", gal) as ix:
            cal = calibrate_open_set(ix, floor=None, score_models=False)
            assert cal.basis == ("calibrated" if size >= 100 else "tail-fit")
            old = threshold_for_far(gallery_impostor_scores(ix), 0.01)
        best = (strangers @ gal.T).max(axis=1)
        fa.append(float(np.mean(best >= cal.threshold)))
        fa_old.append(float(np.mean(best >= old)))
    rate = float(np.mean(fa))
    print(f"G={size}: mean FA {rate:.4f} (former empirical quantile {np.mean(fa_old):.4f})")
    assert lo <= rate <= hi
    if old_min is not None:
        assert np.mean(fa_old) >= old_min


def test_threshold_extra_is_stored_and_read_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    ix = _gallery(tmp_path / "ix", _voices(rng, 30))
    ix.set_threshold(0.5, "manual", extra={"score_models": {"far": 0.01, "none": {"duration": None}}})
    got = ix.threshold_extra
    assert got == {"score_models": {"far": 0.01, "none": {"duration": None}}}
    got["score_models"]["far"] = 0.5  # a copy: the record is not changed through it
    assert ix.threshold_extra["score_models"]["far"] == 0.01
    ix.save()
    ix.close()
    with SpeakerIndex.open(tmp_path / "ix") as back:
        assert back.threshold == 0.5 and back.threshold_extra["score_models"]["far"] == 0.01
    with SpeakerIndex.open(tmp_path / "ix", writable=True) as w:
        with pytest.raises(ConfigError, match="JSON"):
            w.set_threshold(0.5, "manual", extra={"x": object()})
        with pytest.raises(ConfigError, match="keyed by str"):
            w.set_threshold(0.5, "manual", extra={1: 2})
        w.set_threshold(0.6, "manual")  # setting it again replaces the extra too
        assert w.threshold_extra == {}
        cal = calibrate_open_set(w, score_models=True)
        assert cal.score_models and score_models(w) == w.threshold_extra[SCORE_MODELS_KEY]
        assert "none" in score_models(w)
