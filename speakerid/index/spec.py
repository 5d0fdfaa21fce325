"""What an index holds and how it searches (:class:`IndexSpec`), and the one check that an
index and an embedding model belong together (:func:`check_model`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError, ModelMismatchError

__all__ = ["IndexSpec", "IndexType", "check_model"]

IndexType = Literal["flat", "hnsw", "ivf"]


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
    #: The stored speaker-centroid index (centroid scoring) is exact (flat) below this many
    #: speakers and IVF above (nlist ~2*sqrt(speakers), trained at compaction). Measured with
    #: benchmarks/bench_scale.py data at 1e5 speakers (results/scale.md): flat scans every
    #: centroid per query (~5 ms); IVF with 632 lists gives recall@10 0.958 / 0.975 / 0.990 at
    #: nprobe 32 / 64 / 128 and trains in ~10 s, where HNSW (M=32) took 127 s to build and
    #: reached 0.90 / 0.945 at efSearch 64 / 256.
    centroid_ann_min_n: int = 20_000
    centroid_nprobe_n: int = 64
    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"model must be a non-empty string, got {self.model!r}")
        if not isinstance(self.weights_sha256, str) or not self.weights_sha256:
            raise ConfigError(f"weights_sha256 must be a non-empty string, got {self.weights_sha256!r}")
        if self.index_type not in ("flat", "hnsw", "ivf"):
            raise ConfigError(f"index_type must be flat, hnsw or ivf, got {self.index_type!r}")
        for name, low in (
            ("dim", 1),
            ("hnsw_m", 2),
            ("hnsw_ef_construction_n", 1),
            ("hnsw_ef_search_n", 1),
            ("ivf_nprobe_n", 1),
            ("ivf_min_train_n", 1),
            ("ivf_train_points_per_list_n", 39),
            ("centroid_ann_min_n", 1),
            ("centroid_nprobe_n", 1),
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
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
