"""INT8 CAM++ (campplus-int8) against FP32 CAM++: speed on 1 thread, closeness of embeddings, the
choice of calibration method and of the ops kept in FP32, per CPU kind.

Speed: one process, both ONNX Runtime sessions (1 intra-op thread, sequential, as
speakerid.Embedder opens them) run alternately on the same 10 s clips' features, ``--runs``
times each; the figure is the ratio of the medians (so machine load hits both alike). Closeness:
cosine of each INT8 embedding to its FP32 one on ``--clips`` librispeech-251 utterances (whole).
Accuracy under the dev conditions is benchmarks/eval_conditions.py's (see BENCHMARKS.md).

    nice -n 10 python benchmarks/bench_int8.py                     # -> results/int8.json, int8.md
    nice -n 10 python benchmarks/bench_int8.py --methods MinMax,Entropy,Percentile --variants
    python benchmarks/bench_int8.py --make-calibration             # rewrite the bundled set

Each CPU kind is measured on its own hardware (results/int8.md: AVX-512 with AMX;
int8_avx2.md: AVX2 only; int8_avx512vnni.md: AVX-512 with VNNI, no AMX). ``--numerics-only``
(a couple of short clips, no timing) was for the superseded qemu check.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from speakerid.audio import load
from speakerid.features import complete_options
from speakerid.features.kaldi import FbankOptions, kaldi_fbank
from speakerid.models import cpu, quantize, store
from speakerid.models.registry import BUILTIN
from speakerid.models.spec import ONNX_FILE

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
CALIBRATION_AUDIO = DATA / "conversation-sample" / "sample.wav"


def fbank_options() -> FbankOptions:
    return FbankOptions(**complete_options("kaldi_fbank", BUILTIN["campplus"].frontend_options))


def make_calibration(out: Path) -> dict:
    """The bundled calibration set: the 30 s conversation-sample (two real speakers, not in
    librispeech-251, MIT) in ten 3 s windows, as mean-normalised fbank, float16."""
    x = load(CALIBRATION_AUDIO)
    win = int(quantize.WINDOW_S * 16000)
    windows = [kaldi_fbank(x[i : i + win], fbank_options()) for i in range(0, len(x) - win + 1, win)]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **{f"w{i:02d}": w.astype(np.float16) for i, w in enumerate(windows)})
    return {"file": str(out), "windows": len(windows), "bytes": out.stat().st_size}


def degraded_calibration(seed: int = 0) -> list[np.ndarray]:
    """The bundled set's ten windows, each also under babble (another window of the same
    conversation) at 0 and 5 dB and pink noise at 5 dB: 40 windows, still of speech outside
    librispeech-251 (a test of calibrating on degraded speech, not the store's recipe)."""
    from conditions import mix_at_snr, pink_noise

    x = load(CALIBRATION_AUDIO)
    win = int(quantize.WINDOW_S * 16000)
    pieces = [x[i : i + win] for i in range(0, len(x) - win + 1, win)]
    rng = np.random.default_rng(seed)
    out = [kaldi_fbank(p, fbank_options()) for p in pieces]
    for k, p in enumerate(pieces):
        other = pieces[(k + 1 + int(rng.integers(len(pieces) - 1))) % len(pieces)]
        out += [kaldi_fbank(mix_at_snr(p, other, snr), fbank_options()) for snr in (0.0, 5.0)]
        out.append(kaldi_fbank(mix_at_snr(p, pink_noise(len(p), rng), 5.0), fbank_options()))
    return out


def session(path: Path | str, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def clips(data: Path, n: int, min_s: float = 0.0) -> list[tuple[str, np.ndarray]]:
    """``n`` librispeech-251 utterances spread over speakers.csv (every k-th file)."""
    files = sorted(p for p in data.glob("*.flac"))
    out = []
    for p in files[:: max(1, len(files) // n)]:
        x = load(p)
        if len(x) >= min_s * 16000:
            out.append((p.name, x))
        if len(out) == n:
            break
    return out


def condition_feats(data: Path, names: list[str], every: int = 5) -> dict[str, list[np.ndarray]]:
    """condition -> the features of every ``every``-th query half under it (benchmarks/conditions.py,
    seed 0), as the Embedder's front end makes them (resampled to 16 kHz, VAD off)."""
    if not names:  # nothing asked: do not decode the corpus
        return {}
    from conditions import Corpus, build  # benchmarks/, beside this script

    from speakerid.audio import prepare

    corpus = Corpus.load(data)
    opts = fbank_options()
    return {c: [kaldi_fbank(prepare(k.samples, k.sample_rate_hz), opts) for k in build(corpus, c, 0) if k.role == "query"][::every]
            for c in names}


def condition_cosines(s32, s8, by_condition: dict[str, list[np.ndarray]]) -> dict[str, dict[str, float]]:
    return {c: {"mean": float(np.mean(v)), "min": min(v), "clips": len(v)}
            for c, v in ((c, cosines(s32, s8, f)) for c, f in by_condition.items())}


def embed(sess, feats: np.ndarray) -> np.ndarray:
    return sess.run(None, {"feats": feats[None].astype(np.float32)})[0][0]


def cosines(s32, s8, feats: list[np.ndarray]) -> list[float]:
    out = []
    for f in feats:
        a, b = embed(s32, f), embed(s8, f)
        out.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return out


def speed(s32, s8, feats: list[np.ndarray], runs: int) -> dict:
    """Medians over ``runs`` alternating runs of each session on each clip (ms per clip)."""
    t32, t8 = [], []
    for f in feats:  # warm-up
        embed(s32, f), embed(s8, f)
    for _ in range(runs):
        for f in feats:
            for s, t in ((s32, t32), (s8, t8)):
                t0 = time.perf_counter()
                embed(s, f)
                t.append(time.perf_counter() - t0)
    m32, m8 = float(np.median(t32)), float(np.median(t8))
    return {"fp32_ms": 1000 * m32, "int8_ms": 1000 * m8, "speedup": m32 / m8, "runs": len(t32)}


def variant_nodes(model, keep: tuple[str, ...]) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "Conv" and any(k in n.input[1] for k in keep)]


#: Ops kept in FP32 (weight-name substrings), measured for the choice in quantize.KEEP_FP32_CONVS.
VARIANTS = {
    "all-conv": (),
    "keep-gate": ("cam_layer.linear1.", "cam_layer.linear2."),
    "keep-gate-transit3 (int8.1)": ("cam_layer.linear1.", "cam_layer.linear2.", "xvector.transit3.linear."),
    "keep-gate-transit3-conv1 (chosen)": quantize.KEEP_FP32_CONVS,
    "keep-gate-transit3-conv1-layer1.0.conv1": (*quantize.KEEP_FP32_CONVS, "head.layer1.0.conv1."),
    "keep-gate-transit3-conv1-layer1.0.conv1+shortcut": (*quantize.KEEP_FP32_CONVS, "head.layer1.0.conv1.",
                                                          "head.layer1.0.shortcut."),
    "keep-gate-transit3-conv1-layer1.0": (*quantize.KEEP_FP32_CONVS, "head.layer1.0."),
    "keep-gate-transit3-conv1-layer1": (*quantize.KEEP_FP32_CONVS, "head.layer1."),
    "keep-gate-transit3-head": (*quantize.KEEP_FP32_CONVS, "head."),
}


def build_variant(fp32, windows, method: str, keep: tuple[str, ...], tmp: Path, weight_bits: int | None = None,
                  types: tuple[str, str] = ("uint8", "int8"), alpha: float | None = quantize.EQUALISE_ALPHA):
    """quantize.quantise with another set of convs kept in FP32 (or other weight bits, types or
    channel equalisation)."""
    saved = quantize.KEEP_FP32_CONVS
    quantize.KEEP_FP32_CONVS = keep
    try:
        return quantize.quantise(fp32, windows, method=method, workdir=tmp, weight_bits=weight_bits, types=types,
                                 alpha=alpha)
    finally:
        quantize.KEEP_FP32_CONVS = saved


def cpu_report() -> dict:
    flags = cpu.cpu_flags()
    import onnxruntime

    return {"kind": cpu.cpu_kind(), "model_name": _model_name(), "weight_bits": cpu.int8_weight_bits(),
            "int8_flags": sorted(f for f in flags if "vnni" in f or f.startswith("amx") or f in ("avx2", "avx512bw")),
            "onnxruntime": onnxruntime.__version__, "machine": platform.machine()}


def _model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


GOAL_EER_POINTS = 0.05
GOAL_SPEEDUP = 1.8


def conditions(fp32_json: Path, int8_json: Path) -> dict | None:
    """EER and the other figures of eval_conditions.py for both models, per condition (bare system)."""
    if not (fp32_json.is_file() and int8_json.is_file()):
        return None
    a = json.loads(fp32_json.read_text())
    b = json.loads(int8_json.read_text())
    ra, rb = a["results"]["campplus"]["bare"]["rows"], b["results"]["campplus-int8"]["bare"]["rows"]
    rows = {}
    for cond in ra:
        if cond in rb:
            rows[cond] = {k: (ra[cond][k], rb[cond][k]) for k in ("eer", "min_dcf_001", "top1", "fnir_at_fpir_001",
                                                                   "open_set_fa", "eer_threshold")}
    return {"commands": [a["command"], b["command"]], "rows": rows}


def conditions_markdown(c: dict) -> list[str]:
    out = ["## EER under the dev conditions (bare system, VAD off)\n",
           "Made by `" + "` and `".join(c["commands"]) + "` (benchmarks/eval_conditions.py; EER, minDCF 0.01, "
           f"top-1 and FNIR at FPIR 1 % as there). Goal: |EER change| <= {GOAL_EER_POINTS} points.\n",
           "| condition | EER FP32 | EER INT8 | change (points) | minDCF FP32 / INT8 | top-1 FP32 / INT8 | "
           "FNIR@FPIR1% FP32 / INT8 | EER threshold FP32 / INT8 | goal |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for cond, r in c["rows"].items():
        (e32, e8), (d32, d8), (t32, t8) = r["eer"], r["min_dcf_001"], r["top1"]
        (f32, f8), (h32, h8) = r["fnir_at_fpir_001"], r["eer_threshold"]
        delta = 100 * (e8 - e32)
        out.append(f"| {cond} | {100 * e32:.2f} % | {100 * e8:.2f} % | {delta:+.2f} | {d32:.4f} / {d8:.4f} | "
                   f"{100 * t32:.2f} / {100 * t8:.2f} % | {100 * f32:.2f} / {100 * f8:.2f} % | {h32:.3f} / {h8:.3f} | "
                   f"{'met' if abs(delta) <= GOAL_EER_POINTS + 1e-9 else 'NOT met'} |")
    worst = max(abs(100 * (r["eer"][1] - r["eer"][0])) for r in c["rows"].values())
    out.append(f"\nLargest |EER change|: {worst:.2f} points.\n")
    return out


def markdown(res: dict) -> str:
    c = res["cpu"]
    out = [f"# INT8 CAM++ against FP32\n\nMade by `{res['command']}` ({res['created']}). CPU: {c['model_name']}, "
           f"kind **{c['kind']}** (int8 flags: {', '.join(c['int8_flags'])}; the store's campplus-int8 has weights on "
           f"{c.get('weight_bits', 8)} bits here), onnxruntime {c['onnxruntime']}. "
           f"Load average at the start: {res['load']}.\n"]
    if "speed" in res:
        s = res["speed"]
        out += ["## Speed (1 thread, 10 s clips)\n",
                f"Medians of {s['runs']} alternating runs per model in one process ({res['speed_clips']} clips of 10 s):\n",
                "| FP32 ms | INT8 ms | speed-up |", "|---:|---:|---:|",
                f"| {s['fp32_ms']:.1f} | {s['int8_ms']:.1f} | {s['speedup']:.2f}x |", "",
                f"Goal >= {GOAL_SPEEDUP}x on this CPU kind ({c['kind']}): "
                f"**{'met' if s['speedup'] >= GOAL_SPEEDUP else 'not met'}**. The two models alternate run by run, so "
                "other load (see the load average above) slows both alike, though it makes the ratio noisier.\n"]
    if (HERE / "results" / "int8_avx2.md").is_file() and c["kind"] in cpu.VNNI_KINDS:
        out += ["## AVX2-only CPUs\n",
                "Measured on real AVX2 hardware (an AMD EPYC without VNNI): results/int8_avx2.md. There the "
                "store builds campplus-int8 with 7-bit weights (speakerid/models/cpu.py); the qemu check of "
                "int8_avx2_numerics.json missed the int16 saturation that hardware showed.\n"]
    if res.get("conditions"):
        out += conditions_markdown(res["conditions"])
    if "cosine" in res:
        k = res["cosine"]
        out += ["## Closeness to FP32\n", f"Cosine INT8 vs FP32 embedding on {k['clips']} whole librispeech-251 "
                f"utterances: min {k['min']:.4f}, mean {k['mean']:.4f}.\n"]
        if k.get("conditions"):
            out.append("Under the dev conditions (query halves, seed 0; mean / min): " + ", ".join(
                f"{c} {v['mean']:.4f} / {v['min']:.4f} ({v['clips']} clips)" for c, v in k["conditions"].items()) + ".\n")
    if res.get("variants"):
        out += ["## Calibration method and ops kept in FP32\n",
                f"Cosine to FP32 on {res['cosine']['clips'] if 'cosine' in res else '?'} clips; speed-up as above "
                f"({res['variant_runs']} runs each). Condition columns: mean cosine on that condition's query "
                "halves (seed 0).\n"]
        conds = list(res["variants"][0].get("conditions", {}))
        out += ["| method | variant | cos min | cos mean | " + "".join(f"{c} | " for c in conds) + "speed-up |",
                "|---|---|---:|---:|" + "---:|" * len(conds) + "---:|"]
        if conds and "conditions" in res.get("cosine", {}):
            k = res["cosine"]
            out.append(f"| {quantize.CALIBRATE_METHOD} | the store's campplus-int8 | {k['min']:.4f} | {k['mean']:.4f} | "
                       + "".join(f"{k['conditions'][c]['mean']:.4f} | " for c in conds) + f"{res['speed']['speedup']:.2f}x |")
        for v in res["variants"]:
            out.append(f"| {v['method']} | {v['variant']} | {v['cos_min']:.4f} | {v['cos_mean']:.4f} | "
                       + "".join(f"{v['conditions'][c]['mean']:.4f} | " for c in conds)
                       + f"{v.get('speedup', float('nan')):.2f}x |")
        out.append("")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA / "librispeech-251")
    ap.add_argument("--clips", type=int, default=20, help="clips for the cosine to FP32")
    ap.add_argument("--speed-clips", type=int, default=3, help="10 s clips timed")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--methods", default="", help="also measure these calibration methods (comma-separated)")
    ap.add_argument("--variants", action="store_true", help="also measure other sets of FP32 convs")
    ap.add_argument("--cosine-conditions", default="",
                    help="also give each model's cosine to FP32 on query halves of these dev conditions "
                         "(benchmarks/conditions.py, seed 0, every 5th; e.g. babble-0dB,telephone,far-field)")
    ap.add_argument("--weight-bits", default="",
                    help="also measure the chosen recipe with weights on these bits (comma-separated: 8,7)")
    ap.add_argument("--types", default="",
                    help="also measure these activation/weight types (comma-separated: uint8/uint8,int8/int8)")
    ap.add_argument("--degraded-calibration", action="store_true",
                    help="also measure the chosen recipe calibrated on degraded_calibration()")
    ap.add_argument("--numerics-only", action="store_true", help="cosine on 2 short clips, no timing (qemu)")
    ap.add_argument("--make-calibration", action="store_true")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite int8.md from int8.json and the eval_conditions JSON files, measuring nothing")
    ap.add_argument("--conditions-fp32", type=Path, default=HERE / "results" / "int8_conditions_fp32.json")
    ap.add_argument("--conditions-int8", type=Path, default=HERE / "results" / "int8_conditions.json")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "int8.json")
    args = ap.parse_args()
    if args.make_calibration:
        print(json.dumps(make_calibration(quantize.CALIBRATION_FILE)))
        return
    import os

    if args.report_only:
        res = json.loads(args.out.read_text())
        res["conditions"] = conditions(args.conditions_fp32, args.conditions_int8)
        args.out.write_text(json.dumps(res, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(markdown(res))
        print(markdown(res))
        return
    res: dict = {"command": "python benchmarks/bench_int8.py " + " ".join(sys.argv[1:]),
                 "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_report(),
                 "load": " ".join(f"{x:.1f}" for x in os.getloadavg())}
    _, d32 = store.resolve("campplus")
    _, d8 = store.resolve("campplus-int8")
    s32, s8 = session(d32 / ONNX_FILE), session(d8 / ONNX_FILE)
    opts = fbank_options()
    if args.numerics_only:
        feats = [kaldi_fbank(x[: 3 * 16000], opts) for _, x in clips(args.data, 2, 3.0)]
        cs = cosines(s32, s8, feats)
        print(json.dumps({"cpu": res["cpu"], "cosines": cs}))
        return
    feats = [kaldi_fbank(x, opts) for _, x in clips(args.data, args.clips)]
    cs = cosines(s32, s8, feats)
    res["cosine"] = {"clips": len(cs), "min": min(cs), "mean": float(np.mean(cs)), "values": cs}
    by_condition = condition_feats(args.data, [c for c in args.cosine_conditions.split(",") if c])
    if by_condition:
        res["cosine"]["conditions"] = condition_cosines(s32, s8, by_condition)
    ten = [kaldi_fbank(x[: 10 * 16000], opts) for _, x in clips(args.data, args.speed_clips, 10.0)]
    res["speed_clips"] = len(ten)
    res["speed"] = speed(s32, s8, ten, args.runs)
    print(f"speed-up {res['speed']['speedup']:.2f}x, cos min {min(cs):.4f}", file=sys.stderr)
    variants = []
    methods = [m for m in args.methods.split(",") if m]
    bits = [int(b) for b in args.weight_bits.split(",") if b]
    types = [tuple(t.split("/")) for t in args.types.split(",") if t]
    if methods or args.variants or bits or types or args.degraded_calibration:
        import onnx

        fp32 = onnx.load(str(d32 / ONNX_FILE))
        windows = quantize.bundled_calibration()
        chosen = "keep-gate-transit3-conv1 (chosen)"
        recipe = ("uint8", "int8")
        # (method, variant key, label, weight bits, (activation, weight) types)
        todo = [(m, chosen, chosen, None, recipe) for m in methods]
        if args.variants:
            todo += [(quantize.CALIBRATE_METHOD, v, v, None, recipe) for v in VARIANTS if v != chosen]
        todo += [(quantize.CALIBRATE_METHOD, chosen, f"{chosen}, weights on {b} bits", b, recipe) for b in bits]
        todo += [(quantize.CALIBRATE_METHOD, chosen, f"{chosen}, {t[0]} activations x {t[1]} weights (8 bits)", 8, t)
                 for t in types]
        alpha = quantize.EQUALISE_ALPHA
        calib = {"bundled": windows}
        todo = [(*row, "bundled", alpha) for row in todo]
        if args.variants:  # the store's choice of convs, other channel equalisations (int8.2: none)
            todo += [(quantize.CALIBRATE_METHOD, chosen, f"{chosen}, equalisation alpha {a}", None, recipe, "bundled", a)
                     for a in (None, 1.0) if a != alpha]
        if args.degraded_calibration:
            calib["degraded"] = degraded_calibration()
            todo.append((quantize.CALIBRATE_METHOD, chosen, f"{chosen}, calibrated on degraded speech", None, recipe,
                         "degraded", alpha))
        with tempfile.TemporaryDirectory() as td:
            for method, key, name, b, t, cal, a in todo:
                q = build_variant(fp32, calib[cal], method, VARIANTS[key], Path(td), b, t, a)
                p = Path(td) / "v.onnx"
                onnx.save(q, str(p))
                sv = session(p)
                vc = cosines(s32, sv, feats)
                row = {"method": method, "variant": name, "cos_min": min(vc), "cos_mean": float(np.mean(vc))}
                if by_condition:
                    row["conditions"] = condition_cosines(s32, sv, by_condition)
                row["speedup"] = speed(s32, sv, ten[:1], max(5, args.runs // 3))["speedup"]
                variants.append(row)
                print(row, file=sys.stderr)
        res["variants"] = variants
        res["variant_runs"] = max(5, args.runs // 3)
    res["conditions"] = conditions(args.conditions_fp32, args.conditions_int8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
