"""The most any index build can reach on this machine, as a share of bench_build's ceiling.

    python benchmarks/bench_bound.py --rounds 12 --files 30 --out benchmarks/results/bound.json

bench_build's ceiling is the cores divided by the bare CAM++ model's CPU time per audio second
(one ONNX Runtime session, one thread, alone on the machine). A build cannot reach it: every
clip also pays its front end (hash, decode, VAD, fbank), and the cores slow each other down
when both run the model at once (shared caches and memory bandwidth, a VM's cores that may
share a physical one). This script measures both, in rounds that alternate, so that a drift
of the machine's speed hits each round's figures alike:

* ``alone``: the bare model on the prepared features of ``--files`` clips, one thread, alone
  (right before and right after the round's side-by-side run; their mean);
* ``side by side``: the same, one thread per core at once on the one session, as the build's
  workers run (median over the threads);
* ``front end``: hash + decode + VAD (the Embedder's, gated) + fbank of the same clips, one
  thread alone.

A build whose workers did nothing but these, with the front end not slowed by the other core
and no pipeline overhead at all, would spend ``side by side + front end`` CPU ms per audio
second on each core, so its share of the ceiling is at most ``alone / (side by side + front
end)``: the round's **bound** (``bound without VAD``: the same with the VAD's time left out).
``front end for 90 %`` is what the front end would have to cost for that bound to reach 0.9 at
the round's side-by-side time (negative: unreachable even with a free front end).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_build import (  # noqa: E402
    DATA,
    BareModel,
    bare_model_ms,
    front_end_stages,
    side_by_side_ms,
    wait_until_idle,
)

from speakerid.config import EmbedOptions  # noqa: E402
from speakerid.embedder import Embedder  # noqa: E402
from speakerid.features import front_end_for  # noqa: E402
from speakerid.models import store  # noqa: E402

GOAL_SHARE = 0.9


def front_end_ms(files: list[Path], emb: Embedder, frontend) -> dict[str, float]:
    """CPU ms per audio second of each front-end stage on ``files``, one after the other on this
    thread, as bench_build's stage profile times them."""
    out: dict[str, float] = {}
    wavs = front_end_stages(files, emb.vad, frontend, out)
    audio_s = sum(len(w) for w in wavs) / 16000
    ms = {k: 1000 * v / audio_s for k, v in out.items()}
    ms["total"] = sum(ms.values())
    return ms


def one_round(files: list[Path], prepared: list, bare: BareModel, emb: Embedder, frontend) -> dict:
    before = bare_model_ms(prepared, bare)
    sbs = side_by_side_ms(prepared, bare)
    after = bare_model_ms(prepared, bare)
    front = front_end_ms(files, emb, frontend)
    alone = (before + after) / 2
    return {
        "alone_ms": round(alone, 3),
        "alone_before_after_ms": [round(before, 3), round(after, 3)],
        "side_by_side_ms": round(sbs, 3),
        "side_by_side_share": round(alone / sbs, 4),
        "front_end_ms": {k: round(v, 3) for k, v in front.items()},
        "front_end_share_of_model": round(front["total"] / alone, 4),
        "bound": round(alone / (sbs + front["total"]), 4),
        "bound_without_contention": round(alone / (alone + front["total"]), 4),
        "bound_without_vad": round(alone / (sbs + front["total"] - front["vad"]), 4),
        "front_end_for_goal_ms": round(alone / GOAL_SHARE - sbs, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--files", type=int, default=30, help="Clips of librispeech-251 each round runs on.")
    ap.add_argument("--wait-idle", type=float, default=30.0,
                    help="Before each round, wait up to this many seconds for the machine to be idle.")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bound.json"))
    args = ap.parse_args()
    if args.rounds < 1 or args.files < 1:
        ap.error("--rounds and --files must be >= 1")

    rows = list(csv.DictReader(open(DATA / "speakers.csv", newline="")))
    files = [DATA / r["file"] for r in rows[: args.files]]
    emb = Embedder("campplus", embed=EmbedOptions(threads=1))
    spec, model_dir = store.resolve("campplus")
    frontend = front_end_for(spec, model_dir)
    prepared = [emb.prepare(f) for f in files]
    bare = BareModel()
    one_round(files, prepared, bare, emb, frontend)  # warm-up: arenas, page cache, first touch
    rounds = []
    for i in range(args.rounds):
        wait_until_idle(args.wait_idle)
        rounds.append(one_round(files, prepared, bare, emb, frontend))
        r = rounds[-1]
        print(f"round {i + 1}/{args.rounds}: alone {r['alone_ms']} ms, side by side {r['side_by_side_ms']} ms "
              f"({r['side_by_side_share']}), front end {r['front_end_ms']['total']} ms, bound {r['bound']}",
              file=sys.stderr, flush=True)

    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in rounds), 4)

    result = {
        "benchmark": "bound on the index build's share of the ceiling, librispeech-251, campplus",
        "command": "python " + " ".join([sys.argv[0], *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "files": len(files),
        "audio_s": round(sum(p.duration_s for p in prepared), 1),
        "goal_share": GOAL_SHARE,
        "median": {k: med(k) for k in ("alone_ms", "side_by_side_ms", "side_by_side_share",
                                       "front_end_share_of_model", "bound", "bound_without_contention",
                                       "bound_without_vad", "front_end_for_goal_ms")},
        "median_front_end_ms": {k: round(statistics.median(r["front_end_ms"][k] for r in rounds), 3)
                                for k in rounds[0]["front_end_ms"]},
        "max_bound": max(r["bound"] for r in rounds),
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(json.dumps(result["median"], indent=2))


def markdown(r: dict) -> str:
    m, f = r["median"], r["median_front_end_ms"]
    lines = [
        f"# Bound on the index build's share of the ceiling ({r['machine']['cpus']} cores, campplus)",
        "",
        f"Command: `{r['command']}`; {r['files']} clips of librispeech-251, {r['audio_s']} s of audio. CPU ms "
        "per audio second, one thread per core, alternating in each round (see the script's docstring).",
        "",
        "| round | alone | side by side | share kept side by side | front end | front end / model | bound | "
        "bound without contention | bound without VAD | front end for 90 % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, x in enumerate(r["rounds"], 1):
        lines.append(
            f"| {i} | {x['alone_ms']} | {x['side_by_side_ms']} | {x['side_by_side_share']} | "
            f"{x['front_end_ms']['total']} | {x['front_end_share_of_model']} | {x['bound']} | "
            f"{x['bound_without_contention']} | {x['bound_without_vad']} | {x['front_end_for_goal_ms']} |"
        )
    lines += [
        f"| **median** | {m['alone_ms']} | {m['side_by_side_ms']} | {m['side_by_side_share']} | "
        f"{f['total']} | {m['front_end_share_of_model']} | **{m['bound']}** | "
        f"{m['bound_without_contention']} | {m['bound_without_vad']} | {m['front_end_for_goal_ms']} |",
        "",
        f"Front end, median per stage: {', '.join(f'{k} {v}' for k, v in f.items())}.",
        "",
        f"A build reaches at most the bound (median {m['bound']}, best round {r['max_bound']}) of the ceiling "
        f"here; the goal is {r['goal_share']}. With no contention between the cores the front end alone would "
        f"cap it at {m['bound_without_contention']}; with the VAD free (and the contention) at "
        f"{m['bound_without_vad']}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
