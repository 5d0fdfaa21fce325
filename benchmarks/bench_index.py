"""Benchmark the speaker index types: build time, search latency, recall@10, bytes per vector.

    python benchmarks/bench_index.py --sizes 1e3,1e4,1e5,1e6 --dim 192 --queries 200 \\
        --out benchmarks/results/index.json

Data are synthetic but clustered like speaker embeddings: ``--speakers`` random unit
centroids, each clip = centroid + isotropic noise so that cos(clip, centroid) ~ 0.75
(same-speaker clips then score ~0.55, other speakers ~0). Plain random unit vectors have
no neighbourhood structure and make ANN recall unrealistically poor. Queries are held-out
clips from the same generator. Builds use every core; searches run one query at a time on
one thread (faiss.omp_set_num_threads(1)). Each index is built with the library's own
``build_faiss_index`` and ``IndexSpec`` defaults; search-time knobs (HNSW efSearch, IVF
nprobe) are also swept, and the row with the default is marked.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.evaluation import knn_intersection_measure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from speakerid.index import IndexSpec, build_faiss_index, set_search_params  # noqa: E402

K = 10
HNSW_EF = (16, 32, 64, 128, 256)
IVF_NPROBE = (1, 2, 4, 8, 16, 32, 64)


def clustered(n: int, dim: int, n_speakers: int, seed: int, cos: float = 0.75) -> np.ndarray:
    """n unit vectors around n_speakers fixed random centroids (generated in blocks)."""
    cent = np.random.default_rng(1234).standard_normal((n_speakers, dim)).astype(np.float32)
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    sigma = np.float32(np.sqrt((1 / cos**2 - 1) / dim))
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        x = cent[rng.integers(0, n_speakers, m)] + sigma * rng.standard_normal((m, dim), dtype=np.float32)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def time_queries(index: faiss.Index, q: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Search one query at a time on one thread; returns ids (q, K) and per-query ms."""
    faiss.omp_set_num_threads(1)
    ids = np.empty((len(q), K), np.int64)
    ms = []
    index.search(q[:1], K)  # warm-up
    for i in range(len(q)):
        t = time.perf_counter()
        _, ids[i : i + 1] = index.search(q[i : i + 1], K)
        ms.append((time.perf_counter() - t) * 1e3)
    return ids, ms


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    """recall@K against the exact search: the share of the true K nearest that were returned."""
    return float(knn_intersection_measure(ids, truth))


def bench_size(n: int, args: argparse.Namespace, threads: int) -> list[dict]:
    t = time.perf_counter()
    x = clustered(n, args.dim, args.speakers, seed=n)
    q = clustered(args.queries, args.dim, args.speakers, seed=10**9 + 1)
    ids = np.arange(n, dtype=np.int64)
    print(f"n={n:,}: data in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    rows: list[dict] = []
    truth = None
    for kind in ("flat", "hnsw", "ivf"):
        spec = IndexSpec(model="bench", weights_sha256="0" * 64, dim=args.dim, index_type=kind)
        faiss.omp_set_num_threads(threads)
        t = time.perf_counter()
        index = build_faiss_index(spec, x, ids)
        build_s = time.perf_counter() - t
        inner = faiss.downcast_index(index.index)
        bytes_per_vector = len(faiss.serialize_index(index)) / n
        if isinstance(inner, faiss.IndexHNSW):
            sweep = [
                (dataclasses.replace(spec, hnsw_ef_search_n=v), {"ef_search": v}, v == spec.hnsw_ef_search_n)
                for v in HNSW_EF
            ]
        elif isinstance(inner, faiss.IndexIVF):
            sweep = [
                (
                    dataclasses.replace(spec, ivf_nprobe_n=v),
                    {"nprobe": v, "nlist": inner.nlist},
                    v == spec.ivf_nprobe_n,
                )
                for v in IVF_NPROBE
                if v <= inner.nlist
            ]
        else:
            sweep = [(spec, {}, True)]
        for s, params, is_default in sweep:
            set_search_params(index, s, K)
            got, ms = time_queries(index, q)
            if truth is None:
                truth = got  # flat is exact and comes first
            row = {
                "n": n,
                "index_type": kind,
                "faiss_index": type(inner).__name__,
                "params": params,
                "default": is_default,
                "build_s": round(build_s, 3),
                "search_ms_median": round(float(np.median(ms)), 4),
                "search_ms_p90": round(float(np.percentile(ms, 90)), 4),
                "recall_at_10": round(recall(got, truth), 4),
                "bytes_per_vector": round(bytes_per_vector, 1),
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        del index, inner
    return rows


def markdown(results: dict) -> str:
    c = results["config"]
    lines = [
        "# Speaker index benchmark",
        "",
        f"dim {c['dim']}, {c['queries']} queries, recall@{K} against flat, clustered synthetic data "
        f"({c['speakers']} speakers, cos(clip, centroid) ~ 0.75), search on 1 thread one query at a time, "
        f"build on {c['build_threads']} threads; {c['machine']}. Rows marked * use the IndexSpec defaults.",
        "",
        "| n | type | params | build s | search ms (median) | p90 ms | recall@10 | bytes/vector |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["results"]:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        kind = (
            r["index_type"]
            + ("*" if r["default"] else "")
            + (
                " (flat until trained)"
                if r["index_type"] == "ivf" and r["faiss_index"] == "IndexFlatIP"
                else ""
            )
        )
        lines.append(
            f"| {r['n']:,} | {kind} | {params} | {r['build_s']:.2f} | {r['search_ms_median']:.3f} | "
            f"{r['search_ms_p90']:.3f} | {r['recall_at_10']:.4f} | {r['bytes_per_vector']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e3,1e4,1e5,1e6", help="comma-separated gallery sizes (1e5 style ok)")
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--speakers", type=int, default=5000, help="number of synthetic speaker centroids")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for building")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/index.json"))
    args = ap.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    results = {
        "config": {
            "sizes": sizes,
            "dim": args.dim,
            "queries": args.queries,
            "speakers": args.speakers,
            "k": K,
            "build_threads": args.threads,
            "search_threads": 1,
            "faiss": faiss.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        },
        "results": [],
    }
    for n in sizes:
        results["results"] += bench_size(n, args, args.threads)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")  # partial results survive a stop
        args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
