"""How the index's costs grow with the gallery (issue 11): open, enrol one clip, remove a
speaker, identify p50 and the first identify, at 1e4 clips / 1e3 speakers and at 1e6 clips /
1e5 speakers, side by side in one run, through the public API.

Data, 10 clips per speaker, two distributions measured the same way (``--data``):

* ``real`` (the issue's goals are judged on it): real CAM++ embeddings grown to size
  (:class:`RealGrown`: bench_large.Grower over results/large_base.npz, 1452 embeddings of 3 s
  librispeech-251 windows, clean and degraded, 251 speakers). A speaker is a real parent's
  centroid plus an isotropic perturbation sized so that grown speakers are as far from their
  parent as real speakers from their nearest other speaker; a clip is that centroid plus the
  residual of a random real clip plus a small perturbation. Queries are new clips drawn the same
  way;
* ``synthetic``: 192-d unit vectors with speaker structure: 256 group directions, each speaker
  at cosine ~0.5 from its group, each clip at cosine ~0.75 from its speaker. Within a group the
  nine runner-up speakers of a query are near-ties with no further structure, the hard case for
  any ANN index (the calibrated centroid IVF then probes many lists to keep its recall).

Each size is built once (batches of 1e5 clips saved as segments, then one compaction, like a
finished ``index build``); the two sizes are then probed in alternate fresh processes (so that
the machine's load weighs on both sides of a ratio alike) and measured:

* ``open_s``: ``SpeakerIndex.open`` (verify on), 3 times in each of 5 fresh processes, median;
* ``first_identify_ms`` / ``identify_p50_ms``: ``identify(k=10)`` with the index's threshold:
  the first call on each of the 3 freshly opened indexes (median of the 15), and the median of
  200 calls in a row (one query per call, 1 thread), median over the 5 processes;
  ``identify_after_cache_eviction_ms``: a control, calls made after 32 MB of unrelated memory
  work (the CPU caches then hold nothing of the index, as after an open);
  The process first runs one identification on a 3-clip gallery of its own, so that the first
  call measures the opened index's cold state, not Python imports (~60 ms here: speakerid's
  calibration modules load on the first identify of a process whatever the gallery);
* ``recall_at_10``: of :meth:`SpeakerIndex.search_speakers` against an exact product with every
  centroid, on those queries;
* ``enrol_one_clip_ms``: add one clip of a new speaker + ``save()`` (durable: fsynced), median of 7;
* ``remove_speaker_ms``: ``remove_speaker`` + ``save()``, median of 5.

    nice -n 10 python benchmarks/bench_scale.py            # both sizes, both data, ~25 min on 2 busy cores
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


class Synthetic:
    """The Gaussian speaker-structured vectors above (the hard case for ANN: see the notes)."""

    name = "synthetic"

    def __init__(self, n_speakers: int) -> None:
        self.dirs = speaker_directions(n_speakers)

    def clips(self, speakers: np.ndarray, seed: int) -> np.ndarray:
        return clips_of(self.dirs, np.asarray(speakers), seed)


class RealGrown:
    """Real CAM++ embeddings grown to size: bench_large.Grower (module notes there) over
    results/large_base.npz (1452 embeddings of 3 s librispeech-251 windows, clean and degraded,
    251 speakers). Speaker s gets the direction normalize(C_a + sigma_s g) around a uniformly
    drawn real parent a (sigma_s matched to the real nearest-other-speaker cosine); each clip is
    that centroid (scaled like real clip means) plus the residual of a random real clip plus a
    small perturbation (0.1 of the median residual norm)."""

    name = "real"

    def __init__(self, n_speakers: int, seed: int = 0) -> None:
        from bench_large import Grower, load_base

        self.grower = Grower(*load_base(), seed=seed)
        self.cents = self.grower._fast_centroids(0, n_speakers)

    def clips(self, speakers: np.ndarray, seed: int) -> np.ndarray:
        return self.grower.clips(np.asarray(speakers), np.random.default_rng([seed, 7]), self.cents, 0)


DATA = {"real": RealGrown, "synthetic": Synthetic}


def _sha(i: int) -> str:
    return hashlib.sha256(b"clip %d" % i).hexdigest()


def _spec():
    from speakerid.index import IndexSpec

    return IndexSpec(model="campplus", weights_sha256="0" * 64, dim=DIM)


def build(d: Path, n_speakers: int, batch: int = 100_000, data: str = "synthetic") -> dict:
    """A gallery of n_speakers x PER_SPEAKER clips of ``data`` at ``d``; returns build timings."""
    from speakerid.index import SpeakerIndex

    dist = DATA[data](n_speakers)
    n = n_speakers * PER_SPEAKER
    t0 = time.perf_counter()
    with SpeakerIndex.create(d, _spec()) as ix:
        for start in range(0, n, batch):
            idx = np.arange(start, min(n, start + batch))
            spk = idx // PER_SPEAKER
            m = len(idx)
            ix.add(dist.clips(spk, seed=start), [f"spk{s:06d}" for s in spk], [f"/corpus/{i}.flac" for i in idx],
                   [_sha(int(i)) for i in idx], [4.0] * m, [3.2] * m)
            ix.save(compact=False)
        t_add = time.perf_counter() - t0
        ix.set_threshold(0.45, "benchmark")
        ix.compact()
        info = ix.info()
    return {"build_s": round(time.perf_counter() - t0, 2), "add_and_append_s": round(t_add, 2),
            "bytes_on_disk": info["bytes_on_disk"], "centroid_index": info["centroid_index"],
            "segments": info["segments"], "centroid_nprobe": info.get("centroid_nprobe")}


#: Run in a fresh process: (open, first identify) x3, 200 more, the cold control, recall against exact.
_PROBE = r"""
import json, statistics, sys, time
import numpy as np
sys.path.insert(0, sys.argv[3])
from bench_scale import DATA
from speakerid.identify import identify
from speakerid.index import SpeakerIndex
d, n_speakers = sys.argv[1], int(sys.argv[2])
dist = DATA[sys.argv[4]](n_speakers)
# Warm the process (imports, numpy and FAISS first calls) on a tiny gallery of its own, so that
# "first identify" measures what the opened index still has to build, not Python's imports.
import tempfile
from speakerid.index import IndexSpec
with SpeakerIndex.create(tempfile.mkdtemp() + "/w", IndexSpec("campplus", "0" * 64, 192)) as w:
    x = np.eye(192, dtype=np.float32)[:3]
    w.add(x, ["a", "b", "c"], ["1", "2", "3"], [f"{i:064x}" for i in range(3)], [1.0] * 3, [1.0] * 3)
    w.set_threshold(0.5, "warm-up")
    identify(w, x[0], k=10)
rng = np.random.default_rng(99)
spk = rng.integers(0, n_speakers, 201)
q = dist.clips(spk, seed=10**9)
fq = dist.clips(rng.integers(0, n_speakers, 3), seed=10**9 + 1)
opens, firsts = [], []
for j in range(3):  # each open is a fresh index: its first identification is a sample
    t = time.perf_counter(); ix = SpeakerIndex.open(d); opens.append(time.perf_counter() - t)
    t = time.perf_counter(); identify(ix, fq[j], k=10); firsts.append(time.perf_counter() - t)
t_first = statistics.median(firsts)
times, hits = [], 0
for i in range(1, 201):
    t = time.perf_counter(); r = identify(ix, q[i], k=10); times.append(time.perf_counter() - t)
    hits += r[0].speaker == f"spk{spk[i]:06d}"
# control: a call after unrelated work has evicted the CPU caches (what a first call after
# opening also meets: opening hashes and parses files), in the same warm process
junk = np.ones(4 << 20)
cold = []
for i in range(1, 8):
    junk += 1.0
    t = time.perf_counter(); identify(ix, q[i], k=10); cold.append(time.perf_counter() - t)
names, cent = ix.speaker_centroids()
exact = np.argsort(-(q[1:] @ cent.T), axis=1)[:, :10]
_, got = ix.search_speakers(q[1:], 10)
recall = float(np.mean([len({names[j] for j in e} & set(g)) / 10 for e, g in zip(exact, got)]))
print(json.dumps({"open_s": statistics.median(opens), "open_all_s": opens, "first_identify_ms": t_first * 1e3, "first_all_ms": [f * 1e3 for f in firsts],
                  "identify_p50_ms": statistics.median(times) * 1e3,
                  "identify_after_cache_eviction_ms": statistics.median(cold) * 1e3,
                  "identify_p99_ms": float(np.percentile(times, 99)) * 1e3, "recall_at_10": recall,
                  "top1_accuracy": hits / 200}))
"""


def probe_once(d: Path, n_speakers: int, data: str) -> dict:
    """One fresh process of _PROBE."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", _PROBE, str(d), str(n_speakers), str(REPO / "benchmarks"), data],
                         capture_output=True, text=True, env=env, check=True, timeout=3600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def probe(d: Path, n_speakers: int, runs: int = 5, data: str = "synthetic") -> dict:
    """Medians over ``runs`` fresh processes (a single first call is one sample: on a busy
    machine one descheduling makes it 10x)."""
    return summarize([probe_once(d, n_speakers, data) for _ in range(runs)])


def summarize(got: list[dict]) -> dict:
    res = {k: statistics.median(g[k] for g in got) for k in got[0] if k not in ("open_all_s", "first_all_ms")}
    res["open_all_s"] = [round(t, 4) for g in got for t in g["open_all_s"]]
    res["first_identify_all_ms"] = [round(t, 3) for g in got for t in g["first_all_ms"]]
    res["first_identify_ms"] = statistics.median(res["first_identify_all_ms"])
    return res


def writes(d: Path, n_speakers: int, data: str = "synthetic") -> dict:
    """Enrol one clip (7x) and remove a speaker (5x), each committed durably."""
    from speakerid.index import SpeakerIndex

    dist = DATA[data](n_speakers)
    enrol, remove = [], []
    with SpeakerIndex.open(d, writable=True) as ix:
        for i in range(7):
            x = dist.clips(np.array([i]), seed=10**8 + i)
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


def bench_data(data: str, sizes: tuple[int, int], workdir: Path, runs: int = 5) -> dict:
    """Both sizes of one distribution: built, then probed in alternate fresh processes (small,
    big, small, ...: the machine's load then weighs on both sides of a ratio alike), then the
    writes."""
    dirs = [workdir / f"{data}-{n}" for n in sizes]
    res = []
    for n, d in zip(sizes, dirs):
        shutil.rmtree(d, ignore_errors=True)
        res.append({"data": data, "clips": n * PER_SPEAKER, "speakers": n, **build(d, n, data=data)})
        print(f"{data}: built {res[-1]['clips']} clips in {res[-1]['build_s']} s", file=sys.stderr, flush=True)
    got: list[list[dict]] = [[], []]
    for _ in range(runs):
        for j, (n, d) in enumerate(zip(sizes, dirs)):
            got[j].append(probe_once(d, n, data))
    for j, (n, d) in enumerate(zip(sizes, dirs)):
        res[j].update(summarize(got[j]))
        res[j].update(writes(d, n, data))
        res[j] = {k: round(v, 4) if isinstance(v, float) else v for k, v in res[j].items()}
        print(json.dumps(res[j]), file=sys.stderr, flush=True)
        shutil.rmtree(d, ignore_errors=True)
    return {"small": res[0], "big": res[1], "ratios": ratios(res[0], res[1])}


GOALS = {"open_s": 5.0, "enrol_one_clip_ms": 1.5, "remove_speaker_ms": 2.0, "identify_p50_ms": 2.0}


def ratios(small: dict, big: dict) -> dict:
    out = {k: round(big[k] / small[k], 2) for k in GOALS}
    out["first_over_steady_identify_big"] = round(big["first_identify_ms"] / big["identify_p50_ms"], 2)
    out["first_over_steady_identify_small"] = round(small["first_identify_ms"] / small["identify_p50_ms"], 2)
    return out


def report_md(res: dict) -> str:
    out = ["# Index scale (benchmarks/bench_scale.py)", "",
           f"One run, {res['machine']}. Command: `{res['command']}`. Both distributions are measured the "
           "same way (module notes); the issue's goals are judged on the real one.", ""]
    for key, title in (("gallery", "Grown real CAM++ embeddings (the goals)"),
                       ("gallery_synthetic", "Synthetic Gaussian speaker structure (the hard case for ANN)")):
        if key in res:
            out += [f"## {title}", "", _table(res, res[key], res["machine"])]
    return "\n".join(out) + "\n" + "\n".join(NOTES) + "\n"


def _table(res: dict, g: dict, machine: str) -> str:
    s, b, r = g["small"], g["big"], g["ratios"]
    lines = [
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
        f"| identify after 32 MB of other work (cold CPU caches, median of 7) | "
        f"{s.get('identify_after_cache_eviction_ms', float('nan')):.3f} ms | "
        f"{b.get('identify_after_cache_eviction_ms', float('nan')):.3f} ms | | |",
        f"| recall@10 vs exact | {s['recall_at_10']:.3f} | {b['recall_at_10']:.3f} | | >= 0.99 |",
        f"| first identify after an open (median of 15: 3 opens x 5 processes) | {s['first_identify_ms']:.3f} ms ({r['first_over_steady_identify_small']}x p50) "
        f"| {b['first_identify_ms']:.3f} ms ({r['first_over_steady_identify_big']}x p50) | | <= 2x p50 |",
        f"| centroid index | {s['centroid_index']} | {b['centroid_index']} (nprobe {b.get('centroid_nprobe')}) | | |",
        f"| top-1 accuracy (own speaker first) | {s['top1_accuracy']:.3f} | {b['top1_accuracy']:.3f} | | |",
        f"| build (add in 1e5 batches + compact) | {s['build_s']} s | {b['build_s']} s | | |",
        f"| bytes on disk | {s['bytes_on_disk'] / 1e6:.1f} MB | {b['bytes_on_disk'] / 1e6:.1f} MB | | |",
        "",
        "Enrol samples (ms): small " + ", ".join(map(str, s["enrol_all_ms"])) + "; big " + ", ".join(map(str, b["enrol_all_ms"])),
        "",
        "Remove samples (ms): small " + ", ".join(map(str, s["remove_all_ms"])) + "; big " + ", ".join(map(str, b["remove_all_ms"])),
        "",
        "First identify after each open (ms): small " + ", ".join(map(str, s.get("first_identify_all_ms", [])))
        + "; big " + ", ".join(map(str, b.get("first_identify_all_ms", []))),
        "",
    ]
    return "\n".join(lines)


#: What the figures mean (kept with the report; written by hand after reading the run).
NOTES = [
    "## Reading",
    "",
    "* Identify p50 and recall (real data): the centroid index above 2e4 speakers is IVF (2 sqrt(n)",
    "  lists) over 8-bit scalar-quantized centroids whose 2k best are re-scored exactly",
    "  (IndexRefineFlat: exact cosines, exact order among them), its nprobe calibrated at each",
    "  compaction on 400 of the gallery's own clips for recall@10 >= 0.995. Grown real embeddings",
    "  have neighbourhoods (speakers near their parent voice): nprobe 4 of 632 lists, recall@10",
    "  0.996 on new clips. Before (profile of a steady 1e6 query): IVF float lists at a fixed",
    "  nprobe 64 took 0.36 of 0.53 ms; then ~10 bisections of 1e5 names (cache misses, ~3 us each)",
    "  and an id selector rebuilt per query; both are gone (snapshot rows are the ordinals, the",
    "  search parameters are made once per state).",
    "* Synthetic data: the calibration keeps recall@10 at 0.996 by probing 235 of 632 lists, so",
    "  identify costs 1.2 ms at 1e5 speakers (20x the flat 1e3-speaker gallery). Its nine",
    "  runner-up speakers are near-ties in 192-d with no structure; HNSW (M=16, efConstruction",
    "  200) reached only 0.97 at efSearch 512 (1.8 ms) there, against 0.997 at efSearch 64 on the",
    "  real data. The goal is judged on the real data, as the issue asks.",
    "* Open: the centroid index is memory-mapped and its pages touched (12-19 ms at 1e5 speakers)",
    "  instead of read whole (105-156 ms); the segments were already mapped.",
    "* First identify: FAISS' first IVF search in a process (OpenMP's set-up, ~4 ms) is paid by a",
    "  warm-up at open, and the search parameters, speaker arrays and centroid pages are made",
    "  there too. Opening then ends with one identification of an enrolled centroid through the",
    "  public identify: opening's file reads and Parquet parsing had evicted the identification's",
    "  code and data from the CPU caches, and the first call after an open cost 3.1-3.2x the next",
    "  (normalising the query alone: 50 us cold, 10 us warm). The control row (a call after 32 MB",
    "  of unrelated memory work in the same warm process) is what any call meets after other",
    "  work, e.g. right after embedding its clip: that is the CPU, not the index.",
    "* Enrol one clip and remove a speaker append one small segment or a tombstone whatever the",
    "  gallery size (tests/test_index_segments.py checks what is written); their ratios are ~1x,",
    "  with single samples moved by the machine's load (load 15-18 here: a nice-10 process gets a",
    "  small share of the 2 cores, which stretches every call longer than a scheduler slice).",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="1e4 and 1e5 clips only (a quick run)")
    ap.add_argument("--data", default="real,synthetic", help="distributions to measure (real, synthetic)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--report-only", action="store_true", help="rewrite scale.md from scale.json")
    args = ap.parse_args()
    if args.report_only:
        (RESULTS / "scale.md").write_text(report_md(json.loads((RESULTS / "scale.json").read_text())))
        return
    sizes = (1_000, 10_000) if args.small else (1_000, 100_000)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "scale.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    res.pop("gallery_run1", None)  # figures of the code before the centroid calibration
    for data in args.data.split(","):
        got = bench_data(data, sizes, work)
        res["gallery" if data == "real" else f"gallery_{data}"] = got
    res.update({
        "command": "nice -n 10 python benchmarks/bench_scale.py" + (" --small" if args.small else "")
        + (f" --data {args.data}" if args.data != "real,synthetic" else ""),
        "machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end",
    })
    path.write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / "scale.md").write_text(report_md(res))
    print(report_md(res))


if __name__ == "__main__":
    main()
