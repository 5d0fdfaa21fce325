"""What a benchmark run found, as frozen dataclasses; ``to_dict()`` gives the results.json form.

Report writers and the CLI read attributes (``results.trials.scored``,
``results.systems["cosine"].eer``); only results.json, ``--json`` and anything else that
leaves the process use the dict form. JSON has no infinities or NaN: they become null there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

__all__ = [
    "RESULTS_FORMAT",
    "SEED_REFERENCE",
    "ClosedSet",
    "CohortInfo",
    "EmbeddingStats",
    "Environment",
    "FailedFile",
    "FileCounts",
    "IdentifyResults",
    "IndexInfo",
    "OpenSet",
    "OperatingPoint",
    "QueryCounts",
    "SeedReference",
    "SkippedSpeaker",
    "SpeakerCounts",
    "SplitLines",
    "SystemMetrics",
    "Timing",
    "TrialCounts",
    "VerifyResults",
]

#: Results format of results.json (bumped on incompatible changes).
RESULTS_FORMAT = 1


def _plain(x: Any) -> Any:
    """JSON-ready form: dataclasses by their ``to_dict``, tuples as lists, non-finite floats as None."""
    if is_dataclass(x) and not isinstance(x, type):
        return x.to_dict()
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


class _Record:
    """``to_dict()``: the fields in order, values made JSON-ready."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


# --- shared ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingStats(_Record):
    """Clips requested of the embedding step and how each distinct content was had."""

    requested: int
    embedded_ok: int
    failed: int
    missing: int
    distinct_cached: int
    distinct_embedded: int
    embed_seconds: float


@dataclass(frozen=True)
class FailedFile(_Record):
    path: str
    error: str


@dataclass(frozen=True)
class FileCounts(_Record):
    """Distinct files named by the protocol list; the lists hold the first few only."""

    distinct: int
    missing: int
    failed: int
    missing_list: tuple[str, ...]
    failed_list: tuple[FailedFile, ...]
    embedding: EmbeddingStats


@dataclass(frozen=True)
class Timing(_Record):
    total_s: float
    embed_s: float
    files_per_s_embedded: float | None


@dataclass(frozen=True)
class Environment(_Record):
    created_at: str
    python: str
    machine: str
    cpus: int | None


@dataclass(frozen=True)
class SeedReference:
    """The seed project's published figures, for comparison."""

    system: str
    verification_eer: float
    verification_protocol: str
    identification_top1: float
    identification_protocol: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "verification": {"eer": self.verification_eer, "protocol": self.verification_protocol},
            "identification": {"top1": self.identification_top1, "protocol": self.identification_protocol},
        }


#: The seed project's published figures (AutoSpeech, proposed model).
SEED_REFERENCE = SeedReference(
    system="AutoSpeech (seed project, published)",
    verification_eer=0.0895,
    verification_protocol="VoxCeleb1 original trial list (veri_test.txt)",
    identification_top1=0.8766,
    identification_protocol="VoxCeleb1 identification split (iden_split.txt)",
)


# --- verification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SystemMetrics:
    """EER and minDCF (C_miss = C_fa = 1, normalised) of one scoring, with their thresholds.

    A threshold is None where rejecting every trial is the optimum (+inf).
    """

    eer: float
    eer_threshold: float
    min_dcf_001: float
    min_dcf_001_threshold: float | None
    min_dcf_005: float
    min_dcf_005_threshold: float | None

    def to_dict(self) -> dict[str, Any]:
        return _plain({
            "eer": self.eer,
            "eer_threshold": self.eer_threshold,
            "min_dcf_0.01": self.min_dcf_001,
            "min_dcf_0.01_threshold": self.min_dcf_001_threshold,
            "min_dcf_0.05": self.min_dcf_005,
            "min_dcf_0.05_threshold": self.min_dcf_005_threshold,
        })


@dataclass(frozen=True)
class TrialCounts(_Record):
    listed: int
    scored: int
    target: int
    nontarget: int
    skipped_missing_file: int
    skipped_failed_embedding: int


@dataclass(frozen=True)
class CohortInfo(_Record):
    """The AS-norm cohort as used: ``top_n`` is the effective value (at most the cohort size)."""

    dir: str
    files: int
    embedded: int
    failed: int
    top_n: int
    top_n_requested: int
    files_also_in_trials: int
    embedding: EmbeddingStats


@dataclass(frozen=True)
class VerifyResults:
    """A verification run; ``systems`` is keyed "cosine" and, with a cohort, "asnorm"."""

    model: str
    weights_sha256: str
    root: str
    trials_file: str
    trials: TrialCounts
    files: FileCounts
    systems: dict[str, SystemMetrics]
    asnorm: CohortInfo | None
    timing: Timing
    environment: Environment
    seed_reference: SeedReference = SEED_REFERENCE
    kind = "verify"

    def to_dict(self) -> dict[str, Any]:
        return {
            "speakerid_bench": RESULTS_FORMAT,
            "kind": self.kind,
            "model": self.model,
            "weights_sha256": self.weights_sha256,
            "root": self.root,
            "trials_file": self.trials_file,
            "trials": self.trials.to_dict(),
            "files": self.files.to_dict(),
            "systems": _plain(self.systems),
            "asnorm": _plain(self.asnorm),
            "seed_reference": self.seed_reference.to_dict(),
            "timing": self.timing.to_dict(),
            "environment": self.environment.to_dict(),
        }


# --- identification --------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitLines(_Record):
    train: int
    dev: int
    test: int


@dataclass(frozen=True)
class SkippedSpeaker(_Record):
    speaker: str
    train_listed: int
    test_listed: int
    reason: str


@dataclass(frozen=True)
class SpeakerCounts(_Record):
    """``skipped`` holds the first few speakers that could not be enrolled; all are counted."""

    listed: int
    enrolled: int
    skipped: tuple[SkippedSpeaker, ...]
    skipped_count: int
    enrolled_clips: int


@dataclass(frozen=True)
class QueryCounts(_Record):
    listed: int
    scored: int
    skipped_speaker_not_enrolled: int
    skipped_missing_or_failed: int


@dataclass(frozen=True)
class ClosedSet(_Record):
    top1: float
    top5: float
    speakers: int


@dataclass(frozen=True)
class OperatingPoint(_Record):
    """Open-set rates at a given threshold (``false_accept_rate`` is the FPIR)."""

    threshold: float
    method: str
    false_accept_rate: float
    fnir: float


@dataclass(frozen=True)
class OpenSet:
    """FNIR at the FPIR target, and the rates at the index's and the model's own thresholds."""

    fpir_target: float
    fnir_at_fpir: float
    fpir_achieved: float
    threshold_at_fpir: float | None
    nonmated_searches: int
    mated_searches: int
    index_default: OperatingPoint | None = None
    model_verification: OperatingPoint | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "fpir_target": self.fpir_target,
            "fnir_at_fpir": self.fnir_at_fpir,
            "fpir_achieved": self.fpir_achieved,
            "threshold_at_fpir": self.threshold_at_fpir,
            "nonmated_searches": self.nonmated_searches,
            "mated_searches": self.mated_searches,
        }
        for name in ("index_default", "model_verification"):  # absent, not null, when unknown
            point = getattr(self, name)
            if point is not None:
                d[name] = point.to_dict()
        return _plain(d)


@dataclass(frozen=True)
class IndexInfo(_Record):
    path: str | None
    threshold: float | None
    threshold_method: str


@dataclass(frozen=True)
class IdentifyResults:
    """An identification run; ``open_set`` is None with a single enrolled speaker."""

    model: str
    weights_sha256: str
    root: str
    split_file: str
    scoring: str
    top_n: int | None
    split_lines: SplitLines
    speakers: SpeakerCounts
    queries: QueryCounts
    files: FileCounts
    closed_set: ClosedSet
    open_set: OpenSet | None
    index: IndexInfo
    timing: Timing
    environment: Environment
    seed_reference: SeedReference = SEED_REFERENCE
    kind = "identify"

    def to_dict(self) -> dict[str, Any]:
        return {
            "speakerid_bench": RESULTS_FORMAT,
            "kind": self.kind,
            "model": self.model,
            "weights_sha256": self.weights_sha256,
            "root": self.root,
            "split_file": self.split_file,
            "scoring": self.scoring,
            "top_n": self.top_n,
            "split_lines": self.split_lines.to_dict(),
            "speakers": self.speakers.to_dict(),
            "queries": self.queries.to_dict(),
            "files": self.files.to_dict(),
            "closed_set": self.closed_set.to_dict(),
            "open_set": _plain(self.open_set),
            "index": self.index.to_dict(),
            "seed_reference": self.seed_reference.to_dict(),
            "timing": self.timing.to_dict(),
            "environment": self.environment.to_dict(),
        }
