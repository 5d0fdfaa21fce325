"""Speaker identification benchmark on a VoxCeleb ``iden_split.txt``.

Every speaker's split-1 (train) files are enrolled into a speakerid index (embeddings come
through the embedding cache, so nothing is embedded twice); every split-3 (test) file is a
query. Split 2 (dev) is counted and not used. Every score comes from
:func:`speakerid.identify.rank_speakers`, exactly as ``speakerid identify`` ranks speakers.

* Closed set: top-1 and top-5 accuracy over all enrolled speakers.
* Open set: each query is searched twice, once against the whole gallery (a *mated* search)
  and once with its own speaker masked out (a *non-mated* search: the voice of someone
  not enrolled, without rebuilding the gallery). FNIR at FPIR 1 % comes from
  :func:`speakerid.metrics.fnir_at_fpir`; the false-accept rate (FPIR) and FNIR are also given
  at the index's own default threshold (:func:`speakerid.identify.calibrate_open_set_threshold`
  on the enrolled gallery, as ``speakerid index build`` sets it).

A speaker listed in the split without any usable train file (none listed, or all missing or
failing to embed) cannot be enrolled: it is **reported and skipped** (named in results.json
under ``speakers.skipped``; its test files are not queried). Files that do not exist are
counted and listed, never fatal. The run fails only when nothing can be enrolled or queried.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..calibration import DEFAULT_FAR, calibrate_open_set_threshold
from ..errors import ConfigError
from ..identify import DEFAULT_SCORING, DEFAULT_TOP_N, SCORINGS, model_verification_threshold, rank_speakers
from ..index import IndexSpec, SpeakerIndex
from ..metrics import fnir_at_fpir, open_set_rates
from ..progress import Progress, report
from .common import LIST_AT_MOST, RootEmbeddings, embed_under_root, environment, finite_or_none, timing
from .results import (
    ClosedSet,
    IdentifyResults,
    IndexInfo,
    OpenSet,
    OperatingPoint,
    QueryCounts,
    SkippedSpeaker,
    SpeakerCounts,
    SplitLines,
)
from .voxceleb import IdenEntry, check_root, parse_iden_split

if TYPE_CHECKING:
    from ..embedder import Embedder
    from .embcache import EmbeddingCache

__all__ = ["IdentifyRun", "Searches", "open_set", "run_identify", "search_queries"]

#: Queries ranked per call (bounds memory of the score matrices).
QUERY_BATCH = 4096
#: Matches held at once when a query's own speaker is looked up past its top 5.
FULL_RANK_MATCHES = 200_000


@dataclass(frozen=True)
class IdentifyRun:
    """A finished identification benchmark: its ``results`` and the per-query scores."""

    results: IdentifyResults
    query_paths: list[str]
    query_speakers: list[str]
    top_speakers: list[str]
    #: score of each query's own speaker (under the scoring rule), and whether it ranked first
    mated_true: np.ndarray
    mated_top1: np.ndarray
    #: best score of each query with its own speaker masked (the non-mated search); empty
    #: with a single enrolled speaker
    nonmated_top: np.ndarray
    #: label -> threshold, drawn on the plots
    thresholds: dict[str, float]


@dataclass(frozen=True)
class Searches:
    """Per query: its speaker, the top-ranked speaker, its own speaker's score and whether that
    speaker is first / in the top 5, and the best score with its own speaker masked."""

    speakers: list[str]
    top_speakers: list[str]
    mated_true: np.ndarray
    top1: np.ndarray
    top5: np.ndarray
    #: empty when the gallery has a single speaker (no non-mated search is possible)
    nonmated_top: np.ndarray


def _own_scores_past_top5(
    index: SpeakerIndex, q: np.ndarray, speakers: list[str], rows: np.ndarray, scoring: str, top_n: int
) -> dict[int, float]:
    """Own-speaker scores of the queries ``rows`` from a full ranking of the gallery."""
    n_spk = len(index.speakers())
    step = max(1, FULL_RANK_MATCHES // n_spk)
    out: dict[int, float] = {}
    for i in range(0, len(rows), step):
        chunk = rows[i : i + step]
        for r, ranked in zip(chunk, rank_speakers(index, q[chunk], n_spk, scoring, top_n=top_n)):
            out[int(r)] = next(m.score for m in ranked if m.speaker == speakers[r])
    return out


def search_queries(
    index: SpeakerIndex, q: np.ndarray, speakers: list[str], scoring: str, top_n: int, progress: Progress | None
) -> Searches:
    """The mated and non-mated searches of every query, through :func:`rank_speakers`."""
    n = len(q)
    multi = len(index.speakers()) > 1
    top_spk: list[str] = []
    top5 = np.zeros(n, bool)
    mated = np.full(n, np.nan)
    nonmated = np.empty(n if multi else 0, np.float64)
    for i in range(0, n, QUERY_BATCH):
        sl = slice(i, i + QUERY_BATCH)
        for j, ranked in enumerate(rank_speakers(index, q[sl], 5, scoring, top_n=top_n), start=i):
            top_spk.append(ranked[0].speaker)
            own = [m.score for m in ranked if m.speaker == speakers[j]]
            top5[j] = bool(own)
            mated[j] = own[0] if own else np.nan
        if multi:
            masked = rank_speakers(index, q[sl], 1, scoring, top_n=top_n, exclude=speakers[sl])
            nonmated[sl] = [m[0].score for m in masked]
        report(progress, "scoring", min(i + QUERY_BATCH, n), n)
    for r, score in _own_scores_past_top5(index, q, speakers, np.flatnonzero(~top5), scoring, top_n).items():
        mated[r] = score
    top1 = np.array([a == b for a, b in zip(top_spk, speakers)], dtype=bool)
    return Searches(list(speakers), top_spk, mated, top1, top5, nonmated)


def open_set(
    found: Searches, fpir: float, known: dict[str, tuple[float | None, str]]
) -> tuple[OpenSet, dict[str, float]]:
    """FNIR at ``fpir`` and the rates at each ``known`` name -> (threshold, how it was chosen);
    also label -> threshold of each operating point, for the plots."""
    at = fnir_at_fpir(found.mated_true, found.top1, found.nonmated_top, fpir)
    thresholds = {f"FPIR {fpir:.0%}": at.threshold}
    points: dict[str, OperatingPoint] = {}
    for name, (thr, method) in known.items():
        if thr is None:
            continue
        r = open_set_rates(found.mated_true, found.top1, found.nonmated_top, thr)
        points[name] = OperatingPoint(threshold=float(thr), method=method, false_accept_rate=r.fpir, fnir=r.fnir)
        thresholds[name.replace("_", " ")] = float(thr)
    n = len(found.speakers)
    result = OpenSet(
        fpir_target=fpir, fnir_at_fpir=at.fnir, fpir_achieved=at.fpir, threshold_at_fpir=finite_or_none(at.threshold),
        nonmated_searches=n, mated_searches=n, **points,
    )
    return result, thresholds


@dataclass(frozen=True)
class _Plan:
    """The split's train and test lines and who could be enrolled."""

    train: list[IdenEntry]
    test: list[IdenEntry]
    enrol: dict[str, list[str]]  # speaker -> embedded train files
    queries: list[IdenEntry]
    speakers: SpeakerCounts


def _read_split(split_file: str | os.PathLike[str]) -> tuple[list[IdenEntry], SplitLines]:
    entries = parse_iden_split(split_file)
    n = Counter(e.split for e in entries)
    if not n[1]:
        raise ConfigError(f"{split_file}: no train (split 1) lines: nothing to enrol")
    if not n[3]:
        raise ConfigError(f"{split_file}: no test (split 3) lines: nothing to query")
    return entries, SplitLines(train=n[1], dev=n[2], test=n[3])


def _plan(entries: list[IdenEntry], e: RootEmbeddings, split_file: object, root: Path) -> _Plan:
    train = [x for x in entries if x.split == 1]
    test = [x for x in entries if x.split == 3]
    enrol: dict[str, list[str]] = defaultdict(list)
    for x in train:
        if e.has(x.path) and x.path not in enrol[x.speaker]:
            enrol[x.speaker].append(x.path)
    enrol = {s: v for s, v in enrol.items() if v}
    if not enrol:
        raise ConfigError(
            f"{split_file}: no speaker could be enrolled ({len(e.missing)} files missing under {root}, "
            f"{len(e.failed)} failed to embed)"
        )
    queries = [x for x in test if x.speaker in enrol and e.has(x.path)]
    if not queries:
        raise ConfigError(f"{split_file}: no test file of an enrolled speaker could be embedded")
    n_train, n_test = Counter(x.speaker for x in train), Counter(x.speaker for x in test)
    skipped = [
        SkippedSpeaker(s, n_train[s], n_test[s],
                       "no train (split 1) files" if not n_train[s] else "no train file could be embedded")
        for s in sorted({x.speaker for x in entries}) if s not in enrol
    ]
    speakers = SpeakerCounts(
        listed=len({x.speaker for x in entries}), enrolled=len(enrol), skipped=tuple(skipped[:LIST_AT_MOST]),
        skipped_count=len(skipped), enrolled_clips=sum(len(v) for v in enrol.values()),
    )
    return _Plan(train, test, enrol, queries, speakers)


def _enrol(index: SpeakerIndex, plan: _Plan, e: RootEmbeddings) -> None:
    paths = [p for s in sorted(plan.enrol) for p in plan.enrol[s]]
    o = e.outcome
    index.add(
        np.stack([e.vector(p) for p in paths]),
        [p.replace("\\", "/").split("/")[0] for p in paths],
        paths,
        [o.sha256[e.key[p]] for p in paths],
        [o.duration_s[e.key[p]] for p in paths],
        [o.speech_s[e.key[p]] for p in paths],
    )


def _gallery_search(
    plan: _Plan, e: RootEmbeddings, embedder: Embedder, index_dir: str | os.PathLike[str] | None,
    scoring: str, top_n: int, far: float, progress: Progress | None,
) -> tuple[Searches, IndexInfo]:
    """Enrol the gallery in a fresh index, calibrate its threshold and run every search."""
    report(progress, "enrolling", 0, 1)
    with tempfile.TemporaryDirectory(prefix="speakerid-bench-index-") as tmp:
        idx_path = Path(index_dir) if index_dir is not None else Path(tmp) / "index"
        spec = IndexSpec(model=embedder.model, weights_sha256=embedder.weights_sha256, dim=embedder.dim)
        index = SpeakerIndex.create(idx_path, spec)
        try:
            _enrol(index, plan, e)
            threshold = calibrate_open_set_threshold(index, far, scoring=scoring, top_n=top_n)
            info = IndexInfo(path=None if index_dir is None else str(index_dir), threshold=threshold,
                             threshold_method=str(index.threshold_method))
            if index_dir is not None:
                index.save()
            report(progress, "enrolling", 1, 1)
            q = np.stack([e.vector(x.path) for x in plan.queries]).astype(np.float32)
            found = search_queries(index, q, [x.speaker for x in plan.queries], scoring, top_n, progress)
        finally:
            index.close()
    return found, info


def run_identify(
    root: str | os.PathLike[str],
    split_file: str | os.PathLike[str],
    embedder: Embedder,
    *,
    cache: EmbeddingCache | None = None,
    workers: int = 1,
    scoring: str = DEFAULT_SCORING,
    top_n: int = DEFAULT_TOP_N,
    fpir: float = 0.01,
    far: float = DEFAULT_FAR,
    index_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> IdentifyRun:
    """Enrol split 1, query split 3 of ``split_file`` (paths relative to ``root``)."""
    t_start = time.perf_counter()
    if scoring not in SCORINGS:
        raise ConfigError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
    root_p = check_root(root)
    entries, lines = _read_split(split_file)
    e = embed_under_root(root_p, [x.path for x in entries if x.split in (1, 3)], embedder, cache,
                         workers=workers, progress=progress)
    plan = _plan(entries, e, split_file, root_p)
    found, index_info = _gallery_search(plan, e, embedder, index_dir, scoring, top_n, far, progress)
    known = {"index_default": (index_info.threshold, index_info.threshold_method),
             "model_verification": (model_verification_threshold(embedder.model), "model's pairwise EER threshold")}
    opened, thresholds = open_set(found, fpir, known) if plan.speakers.enrolled > 1 else (None, {})
    skipped_queries = sum(1 for x in plan.test if x.speaker not in plan.enrol)
    results = IdentifyResults(
        model=embedder.model, weights_sha256=embedder.weights_sha256, root=str(root_p),
        split_file=str(split_file), scoring=scoring, top_n=top_n if scoring == "topn" else None,
        split_lines=lines, speakers=plan.speakers,
        queries=QueryCounts(listed=len(plan.test), scored=len(plan.queries),
                            skipped_speaker_not_enrolled=skipped_queries,
                            skipped_missing_or_failed=len(plan.test) - len(plan.queries) - skipped_queries),
        files=e.file_counts(),
        closed_set=ClosedSet(top1=float(found.top1.mean()), top5=float(found.top5.mean()),
                             speakers=plan.speakers.enrolled),
        open_set=opened, index=index_info,
        timing=timing(time.perf_counter() - t_start, e.outcome), environment=environment(),
    )
    return IdentifyRun(
        results=results, query_paths=[x.path for x in plan.queries], query_speakers=found.speakers,
        top_speakers=found.top_speakers, mated_true=found.mated_true, mated_top1=found.top1,
        nonmated_top=found.nonmated_top, thresholds=thresholds,
    )
