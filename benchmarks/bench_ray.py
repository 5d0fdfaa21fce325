"""Ray engine against the local engine: index build throughput on the same 2 cores, one run.

    nice -n 10 python benchmarks/bench_ray.py --repeats 2 --out benchmarks/results/ray.json

The corpus is librispeech-251 (251 FLAC files, 52 min of audio) laid out as DIR/<speaker>/
with symlinks. One local Ray cluster of ``--cpus`` CPUs is started first (its start-up is
timed apart: a real cluster is started once, not per build); then the two engines build a
fresh index alternately (local, ray, local, ray...), so that both see the same machine load:

* local: :func:`speakerid.indexer.build_index` with ``workers = --cpus`` threads;
* ray: :func:`speakerid.indexer.ray_engine.build_index_ray` with ``--cpus`` actors of 1 CPU.

Both get an Embedder loaded beforehand for the driver. Reported per build: the wall time of
the call (for Ray it includes starting the actors, each loading the model), and the
steady-state time from the first committed clip to the last (progress timestamps), which is
what a long build pays per clip. The overhead is ray / local - 1 on medians. The CPU that
other processes took during each build (from /proc/stat) is reported too, since the machine
may be shared.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_build import cpu_jiffies  # noqa: E402

from speakerid.config import EmbedOptions  # noqa: E402
from speakerid.embedder import Embedder  # noqa: E402
from speakerid.indexer import build_index  # noqa: E402
from speakerid.indexer.ray_engine import build_index_ray  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "librispeech-251"


def corpus(root: Path, limit: int | None, copies: int = 1) -> Path:
    """librispeech-251 as root/<speaker>/<file> symlinks; with ``copies`` > 1 also copies 1..N-1
    of every file re-encoded at a gain of 1 - 0.002 k (new content: nothing is skipped as already
    indexed), for a corpus N times as long."""
    import numpy as np
    import soundfile as sf

    with open(DATA / "speakers.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["file"])[:limit]
    for r in rows:
        d = root / r["speaker"]
        d.mkdir(parents=True, exist_ok=True)
        (d / r["file"]).symlink_to((DATA / r["file"]).resolve())
        if copies > 1:
            x, sr = sf.read(DATA / r["file"], dtype="float32")
            for k in range(1, copies):
                sf.write(d / f"copy{k}-{r['file']}", (x * np.float32(1.0 - 0.002 * k)).astype(np.float32), sr,
                         format="FLAC", subtype="PCM_16")
    return root


class Clock:
    """Progress callback noting when the first and the last clip were committed."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None
        self.first_done = 0

    def __call__(self, stage: str, done: int, total: int | None, **extra: float) -> None:
        if stage == "indexing" and done > 0:
            now = time.perf_counter()
            if self.first is None:
                self.first, self.first_done = now, done
            self.last = now


def one_build(engine: str, src: Path, out: Path, embedder: Embedder, cpus: int) -> dict:
    clock = Clock()
    busy0, total0 = cpu_jiffies()
    r0 = os.times()
    t0 = time.perf_counter()
    if engine == "local":
        rep = build_index(src, out, embedder=embedder, workers=cpus, progress=clock)
    else:
        rep = build_index_ray(src, out, embedder=embedder, concurrency=cpus, progress=clock)
    wall = time.perf_counter() - t0
    busy1, total1 = cpu_jiffies()
    ncpu = os.cpu_count() or 1
    machine_cores = (busy1 - busy0) / max(1, total1 - total0) * ncpu
    steady = (clock.last or t0) - (clock.first or t0)
    files_after_first = rep.files_embedded - clock.first_done
    return {
        "engine": engine, "wall_s": round(wall, 3), "files": rep.files_embedded, "audio_s": round(rep.audio_s, 1),
        "x_real_time": round(rep.audio_s / wall, 1), "files_per_s": round(rep.files_embedded / wall, 2),
        "steady_s": round(steady, 3),
        "steady_files_per_s": round(files_after_first / steady, 2) if steady > 0 else None,
        "time_to_first_clip_s": round((clock.first or t0) - t0, 3),
        "machine_busy_cores": round(machine_cores, 2),
        "driver_cpu_s": round(sum(os.times()[:2]) - sum(r0[:2]), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="first N files only")
    ap.add_argument("--copies", type=int, default=1,
                    help="a corpus N times as long: re-encoded copies of every file at slightly other gains")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ray.json")
    args = ap.parse_args()

    import ray

    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        src = corpus(tmp / "corpus", args.limit, args.copies)
        t0 = time.perf_counter()
        # the workers import the installed speakerid (pip install -e .), as on a real cluster: a
        # runtime_env (e.g. PYTHONPATH) would make Ray start a fresh worker pool for it
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ray_start_s = time.perf_counter() - t0
        embedder = Embedder("campplus", embed=EmbedOptions(threads=1))
        runs = []
        for rep in range(args.repeats):
            for engine in ("local", "ray"):
                out = tmp / f"ix-{engine}-{rep}"
                runs.append(one_build(engine, src, out, embedder, args.cpus))
                shutil.rmtree(out)
                print(json.dumps(runs[-1]), flush=True)
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(engine: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["engine"] == engine)

    summary = {
        "local_wall_s": med("local", "wall_s"), "ray_wall_s": med("ray", "wall_s"),
        "overhead_wall": round(med("ray", "wall_s") / med("local", "wall_s") - 1, 3),
        "local_steady_files_per_s": med("local", "steady_files_per_s"),
        "ray_steady_files_per_s": med("ray", "steady_files_per_s"),
        "overhead_steady": round(med("local", "steady_files_per_s") / med("ray", "steady_files_per_s") - 1, 3),
        "ray_time_to_first_clip_s": med("ray", "time_to_first_clip_s"),
        "local_time_to_first_clip_s": med("local", "time_to_first_clip_s"),
        "ray_cluster_start_s": round(ray_start_s, 2),
        "ray_fixed_start_s": round(med("ray", "time_to_first_clip_s") - med("local", "time_to_first_clip_s"), 2),
        "copies": args.copies,
        "audio_s": med("local", "audio_s") if "audio_s" in runs[0] else None,
        "goal_overhead": 0.15,
    }
    result = {
        "command": "python benchmarks/bench_ray.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_avg_at_end": os.getloadavg()},
        "ray_version": ray.__version__, "cpus": args.cpus, "repeats": args.repeats, "runs": runs,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    s = summary
    md = [
        f"# Ray engine against the local engine ({args.cpus} cores, librispeech-251"
        + (f" x {args.copies} (re-encoded copies at other gains)" if args.copies > 1 else "") + ", campplus)", "",
        f"Command: `{result['command']}` (raw figures: {args.out.name}); Ray {ray.__version__}. "
        "Builds alternate local / ray on one machine; medians.", "",
        "| engine | wall s (median) | files/s steady | time to first clip s |", "|---|---:|---:|---:|",
        f"| local ({args.cpus} threads) | {s['local_wall_s']:.2f} | {s['local_steady_files_per_s']:.2f} | "
        f"{s['local_time_to_first_clip_s']:.2f} |",
        f"| ray ({args.cpus} actors) | {s['ray_wall_s']:.2f} | {s['ray_steady_files_per_s']:.2f} | "
        f"{s['ray_time_to_first_clip_s']:.2f} |", "",
        f"Overhead of Ray: {100 * s['overhead_wall']:.1f} % on the whole build (actor start-up with model "
        f"loading included), {100 * s['overhead_steady']:.1f} % in steady state (goal <= 15 %). "
        f"Starting the local cluster itself: {s['ray_cluster_start_s']} s (once, not per build). "
        f"Ray's fixed cost per build (its time to the first clip over the local engine's): "
        f"{s['ray_fixed_start_s']} s.", "",
        "| run | engine | wall s | x real time | steady files/s | machine busy cores |", "|---|---|---:|---:|---:|---:|",
    ]
    md += [f"| {i} | {r['engine']} | {r['wall_s']} | {r['x_real_time']} | {r['steady_files_per_s']} | "
           f"{r['machine_busy_cores']} |" for i, r in enumerate(runs)]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
