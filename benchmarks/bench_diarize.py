"""Diarization speed and memory: x real time on a 10-minute recording (model loading and
interpreter start included, the CLI in a fresh process) and peak RSS, on 10 minutes and on 2 hours.

The recordings are synthesised from the synthetic conversations of build_conversations.py
(concatenated, 1 s of silence between them): 10 minutes of speech from 30+ speakers, and 2 hours
(the set tiled, with silence between tiles).

    nice -n 10 python benchmarks/bench_diarize.py --set bench-results/conversations \
        --out benchmarks/results/diarize_speed.json [--skip-long] [--compare OLD_TREE --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def concatenate(set_dir: Path, out: Path, seconds: float) -> float:
    """Write ``seconds`` of the set's conversations, one after another, to ``out`` (in blocks)."""
    wavs = sorted(set_dir.glob("conv_*.wav"))
    need = int(seconds * SR)
    written = 0
    with sf.SoundFile(out, "w", SR, 1, subtype="PCM_16") as f:
        while written < need:
            for w in wavs:
                x, _ = sf.read(w, dtype="float32")
                x = np.concatenate([x, np.zeros(SR, np.float32)])[: need - written]
                f.write(x)
                written += len(x)
                if written >= need:
                    break
    return written / SR


def run_cli(audio: Path, extra: list[str], tree: Path | None = None) -> dict:
    """`speakerid diarize` under /usr/bin/time -v: wall seconds, peak RSS, turns. ``tree``: run
    the speakerid package of that source tree instead (PYTHONPATH)."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "speakerid", "diarize", str(audio), "--json", *extra]
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree.resolve()), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree.resolve() if tree else None)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    cpu = sum(float(re.search(rf"{k} time \(seconds\): ([\d.]+)", proc.stderr).group(1)) for k in ("User", "System"))
    data = json.loads(proc.stdout)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss_kb / 1024, "turns": len(data["turns"]),
            "speakers": len({t["speaker"] for t in data["turns"]}), "command": " ".join(cmd[2:])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", type=Path, default=Path("bench-results/conversations"))
    ap.add_argument("--work", type=Path, default=Path("bench-results"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--skip-long", action="store_true")
    ap.add_argument("--index", type=Path, default=None, help="also name speakers from this index")
    ap.add_argument("--compare", type=Path, default=None,
                    help="a source tree of other defaults (e.g. `git archive af508ef speakerid | tar -x -C DIR`): "
                         "the 10-min file is run alternately with it and with this tree, --repeats times each")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    extra = ["--index", str(a.index)] if a.index else []
    res = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}
    ten = a.work / "diarize_10min.wav"
    dur = concatenate(a.set, ten, 600.0)
    r = run_cli(ten, extra)
    r["audio_s"] = dur
    r["x_real_time"] = dur / r["wall_s"]
    res["10min"] = r
    print(f"10 min: {r['wall_s']:.1f} s wall, {r['x_real_time']:.1f}x real time, peak RSS {r['peak_rss_mb']:.0f} MB, "
          f"{r['speakers']} speakers", flush=True)
    if a.compare is not None:  # same file, alternating runs: the ratio is what holds on a shared machine
        runs: dict[str, list[dict]] = {"this": [], "compare": []}
        for _ in range(a.repeats):
            for label, tree in (("compare", a.compare), ("this", None)):
                runs[label].append(run_cli(ten.resolve(), extra, tree))
        med = {k: float(np.median([x["wall_s"] for x in v])) for k, v in runs.items()}
        cpu = {k: float(np.median([x["cpu_s"] for x in v])) for k, v in runs.items()}
        res["compare"] = {"tree": str(a.compare), "repeats": a.repeats, "runs": runs,
                          "median_wall_s": med, "median_x_real_time": {k: dur / v for k, v in med.items()},
                          "speed_ratio_this_over_compare": med["compare"] / med["this"],
                          "median_cpu_s": cpu, "cpu_ratio_this_over_compare": cpu["this"] / cpu["compare"]}
        print(f"10 min, median of {a.repeats}: this {dur / med['this']:.1f}x, {a.compare} {dur / med['compare']:.1f}x "
              f"real time; CPU {cpu['this']:.0f} s vs {cpu['compare']:.0f} s", flush=True)
    if not a.skip_long:
        two = a.work / "diarize_2h.wav"
        dur = concatenate(a.set, two, 7200.0)
        r = run_cli(two, extra)
        r["audio_s"] = dur
        r["x_real_time"] = dur / r["wall_s"]
        res["2h"] = r
        print(f"2 h: {r['wall_s']:.1f} s wall, {r['x_real_time']:.1f}x real time, peak RSS {r['peak_rss_mb']:.0f} MB",
              flush=True)
        two.unlink()
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
