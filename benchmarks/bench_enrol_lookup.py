"""What an enrolment of one clip pays to ask "is this content / this path already indexed?"
(issue 11): the indexer's set-up against the gallery, at 1e4 and 1e6 clips, before and after
the segments' lookup files (:class:`speakerid.index.lookup.ContentKeys`).

Galleries: copies of ready ones (``--small-src`` / ``--big-src``, real CAM++ spec; by default
/tmp/scale/rsmall and /tmp/scale/rbig, built by bench_scale's ``build(data="real")``), or built
here with ``--build`` (bench_scale.build with the real campplus spec, ~60 s for 1e6). The
originals are never written. A copy holds segments written before the lookup files (legacy);
it is compacted once by this code, which writes them.

Measured, each in fresh processes, old and new alternating (so the machine's load weighs on both):

* ``setup_miss_ms``: on a freshly opened index, what ``_Pipeline.__init__`` did before
  (``utterances()`` + the sha256 -> speaker and path -> sha256 dicts over every clip:
  ``old``, the code of OLD_REV's ``__init__``) against what it does now (``clip_lookup()``:
  ``new``), plus the two queries a new clip makes (a content miss, a path miss);
  ``setup_hit_ms``: that plus the speaker of a known content (a skipped clip); ``new_legacy``:
  the same on the copy before compaction (segments without lookup files: scanned);
* ``add_known_ms``: ``add_files`` of one real librispeech file whose content is already
  indexed (a resumed / repeated enrolment: writes nothing), with a loaded Embedder;
* ``add_new_ms``: ``add_files`` of one new real file (embed + add + durable save), no recalibration
  (``rebuild_threshold=False``: the calibration policy is not what is measured here).

``old`` runs the code of git ``OLD_REV``, the last commit before the lookup files (``git archive OLD_REV speakerid``, extracted to a temporary
directory, put first on PYTHONPATH; pass ``--old-code DIR`` to use another tree), so the
"before" is the shipped code, not a replica.

    nice -n 10 python benchmarks/bench_enrol_lookup.py            # both sizes, ~5 min on 2 busy cores
    nice -n 10 python benchmarks/bench_enrol_lookup.py --small    # 1e4 only

Writes benchmarks/results/enrol_lookup.json and enrol_lookup.md.
"""

from __future__ import annotations

import argparse
import csv
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

os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
DATA = REPO.parent / "shared" / "data" / "librispeech-251"
WEIGHTS = "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"

#: Run in a fresh process: set-up costs on 3 fresh opens of the index.
_SETUP = r"""
import json, sys, time
import speakerid
from speakerid.index import SpeakerIndex
d, which = sys.argv[1], sys.argv[2]
out = {"miss": [], "hit": []}
for _ in range(3):
    ix = SpeakerIndex.open(d)
    t0 = time.perf_counter()
    if which == "old":
        utt = ix.utterances()
        shas = utt["sha256"].to_pylist()
        speaker_of = dict(zip(shas, utt["speaker"].to_pylist()))
        sha_of_path = dict(zip(utt["path"].to_pylist(), shas))
        ok = ("f" * 64 not in speaker_of) and "/nowhere.flac" not in sha_of_path
        t1 = time.perf_counter()
        ok = ok and speaker_of[sys.argv[3]]
    else:
        known = ix.clip_lookup()
        ok = not known.contains_sha256("f" * 64) and not known.sha256_of_paths(["/nowhere.flac"])
        t1 = time.perf_counter()
        ok = ok and known.speakers_of([sys.argv[3]])
    t2 = time.perf_counter()
    out["miss"].append((t1 - t0) * 1e3)
    out["hit"].append((t2 - t0) * 1e3)
    assert ok
print(speakerid.__file__)
print(json.dumps(out))
"""

#: Run in a fresh process: add_files of known files, then of new ones, one per call.
_ADD = r"""
import json, sys, time
import speakerid
from speakerid.config import EmbedOptions
from speakerid.embedder import Embedder
from speakerid.indexer import Item, add_files
d, known, new, tag = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
emb = Embedder("campplus", embed=EmbedOptions(threads=1))
emb.embed(known[0])  # warm the model: the first call of a process is not what is measured
res = {"add_known_ms": [], "add_new_ms": []}
for f in known:
    t0 = time.perf_counter()
    rep = add_files(d, [Item(f, "bench-known")], embedder=emb, rebuild_threshold=False)
    res["add_known_ms"].append((time.perf_counter() - t0) * 1e3)
    assert rep.files_skipped_known == 1, rep
for i, f in enumerate(new):
    t0 = time.perf_counter()
    rep = add_files(d, [Item(f, f"bench-{tag}-{i}")], embedder=emb, rebuild_threshold=False)
    res["add_new_ms"].append((time.perf_counter() - t0) * 1e3)
    assert rep.files_embedded == 1, rep
print(speakerid.__file__)
print(json.dumps(res))
"""


def _env(code: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _run(code: Path, script: str, *args: str) -> object:
    # cwd: not the repository (``python -c`` puts the cwd first on sys.path, before PYTHONPATH)
    r = subprocess.run([sys.executable, "-c", script, *args], env=_env(code), capture_output=True, text=True,
                       check=False, cwd=tempfile.gettempdir())
    if r.returncode != 0:
        raise RuntimeError(f"probe failed ({code}):\n{r.stderr[-3000:]}")
    lines = r.stdout.strip().splitlines()
    if Path(lines[-2]).resolve() != (code / "speakerid" / "__init__.py").resolve():
        raise RuntimeError(f"the probe ran {lines[-2]}, not the code of {code}")
    return json.loads(lines[-1])


#: The last commit before the lookup files: the "old" code.
OLD_REV = "9785a7a"


def _old_code(work: Path, rev: str = OLD_REV) -> Path:
    out = work / "old-code"
    out.mkdir()
    tar = subprocess.run(["git", "-C", str(REPO), "archive", rev, "speakerid"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(out)], input=tar.stdout, check=True)
    return out


def _build(d: Path, n_speakers: int) -> None:
    sys.path.insert(0, str(HERE))
    import bench_scale
    from speakerid.index import IndexSpec

    bench_scale._spec = lambda: IndexSpec(model="campplus", weights_sha256=WEIGHTS, dim=192)
    bench_scale.build(d, n_speakers, data="real")


def _files(n: int) -> list[str]:
    with open(DATA / "speakers.csv", newline="") as f:
        rows = sorted((r for r in csv.DictReader(f) if 3.0 <= float(r["duration_s"]) <= 6.0), key=lambda r: r["file"])
    return [str(DATA / r["file"]) for r in rows[:n]]


def _seed_known(d: Path, files: list[str]) -> str:
    """Index ``files`` (new code) so that add_files finds them known; a sha256 held by the gallery."""
    from speakerid.config import EmbedOptions
    from speakerid.embedder import Embedder
    from speakerid.index import SpeakerIndex
    from speakerid.indexer import Item, add_files

    add_files(d, [Item(f, "seed") for f in files], embedder=Embedder("campplus", embed=EmbedOptions(threads=1)),
              rebuild_threshold=False)
    return str(SpeakerIndex.open(d).utterances()["sha256"][0].as_py())


def measure(name: str, src: Path | None, n_speakers: int, work: Path, old: Path, rounds: int,
            files: list[str]) -> dict:
    from speakerid.index import SpeakerIndex

    d = work / name
    t0 = time.perf_counter()
    if src is not None:
        shutil.copytree(src, d, symlinks=True)
        (d / ".lock").unlink(missing_ok=True)
    else:
        _build(d, n_speakers)
    made_s = time.perf_counter() - t0
    ix = SpeakerIndex.open(d)
    rows, segs = len(ix), ix.info()["segments"]
    hit = str(ix.utterances()["sha256"][0].as_py())
    held = set(ix.lookup_sha256(hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files))
    files = [f for f in files if hashlib.sha256(Path(f).read_bytes()).hexdigest() not in held]
    del ix
    if len(files) < 3 + 2 * rounds:
        raise RuntimeError(f"{src}: only {len(files)} of the candidate files are not in the gallery already")
    legacy = [_run(REPO, _SETUP, str(d), "new", hit) for _ in range(2)]
    t0 = time.perf_counter()
    with SpeakerIndex.open(d, writable=True) as w:
        w.compact()  # rewrites the segments with their lookup files
    compact_s = time.perf_counter() - t0
    known, new = files[:3], files[3: 3 + 4 * rounds]
    _seed_known(d, known)
    res: dict = {"clips": rows, "segments_before_compaction": segs, "copy_or_build_s": round(made_s, 1),
                 "compact_s": round(compact_s, 1),
                 "setup_miss_ms": {"old": [], "new": [], "new_legacy": [x for r in legacy for x in r["miss"]]},
                 "setup_hit_ms": {"old": [], "new": [], "new_legacy": [x for r in legacy for x in r["hit"]]},
                 "add_known_ms": {"old": [], "new": []}, "add_new_ms": {"old": [], "new": []}}
    per = max(1, len(new) // (2 * rounds))
    for r in range(rounds):
        for tag, code in (("old", old), ("new", REPO)) if r % 2 == 0 else (("new", REPO), ("old", old)):
            got = _run(REPO, _SETUP, str(d), tag, hit)  # "old" is the old set-up's code, run here
            res["setup_miss_ms"][tag] += got["miss"]
            res["setup_hit_ms"][tag] += got["hit"]
            batch = new[(2 * r + (tag == "new")) * per: (2 * r + (tag == "new") + 1) * per]
            got = _run(code, _ADD, str(d), json.dumps(known), json.dumps(batch), f"{tag}{r}")
            res["add_known_ms"][tag] += got["add_known_ms"]
            res["add_new_ms"][tag] += got["add_new_ms"]
    for key in ("setup_miss_ms", "setup_hit_ms", "add_known_ms", "add_new_ms"):
        res[key] = {k: {"median": round(statistics.median(v), 2), "n": len(v), "all": [round(x, 2) for x in v]}
                    for k, v in res[key].items()}
        o, n = res[key]["old"]["median"], res[key]["new"]["median"]
        res[key]["old_over_new"] = round(o / n, 1) if n else None
    shutil.rmtree(d)
    return res


def report(out: dict) -> str:
    lines = ["# Enrolment lookups (issue 11): old = the dicts over every clip (git OLD_REV), new = lookup files", "",
             f"`{out['command']}`, {out['date']}, load {out['load']}", "",
             "| gallery | clips | what | old ms | new ms | old/new |", "|---|---:|---|---:|---:|---:|"]
    for name, r in out["sizes"].items():
        for key in ("setup_miss_ms", "setup_hit_ms", "add_known_ms", "add_new_ms"):
            v = r[key]
            lines.append(f"| {name} | {r['clips']} | {key[:-3]} | {v['old']['median']} | {v['new']['median']} | "
                         f"{v['old_over_new']} |")
        for key in ("setup_miss_ms", "setup_hit_ms"):
            lines.append(f"| {name} | {r['clips']} | {key[:-3]}, segments without lookup files (scanned) | | "
                         f"{r[key]['new_legacy']['median']} | |")
    lines += ["", "Medians of fresh processes, old and new alternating; setup_miss = what the indexer's set-up "
              "against the gallery costs on a freshly opened index, plus one content miss and one path miss "
              "(old: `utterances()` + the two dicts, the code OLD_REV's `_Pipeline.__init__` ran; new: "
              "`clip_lookup()`); setup_hit = that plus the speaker of one known content (new: reads that "
              "segment's speaker column); add = the whole `add_files` of one "
              "real file with a loaded Embedder (known: skipped, writes nothing; new: embedded and saved, "
              "no recalibration). Speeds are ratios within this run only (2 shared cores)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small-src", type=Path, default=Path("/tmp/scale/rsmall"))
    ap.add_argument("--big-src", type=Path, default=Path("/tmp/scale/rbig"))
    ap.add_argument("--build", action="store_true", help="build the galleries here instead of copying them")
    ap.add_argument("--small", action="store_true", help="1e4 clips only")
    ap.add_argument("--old-code", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--work", type=Path, default=None)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="enrol-lookup-", dir=a.work))
    try:
        old = a.old_code or _old_code(work)
        files = _files(60)  # those already in a gallery are left out (the ready galleries hold a few)
        sizes = {"1e4": (None if a.build else a.small_src, 1000)}
        if not a.small:
            sizes["1e6"] = (None if a.build else a.big_src, 100_000)
        out = {"command": " ".join(["python", "benchmarks/bench_enrol_lookup.py", *sys.argv[1:]]),
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load": os.getloadavg()[0],
               "sizes": {}}
        for name, (src, n_speakers) in sizes.items():
            out["sizes"][name] = measure(name, src, n_speakers, work, old, a.rounds, files)
            print(name, json.dumps({k: v for k, v in out["sizes"][name].items()
                                    if k in ("clips", "compact_s")}), flush=True)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "enrol_lookup.json").write_text(json.dumps(out, indent=1) + "\n")
        (RESULTS / "enrol_lookup.md").write_text(report(out))
        print(report(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
