"""A PNG timeline of a diarization: one lane per speaker, overlapped speech visible."""

from __future__ import annotations

import os

from ..errors import PlotUnavailableError
from .timeline import Timeline

__all__ = ["plot_timeline"]


def plot_timeline(timeline: Timeline, path: str | os.PathLike[str], title: str = "") -> None:
    """Write ``timeline`` as a PNG: a lane per speaker in order of first speech (named ones in
    colour, unknown grey), and a black lane at the bottom where two or more people talk at once."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailableError(
            "plotting needs matplotlib: pip install 'speakerid[bench]'"
        ) from None
    labels = timeline.labels()
    fig, ax = plt.subplots(figsize=(12, 0.55 * len(labels) + 1.6), dpi=110)
    cmap = plt.get_cmap("tab10")
    for lane, label in enumerate(labels):
        turns = [t for t in timeline.turns if t.speaker == label]
        known = bool(turns and turns[0].known)
        colour = cmap(lane % 10) if known or label.startswith("speaker-") else (0.55, 0.55, 0.55, 1.0)
        ax.broken_barh([(t.start_s, t.duration_s) for t in turns], (lane + 0.1, 0.8), facecolors=colour)
    edges = sorted([(t.start_s, 1) for t in timeline.turns] + [(t.end_s, -1) for t in timeline.turns])
    level, since, overlaps = 0, 0.0, []
    for x, d in edges:
        if level >= 2 and x > since:
            overlaps.append((since, x - since))
        level += d
        since = x
    n = len(labels)
    if overlaps:
        ax.broken_barh(overlaps, (n + 0.25, 0.5), facecolors="black")
    ax.set_yticks([i + 0.5 for i in range(n)] + [n + 0.5], labels + ["2+ talking"])
    ax.set_ylim(n + 1.0, -0.1)  # first speaker on top, the overlap lane at the bottom
    ax.set_xlim(0, max(timeline.duration_s, max((t.end_s for t in timeline.turns), default=1.0)))
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(os.fspath(path), format="png")
    plt.close(fig)
