"""Pieces shared by the verification and identification benchmarks."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..corpus import audio_files_under
from ..errors import ConfigError
from ..metrics import eer, min_dcf
from ..progress import Progress
from .embedding import EmbedOutcome, embed_files
from .results import EmbeddingStats, Environment, FailedFile, FileCounts, SystemMetrics, Timing

if TYPE_CHECKING:
    from ..embedder import Embedder
    from .embcache import EmbeddingCache

#: At most this many missing / failed file names are listed in results.json (all are counted).
LIST_AT_MOST = 50


def audio_files(directory: str | os.PathLike[str], what: str) -> list[Path]:
    """Audio files under ``directory`` (recursive, sorted); ConfigError if there are none."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"{d}: {what} is not a directory")
    found = audio_files_under(d)
    if not found:
        raise ConfigError(f"{d}: no audio files in {what}")
    return found


def finite_or_none(x: float) -> float | None:
    """JSON has no infinities: +-inf (e.g. a reject-all threshold) becomes None."""
    return float(x) if math.isfinite(float(x)) else None


def verification_metrics(scores: np.ndarray, labels: np.ndarray) -> SystemMetrics:
    """EER and minDCF at P_target 0.01 and 0.05 (C_miss = C_fa = 1, normalised) with thresholds."""
    e = eer(scores, labels)
    d1 = min_dcf(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0)
    d5 = min_dcf(scores, labels, p_target=0.05, c_miss=1.0, c_fa=1.0)
    return SystemMetrics(
        eer=e.eer,
        eer_threshold=e.threshold,
        min_dcf_001=d1.min_dcf,
        min_dcf_001_threshold=finite_or_none(d1.threshold),
        min_dcf_005=d5.min_dcf,
        min_dcf_005_threshold=finite_or_none(d5.threshold),
    )


def environment() -> Environment:
    return Environment(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        python=platform.python_version(),
        machine=platform.machine(),
        cpus=os.cpu_count(),
    )


def embedding_stats(emb: EmbedOutcome) -> EmbeddingStats:
    s = emb.stats()
    return EmbeddingStats(
        requested=int(s["requested"]),
        embedded_ok=int(s["embedded_ok"]),
        failed=int(s["failed"]),
        missing=int(s["missing"]),
        distinct_cached=int(s["distinct_cached"]),
        distinct_embedded=int(s["distinct_embedded"]),
        embed_seconds=float(s["embed_seconds"]),
    )


def timing(total_s: float, emb: EmbedOutcome) -> Timing:
    rate = round(emb.embedded_n / emb.embed_s, 3) if emb.embed_s > 0 else None
    return Timing(total_s=round(total_s, 3), embed_s=round(emb.embed_s, 3), files_per_s_embedded=rate)


@dataclass(frozen=True)
class RootEmbeddings:
    """Files named relative to a wav root, embedded: ``outcome`` is keyed by ``key[rel]``."""

    outcome: EmbedOutcome
    key: dict[str, str]
    rel_files: list[str]
    missing: set[str]
    #: relative path -> error, for the files that failed to embed
    failed: dict[str, str]

    def has(self, rel: str) -> bool:
        return self.key[rel] in self.outcome.vectors

    def vector(self, rel: str) -> np.ndarray:
        return self.outcome.vectors[self.key[rel]]

    def file_counts(self) -> FileCounts:
        return FileCounts(
            distinct=len(self.rel_files),
            missing=len(self.missing),
            failed=len(self.failed),
            missing_list=tuple(sorted(self.missing)[:LIST_AT_MOST]),
            failed_list=tuple(FailedFile(r, self.failed[r]) for r in sorted(self.failed)[:LIST_AT_MOST]),
            embedding=embedding_stats(self.outcome),
        )


def embed_under_root(
    root: Path,
    rel_paths: Sequence[str],
    embedder: Embedder,
    cache: EmbeddingCache | None,
    *,
    workers: int,
    progress: Progress | None,
) -> RootEmbeddings:
    """Embed the distinct files named relative to ``root`` through the cache."""
    rel_files = list(dict.fromkeys(rel_paths))
    key = {r: str(root / r) for r in rel_files}
    emb = embed_files([key[r] for r in rel_files], embedder, cache, workers=workers, progress=progress)
    missing_keys = set(emb.missing)
    missing = {r for r in rel_files if key[r] in missing_keys}
    failed = {r: emb.errors[key[r]] for r in rel_files if key[r] in emb.errors}
    return RootEmbeddings(emb, key, rel_files, missing, failed)
