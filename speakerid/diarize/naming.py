"""Naming clusters from a speaker index: a one-to-one assignment under an open-set threshold.

Each cluster's centroid is scored (cosine) against every enrolled speaker's centroid, and
clusters are matched to names by one assignment maximising the summed cosine, so two clusters
never get one name. A match is accepted when its cosine reaches

    threshold(cluster) = base + margin * sqrt(REF_SPEECH_S / max(speech_s, MIN_SPEECH_S))

* ``base`` is the index's calibrated open-set threshold, which already accounts for the gallery
  size (it is the best-of-gallery impostor score at the target false-accept rate, see
  speakerid.identify). An index without one falls back on the model's pairwise verification
  threshold, raised by ``GALLERY_STEP`` per doubling of the gallery (a stranger is compared with
  every name, so the best impostor score grows with the gallery).
* The margin term accounts for the cluster's speech: the index was calibrated with single clips,
  so a cluster of little speech (a noisier centroid) needs a higher score and one of much speech
  a lower one, never below ``base`` (the term is positive and shrinks as 1/sqrt(speech)).
* The assignment compares every cluster with every name, so the margin also pays for the extra
  comparisons of several clusters against one gallery.

Clusters not accepted are ``unknown-1``, ``unknown-2``... in order of first speech.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import EmptyGalleryError, ModelMismatchError
from .assignment import assign_max

if TYPE_CHECKING:
    from ..index import SpeakerIndex

__all__ = ["Naming", "name_clusters", "open_index"]

#: The speech (s) at which the margin applies in full; below MIN_SPEECH_S it stops growing.
REF_SPEECH_S = 10.0
MIN_SPEECH_S = 2.5
#: Added to a pairwise verification threshold per doubling of the gallery (no calibrated one).
GALLERY_STEP = 0.02


@dataclass(frozen=True)
class Naming:
    """Per cluster: its label, whether that is an enrolled name, and its score (None: no index)."""

    labels: tuple[str, ...]
    known: tuple[bool, ...]
    scores: tuple[float | None, ...]
    thresholds: tuple[float | None, ...] = ()
    base_threshold: float | None = None


def open_index(index: str | object, model: str, weights_sha256: str) -> SpeakerIndex:
    """The index (a path or an open SpeakerIndex) checked against the diarization's encoder."""
    from ..index import SpeakerIndex

    idx = index if isinstance(index, SpeakerIndex) else SpeakerIndex.open(index)
    s = idx.spec
    if s.model != model or s.weights_sha256 != weights_sha256:
        raise ModelMismatchError(
            f"index at {idx.path} was built with model {s.model} (weights {s.weights_sha256[:12]}), "
            f"but diarization embeds with {model} (weights {weights_sha256[:12]}); "
            f"build an index with {model} to name speakers"
        )
    return idx


def base_threshold(index: SpeakerIndex) -> float:
    """The index's calibrated threshold, else the model's verification one raised per doubling."""
    if index.threshold is not None:
        return float(index.threshold)
    from ..identify import model_verification_threshold

    pairwise = model_verification_threshold(index.spec.model)
    n = max(len(index.speakers()), 1)
    return float(pairwise if pairwise is not None else 0.5) + GALLERY_STEP * math.log2(n)


def cluster_threshold(base: float, margin: float, speech_s: float) -> float:
    return base + margin * math.sqrt(REF_SPEECH_S / max(speech_s, MIN_SPEECH_S))


def anonymous(order: list[int], k: int, prefix: str) -> list[str]:
    """``prefix-1``... by ``order`` (clusters in order of first speech)."""
    labels = [""] * k
    for n, c in enumerate(order, 1):
        labels[c] = f"{prefix}-{n}"
    return labels


def name_clusters(index: SpeakerIndex, centroids: np.ndarray, speech_s: np.ndarray, order: list[int], *,
                  margin: float, min_speech_s: float) -> Naming:
    """Names for the clusters (rows of ``centroids``) from ``index``; ``order``: clusters in
    order of first speech (for the ``unknown-N`` numbers)."""
    names, gallery = index.speaker_centroids()
    if not names:
        raise EmptyGalleryError(f"the index at {index.path} has no enrolled speakers")
    k = len(centroids)
    sim = centroids @ gallery.T
    base = base_threshold(index)
    known = [False] * k
    labels: list[str] = [""] * k
    scores = [float(sim[c].max()) if k else 0.0 for c in range(k)]
    thresholds = [cluster_threshold(base, margin, float(speech_s[c])) for c in range(k)]
    for c, g in assign_max(sim):
        if speech_s[c] >= min_speech_s and sim[c, g] >= thresholds[c]:
            labels[c], known[c], scores[c] = names[g], True, float(sim[c, g])
    unknown = [c for c in order if not known[c]]
    for n, c in enumerate(unknown, 1):
        labels[c] = f"unknown-{n}"
    return Naming(tuple(labels), tuple(known), tuple(scores), tuple(thresholds), base)
