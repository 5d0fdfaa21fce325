"""Identification latency on 1 thread: a 3 s clip against galleries of 1e3, 1e4 and 1e5 clips.

The gallery is synthetic (speaker-like clustered unit vectors, 10 clips per speaker, the
campplus dimension); the clip is real speech (the first 3 s of a librispeech-251 utterance,
written to a WAV file). Measured:

* ``whole``: decode + VAD + embedding + FAISS search + scoring (``Embedder.embed`` then
  ``identify``), what one `speakerid identify CLIP` costs once the models are loaded;
* ``search``: ``identify`` on a ready embedding (search + scoring), with queries drawn near
  gallery speakers (the hard case for best/top-n: the true speaker's clips come first).

    python benchmarks/bench_identify.py
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from speakerid import Embedder  # noqa: E402
from speakerid.audio import load  # noqa: E402
from speakerid.calibration import calibrate_open_set_threshold  # noqa: E402
from speakerid.config import EmbedOptions  # noqa: E402
from speakerid.identify import SCORINGS, identify  # noqa: E402
from speakerid.index import IndexSpec, SpeakerIndex  # noqa: E402

HERE = Path(__file__).resolve().parent
CLIPS_PER_SPEAKER = 10


def clustered(rng: np.random.Generator, n_speakers: int, per: int, dim: int, cos: float = 0.75) -> np.ndarray:
    """``per`` clips around each of ``n_speakers`` random centroids (cosine ~``cos`` to it)."""
    cent = rng.standard_normal((n_speakers, dim)).astype(np.float32)
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    noise = np.sqrt((1 / cos**2 - 1) / dim)
    x = np.repeat(cent, per, axis=0) + noise * rng.standard_normal((n_speakers * per, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def gallery(tmp: Path, n: int, emb: Embedder, index_type: str, rng: np.random.Generator) -> tuple[SpeakerIndex, np.ndarray]:
    n_spk = n // CLIPS_PER_SPEAKER
    x = clustered(rng, n_spk, CLIPS_PER_SPEAKER, emb.dim)
    spec = IndexSpec(model=emb.model, weights_sha256=emb.weights_sha256, dim=emb.dim, index_type=index_type)
    ix = SpeakerIndex.create(tmp / f"g{n}-{index_type}", spec)
    names = [f"spk{i:06d}" for i in range(n_spk) for _ in range(CLIPS_PER_SPEAKER)]
    ix.add(
        x, names, [f"/g/{i}.wav" for i in range(n)],
        [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)], [3.0] * n, [3.0] * n,
    )
    if index_type != "flat":
        ix.save()  # trains IVF
    # queries: fresh clips of random gallery speakers
    who = rng.integers(0, n_spk, 200)
    centre = x.reshape(n_spk, CLIPS_PER_SPEAKER, -1).mean(axis=1)[who]
    q = centre + np.sqrt((1 / 0.75**2 - 1) / emb.dim) * rng.standard_normal(centre.shape).astype(np.float32)
    return ix, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def pct(ts: list[float]) -> dict[str, float]:
    a = np.asarray(ts) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p90_ms": round(float(np.percentile(a, 90)), 2)}


def timed(fn, repeats: int) -> dict[str, float]:
    """p50 / p90 ms of ``repeats`` calls of ``fn``."""
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return pct(ts)


def time_rule(ix: SpeakerIndex, queries: np.ndarray, emb: Embedder, clip: Path, scoring: str,
              repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """identify under one scoring rule: on ready embeddings (search + scoring), and on the clip."""
    identify(ix, queries[0], 5, scoring=scoring)  # the gallery's speaker maps are made once
    cycle = itertools.cycle(queries)
    search = timed(lambda: identify(ix, next(cycle), 5, scoring=scoring), repeats)
    whole = timed(lambda: identify(ix, emb.embed(clip), 5, scoring=scoring), repeats)
    return search, whole


def bench_gallery(tmp: Path, n: int, itype: str, emb: Embedder, clip: Path, rng: np.random.Generator,
                  repeats: int) -> list[dict]:
    """One row per scoring rule for a gallery of n clips: identify on a ready embedding and on
    the clip, calibration and what opening the index costs a fresh process."""
    ix, queries = gallery(tmp, n, emb, itype, rng)
    t0 = time.perf_counter()
    calibrate_open_set_threshold(ix)
    cal_s = time.perf_counter() - t0
    ix.save()
    t0 = time.perf_counter()  # what a fresh `speakerid identify` pays once per run
    cold_ix = SpeakerIndex.open(ix.path, verify=False)
    identify(cold_ix, queries[0], 5)
    cold_s = time.perf_counter() - t0
    rows = []
    for scoring in SCORINGS:
        search, whole = time_rule(ix, queries, emb, clip, scoring, repeats)
        rows.append({
            "gallery_clips": n, "speakers": n // CLIPS_PER_SPEAKER, "index_type": itype,
            "scoring": scoring, "whole": whole, "search_scoring": search,
            "calibration_s": round(cal_s, 3), "open_and_first_identify_s": round(cold_s, 3),
            "load_avg_1min": round(os.getloadavg()[0], 2),  # the machine may be shared
        })
        print(json.dumps(rows[-1]), file=sys.stderr)
    ix.close()
    return rows


def markdown(results: list[dict]) -> str:
    lines = [
        "| gallery clips | speakers | index | scoring | whole p50 / p90 ms | search+scoring p50 / p90 ms "
        "| calibration s | open + first identify s | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['gallery_clips']:,} | {r['speakers']:,} | {r['index_type']} | {r['scoring']} | "
            f"{r['whole']['p50_ms']} / {r['whole']['p90_ms']} | {r['search_scoring']['p50_ms']} / "
            f"{r['search_scoring']['p90_ms']} | {r['calibration_s']} | {r['open_and_first_identify_s']} | {r['load_avg_1min']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared/data/librispeech-251")
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--model", default="campplus")
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--index-types", default="flat", help="comma list of flat,hnsw,ivf")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_identify.json")
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    emb = Embedder(args.model, embed=EmbedOptions(threads=1))
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        clip = tmp / "clip3s.wav"
        src = sorted(args.data.glob("*.flac"))[0]
        sf.write(clip, load(src)[: 3 * 16000], 16000)
        emb.embed(clip)
        embed_alone = timed(lambda: emb.embed(clip), args.repeats)
        print(f"embedding alone: {embed_alone}", file=sys.stderr)
        for itype in args.index_types.split(","):
            for n in (int(s) for s in args.sizes.split(",")):
                results += bench_gallery(tmp, n, itype, emb, clip, rng, args.repeats)
    meta = {
        "clip": f"first 3 s of {src.name} (real speech), model {args.model}, 1 thread (ORT, FAISS, BLAS)",
        "gallery": f"synthetic clustered unit vectors, {CLIPS_PER_SPEAKER} clips per speaker",
        "repeats": args.repeats,
        "embedding_alone": embed_alone,
        "machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(), "python": platform.python_version()},
        "command": "python benchmarks/bench_identify.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**meta, "results": results}, indent=1) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
