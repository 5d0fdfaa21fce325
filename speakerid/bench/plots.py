"""The benchmark figures: DET curves on probit axes and score histograms (PNG).

matplotlib is optional (the ``bench`` extra: ``pip install 'speakerid[bench]'``). It is
imported here only, lazily, with the Agg backend (object API, no pyplot state). Without it
:func:`available` is False and the report writers skip the figures, saying so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["INSTALL_HINT", "available", "det_plot", "placeholder_plot", "probit", "score_histogram"]

INSTALL_HINT = "pip install 'speakerid[bench]'"
#: DET axes ticks (probabilities).
_TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95)
#: DET axes limits (probabilities); rates below the lower one (e.g. 0) are drawn on the frame.
_LIMITS = (0.0005, 0.97)
_NORMAL = NormalDist()


def available() -> bool:
    """True when matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def probit(p: Any) -> np.ndarray:
    """Inverse standard normal CDF of each probability (clipped to [1e-12, 1 - 1e-12])."""
    a = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    values, inverse = np.unique(a, return_inverse=True)  # DET rates repeat a lot
    z = np.array([_NORMAL.inv_cdf(float(v)) for v in values], dtype=np.float64)
    return z[inverse].reshape(a.shape)


def _figure(width: float = 6.0, height: float = 5.0) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError(f"plots need matplotlib: {INSTALL_HINT}") from None
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _thin(x: np.ndarray, y: np.ndarray, step: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Keep a point each ``step`` of path length (probit units), so big lists plot quickly."""
    if len(x) <= 2:
        return x, y
    seg = np.hypot(np.diff(x), np.diff(y))
    cum = np.concatenate(([0.0], np.cumsum(seg)))
    _, first = np.unique(np.floor(cum / step), return_index=True)
    keep = np.union1d(first, [0, len(x) - 1])
    return x[keep], y[keep]


def _det_axes(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    lo, hi = probit(_LIMITS[0])[()], probit(_LIMITS[1])[()]
    ax.plot([lo, hi], [lo, hi], color="0.8", linewidth=0.8, linestyle="--")
    ticks = probit(np.array(_TICKS))
    labels = [f"{100 * t:g}" for t in _TICKS]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, color="0.9")
    ax.legend(loc="upper right", fontsize=8)


def det_plot(
    path: Path,
    curves: Sequence[tuple[str, np.ndarray, np.ndarray]],
    *,
    title: str,
    xlabel: str = "False alarm rate (%)",
    ylabel: str = "Miss rate (%)",
    points: Sequence[tuple[str, float, float]] = (),
) -> None:
    """DET curves on normal-deviate (probit) axes; ``curves`` are (label, fpr, fnr)."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    floor = _LIMITS[0]
    for label, fpr, fnr in curves:
        x, y = probit(np.clip(fpr, floor, 1 - floor)), probit(np.clip(fnr, floor, 1 - floor))
        x, y = _thin(x, y)
        ax.plot(x, y, label=label, linewidth=1.5)
    for label, fp, fn in points:
        ax.plot([probit(max(fp, floor))[()]], [probit(max(fn, floor))[()]], "o", markersize=5, label=label)
    _det_axes(ax, title, xlabel, ylabel)
    fig.tight_layout()
    fig.savefig(path, format="png")


def score_histogram(
    path: Path,
    series: Sequence[tuple[str, np.ndarray]],
    *,
    title: str,
    xlabel: str,
    thresholds: dict[str, float | None] | None = None,
) -> None:
    """Overlaid density histograms of score sets, with vertical lines at ``thresholds``."""
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    finite = [s[np.isfinite(s)] for _, s in series]
    allv = np.concatenate([f for f in finite if len(f)]) if any(len(f) for f in finite) else np.zeros(1)
    bins = np.linspace(float(allv.min()), float(allv.max()) + 1e-9, 60)
    for (label, _), s in zip(series, finite):
        if len(s):
            ax.hist(s, bins=bins, density=True, alpha=0.55, label=f"{label} (n={len(s):,})")
    for i, (name, t) in enumerate((thresholds or {}).items()):
        if t is not None and math.isfinite(t):
            ax.axvline(t, color=f"C{i + 2}", linestyle="--", linewidth=1, label=f"{name}: {t:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")


def placeholder_plot(path: Path, message: str) -> None:
    """A small figure holding only ``message`` (where a plot cannot be drawn from the data)."""
    fig = _figure(5, 2)
    fig.text(0.5, 0.5, message, ha="center", va="center")
    fig.savefig(path, format="png")
