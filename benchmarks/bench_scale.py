"""How the index's costs grow with the gallery (issue 11): open, enrol one clip, remove a
speaker, identify p50 and the first identify, at 1e4 clips / 1e3 speakers and at 1e6 clips /
1e5 speakers, side by side in one run, through the public API.

Data: synthetic 192-d unit vectors with speaker structure (``synthetic``): 256 group directions
(think gender / accent), each speaker a direction at cosine ~0.5 from its group, each clip at
cosine ~0.75 from its speaker (about what CAM++ gives for two clips of one voice); 10 clips per
speaker. Queries are fresh clips of random enrolled speakers. Plain random vectors would have no
neighbourhood structure, which no real gallery lacks (see tests/test_index.py ``clustered``).

Each size is built once (batches of 1e5 clips saved as segments, then one compaction, like a
finished ``index build``), then measured:

* ``open_s``: ``SpeakerIndex.open`` (verify on), 3 times in each of 5 fresh processes, median;
* ``first_identify_ms`` / ``identify_p50_ms``: ``identify(k=10)`` with the index's threshold,
  the first call after that open and the median of the next 200 (one query per call, 1 thread),
  medians over the 5 processes.
  The process first runs one identification on a 3-clip gallery of its own, so that the first
  call measures the opened index's cold state, not Python imports (~60 ms here: speakerid's
  calibration modules load on the first identify of a process whatever the gallery);
* ``recall_at_10``: of :meth:`SpeakerIndex.search_speakers` against an exact product with every
  centroid, on those queries;
* ``enrol_one_clip_ms``: add one clip of a new speaker + ``save()`` (durable: fsynced), median of 7;
* ``remove_speaker_ms``: ``remove_speaker`` + ``save()``, median of 5.

    nice -n 10 python benchmarks/bench_scale.py            # both sizes, ~15 min on 2 busy cores
    nice -n 10 python benchmarks/bench_scale.py --small    # 1e4 / 1e5 only (a smoke run)

Writes benchmarks/results/scale.json and scale.md. Other parts of issue 11 (IVF-PQ, shards, Ray)
add their own functions and keys; :func:`main` keeps the keys it does not write.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"
DIM = 192
PER_SPEAKER = 10
GROUPS = 256
SPEAKER_COS, CLIP_COS = 0.5, 0.75


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _noisy(centers: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at (about) cosine ``cos`` from the rows of ``centers``."""
    sigma = np.sqrt((1 / cos**2 - 1) / centers.shape[1])
    return _unit(centers + sigma * rng.standard_normal(centers.shape, dtype=np.float32))


def speaker_directions(n_speakers: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    groups = _unit(rng.standard_normal((GROUPS, DIM), dtype=np.float32))
    return _noisy(groups[rng.integers(0, GROUPS, n_speakers)], SPEAKER_COS, rng)


def clips_of(directions: np.ndarray, speakers: np.ndarray, seed: int) -> np.ndarray:
    return _noisy(directions[speakers], CLIP_COS, np.random.default_rng(seed))


def _sha(i: int) -> str:
    return hashlib.sha256(b"clip %d" % i).hexdigest()


def _spec():
    from speakerid.index import IndexSpec

    return IndexSpec(model="campplus", weights_sha256="0" * 64, dim=DIM)


def build(d: Path, n_speakers: int, batch: int = 100_000) -> dict:
    """A gallery of n_speakers x PER_SPEAKER clips at ``d``; returns build timings."""
    from speakerid.index import SpeakerIndex

    dirs = speaker_directions(n_speakers)
    n = n_speakers * PER_SPEAKER
    t0 = time.perf_counter()
    with SpeakerIndex.create(d, _spec()) as ix:
        for start in range(0, n, batch):
            idx = np.arange(start, min(n, start + batch))
            spk = idx // PER_SPEAKER
            m = len(idx)
            ix.add(clips_of(dirs, spk, seed=start), [f"spk{s:06d}" for s in spk], [f"/corpus/{i}.flac" for i in idx],
                   [_sha(int(i)) for i in idx], [4.0] * m, [3.2] * m)
            ix.save(compact=False)
        t_add = time.perf_counter() - t0
        ix.set_threshold(0.45, "benchmark")
        ix.compact()
        info = ix.info()
    return {"build_s": round(time.perf_counter() - t0, 2), "add_and_append_s": round(t_add, 2),
            "bytes_on_disk": info["bytes_on_disk"], "centroid_index": info["centroid_index"],
            "segments": info["segments"]}


#: Run in a fresh process: open (x3), first identify, 200 more, recall against exact.
_PROBE = r"""
import json, statistics, sys, time
import numpy as np
sys.path.insert(0, sys.argv[3])
from bench_scale import clips_of, speaker_directions, PER_SPEAKER
from speakerid.identify import identify
from speakerid.index import SpeakerIndex
d, n_speakers = sys.argv[1], int(sys.argv[2])
# Warm the process (imports, numpy and FAISS first calls) on a tiny gallery of its own, so that
# "first identify" measures what the opened index still has to build, not Python's imports.
import tempfile
from speakerid.index import IndexSpec
with SpeakerIndex.create(tempfile.mkdtemp() + "/w", IndexSpec("campplus", "0" * 64, 192)) as w:
    x = np.eye(192, dtype=np.float32)[:3]
    w.add(x, ["a", "b", "c"], ["1", "2", "3"], [f"{i:064x}" for i in range(3)], [1.0] * 3, [1.0] * 3)
    w.set_threshold(0.5, "warm-up")
    identify(w, x[0], k=10)
opens = []
for _ in range(3):
    t = time.perf_counter(); ix = SpeakerIndex.open(d); opens.append(time.perf_counter() - t)
rng = np.random.default_rng(99)
spk = rng.integers(0, n_speakers, 201)
q = clips_of(speaker_directions(n_speakers), spk, seed=10**9)
t = time.perf_counter(); first = identify(ix, q[0], k=10); t_first = time.perf_counter() - t
times, hits = [], 0
for i in range(1, 201):
    t = time.perf_counter(); r = identify(ix, q[i], k=10); times.append(time.perf_counter() - t)
    hits += r[0].speaker == f"spk{spk[i]:06d}"
names, cent = ix.speaker_centroids()
exact = np.argsort(-(q[1:] @ cent.T), axis=1)[:, :10]
_, got = ix.search_speakers(q[1:], 10)
recall = float(np.mean([len({names[j] for j in e} & set(g)) / 10 for e, g in zip(exact, got)]))
print(json.dumps({"open_s": statistics.median(opens), "open_all_s": opens, "first_identify_ms": t_first * 1e3,
                  "identify_p50_ms": statistics.median(times) * 1e3,
                  "identify_p99_ms": float(np.percentile(times, 99)) * 1e3, "recall_at_10": recall,
                  "top1_accuracy": hits / 200}))
"""


def probe(d: Path, n_speakers: int, runs: int = 5) -> dict:
    """Medians over ``runs`` fresh processes (a single first call is one sample: on a busy
    machine one descheduling makes it 10x)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    got = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _PROBE, str(d), str(n_speakers), str(REPO / "benchmarks")],
                             capture_output=True, text=True, env=env, check=True, timeout=3600)
        got.append(json.loads(out.stdout.strip().splitlines()[-1]))
    res = {k: statistics.median(g[k] for g in got) for k in got[0] if k != "open_all_s"}
    res["open_all_s"] = [round(t, 4) for g in got for t in g["open_all_s"]]
    res["first_identify_all_ms"] = [round(g["first_identify_ms"], 3) for g in got]
    return res


def writes(d: Path, n_speakers: int) -> dict:
    """Enrol one clip (7x) and remove a speaker (5x), each committed durably."""
    from speakerid.index import SpeakerIndex

    dirs = speaker_directions(n_speakers)
    enrol, remove = [], []
    with SpeakerIndex.open(d, writable=True) as ix:
        for i in range(7):
            x = clips_of(dirs, np.array([i]), seed=10**8 + i)
            t = time.perf_counter()
            ix.add(x, [f"new{i}"], [f"/new/{i}.flac"], [_sha(10**9 + i)], [4.0], [3.2])
            ix.save()
            enrol.append(time.perf_counter() - t)
        for i in range(5):
            t = time.perf_counter()
            ix.remove_speaker(f"spk{(i * 7919) % n_speakers:06d}")
            ix.save()
            remove.append(time.perf_counter() - t)
    return {"enrol_one_clip_ms": statistics.median(enrol) * 1e3, "enrol_all_ms": [round(e * 1e3, 2) for e in enrol],
            "remove_speaker_ms": statistics.median(remove) * 1e3, "remove_all_ms": [round(r * 1e3, 2) for r in remove]}


def bench_gallery(n_speakers: int, workdir: Path) -> dict:
    d = workdir / f"gallery-{n_speakers}"
    shutil.rmtree(d, ignore_errors=True)
    res = {"clips": n_speakers * PER_SPEAKER, "speakers": n_speakers, **build(d, n_speakers)}
    print(f"built {res['clips']} clips in {res['build_s']} s", file=sys.stderr, flush=True)
    res.update(probe(d, n_speakers))
    res.update(writes(d, n_speakers))
    res = {k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}
    print(json.dumps(res), file=sys.stderr, flush=True)
    shutil.rmtree(d, ignore_errors=True)
    return res


GOALS = {"open_s": 5.0, "enrol_one_clip_ms": 1.5, "remove_speaker_ms": 2.0, "identify_p50_ms": 2.0}


def ratios(small: dict, big: dict) -> dict:
    out = {k: round(big[k] / small[k], 2) for k in GOALS}
    out["first_over_steady_identify_big"] = round(big["first_identify_ms"] / big["identify_p50_ms"], 2)
    out["first_over_steady_identify_small"] = round(small["first_identify_ms"] / small["identify_p50_ms"], 2)
    return out


def report_md(res: dict) -> str:
    out = _table(res, res["gallery"], res["machine"])
    if "gallery_run1" in res:
        g = res["gallery_run1"]
        out += "\n## Earlier run\n\n" + g["note"] + ".\n\n" + _table(res, g, g["machine"]).split("\n", 2)[2]
    return out + "\n" + "\n".join(NOTES) + "\n"


def _table(res: dict, g: dict, machine: str) -> str:
    s, b, r = g["small"], g["big"], g["ratios"]
    lines = [
        "# Index scale (benchmarks/bench_scale.py)",
        "",
        f"Synthetic 192-d speaker-structured unit vectors, {PER_SPEAKER} clips per speaker, one run, "
        f"{machine}. Command: `{res['command']}`." + (f" Note: {g['note']}." if "note" in g else ""),
        "",
        f"| | {s['clips']:.0e} clips / {s['speakers']:.0e} speakers | {b['clips']:.0e} clips / {b['speakers']:.0e} speakers "
        "| ratio | goal |",
        "|---|---:|---:|---:|---:|",
        f"| open (fresh processes, median of 15) | {s['open_s'] * 1e3:.1f} ms | {b['open_s'] * 1e3:.1f} ms | {r['open_s']}x | <= 5x |",
        f"| enrol one clip (add + durable save) | {s['enrol_one_clip_ms']:.1f} ms | {b['enrol_one_clip_ms']:.1f} ms "
        f"| {r['enrol_one_clip_ms']}x | <= 1.5x |",
        f"| remove a speaker (+ save) | {s['remove_speaker_ms']:.1f} ms | {b['remove_speaker_ms']:.1f} ms "
        f"| {r['remove_speaker_ms']}x | <= 2x |",
        f"| identify p50 (k=10, centroid) | {s['identify_p50_ms']:.3f} ms | {b['identify_p50_ms']:.3f} ms "
        f"| {r['identify_p50_ms']}x | <= 2x |",
        f"| identify p99 | {s['identify_p99_ms']:.3f} ms | {b['identify_p99_ms']:.3f} ms | | |",
        f"| recall@10 vs exact | {s['recall_at_10']:.3f} | {b['recall_at_10']:.3f} | | >= 0.99 |",
        f"| first identify (median of 5 processes) | {s['first_identify_ms']:.3f} ms ({r['first_over_steady_identify_small']}x p50) "
        f"| {b['first_identify_ms']:.3f} ms ({r['first_over_steady_identify_big']}x p50) | | <= 2x p50 |",
        f"| centroid index | {s['centroid_index']} | {b['centroid_index']} | | |",
        f"| build (add in 1e5 batches + compact) | {s['build_s']} s | {b['build_s']} s | | |",
        f"| bytes on disk | {s['bytes_on_disk'] / 1e6:.1f} MB | {b['bytes_on_disk'] / 1e6:.1f} MB | | |",
        "",
        "Enrol samples (ms): small " + ", ".join(map(str, s["enrol_all_ms"])) + "; big " + ", ".join(map(str, b["enrol_all_ms"])),
        "",
        "Remove samples (ms): small " + ", ".join(map(str, s["remove_all_ms"])) + "; big " + ", ".join(map(str, b["remove_all_ms"])),
        "",
        "First identify per process (ms): small " + ", ".join(map(str, s.get("first_identify_all_ms", [])))
        + "; big " + ", ".join(map(str, b.get("first_identify_all_ms", []))),
        "",
    ]
    return "\n".join(lines)


#: What the figures mean (kept with the report; written by hand after reading the run).
NOTES = [
    "## Reading",
    "",
    "* The two runs differ mostly by the machine's load (2 shared cores): run 1 (load 12-23) meets",
    "  open (3.4x), enrol one clip (1.1x) and remove a speaker (1.8x); run 2 (load 30-37, with a test",
    "  suite running) does not (5.5x, 4.3x), because a nice-10 process then gets a small share of the",
    "  CPU and every operation longer than a scheduler slice is stretched; its remove figure (0.09x)",
    "  shows the same noise the other way. What the design guarantees is measured by tests instead",
    "  (tests/test_index_segments.py): a one-clip save writes one new segment of < 20 kB and touches no",
    "  existing file, a removal rewrites no segment, opening reads no clip row and maps the segments.",
    "* Not met in either run: identify p50 and recall@10 at 1e5 speakers. The centroid IVF (632",
    "  lists, nprobe 64) answers in ~1.3 ms (run 1) against 0.13 ms for the flat 1e3-speaker",
    "  gallery, at recall@10 0.964. On this data the 9 runner-up speakers of a query are near-ties",
    "  with no neighbourhood structure (192-d, random within a group), the hard case for any ANN",
    "  index: measured at 1e5 speakers, IVF needs nprobe 128 of 632 lists for recall 0.990, HNSW",
    "  (M=32, 127 s to build) reached 0.945 at efSearch 256; exact flat search costs ~5 ms (idle) to",
    "  25-55 ms (this load). The query's own speaker is always found (top-1 accuracy 1.0 at both",
    "  sizes). Real CAM++ embeddings are more structured than this; issue 11 part 3 measures them.",
    "* First identify: no per-index cache is built any more (it was 1.2-2.5 s): the speaker names",
    "  are ready after open and the centroid index is read whole (run 1 mapped it, and the first",
    "  queries then paid the page faults: 19 ms at 1e5 speakers). Run 2 gives 2.0x p50 at 1e6 but",
    "  13x at 1e4 (1.8 ms vs 0.13 ms): at that scale a first call is cold CPU caches and scheduling.",
    "  The process warms imports on a 3-clip gallery first, else the first call also pays ~60 ms of",
    "  module imports (speakerid.calibration loads on the first identify of a process).",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="1e4 and 1e5 clips only (a quick run)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--report-only", action="store_true", help="rewrite scale.md from scale.json")
    args = ap.parse_args()
    if args.report_only:
        (RESULTS / "scale.md").write_text(report_md(json.loads((RESULTS / "scale.json").read_text())))
        return
    sizes = (1_000, 10_000) if args.small else (1_000, 100_000)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    small, big = (bench_gallery(n, work) for n in sizes)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "scale.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    res.update({
        "command": "nice -n 10 python benchmarks/bench_scale.py" + (" --small" if args.small else ""),
        "machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end",
        "gallery": {"small": small, "big": big, "ratios": ratios(small, big)},
    })
    path.write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / "scale.md").write_text(report_md(res))
    print(report_md(res))


if __name__ == "__main__":
    main()
