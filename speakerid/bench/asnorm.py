"""Adaptive symmetric score normalisation (AS-norm) of cosine scores against a cohort.

For a trial between embeddings *a* and *b* with raw score *s*, each side is compared with every
cohort embedding; the mean and standard deviation of its ``top_n`` highest cohort scores
(mu_a, sd_a; mu_b, sd_b) normalise the raw score::

    s' = ((s - mu_a) / sd_a + (s - mu_b) / sd_b) / 2

(Matejka et al., "Analysis of score normalization in multilingual speaker recognition",
Interspeech 2017, "adaptive s-norm"). The cohort must hold speakers that take no part in the
trials, or normalisation leaks the answer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["DEFAULT_TOP_N", "asnorm", "cohort_stats", "stats_from_scores"]

DEFAULT_TOP_N = 300
#: Standard deviations below this are clamped (a cohort of identical scores).
MIN_STD = 1e-6


def _top_n(top_n: Any, n_cohort: int) -> int:
    if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 2:
        raise ConfigError(f"AS-norm top_n must be an integer >= 2, got {top_n!r}")
    if n_cohort < 2:
        raise ConfigError(f"AS-norm needs a cohort of at least 2 embeddings, got {n_cohort}")
    return min(int(top_n), n_cohort)


def stats_from_scores(cohort_scores: Any, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (float64, one per row) of the ``top_n`` highest scores of each row.

    ``cohort_scores`` is (n, cohort size): each row one embedding against the whole cohort.
    ``top_n`` larger than the cohort uses the whole cohort.
    """
    m = np.asarray(cohort_scores, dtype=np.float64)
    if m.ndim != 2:
        raise ConfigError(f"cohort scores must be 2-D (n, cohort), got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ConfigError("cohort scores hold NaN or infinite values")
    n = _top_n(top_n, m.shape[1])
    top = m if n == m.shape[1] else -np.partition(-m, n - 1, axis=1)[:, :n]
    return top.mean(axis=1), np.maximum(top.std(axis=1), MIN_STD)


def cohort_stats(
    vectors: Any, cohort: Any, top_n: int = DEFAULT_TOP_N, *, batch: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """AS-norm statistics of unit ``vectors`` (n, d) against unit ``cohort`` (c, d), by cosine."""
    v = np.asarray(vectors, dtype=np.float32)
    c = np.asarray(cohort, dtype=np.float32)
    if v.ndim != 2 or c.ndim != 2 or v.shape[1] != c.shape[1]:
        raise ConfigError(f"vectors {v.shape} and cohort {c.shape} must be 2-D of the same dim")
    _top_n(top_n, len(c))
    means, stds = [], []
    for i in range(0, len(v), batch):
        mu, sd = stats_from_scores(v[i : i + batch] @ c.T, top_n)
        means.append(mu)
        stds.append(sd)
    if not means:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(means), np.concatenate(stds)


def asnorm(raw: Any, mean_a: Any, std_a: Any, mean_b: Any, std_b: Any) -> np.ndarray:
    """AS-normalised scores (float64) from raw scores and each side's cohort statistics."""
    arrays = [np.asarray(x, dtype=np.float64) for x in (raw, mean_a, std_a, mean_b, std_b)]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ConfigError(f"AS-norm inputs differ in shape: {sorted(shapes)}")
    s, ma, sa, mb, sb = arrays
    if np.any(sa <= 0) or np.any(sb <= 0):
        raise ConfigError("AS-norm standard deviations must be > 0")
    return 0.5 * ((s - ma) / sa + (s - mb) / sb)
