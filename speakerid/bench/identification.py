"""Speaker identification benchmark on a VoxCeleb ``iden_split.txt``.

Every speaker's split-1 (train) files are enrolled into a speakerid index (embeddings come
through the embedding cache, so nothing is embedded twice); every split-3 (test) file is a
query. Split 2 (dev) is counted and not used.

* Closed set: top-1 and top-5 accuracy over all enrolled speakers, ranked by
  :func:`speakerid.identify.rank_speakers` exactly as ``speakerid identify`` ranks them.
* Open set: each query is searched twice, once against the whole gallery (a *mated* search)
  and once with its own speaker's score masked out (a *non-mated* search: the voice of someone
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
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..embcache import EmbeddingCache
from ..errors import ConfigError
from ..identify import (
    DEFAULT_FAR,
    DEFAULT_SCORING,
    DEFAULT_TOP_N,
    SCORINGS,
    calibrate_open_set_threshold,
    model_verification_threshold,
    rank_speakers,
)
from ..index import IndexSpec, SpeakerIndex
from ..metrics import fnir_at_fpir, open_set_rates
from .common import (
    RESULTS_FORMAT,
    SEED_REFERENCE,
    BenchProgress,
    embed_under_root,
    environment,
    finite_or_none,
)
from .voxceleb import SPLIT_NAMES, check_root, parse_iden_split

if TYPE_CHECKING:
    from ..embedder import Embedder

__all__ = ["IdentifyRun", "run_identify"]

LIST_AT_MOST = 50
#: Queries ranked per call (bounds memory of the score matrices).
QUERY_BATCH = 4096


@dataclass
class IdentifyRun:
    """A finished identification benchmark: JSON-ready ``results`` and per-query scores."""

    results: dict[str, Any]
    query_paths: list[str]
    query_speakers: list[str]
    top_speakers: list[str]
    #: score of each query's own speaker (under the scoring rule), and whether it ranked first
    mated_true: np.ndarray
    mated_top1: np.ndarray
    #: best score of each query with its own speaker masked (the non-mated search)
    nonmated_top: np.ndarray
    #: threshold -> label, drawn on the plots
    thresholds: dict[str, float]


def _true_scores(
    queries: np.ndarray,
    speakers: list[str],
    enrolled: dict[str, np.ndarray],
    scoring: str,
    top_n: int,
) -> np.ndarray:
    """Each query's score against its own speaker, by the rules of speakerid.identify."""
    out = np.empty(len(queries), np.float64)
    by_spk: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(speakers):
        by_spk[s].append(i)
    for s, rows in by_spk.items():
        clips = enrolled[s]
        if scoring == "centroid":
            c = clips.astype(np.float64).sum(axis=0)
            c /= max(float(np.linalg.norm(c)), 1e-12)
            out[rows] = queries[rows].astype(np.float64) @ c
        else:
            sims = queries[rows].astype(np.float64) @ clips.astype(np.float64).T
            n = 1 if scoring == "best" else min(top_n, clips.shape[0])
            out[rows] = -np.sort(-sims, axis=1)[:, :n].mean(axis=1)
    return out


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
    progress: BenchProgress | None = None,
) -> IdentifyRun:
    """Enrol split 1, query split 3 of ``split_file`` (paths relative to ``root``)."""
    t_start = time.perf_counter()
    if scoring not in SCORINGS:
        raise ConfigError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
    root_p = check_root(root)
    entries = parse_iden_split(split_file)
    counts = {name: sum(1 for e in entries if e.split == k) for k, name in SPLIT_NAMES.items()}
    train = [e for e in entries if e.split == 1]
    test = [e for e in entries if e.split == 3]
    if not train:
        raise ConfigError(f"{split_file}: no train (split 1) lines: nothing to enrol")
    if not test:
        raise ConfigError(f"{split_file}: no test (split 3) lines: nothing to query")

    rels = list(dict.fromkeys(e.path for e in train + test))
    emb, key, missing_set, failed = embed_under_root(
        root_p, rels, embedder, cache, workers=workers, progress=progress
    )
    missing = sorted(missing_set)

    enrol: dict[str, list[str]] = defaultdict(list)
    for e in train:
        if key[e.path] in emb.vectors and e.path not in enrol[e.speaker]:
            enrol[e.speaker].append(e.path)
    enrol = {s: v for s, v in enrol.items() if v}
    listed_train: defaultdict[str, int] = defaultdict(int)
    for e in train:
        listed_train[e.speaker] += 1
    all_speakers = sorted({e.speaker for e in entries})
    skipped = [
        {
            "speaker": s,
            "train_listed": listed_train.get(s, 0),
            "test_listed": sum(1 for e in test if e.speaker == s),
            "reason": "no train (split 1) files" if not listed_train.get(s) else "no train file could be embedded",
        }
        for s in all_speakers
        if s not in enrol
    ]
    if not enrol:
        raise ConfigError(
            f"{split_file}: no speaker could be enrolled ({len(missing)} files missing under {root_p}, "
            f"{len(failed)} failed to embed)"
        )
    queries = [e for e in test if e.speaker in enrol and key[e.path] in emb.vectors]
    skipped_queries = sum(1 for e in test if e.speaker not in enrol)
    if not queries:
        raise ConfigError(f"{split_file}: no test file of an enrolled speaker could be embedded")

    if progress is not None:
        progress("enrolling", 0, 1)
    with tempfile.TemporaryDirectory(prefix="speakerid-bench-index-") as tmp:
        idx_path = Path(index_dir) if index_dir is not None else Path(tmp) / "index"
        spec = IndexSpec(model=embedder.model, weights_sha256=embedder.weights_sha256, dim=embedder.dim)
        index = SpeakerIndex.create(idx_path, spec)
        try:
            paths = [p for s in sorted(enrol) for p in enrol[s]]
            index.add(
                np.stack([emb.vectors[key[p]] for p in paths]),
                [p.replace("\\", "/").split("/")[0] for p in paths],
                paths,
                [emb.sha256[key[p]] for p in paths],
                [emb.duration_s[key[p]] for p in paths],
                [emb.speech_s[key[p]] for p in paths],
            )
            index_threshold = calibrate_open_set_threshold(index, far, scoring=scoring, top_n=top_n)
            threshold_method = str(index.info()["threshold_method"])
            if index_dir is not None:
                index.save()
            if progress is not None:
                progress("enrolling", 1, 1)

            q = np.stack([emb.vectors[key[e.path]] for e in queries]).astype(np.float32)
            q_spk = [e.speaker for e in queries]
            top_spk: list[str] = []
            top5_hit = np.zeros(len(queries), bool)
            nonmated = np.empty(len(queries), np.float64)
            for i in range(0, len(queries), QUERY_BATCH):
                sl = slice(i, i + QUERY_BATCH)
                ranked = rank_speakers(index, q[sl], 5, scoring, top_n=top_n)
                for j, m in enumerate(ranked):
                    top_spk.append(m[0].speaker)
                    top5_hit[i + j] = any(x.speaker == q_spk[i + j] for x in m[:5])
                if len(enrol) > 1:
                    masked = rank_speakers(index, q[sl], 1, scoring, top_n=top_n, exclude=q_spk[sl])
                    nonmated[sl] = [m[0].score for m in masked]
                if progress is not None:
                    progress("scoring", min(i + QUERY_BATCH, len(queries)), len(queries))
        finally:
            index.close()

    enrolled_vecs = {s: np.stack([emb.vectors[key[p]] for p in v]) for s, v in enrol.items()}
    mated_true = _true_scores(q, q_spk, enrolled_vecs, scoring, top_n)
    top1 = np.array([a == b for a, b in zip(top_spk, q_spk)], dtype=bool)
    open_set: dict[str, Any] | None = None
    thresholds: dict[str, float] = {}
    if len(enrol) > 1:
        at = fnir_at_fpir(mated_true, top1, nonmated, fpir)
        thresholds[f"FPIR {fpir:.0%}"] = at.threshold
        open_set = {
            "fpir_target": fpir,
            "fnir_at_fpir": at.fnir,
            "fpir_achieved": at.fpir,
            "threshold_at_fpir": finite_or_none(at.threshold),
            "nonmated_searches": len(queries),
            "mated_searches": len(queries),
        }
        for name, thr, method in (
            ("index_default", index_threshold, threshold_method),
            ("model_verification", model_verification_threshold(embedder.model), "model's pairwise EER threshold"),
        ):
            if thr is None:
                continue
            r = open_set_rates(mated_true, top1, nonmated, thr)
            open_set[name] = {"threshold": thr, "method": method, "false_accept_rate": r.fpir, "fnir": r.fnir}
            thresholds[name.replace("_", " ")] = thr

    elapsed = time.perf_counter() - t_start
    results: dict[str, Any] = {
        "speakerid_bench": RESULTS_FORMAT,
        "kind": "identify",
        "model": embedder.model,
        "weights_sha256": embedder.weights_sha256,
        "root": str(root_p),
        "split_file": str(split_file),
        "scoring": scoring,
        "top_n": top_n if scoring == "topn" else None,
        "split_lines": counts,
        "speakers": {
            "listed": len(all_speakers),
            "enrolled": len(enrol),
            "skipped": skipped[:LIST_AT_MOST],
            "skipped_count": len(skipped),
            "enrolled_clips": sum(len(v) for v in enrol.values()),
        },
        "queries": {
            "listed": len(test),
            "scored": len(queries),
            "skipped_speaker_not_enrolled": skipped_queries,
            "skipped_missing_or_failed": len(test) - len(queries) - skipped_queries,
        },
        "files": {
            "distinct": len(rels),
            "missing": len(missing),
            "failed": len(failed),
            "missing_list": missing[:LIST_AT_MOST],
            "failed_list": [{"path": r, "error": failed[r]} for r in sorted(failed)[:LIST_AT_MOST]],
            "embedding": emb.stats(),
        },
        "closed_set": {"top1": float(top1.mean()), "top5": float(top5_hit.mean()), "speakers": len(enrol)},
        "open_set": open_set,
        "index": {"path": str(index_dir) if index_dir is not None else None, "threshold": index_threshold,
                  "threshold_method": threshold_method},
        "seed_reference": SEED_REFERENCE,
        "timing": {
            "total_s": round(elapsed, 3),
            "embed_s": round(emb.embed_s, 3),
            "files_per_s_embedded": round(emb.embedded_n / emb.embed_s, 3) if emb.embed_s > 0 else None,
        },
        "environment": environment(),
    }
    return IdentifyRun(
        results=results,
        query_paths=[e.path for e in queries],
        query_speakers=q_spk,
        top_speakers=top_spk,
        mated_true=mated_true,
        mated_top1=top1,
        nonmated_top=nonmated if len(enrol) > 1 else np.zeros(0),
        thresholds=thresholds,
    )
