"""When a gallery change recalibrates the open-set threshold: every change of a small gallery,
1 % of the speakers of a big one (speakerid.calibration.refresh_open_set); the count of changes
in between is kept in the threshold record, saved, and reset by a calibration."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from speakerid.calibration import (
    RECALIBRATE_ALWAYS_BELOW,
    RECALIBRATE_SHARE,
    calibrate_open_set,
    recalibration_due,
    refresh_open_set,
)
from speakerid.errors import ConfigError
from speakerid.index import IndexSpec, SpeakerIndex
from speakerid.indexer import remove_speaker

DIM = 32


def gallery(d: Path, n_speakers: int, per: int = 2, seed: int = 0) -> SpeakerIndex:
    rng = np.random.default_rng(seed)
    cent = rng.standard_normal((n_speakers, DIM))
    x = np.repeat(cent, per, axis=0) + 0.6 * rng.standard_normal((n_speakers * per, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    n = len(x)
    ix = SpeakerIndex.create(d, IndexSpec(model="toy-model", weights_sha256="ab" * 32, dim=DIM))
    ix.add(x, [f"s{i // per:05d}" for i in range(n)], [f"/a/{i}.wav" for i in range(n)],
           [hashlib.sha256(b"%d" % i).hexdigest() for i in range(n)], [3.0] * n, [2.5] * n)
    return ix


def test_small_galleries_recalibrate_on_every_change(tmp_path: Path) -> None:
    with gallery(tmp_path / "ix", 50) as ix:
        assert recalibration_due(ix, 0)  # no threshold yet
        calibrate_open_set(ix)
        assert recalibration_due(ix, 1) and RECALIBRATE_ALWAYS_BELOW > 50
        assert refresh_open_set(ix, 1) is not None and ix.threshold_changed_speakers == 0


def test_big_galleries_count_changes_until_one_percent(tmp_path: Path) -> None:
    n = RECALIBRATE_ALWAYS_BELOW + 200
    share = int(np.ceil(RECALIBRATE_SHARE * n))  # 12 speakers
    d = tmp_path / "ix"
    with gallery(d, n) as ix:
        first = calibrate_open_set(ix)
        assert ix.threshold_changed_speakers == 0
        thr, set_at = ix.threshold, ix.info()["threshold_method"]
        assert refresh_open_set(ix, 1) is None  # counted, not recalibrated
        assert ix.threshold == thr and ix.threshold_method == set_at and ix.threshold_changed_speakers == 1
        ix.save()
    with SpeakerIndex.open(d, writable=True) as ix:  # the count is saved with the threshold
        assert ix.threshold_changed_speakers == 1 and ix.info()["threshold_changed_speakers"] == 1
        assert not recalibration_due(ix, share - 2)
        assert refresh_open_set(ix, share - 2) is None and ix.threshold_changed_speakers == share - 1
        assert recalibration_due(ix, 1)
        again = refresh_open_set(ix, 1)
        assert again is not None and again.threshold == pytest.approx(first.threshold)
        assert ix.threshold_changed_speakers == 0
        assert refresh_open_set(ix, share, force=False) is not None  # one big change at once
        assert refresh_open_set(ix, 0, force=True) is not None
        ix.save()
    # the indexer's remove_speaker follows the same rule
    remove_speaker(d, "s00003")
    with SpeakerIndex.open(d) as ix:
        assert ix.threshold_changed_speakers == 1 and "s00003" not in ix.speakers()


def test_refresh_validates_its_count(tmp_path: Path) -> None:
    with gallery(tmp_path / "ix", 20) as ix:
        calibrate_open_set(ix)
        for bad in (-1, 1.5, True, "2"):
            with pytest.raises(ConfigError, match="non-negative integer"):
                refresh_open_set(ix, bad)  # type: ignore[arg-type]
            with pytest.raises(ConfigError, match="non-negative integer"):
                ix.count_threshold_changes(bad)  # type: ignore[arg-type]
