"""What an index holds and how it searches (:class:`IndexSpec`), and the one check that an
index and an embedding model belong together (:func:`check_model`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError, ModelMismatchError

__all__ = ["IndexSpec", "IndexType", "check_model"]

IndexType = Literal["flat", "hnsw", "ivf", "ivfpq"]


@dataclass(frozen=True)
class IndexSpec:
    """What an index holds (model, weights, dim) and how it searches.

    Defaults were tuned with benchmarks/bench_index.py (clustered 192-d data, one query at a
    time on 1 thread): at 1e6 vectors hnsw answers in ~0.27 ms at recall@10 0.997 (build
    ~3 min on 2 cores), ivf in ~0.33 ms at recall@10 1.0 (build ~1 min), flat in ~25 ms.
    Below ~1e5 vectors flat is exact and fast enough (<= 2.6 ms).
    """

    model: str
    weights_sha256: str
    dim: int
    index_type: IndexType = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction_n: int = 64
    hnsw_ef_search_n: int = 128
    #: Number of IVF lists; None: ~4*sqrt(n), at most n/39, re-chosen as the gallery grows.
    ivf_nlist: int | None = None
    ivf_nprobe_n: int = 32
    #: An "ivf" index stays exact (flat) until it holds this many vectors (flat is fast enough below).
    ivf_min_train_n: int = 100_000
    #: k-means trains on at most this many points per list (bounds training time).
    ivf_train_points_per_list_n: int = 64
    #: "ivfpq" (for 1e7 clips and more): IVF lists of PQ codes of ``ivfpq_m`` bytes (+ the
    #: 8-byte id: 72 bytes a clip in memory at 64), the ``ivfpq_rerank_n`` best PQ candidates of
    #: a query re-scored exactly from the float vectors, which the segment file also holds and
    #: opening memory-maps (page cache, not resident). It uses ``ivf_nlist``, ``ivf_nprobe_n``
    #: and ``ivf_min_train_n`` like "ivf" (exact flat below). 64 bytes, nprobe 32 and 100
    #: re-ranked gave recall@10 0.978 at 1e6 grown real CAM++ clips where 32 bytes did not
    #: reach 0.95 (benchmarks/results/large.md).
    ivfpq_m: int = 64
    ivfpq_rerank_n: int = 100
    #: The stored speaker-centroid index (centroid scoring) is exact (flat) below this many
    #: speakers and IVF above (nlist ~2*sqrt(speakers), trained at compaction). Measured at
    #: 1e5 speakers, one query, 1 thread (benchmarks/bench_scale.py data, results/scale.md):
    #: flat scans every centroid (3-10 ms); on grown real CAM++ embeddings IVF with 640 lists
    #: reaches recall@10 0.996 at nprobe 4 (~0.065 ms), with 512 lists 0.994 at nprobe 3; HNSW
    #: (M=16, efConstruction 200) 0.997 at efSearch 64 (0.11 ms), but only 0.89 on the synthetic
    #: data, where IVF needs nprobe 128 of 632 lists for 0.99: the nprobe a gallery needs
    #: depends on its data, hence the calibration below. The lists hold 8-bit scalar-quantized
    #: centroids, the 2k best re-scored exactly: a quarter of the bytes to scan, 0.058 ms
    #: against 0.076 ms for float lists at the same recall (4-bit PQ lost recall).
    centroid_ann_min_n: int = 20_000
    #: IVF lists probed per centroid query. None (default): calibrated at each compaction, the
    #: smallest (on a ladder of ~1/4 steps) whose recall@10 against an exact search reaches
    #: ``centroid_recall_target`` on a sample of the gallery's own clips as queries.
    centroid_nprobe_n: int | None = None
    #: Recall@10 the calibration asks for (0.995 on the sample: the issue's goal is 0.99 on new clips).
    centroid_recall_target: float = 0.995

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"model must be a non-empty string, got {self.model!r}")
        if not isinstance(self.weights_sha256, str) or not self.weights_sha256:
            raise ConfigError(f"weights_sha256 must be a non-empty string, got {self.weights_sha256!r}")
        if self.index_type not in ("flat", "hnsw", "ivf", "ivfpq"):
            raise ConfigError(f"index_type must be flat, hnsw, ivf or ivfpq, got {self.index_type!r}")
        for name, low in (
            ("dim", 1),
            ("hnsw_m", 2),
            ("hnsw_ef_construction_n", 1),
            ("hnsw_ef_search_n", 1),
            ("ivf_nprobe_n", 1),
            ("ivf_min_train_n", 1),
            ("ivf_train_points_per_list_n", 39),
            ("centroid_ann_min_n", 1),
            ("ivfpq_m", 1),
            ("ivfpq_rerank_n", 1),
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
        if self.index_type == "ivfpq" and self.dim % self.ivfpq_m:
            raise ConfigError(f"ivfpq_m={self.ivfpq_m} must divide the dimension {self.dim}")
        if self.centroid_nprobe_n is not None and (
            not isinstance(self.centroid_nprobe_n, int) or isinstance(self.centroid_nprobe_n, bool)
            or self.centroid_nprobe_n < 1
        ):
            raise ConfigError(f"centroid_nprobe_n must be None or an integer >= 1, got {self.centroid_nprobe_n!r}")
        t = self.centroid_recall_target
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < t <= 1.0:
            raise ConfigError(f"centroid_recall_target must be a number in (0, 1], got {t!r}")
        if self.ivf_nlist is not None and (
            not isinstance(self.ivf_nlist, int) or isinstance(self.ivf_nlist, bool) or self.ivf_nlist < 1
        ):
            raise ConfigError(f"ivf_nlist must be None or an integer >= 1, got {self.ivf_nlist!r}")


def _show(key: str, value: object) -> str:
    return f"{value[:12]}…" if key == "weights_sha256" and isinstance(value, str) else repr(value)


def check_model(
    spec: IndexSpec,
    where: str | os.PathLike[str],
    *,
    model: str | None = None,
    weights_sha256: str | None = None,
    dim: int | None = None,
) -> None:
    """Raise ModelMismatchError unless the index at ``where`` (built as ``spec``) matches every
    one of ``model``, ``weights_sha256`` and ``dim`` that is given.

    The one model check of the library: opening an index for a model, creating over an
    existing index, and pairing an index with an embedder all come here.
    """
    wrong = [
        (key, want)
        for key, want, have in (
            ("model", model, spec.model),
            ("weights_sha256", weights_sha256, spec.weights_sha256),
            ("dim", dim, spec.dim),
        )
        if want is not None and want != have
    ]
    if wrong:
        built = f"model {spec.model!r} (weights_sha256 {_show('weights_sha256', spec.weights_sha256)}, dim {spec.dim})"
        asked = ", ".join(f"{key} {_show(key, want)}" for key, want in wrong)
        raise ModelMismatchError(
            f"index at {where} was built with {built}, not {asked}; "
            "embed with the index's model or rebuild the index with the new one"
        )
