"""Duration-aware open-set thresholds, in the spirit of WeSpeaker's quality measure functions (QMF).

A short query's embedding is noisier, so a stranger's best-of-gallery score spreads wider and a
threshold calibrated on the gallery's own (longer) clips lets more strangers in than its target.
At calibration time the best-of-gallery impostor score is modelled as a function of the query's
speech duration *d* (seconds, as ``Embedding.speech_s`` gives it)::

    mu(d) = a + b ln d          sd(d) = c + e ln d          (least squares; sd from |residuals|)

fitted on leave-one-speaker-out impostor trials: the gallery's clips and, when the caller gives
them (:class:`CalibrationCrops`), embeddings of crops of those clips at shorter lengths. The
residuals standardised by mu and sd are pooled over every duration and their (1 - FAR) quantile
``z`` is read off as the calibration reads the raw quantile (an exponential tail fit for small
galleries), so the threshold at duration *d* is ``mu(d) + z sd(d)``, with *d* clamped to the
durations seen. The model is stored in the index's threshold record (``score_models``, one per
score normalisation) and used by :func:`speakerid.identify.identify` when given
``query_speech_s``.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..index import SpeakerIndex

__all__ = [
    "DEFAULT_CROP_S", "MIN_DURATION_TRIALS", "SCORE_MODELS_KEY", "CalibrationCrops", "DurationModel",
    "default_thresholds", "fit_duration_model", "gallery_crops", "score_models", "store_score_models",
]

#: The threshold record's key for the per-normalisation models.
SCORE_MODELS_KEY = "score_models"
#: Fewer impostor trials than this fit no duration model.
MIN_DURATION_TRIALS = 20
#: Durations spanning less than this ratio fit no slope (the threshold is flat in duration).
MIN_DURATION_RATIO = 1.5
#: Crop lengths (seconds of audio) of :func:`gallery_crops`: the short queries of
#: benchmarks/conditions.py (crop-2s, crop-3s), below a typical enrolment clip.
DEFAULT_CROP_S = (2.0, 3.0)
#: :func:`gallery_crops` crops at most this many enrolled clips (each crop costs an embedding).
MAX_CROP_CLIPS = 500
_SQRT_HALF_PI = math.sqrt(math.pi / 2.0)  # E|x| = sd * sqrt(2 / pi) for a normal x


@dataclass(frozen=True)
class CalibrationCrops:
    """Extra impostor queries for the calibration: embeddings of crops of enrolled clips.

    ``vectors`` (n, dim) unit rows, the enrolled ``speakers`` they come from (left out of their
    own trials) and the ``speech_s`` the embedder found in each.
    """

    vectors: np.ndarray
    speakers: tuple[str, ...]
    speech_s: np.ndarray

    def __post_init__(self) -> None:
        v = np.asarray(self.vectors, dtype=np.float32)
        d = np.asarray(self.speech_s, dtype=np.float64)
        if v.ndim != 2 or len(v) != len(self.speakers) or d.shape != (len(v),):
            raise ConfigError(
                f"crops: vectors {v.shape}, {len(self.speakers)} speakers and speech_s {d.shape} do not match"
            )
        if not np.all(np.isfinite(d)) or np.any(d < 0):
            raise ConfigError("crops: speech_s must be finite seconds >= 0")
        object.__setattr__(self, "vectors", v)
        object.__setattr__(self, "speech_s", d)
        object.__setattr__(self, "speakers", tuple(self.speakers))


@dataclass(frozen=True)
class DurationModel:
    """The impostor best-of-gallery score against ln(speech seconds): a threshold per duration."""

    mu: tuple[float, float]
    sd: tuple[float, float]
    #: The standardised threshold and what it rests on (as OpenSetCalibration.basis).
    z: float
    basis: str
    #: Durations (speech seconds) the fit saw; a query's duration is clamped to them.
    min_s: float
    max_s: float
    n_trials: int
    #: The threshold never goes below this (the raw calibration's floor), if set.
    floor: float | None = None

    def threshold_at(self, speech_s: float) -> float:
        x = math.log(min(max(float(speech_s), self.min_s), self.max_s))
        sd = max(self.sd[0] + self.sd[1] * x, 1e-6)
        t = self.mu[0] + self.mu[1] * x + self.z * sd
        return t if self.floor is None else max(t, self.floor)

    def to_record(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_record(cls, rec: Any) -> DurationModel | None:
        try:
            return cls(mu=(float(rec["mu"][0]), float(rec["mu"][1])), sd=(float(rec["sd"][0]), float(rec["sd"][1])),
                       z=float(rec["z"]), basis=str(rec["basis"]), min_s=float(rec["min_s"]),
                       max_s=float(rec["max_s"]), n_trials=int(rec["n_trials"]),
                       floor=None if rec.get("floor") is None else float(rec["floor"]))
        except (KeyError, TypeError, ValueError, IndexError):
            return None


def _line(x: np.ndarray, y: np.ndarray, slope: bool) -> tuple[float, float]:
    if not slope:
        return float(np.mean(y)), 0.0
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def fit_duration_model(scores: Any, speech_s: Any, far: float, voices: int, need: int | None,
                       floor: float | None = None) -> DurationModel | None:
    """The duration model of impostor ``scores`` at ``speech_s`` (None with too few trials).

    ``voices`` distinct impostor speakers and ``need`` (:func:`min_calibration_speakers`)
    decide how the pooled standardised quantile is read, as for the raw threshold.
    """
    from . import _gallery_value  # the raw calibration's quantile / tail-fit rule

    s = np.asarray(scores, dtype=np.float64)
    d = np.maximum(np.asarray(speech_s, dtype=np.float64), 0.1)
    ok = np.isfinite(s) & np.isfinite(d)
    s, d = s[ok], d[ok]
    if len(s) < MIN_DURATION_TRIALS or voices < 2:
        return None
    x = np.log(d)
    slope = float(d.max() / d.min()) >= MIN_DURATION_RATIO
    a, b = _line(x, s, slope)
    r = s - (a + b * x)
    c, e = _line(x, np.abs(r) * _SQRT_HALF_PI, slope)
    sd = c + e * x
    if np.any(sd <= 1e-6):  # a slope that drives sd to zero inside the range: keep it flat
        c, e = float(np.mean(np.abs(r)) * _SQRT_HALF_PI), 0.0
        sd = np.full_like(x, c)
    z, basis, _ = _gallery_value((r / sd).astype(np.float32), far, voices, need)
    return DurationModel(mu=(a, b), sd=(c, e), z=float(z), basis=basis, min_s=float(d.min()),
                         max_s=float(d.max()), n_trials=int(len(s)), floor=floor)


def gallery_crops(
    index: SpeakerIndex,
    embedder: Any,
    durations_s: Sequence[float] = DEFAULT_CROP_S,
    *,
    max_clips: int = MAX_CROP_CLIPS,
    seed: int = 0,
) -> CalibrationCrops:
    """Crops of the enrolled clips' audio (read from their paths) at ``durations_s`` seconds,
    seeded offsets, embedded by ``embedder`` (an :class:`speakerid.Embedder` of the index's
    model): the short impostor queries :func:`speakerid.calibration.calibrate_open_set` fits
    its duration model on. Clips shorter than 1.25 x a duration give no crop of it; clips that
    cannot be read and crops the embedder refuses are skipped.
    """
    from ..audio import load
    from ..errors import SpeakeridError
    from .impostors import sample_clips

    g = index.speaker_maps()
    rows = sample_clips(g, max_clips, seed)
    utt = index.utterances()
    path_of = dict(zip(utt["id"].to_numpy().tolist(), utt["path"].to_pylist()))
    rng = np.random.default_rng(seed)
    sr = embedder.audio_options.sample_rate_hz
    vecs, names, speech = [], [], []
    for r in rows:
        try:
            x = load(path_of[int(g.ids[r])], embedder.audio_options)
        except (SpeakeridError, OSError, KeyError):
            continue
        for d in durations_s:
            n = int(float(d) * sr)
            if len(x) < 1.25 * n:
                continue
            a = int(rng.integers(0, len(x) - n + 1))
            try:
                e = embedder.embed_detailed(x[a : a + n], sr)
            except SpeakeridError:
                continue
            vecs.append(e.vector)
            names.append(g.names[int(g.owners[r])])
            speech.append(e.speech_s)
    dim = index.dim
    return CalibrationCrops(np.asarray(vecs, np.float32).reshape(-1, dim), tuple(names), np.asarray(speech))


# --- the threshold record -------------------------------------------------------------------------


def store_score_models(index: SpeakerIndex, models: dict[str, Any]) -> None:
    """Store ``models`` with the index's current threshold (its ``extra``, key "score_models"),
    keeping the rest of the threshold record as it is."""
    extra = {**index.threshold_extra, SCORE_MODELS_KEY: models}
    index.set_threshold(index.threshold, index.threshold_method or "unknown", basis=index.threshold_basis,
                        warnings=index.threshold_warnings, near_duplicates=index.near_duplicate_speakers,
                        extra=extra)


def score_models(index: SpeakerIndex) -> dict[str, Any]:
    """The calibration's per-normalisation models stored with the index (empty if none)."""
    m = index.threshold_extra.get(SCORE_MODELS_KEY)
    return m if isinstance(m, dict) else {}


# --- thresholds at identification time ------------------------------------------------------------

_lock = threading.Lock()
_lazy: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()


def _lazy_asnorm(index: SpeakerIndex, scoring: str, top_n: int, cohort_top_n: int) -> dict[str, Any]:
    """The AS-norm score model of a gallery whose index was calibrated without it (or with other
    settings): calibrated in the process, cached per gallery state and settings."""
    from ..scorenorm import gallery_key
    from . import DEFAULT_FAR, asnorm_score_model

    key = (*gallery_key(index), scoring, top_n, cohort_top_n)
    with _lock:
        hit = _lazy.get(key)
    if hit is None:
        hit = asnorm_score_model(index, DEFAULT_FAR, scoring=scoring, top_n=top_n, cohort_top_n=cohort_top_n)
        hit["method"] += " (computed in this process: the index was not calibrated for it)"
        with _lock:
            _lazy[key] = hit
            while len(_lazy) > 16:
                _lazy.popitem(last=False)
    return hit


def default_thresholds(index: SpeakerIndex, norm: str, speech: Sequence[float | None], *, scoring: str,
                       top_n: int, cohort_top_n: int) -> list[tuple[float, str]]:
    """(threshold, method) per query: the index's (or the model's) threshold for scores under
    ``norm``, at each query's speech seconds where a duration model exists."""
    from ..identify import _resolve_threshold

    models = score_models(index)
    if norm == "asnorm":
        m = models.get("asnorm")
        if not (isinstance(m, dict) and m.get("scoring") == scoring and m.get("cohort_top_n") == cohort_top_n
                and (scoring != "topn" or m.get("top_n") == top_n)):
            m = _lazy_asnorm(index, scoring, top_n, cohort_top_n)
        base, method = float(m["threshold"]), str(m["method"])
    else:
        base, method = _resolve_threshold(index, None)
        m = models.get("none") if index.threshold is not None else None
    dm = DurationModel.from_record(m.get("duration")) if isinstance(m, dict) and m.get("duration") else None
    out = []
    for d in speech:
        if d is None or dm is None:
            out.append((base, method))
        else:
            out.append((float(dm.threshold_at(d)), f"{method}; duration-aware at {d:.2f} s of speech"))
    return out
