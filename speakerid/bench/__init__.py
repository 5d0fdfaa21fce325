"""Evaluation: VoxCeleb1 verification (EER, minDCF, AS-norm) and identification benchmarks, the
embedding cache they run on, their reports, and the split-in-time protocol of librispeech-251.

    from speakerid import Embedder
    from speakerid.bench import EmbeddingCache, run_verify, write_verify_report

    emb = Embedder("campplus")
    run = run_verify("vox1/wav", "veri_test2.txt", emb, cache=EmbeddingCache.for_embedder(emb))
    print(run.results.systems["cosine"].eer)
    write_verify_report("out/veri_test2", run)

Modules: ``verification`` and ``identification`` run the protocols of ``voxceleb`` (the list
files) and return typed ``results``; ``report`` writes them out (``markdown``, ``plots``);
``embcache`` stores embeddings by content and ``embedding`` embeds through it; ``asnorm`` is the
score normalisation; ``protocols`` the split-in-time protocol of the published figures.

The library never prints: progress goes to an optional
``progress(stage, done, total, **extra)`` (:class:`speakerid.progress.Progress`).
"""

from .asnorm import DEFAULT_TOP_N, asnorm, cohort_stats, stats_from_scores
from .common import verification_metrics
from .embcache import EmbeddingCache
from .embedding import EmbedOutcome, embed_files, embed_samples
from .identification import IdentifyRun, run_identify
from .report import write_identify_report, write_verify_report
from .results import SEED_REFERENCE, IdentifyResults, SystemMetrics, VerifyResults
from .verification import VerifyRun, run_verify
from .voxceleb import IdenEntry, Trial, check_root, parse_iden_split, parse_trials

__all__ = [
    "DEFAULT_TOP_N",
    "SEED_REFERENCE",
    "EmbedOutcome",
    "EmbeddingCache",
    "IdenEntry",
    "IdentifyResults",
    "IdentifyRun",
    "SystemMetrics",
    "Trial",
    "VerifyResults",
    "VerifyRun",
    "asnorm",
    "check_root",
    "cohort_stats",
    "embed_files",
    "embed_samples",
    "parse_iden_split",
    "parse_trials",
    "run_identify",
    "run_verify",
    "stats_from_scores",
    "verification_metrics",
    "write_identify_report",
    "write_verify_report",
]
