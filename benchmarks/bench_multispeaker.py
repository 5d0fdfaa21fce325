"""identify's multi-speaker check (speakerid.multispeaker): false flags, detections and cost.

On librispeech-251: the first N utterances by file name (one speaker each, 1.6-17 s) must not be
flagged; two-voice clips made from them in pairs (5 s + 5 s and 3 s + 3 s, 0.25 s apart) should
be. Cost: seconds per 10 s of audio of the check, of identify's own embedding of the clip
(CAM++ with the default VAD) and of the segmentation model alone, medians over the clips, all
in one process and one run (quote the ratios: the machine is shared).

    python benchmarks/bench_multispeaker.py --n 60

writes benchmarks/results/multispeaker.json and multispeaker.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def _data() -> Path:
    for p in (ROOT.parent / "shared" / "data" / "librispeech-251", *(q / "shared" / "data" / "librispeech-251" for q in ROOT.parents)):
        if (p / "speakers.csv").is_file():
            return p
    raise SystemExit("librispeech-251 not found beside the clone")


def _mix(a: np.ndarray, b: np.ndarray, each_s: float) -> np.ndarray:
    n = int(each_s * SR)
    return np.concatenate([a[:n], np.zeros(SR // 4, np.float32), b[:n]])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60, help="single-speaker utterances (even)")
    args = ap.parse_args()
    from speakerid.diarize.windows import segment_windows, sliding_windows
    from speakerid.embedder import Embedder
    from speakerid.multispeaker import CLIP_OPTIONS, SpeakerCheck

    d = _data()
    with open(d / "speakers.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["file"])[: args.n]
    singles = [sf.read(d / r["file"], dtype="float32")[0] for r in rows]
    sets = {"single": singles,
            "mix 5 s + 5 s": [_mix(singles[2 * i], singles[2 * i + 1], 5.0) for i in range(args.n // 2)],
            "mix 3 s + 3 s": [_mix(singles[2 * i], singles[2 * i + 1], 3.0) for i in range(args.n // 2)]}
    check, emb = SpeakerCheck(), Embedder("campplus")
    seg = check.diarizer.segmenter
    check(singles[0], SR), emb.embed_detailed(singles[0], SR)  # warm up
    out: dict = {"options": {k: getattr(CLIP_OPTIONS, k) for k in ("step_s", "min_cluster_speech_s", "min_speaker_s")},
                 "sets": {}}
    for name, clips in sets.items():
        flags, t_check, t_embed, t_seg = [], [], [], []
        for x in clips:
            per10 = 10.0 * SR / len(x)
            t0 = time.perf_counter()
            flags.append(check(x, SR).multi_speaker)
            t1 = time.perf_counter()
            emb.embed_detailed(x, SR)
            t2 = time.perf_counter()
            segment_windows(list(sliding_windows([x], check.diarizer.window, check.diarizer.step)), seg)
            t3 = time.perf_counter()
            t_check.append((t1 - t0) * per10)
            t_embed.append((t2 - t1) * per10)
            t_seg.append((t3 - t2) * per10)
        out["sets"][name] = {
            "clips": len(clips), "flagged": int(sum(flags)),
            "check_s_per_10s": round(float(np.median(t_check)), 4),
            "identify_embed_s_per_10s": round(float(np.median(t_embed)), 4),
            "segmentation_s_per_10s": round(float(np.median(t_seg)), 4),
            "check_over_embed": round(float(np.median(np.array(t_check) / np.array(t_embed))), 2),
        }
        print(name, out["sets"][name], flush=True)
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "multispeaker.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = ["# identify's multi-speaker check (librispeech-251)", "",
             f"`python benchmarks/bench_multispeaker.py --n {args.n}`; options {out['options']}. Seconds per 10 s of "
             "audio are medians in one run on a shared machine: compare the ratio.", "",
             "| clips | n | flagged | check s/10 s | identify embedding s/10 s | segmentation alone s/10 s | check / embedding |",
             "|---|---|---|---|---|---|---|"]
    for name, r in out["sets"].items():
        lines.append(f"| {name} | {r['clips']} | {r['flagged']} | {r['check_s_per_10s']} | "
                     f"{r['identify_embed_s_per_10s']} | {r['segmentation_s_per_10s']} | {r['check_over_embed']} |")
    (res / "multispeaker.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
