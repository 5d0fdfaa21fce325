"""Best-of-gallery impostor trials: what a voice that is not enrolled scores against this
gallery, measured on the gallery itself.

Each trial takes an enrolled clip (a seeded sample spread over speakers, :func:`sample_clips`)
and ranks the *other* speakers for it with :func:`speakerid.identify.rank_speakers`, the rule
identification uses. Names that look like one voice enrolled twice
(:func:`near_duplicate_speakers`) count as one speaker: only the first name's clips are
queries, and each query leaves the whole group out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..identify import (
    DEFAULT_SCORING,
    DEFAULT_TOP_N,
    check_index,
    check_scoring,
    check_threshold,
    rank_speakers,
)
from ..index import SpeakerIndex, SpeakerMaps

__all__ = [
    "CALIBRATION_MAX_CLIPS", "CALIBRATION_SEED", "NEAR_DUPLICATE_COSINE", "Impostors", "gallery_impostor_scores",
    "ImpostorQueries", "impostor_queries", "impostor_trials", "near_duplicate_speakers", "sample_clips",
]

#: Calibration uses at most this many gallery clips as impostor queries (bounded cost).
CALIBRATION_MAX_CLIPS = 2000
CALIBRATION_SEED = 0
#: Two names whose centroids have at least this cosine are taken for one voice enrolled twice.
#: Measured on librispeech-251 (one clip per speaker, 31,375 pairs of different speakers): the
#: highest centroid cosine of two different speakers is 0.874 with CAM++ (the next 0.703; 0.709
#: with two-clip centroids) and 0.877 with GE2E; the same clips enrolled twice give 1.000, and
#: the two halves of one recording 0.894 (CAM++ median; 5 % reach 0.95). 0.95 clears the
#: different-speaker maximum of both models by 0.07.
NEAR_DUPLICATE_COSINE = 0.95
_DUPLICATE_BLOCK = 1024


def sample_clips(g: SpeakerMaps, max_clips: int, seed: int) -> np.ndarray:
    """Row positions (into sorted ids) of at most ``max_clips`` clips, spread over speakers.

    Each speaker's clips are shuffled; clips are then taken round by round (every speaker's
    first pick, then every speaker's second...), so no speaker dominates the sample.
    """
    n = len(g.ids)
    if n <= max_clips:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n)
    spk = g.owners[shuffled]
    order = np.argsort(spk, kind="stable")
    counts = np.bincount(spk, minlength=len(g.names))
    rank_in_spk = np.empty(n, np.int64)
    rank_in_spk[order] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    tiebreak = rng.random(n)
    pick = np.lexsort((tiebreak, rank_in_spk))[:max_clips]
    return np.sort(shuffled[pick])


def near_duplicate_speakers(
    index: SpeakerIndex,
    min_cosine: float = NEAR_DUPLICATE_COSINE,
    *,
    speakers: Sequence[str] | None = None,
) -> list[tuple[str, str, float]]:
    """Pairs of enrolled names whose centroids have cosine >= ``min_cosine``: one voice
    enrolled under two names (or the same clips enrolled twice), as (a, b, cosine) with
    a < b, highest cosine first.

    ``speakers`` limits the search to pairs with at least one of those names (the cost is
    len(speakers) x all speakers x dim; default: every pair). See NEAR_DUPLICATE_COSINE for
    how the default bound was chosen.
    """
    min_cosine = check_threshold(min_cosine)
    g = check_index(index).speaker_maps()
    if len(g.names) < 2:
        return []
    cent = g.centroids
    if speakers is None:
        rows = np.arange(len(g.names))
    else:
        pos = g.ordinal
        rows = np.array(sorted({pos[s] for s in speakers if s in pos}), dtype=np.int64)
    found: dict[tuple[int, int], float] = {}
    for start in range(0, len(rows), _DUPLICATE_BLOCK):
        block = rows[start : start + _DUPLICATE_BLOCK]
        sims = cent[block] @ cent.T
        sims[np.arange(len(block)), block] = -np.inf  # a speaker is not its own duplicate
        for r, c in zip(*np.nonzero(sims >= min_cosine)):
            a, b = sorted((int(block[r]), int(c)))
            found[(a, b)] = float(sims[r, c])
    pairs = [(g.names[a], g.names[b], cos) for (a, b), cos in found.items()]
    return sorted(pairs, key=lambda t: (-t[2], t[0], t[1]))


def _voice_groups(n: int, pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """Union-find over speaker ordinals: the group representative (lowest ordinal) of each."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)], dtype=np.int64)


@dataclass(frozen=True)
class Impostors:
    """The impostor scores of a gallery and what they rest on."""

    scores: np.ndarray
    #: Near-duplicate pairs found (names, cosine) and the number of distinct voices.
    near_duplicates: tuple[tuple[str, str, float], ...]
    voices: int


@dataclass(frozen=True)
class ImpostorQueries:
    """The calibration's impostor queries: sampled gallery clips (and crops), each with the
    speakers it must be compared without (its own voice: ordinals with its owner first, and
    names) and its speech seconds."""

    vectors: np.ndarray
    exclude_ordinals: list[np.ndarray]
    exclude_names: list[list[str]]
    speech_s: np.ndarray
    #: How many of the rows are the gallery's own clips (the rest are crops).
    n_clips: int
    near_duplicates: tuple[tuple[str, str, float], ...]
    voices: int


def impostor_queries(
    index: SpeakerIndex,
    max_clips: int,
    seed: int,
    near_duplicate_cosine: float | None,
    crops: Any = None,
) -> ImpostorQueries | None:
    """The impostor queries of a gallery of 2 speakers or more (None with fewer).

    ``crops`` (a :class:`speakerid.calibration.duration.CalibrationCrops`) adds embeddings of
    cropped clips; a crop of a speaker that is not enrolled is a stranger and excludes nobody.
    """
    g = check_index(index).speaker_maps()
    if len(g.names) < 2:
        return None
    rows = sample_clips(g, max_clips, seed)
    owner = g.owners[rows]
    pairs: list[tuple[str, str, float]] = []
    if near_duplicate_cosine is not None:
        sampled = [g.names[int(o)] for o in np.unique(owner)]
        pairs = near_duplicate_speakers(index, near_duplicate_cosine, speakers=sampled)
    pos = g.ordinal
    rep = _voice_groups(len(g.names), [(pos[a], pos[b]) for a, b, _ in pairs])
    voices = int(len(np.unique(rep)))
    # one voice enrolled under several names: only its first name's clips are impostor
    # queries, and each query leaves its whole group out (they are not impostors of it)
    keep = rep[owner] == owner
    rows, owner = rows[keep], owner[keep]
    members: dict[int, list[int]] = {}
    for i, r in enumerate(rep.tolist()):
        members.setdefault(r, []).append(i)

    def group(o: int) -> list[int]:  # the owner first
        return [o, *(m for m in members[int(rep[o])] if m != o)]

    ex_ord = [np.array(group(int(o)), np.int64) for o in owner]
    utt = index.utterances()
    uid = utt["id"].to_numpy().astype(np.int64)
    speech_of = dict(zip(uid.tolist(), utt["speech_s"].to_numpy().astype(np.float64).tolist()))
    speech = [speech_of.get(int(i), 0.0) for i in g.ids[rows]]
    vecs = index.vectors(g.ids[rows])
    n_clips = len(rows)
    if crops is not None and len(crops.speakers):
        c_ord = [np.array(group(pos[s]) if s in pos else [], np.int64) for s in crops.speakers]
        ex_ord += c_ord
        speech += crops.speech_s.tolist()
        vecs = np.concatenate([vecs, np.asarray(crops.vectors, np.float32)])
    ex_names = [[g.names[int(o)] for o in e] for e in ex_ord]
    return ImpostorQueries(np.asarray(vecs, np.float32), ex_ord, ex_names, np.asarray(speech, np.float64),
                           n_clips, tuple(pairs), voices)


def impostor_trials(
    index: SpeakerIndex,
    scoring: str,
    top_n: int,
    max_clips: int,
    seed: int,
    near_duplicate_cosine: float | None,
) -> Impostors:
    g = check_index(index).speaker_maps()
    qs = impostor_queries(index, max_clips, seed, near_duplicate_cosine)
    if qs is None:
        return Impostors(np.zeros(0, np.float32), (), len(g.names))
    ranked = rank_speakers(index, qs.vectors, 1, scoring, top_n=top_n, exclude=qs.exclude_names)
    scores = np.array([r[0].score for r in ranked if r], dtype=np.float32)
    return Impostors(scores, qs.near_duplicates, qs.voices)


def gallery_impostor_scores(
    index: SpeakerIndex,
    scoring: str = DEFAULT_SCORING,
    *,
    top_n: int = DEFAULT_TOP_N,
    max_clips: int = CALIBRATION_MAX_CLIPS,
    seed: int = CALIBRATION_SEED,
    near_duplicate_cosine: float | None = NEAR_DUPLICATE_COSINE,
) -> np.ndarray:
    """Best-of-gallery impostor scores, leaving one speaker out.

    For each enrolled clip (at most ``max_clips``, a seeded sample spread over speakers) the
    best score among the *other* enrolled speakers, under ``scoring``: what an unenrolled
    voice scores against a gallery of this size and make-up. Empty with < 2 speakers.

    Names that look like one voice (centroid cosine >= ``near_duplicate_cosine``, see
    :func:`near_duplicate_speakers`; None: no such check) count as one speaker: only the
    clips of the first name are queries, and each query leaves the whole group out.
    """
    check_scoring(scoring, top_n)
    check_max_clips(max_clips)
    if near_duplicate_cosine is not None:
        near_duplicate_cosine = check_threshold(near_duplicate_cosine)
    return impostor_trials(index, scoring, top_n, int(max_clips), int(seed), near_duplicate_cosine).scores


def check_max_clips(max_clips: Any) -> None:
    if isinstance(max_clips, bool) or not isinstance(max_clips, (int, np.integer)) or max_clips < 1:
        raise ConfigError(f"max_clips must be a positive integer, got {max_clips!r}")
