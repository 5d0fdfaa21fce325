"""Pieces shared by the verification and identification benchmarks."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..corpus import audio_files_under
from ..errors import ConfigError
from ..metrics import eer, min_dcf

if TYPE_CHECKING:
    from ..embcache import EmbeddingCache, EmbedOutcome
    from ..embedder import Embedder

#: progress(stage, done, total): called as work advances ("hashing", "embedding", ...).
BenchProgress = Callable[[str, int, int], None]

#: Results format of results.json (bumped on incompatible changes).
RESULTS_FORMAT = 1

#: The seed project's published figures (AutoSpeech, proposed model), for comparison.
SEED_REFERENCE: dict[str, Any] = {
    "system": "AutoSpeech (seed project, published)",
    "verification": {"eer": 0.0895, "protocol": "VoxCeleb1 original trial list (veri_test.txt)"},
    "identification": {"top1": 0.8766, "protocol": "VoxCeleb1 identification split (iden_split.txt)"},
}

DCF_P_TARGETS = (0.01, 0.05)


def stage(progress: BenchProgress | None, name: str) -> Callable[[int, int], None] | None:
    """A (done, total) callback reporting under ``name``, or None."""
    if progress is None:
        return None
    return lambda done, total: progress(name, done, total)


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
    """JSON has no infinities: +-inf (e.g. a reject-all threshold) becomes null."""
    return float(x) if math.isfinite(float(x)) else None


def verification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """EER and minDCF at P_target 0.01 and 0.05 (C_miss = C_fa = 1, normalised) with thresholds."""
    e = eer(scores, labels)
    out: dict[str, float | None] = {"eer": e.eer, "eer_threshold": e.threshold}
    for p in DCF_P_TARGETS:
        d = min_dcf(scores, labels, p_target=p, c_miss=1.0, c_fa=1.0)
        out[f"min_dcf_{p:g}"] = d.min_dcf
        out[f"min_dcf_{p:g}_threshold"] = finite_or_none(d.threshold)
    return out


def environment() -> dict[str, Any]:
    return {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def embed_under_root(
    root: Path,
    rel_paths: Sequence[str],
    embedder: Embedder,
    cache: EmbeddingCache | None,
    *,
    workers: int,
    progress: BenchProgress | None,
) -> tuple[EmbedOutcome, dict[str, str], set[str], dict[str, str]]:
    """Embed files named relative to ``root`` through the cache.

    Returns the embedding result (keyed by absolute path), the absolute key of each relative
    path, the relative paths missing on disk, and the error of each relative path that failed.
    """
    from ..embcache import embed_files

    key = {r: str(root / r) for r in rel_paths}
    emb = embed_files(
        [key[r] for r in rel_paths],
        embedder,
        cache,
        workers=workers,
        progress=stage(progress, "embedding"),
        hash_progress=stage(progress, "hashing"),
    )
    missing_keys = set(emb.missing)
    missing = {r for r in rel_paths if key[r] in missing_keys}
    failed = {r: emb.errors[key[r]] for r in rel_paths if key[r] in emb.errors}
    return emb, key, missing, failed
