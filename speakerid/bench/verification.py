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
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError
from ..progress import Progress
from .asnorm import DEFAULT_TOP_N, asnorm, cohort_stats
from .common import RootEmbeddings, audio_files, embed_under_root, embedding_stats, environment, timing
from .common import verification_metrics as _metrics
from .embedding import embed_files
from .results import CohortInfo, SystemMetrics, TrialCounts, VerifyResults
from .voxceleb import Trial, check_root, parse_trials

if TYPE_CHECKING:
    from ..embedder import Embedder
    from .embcache import EmbeddingCache

__all__ = ["VerifyRun", "run_verify"]


@dataclass(frozen=True)
class VerifyRun:
    """A finished verification benchmark: its ``results`` and the per-trial scores."""

    results: VerifyResults
    trials: list[Trial]
    labels: np.ndarray
    #: "cosine" always; "asnorm" with a cohort. Aligned with ``trials``.
    scores: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class _Scored:
    """The trials that could be scored: the embeddings of their files and each side's row."""

    kept: list[Trial]
    labels: np.ndarray
    files: list[str]
    mat: np.ndarray
    ia: np.ndarray
    ib: np.ndarray
    cosine: np.ndarray


def _check_cohort(asnorm_cohort: str | os.PathLike[str] | None, top_n: object) -> list[Path]:
    if asnorm_cohort is None:
        return []
    files = audio_files(asnorm_cohort, "the AS-norm cohort")
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 2:
        raise ConfigError(f"--asnorm-top-n must be an integer >= 2, got {top_n!r}")
    return files


def _score(trials: list[Trial], e: RootEmbeddings, trials_file: object, root: Path) -> _Scored:
    kept = [t for t in trials if e.has(t.a) and e.has(t.b)]
    labels = np.array([t.label for t in kept], dtype=np.int64)
    n_tar = int(labels.sum())
    n_non = len(kept) - n_tar
    if n_tar == 0 or n_non == 0:
        raise ConfigError(
            f"{trials_file}: {len(kept)} of {len(trials)} trials could be scored "
            f"({len(e.missing)} files missing under {root}, {len(e.failed)} failed to embed), leaving "
            f"{n_tar} target and {n_non} non-target trials: EER needs both"
        )
    files = sorted({p for t in kept for p in (t.a, t.b)})
    pos = {r: i for i, r in enumerate(files)}
    mat = np.stack([e.vector(r) for r in files]).astype(np.float32)
    ia = np.array([pos[t.a] for t in kept], dtype=np.int64)
    ib = np.array([pos[t.b] for t in kept], dtype=np.int64)
    cosine = np.einsum("ij,ij->i", mat[ia], mat[ib]).astype(np.float64)
    return _Scored(kept, labels, files, mat, ia, ib, cosine)


def _trial_counts(trials: list[Trial], s: _Scored, missing: set[str]) -> TrialCounts:
    n_tar = int(s.labels.sum())
    skipped_missing = sum(1 for t in trials if t.a in missing or t.b in missing)
    return TrialCounts(
        listed=len(trials),
        scored=len(s.kept),
        target=n_tar,
        nontarget=len(s.kept) - n_tar,
        skipped_missing_file=skipped_missing,
        skipped_failed_embedding=len(trials) - len(s.kept) - skipped_missing,
    )


def _asnorm(
    cohort_dir: str | os.PathLike[str],
    cohort_files: list[Path],
    top_n: int,
    s: _Scored,
    e: RootEmbeddings,
    embedder: Embedder,
    cache: EmbeddingCache | None,
    workers: int,
    progress: Progress | None,
) -> tuple[np.ndarray, CohortInfo]:
    """AS-norm scores of the trials against the cohort's embeddings, and what the cohort was."""
    cemb = embed_files(cohort_files, embedder, cache, workers=workers, progress=progress,
                       stage="embedding cohort", hash_stage="hashing cohort")
    cvecs = [cemb.vectors[str(p)] for p in cohort_files if str(p) in cemb.vectors]
    if len(cvecs) < 2:
        raise ConfigError(
            f"{cohort_dir}: only {len(cvecs)} cohort files could be embedded ({len(cemb.errors)} failed)"
        )
    trial_shas = {e.outcome.sha256[e.key[r]] for r in s.files}
    overlap = sum(1 for p in cohort_files if cemb.sha256.get(str(p)) in trial_shas)
    n_eff = min(top_n, len(cvecs))
    mu, sd = cohort_stats(s.mat, np.stack(cvecs), n_eff)
    scores = asnorm(s.cosine, mu[s.ia], sd[s.ia], mu[s.ib], sd[s.ib])
    info = CohortInfo(
        dir=str(cohort_dir), files=len(cohort_files), embedded=len(cvecs), failed=len(cemb.errors),
        top_n=n_eff, top_n_requested=top_n, files_also_in_trials=overlap, embedding=embedding_stats(cemb),
    )
    return scores, info


def run_verify(
    root: str | os.PathLike[str],
    trials_file: str | os.PathLike[str],
    embedder: Embedder,
    *,
    cache: EmbeddingCache | None = None,
    workers: int = 1,
    asnorm_cohort: str | os.PathLike[str] | None = None,
    asnorm_top_n: int = DEFAULT_TOP_N,
    progress: Progress | None = None,
) -> VerifyRun:
    """Score every trial of ``trials_file`` (paths relative to ``root``) with ``embedder``."""
    t_start = time.perf_counter()
    root_p = check_root(root)
    trials = parse_trials(trials_file)
    cohort_files = _check_cohort(asnorm_cohort, asnorm_top_n)
    e = embed_under_root(root_p, [p for t in trials for p in (t.a, t.b)], embedder, cache,
                         workers=workers, progress=progress)
    s = _score(trials, e, trials_file, root_p)
    scores = {"cosine": s.cosine}
    systems: dict[str, SystemMetrics] = {"cosine": _metrics(scores["cosine"], s.labels)}
    cohort: CohortInfo | None = None
    if asnorm_cohort is not None:
        scores["asnorm"], cohort = _asnorm(asnorm_cohort, cohort_files, asnorm_top_n, s, e, embedder, cache,
                                           workers, progress)
        systems["asnorm"] = _metrics(scores["asnorm"], s.labels)
    results = VerifyResults(
        model=embedder.model,
        weights_sha256=embedder.weights_sha256,
        root=str(root_p),
        trials_file=str(trials_file),
        trials=_trial_counts(trials, s, e.missing),
        files=e.file_counts(),
        systems=systems,
        asnorm=cohort,
        timing=timing(time.perf_counter() - t_start, e.outcome),
        environment=environment(),
    )
    return VerifyRun(results=results, trials=s.kept, labels=s.labels, scores=scores)
