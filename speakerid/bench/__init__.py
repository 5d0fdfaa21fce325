"""Benchmarks on VoxCeleb1 protocols: verification (EER, minDCF, AS-norm) and identification.

    from speakerid import Embedder
    from speakerid.bench import run_verify
    from speakerid.embcache import EmbeddingCache
    from speakerid.report import write_verify_report

    emb = Embedder("campplus")
    run = run_verify("vox1/wav", "veri_test2.txt", emb, cache=EmbeddingCache.for_embedder(emb))
    write_verify_report("out/veri_test2", run)

The library never prints: progress goes to an optional ``progress(stage, done, total)``.
"""

from .asnorm import DEFAULT_TOP_N, asnorm, cohort_stats, stats_from_scores
from .common import SEED_REFERENCE, BenchProgress, verification_metrics
from .identification import IdentifyRun, run_identify
from .verification import VerifyRun, run_verify
from .voxceleb import IdenEntry, Trial, check_root, parse_iden_split, parse_trials

__all__ = [
    "DEFAULT_TOP_N",
    "SEED_REFERENCE",
    "BenchProgress",
    "IdenEntry",
    "IdentifyRun",
    "Trial",
    "VerifyRun",
    "asnorm",
    "check_root",
    "cohort_stats",
    "parse_iden_split",
    "parse_trials",
    "run_identify",
    "run_verify",
    "stats_from_scores",
    "verification_metrics",
]
