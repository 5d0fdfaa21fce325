"""Speaker verification benchmark on a VoxCeleb trial list: EER, minDCF, optional AS-norm.

Each distinct file of the list is embedded once (through the embedding cache, so a second run
or another list over the same files embeds nothing), trials are scored by cosine and, with a
cohort, also by AS-norm. A trial naming a file that does not exist, or one that cannot be
embedded (no speech...), is left out, counted and listed; it never stops the run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..embcache import EmbeddingCache, embed_files
from ..errors import ConfigError
from .asnorm import DEFAULT_TOP_N, asnorm, cohort_stats
from .common import (
    RESULTS_FORMAT,
    SEED_REFERENCE,
    BenchProgress,
    audio_files,
    embed_under_root,
    environment,
    stage,
    verification_metrics,
)
from .voxceleb import Trial, check_root, parse_trials

if TYPE_CHECKING:
    from ..embedder import Embedder

__all__ = ["VerifyRun", "run_verify"]

#: At most this many missing / failed file names are listed in results.json (all are counted).
LIST_AT_MOST = 50


@dataclass
class VerifyRun:
    """A finished verification benchmark: JSON-ready ``results`` and the per-trial scores."""

    results: dict[str, Any]
    trials: list[Trial]
    labels: np.ndarray
    #: "cosine" always; "asnorm" with a cohort. Aligned with ``trials``.
    scores: dict[str, np.ndarray] = field(default_factory=dict)


def run_verify(
    root: str | os.PathLike[str],
    trials_file: str | os.PathLike[str],
    embedder: Embedder,
    *,
    cache: EmbeddingCache | None = None,
    workers: int = 1,
    asnorm_cohort: str | os.PathLike[str] | None = None,
    asnorm_top_n: int = DEFAULT_TOP_N,
    progress: BenchProgress | None = None,
) -> VerifyRun:
    """Score every trial of ``trials_file`` (paths relative to ``root``) with ``embedder``."""
    t_start = time.perf_counter()
    root_p = check_root(root)
    trials = parse_trials(trials_file)
    cohort_files: list[Path] = []
    if asnorm_cohort is not None:
        cohort_files = audio_files(asnorm_cohort, "the AS-norm cohort")
        if isinstance(asnorm_top_n, bool) or not isinstance(asnorm_top_n, int) or asnorm_top_n < 2:
            raise ConfigError(f"--asnorm-top-n must be an integer >= 2, got {asnorm_top_n!r}")

    rel_files = list(dict.fromkeys(p for t in trials for p in (t.a, t.b)))
    emb, key, missing, failed = embed_under_root(
        root_p, rel_files, embedder, cache, workers=workers, progress=progress
    )

    kept = [t for t in trials if key[t.a] in emb.vectors and key[t.b] in emb.vectors]
    skipped_missing = sum(1 for t in trials if t.a in missing or t.b in missing)
    skipped_failed = len(trials) - len(kept) - skipped_missing
    labels = np.array([t.label for t in kept], dtype=np.int64)
    n_tar = int(labels.sum())
    n_non = len(kept) - n_tar
    if n_tar == 0 or n_non == 0:
        raise ConfigError(
            f"{trials_file}: {len(kept)} of {len(trials)} trials could be scored "
            f"({len(missing)} files missing under {root_p}, {len(failed)} failed to embed), leaving "
            f"{n_tar} target and {n_non} non-target trials: EER needs both"
        )

    files = sorted({p for t in kept for p in (t.a, t.b)})
    pos = {r: i for i, r in enumerate(files)}
    mat = np.stack([emb.vectors[key[r]] for r in files]).astype(np.float32)
    ia = np.array([pos[t.a] for t in kept], dtype=np.int64)
    ib = np.array([pos[t.b] for t in kept], dtype=np.int64)
    cos = np.einsum("ij,ij->i", mat[ia], mat[ib]).astype(np.float64)
    scores = {"cosine": cos}
    systems: dict[str, Any] = {"cosine": verification_metrics(cos, labels)}

    cohort_info: dict[str, Any] | None = None
    if asnorm_cohort is not None:
        if progress is not None:
            progress("embedding cohort", 0, len(cohort_files))
        cemb = embed_files(cohort_files, embedder, cache, workers=workers, progress=stage(progress, "embedding cohort"))
        cvecs = [cemb.vectors[str(p)] for p in cohort_files if str(p) in cemb.vectors]
        if len(cvecs) < 2:
            raise ConfigError(
                f"{asnorm_cohort}: only {len(cvecs)} cohort files could be embedded ({len(cemb.errors)} failed)"
            )
        trial_shas = {emb.sha256[key[r]] for r in files}
        overlap = sum(1 for p in cohort_files if cemb.sha256.get(str(p)) in trial_shas)
        cohort = np.stack(cvecs)
        n_eff = min(asnorm_top_n, len(cohort))
        mu, sd = cohort_stats(mat, cohort, n_eff)
        s_as = asnorm(cos, mu[ia], sd[ia], mu[ib], sd[ib])
        scores["asnorm"] = s_as
        systems["asnorm"] = verification_metrics(s_as, labels)
        cohort_info = {
            "dir": str(asnorm_cohort),
            "files": len(cohort_files),
            "embedded": len(cvecs),
            "failed": len(cemb.errors),
            "top_n": n_eff,
            "top_n_requested": asnorm_top_n,
            "files_also_in_trials": overlap,
            "embedding": cemb.stats(),
        }

    elapsed = time.perf_counter() - t_start
    results: dict[str, Any] = {
        "speakerid_bench": RESULTS_FORMAT,
        "kind": "verify",
        "model": embedder.model,
        "weights_sha256": embedder.weights_sha256,
        "root": str(root_p),
        "trials_file": str(trials_file),
        "trials": {
            "listed": len(trials),
            "scored": len(kept),
            "target": n_tar,
            "nontarget": n_non,
            "skipped_missing_file": skipped_missing,
            "skipped_failed_embedding": skipped_failed,
        },
        "files": {
            "distinct": len(rel_files),
            "missing": len(missing),
            "failed": len(failed),
            "missing_list": sorted(missing)[:LIST_AT_MOST],
            "failed_list": [{"path": r, "error": failed[r]} for r in sorted(failed)[:LIST_AT_MOST]],
            "embedding": emb.stats(),
        },
        "systems": systems,
        "asnorm": cohort_info,
        "seed_reference": SEED_REFERENCE,
        "timing": {
            "total_s": round(elapsed, 3),
            "embed_s": round(emb.embed_s, 3),
            "files_per_s_embedded": round(emb.embedded_n / emb.embed_s, 3) if emb.embed_s > 0 else None,
        },
        "environment": environment(),
    }
    return VerifyRun(results=results, trials=kept, labels=labels, scores=scores)
