"""The gated VAD schedule against the full one, clip by clip, on the development conditions.

    nice -n 10 python benchmarks/bench_vad_gate.py --out benchmarks/results/vad_gate.json

For every clip of each condition (benchmarks/conditions.py, seed 0; enrolment and query halves and
short utterances whole, 486 clips per condition) the samples the Embedder would keep are computed
twice, as speakerid.Embedder runs its VAD (``VadOptions()`` defaults, one block): with the full
schedule (Silero on every 32 ms window) and with the gated one (``SileroVad(schedule="auto")``,
speakerid.vad.GATE_*). A clip is "different" when the kept samples differ; "work" is the model
windows run by the gated schedule over those of the full one (coarse pass, plus the full model on
the clips where the coarse pass may hold a long pause).

    nice -n 10 python benchmarks/bench_vad_gate.py --eval --models campplus --systems bare,new \
        --conditions silences,tones,far-field,clean --check 3 --out benchmarks/results/conditions_gated.json

runs benchmarks/eval_conditions.py with the gated schedule's probabilities (see ``eval_gated``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conditions import Corpus, build  # noqa: E402

from speakerid import vad as vad_mod  # noqa: E402
from speakerid.audio import prepare  # noqa: E402
from speakerid.config import VadOptions  # noqa: E402
from speakerid.models.store import vad_sequence_onnx_path  # noqa: E402
from speakerid.vad import SileroVad  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data" / "librispeech-251"
CONDITIONS = ("silences", "tones", "far-field", "clean", "crop-2s", "telephone", "white-5dB", "babble-0dB")


def kept(segments: list[tuple[int, int]], n: int) -> np.ndarray:
    m = np.zeros(n, bool)
    for a, b in segments:
        m[a:b] = True
    return m


def run(v: SileroVad, x: np.ndarray) -> tuple[list[tuple[int, int]], int]:
    st = v.stream()
    segs = st.push(x) + st.finish()
    return segs, st.windows_run


def eval_gated(argv: list[str]) -> None:
    """benchmarks/eval_conditions.py with the VAD probabilities of the gated schedule (what the
    Embedder's segmenter is given: SileroVad.schedule_probabilities), so that its table and its
    ``--check`` are those of Embedder.embed as wired."""
    import eval_conditions

    gated = SileroVad(vad_sequence_onnx_path(), VadOptions(), threads=1, schedule="auto")

    def probabilities(vad, samples, level_dbfs):
        out = {}
        for key, x in samples.items():
            g = vad_mod.vad_gain(x[: 60 * 16000], level_dbfs)
            y = x if g == 1.0 else np.clip(x * np.float32(g), -1.0, 1.0)
            out[key] = gated.schedule_probabilities(y) if level_dbfs == VadOptions().level_dbfs else vad.probabilities(y)
        return out

    eval_conditions.probabilities = probabilities
    sys.argv = ["benchmarks/eval_conditions.py", *argv]
    eval_conditions.main()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--eval":
        return eval_gated(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "vad_gate.json")
    args = ap.parse_args()
    opts = VadOptions()
    full = SileroVad(vad_sequence_onnx_path(), opts, threads=1)
    gated = SileroVad(vad_sequence_onnx_path(), opts, threads=1, schedule="auto")
    corpus = Corpus.load(DATA)
    rows = {}
    for cond in args.conditions.split(","):
        t = time.perf_counter()
        n_clips = cut = diff = 0
        diff_s = 0.0
        work = windows = 0
        differing = []
        for clip in build(corpus, cond):
            x = prepare(clip.samples, clip.sample_rate_hz)
            a, _ = run(full, x)
            b, w = run(gated, x)
            ka, kb = kept(a, len(x)), kept(b, len(x))
            n_clips += 1
            cut += int(not ka.all())
            work += w
            windows += -(-len(x) // vad_mod.WINDOW)
            if not np.array_equal(ka, kb):
                diff += 1
                diff_s += float((ka != kb).sum()) / 16000
                differing.append(clip.key)
        rows[cond] = {"clips": n_clips, "trimmed_by_full_vad": cut, "different": diff, "different_s": round(diff_s, 2),
                      "differing": differing[:20], "work": round(work / windows, 3),
                      "seconds": round(time.perf_counter() - t, 1)}
        print(cond, rows[cond], file=sys.stderr, flush=True)
    gate = {k: getattr(vad_mod, k) for k in ("GATE_STRIDE", "GATE_THRESHOLD", "GATE_MIN_PAUSE_MS", "GATE_BRIDGE",
                                              "GATE_MIN_KEEP_MS", "GATE_WARMUP_MS")}
    report = {"command": "python " + " ".join(sys.argv), "gate": gate, "vad_options": opts.__dict__, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Gated VAD schedule against the full one",
        "",
        f"Command: `{report['command']}`. Gate: " + ", ".join(f"{k} = {v}" for k, v in gate.items()) + ".",
        "",
        "A clip differs when the samples the Embedder keeps differ; work = model windows run by the gated "
        "schedule / those of the full one.",
        "",
        "| condition | clips | trimmed by the full VAD | different (s) | work |",
        "|---|---:|---:|---:|---:|",
    ]
    for cond, r in rows.items():
        lines.append(f"| {cond} | {r['clips']} | {r['trimmed_by_full_vad']} | {r['different']} ({r['different_s']:.2f} s) "
                     f"| {r['work']:.3f} |")
    diffs = [k for r in rows.values() for k in r["differing"]]
    lines += ["", f"Differing clips: {', '.join(diffs) if diffs else 'none'}.", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
